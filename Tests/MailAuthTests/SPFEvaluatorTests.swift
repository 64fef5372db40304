import DNSClient
import Synchronization
import Testing

@testable import MailAuth

/// Targeted cases beside the RFC 7208 suite: the §7.4 macro examples, the §4.6.4 limits as
/// Mailflow counts them, and the results operators see.
@Suite struct SPFEvaluatorTests {
    static let strongBad = SPFMacroContext(
        sender: "strong-bad@email.example.com", domain: "email.example.com", ip: DNSIPAddress("192.0.2.3")!,
        helo: "mx.example.com", receiver: "mx.example.net", timestamp: 1_700_000_000)

    // RFC 7208 §7.4.
    @Test(arguments: [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        ("%%%_%-", "% %20"),
        ("%{L}", "strong-bad"),
        ("%{S}", "strong-bad%40email.example.com"),
    ])
    func macroExamples(spec: String, expanded: String) {
        #expect(Self.strongBad.expand(spec, explanation: false) == expanded)
    }

    @Test func ipv6MacroExample() {
        var context = Self.strongBad
        context.ip = DNSIPAddress("2001:db8::cb01")!
        #expect(
            context.expand("%{ir}.%{v}._spf.%{d2}", explanation: false)
                == "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
    }

    @Test(arguments: ["%{c}", "%{r}", "%{t}", "%{d0}", "%{x}", "%", "%{d", "%a"])
    func macrosRefusedInDomainSpecs(spec: String) {
        #expect(Self.strongBad.expand(spec, explanation: false) == nil)
    }

    @Test func explanationOnlyMacros() {
        #expect(Self.strongBad.expand("%{c} %{r} %{t}", explanation: true) == "192.0.2.3 mx.example.net 1700000000")
    }

    @Test func longExpansionsLoseLabelsFromTheLeft() {
        var context = Self.strongBad
        context.sender = String(repeating: "a", count: 60) + "." + String(repeating: "b", count: 60) + "@x.example"
        let name = context.expandDomain("%{l}.%{l}.%{l}.example.com")
        #expect(name.map { $0.utf8.count <= 253 } == true)
        #expect(name?.hasSuffix(".example.com") == true)
        #expect(name?.hasPrefix("b") == true)
    }

    static func zone(_ entries: [String: [Any]]) -> SuiteZone {
        SuiteZone(entries)
    }

    static let client = DNSIPAddress("192.0.2.10")!

    static func check(_ zone: SuiteZone, _ domain: String = "example.com") async -> SPFResult {
        await SPFEvaluator(dns: zone).checkMailFrom(ip: client, mailFrom: "user@" + domain, helo: "mx.example.com")
    }

    @Test func elevenLookupsIsAPermerror() async {
        var data: [String: [Any]] = [:]
        let includes = (1...11).map { "include:i\($0).example.com" }.joined(separator: " ")
        data["example.com"] = [["TXT": "v=spf1 \(includes) ip4:192.0.2.10 -all"]]
        for i in 1...11 { data["i\(i).example.com"] = [["TXT": "v=spf1 -all"]] }
        let result = await Self.check(Self.zone(data))
        #expect(result.kind == .permerror)
        #expect(result.reason.contains("more than 10"))
        #expect(result.lookups == 11)
    }

    @Test func tenLookupsAreAllowed() async {
        var data: [String: [Any]] = [:]
        let includes = (1...10).map { "include:i\($0).example.com" }.joined(separator: " ")
        data["example.com"] = [["TXT": "v=spf1 \(includes) ip4:192.0.2.10 -all"]]
        for i in 1...10 { data["i\(i).example.com"] = [["TXT": "v=spf1 -all"]] }
        let result = await Self.check(Self.zone(data))
        #expect(result.kind == .pass)
        #expect(result.mechanism == "ip4:192.0.2.10")
        #expect(result.lookups == 10)
    }

    @Test func threeVoidLookupsIsAPermerror() async {
        let data: [String: [Any]] = [
            "example.com": [["TXT": "v=spf1 a:none1.example.com a:none2.example.com a:none3.example.com -all"]]
        ]
        let result = await Self.check(Self.zone(data))
        #expect(result.kind == .permerror)
        #expect(result.voidLookups == 3)
        let two: [String: [Any]] = [
            "example.com": [["TXT": "v=spf1 a:none1.example.com a:none2.example.com -all"]]
        ]
        #expect(await Self.check(Self.zone(two)).kind == .fail)
    }

    @Test func elevenMXNamesIsAPermerror() async {
        var data: [String: [Any]] = ["example.com": [["TXT": "v=spf1 mx -all"]]]
        data["example.com"]! += (1...11).map { ["MX": [10, "mx\($0).example.com"]] }
        #expect(await Self.check(Self.zone(data)).kind == .permerror)
    }

    @Test func failCarriesTheExpandedExplanation() async {
        let data: [String: [Any]] = [
            "example.com": [["TXT": "v=spf1 -all exp=why.example.com"]],
            "why.example.com": [["TXT": "%{i} may not send for %{d} (%{l})"]],
        ]
        let result = await Self.check(Self.zone(data))
        #expect(result.kind == .fail)
        #expect(result.explanation == "192.0.2.10 may not send for example.com (user)")
    }

    @Test func dnsFailureIsATemperror() async {
        let data: [String: [Any]] = [
            "example.com": [["TXT": "v=spf1 a:slow.example.com -all"]], "slow.example.com": ["TIMEOUT"],
        ]
        #expect(await Self.check(Self.zone(data)).kind == .temperror)
    }

    @Test(arguments: [
        ("v=spf1 ?all", SPFResult.Kind.neutral),
        ("v=spf1 ~all", .softfail),
        ("v=spf1 ip4:192.0.2.0/24 -all", .pass),
        ("v=spf1 ip4:192.0.3.0/24", .neutral),
        ("v=spf1 ip4:192.0.2.0/33 -all", .permerror),
        ("v=spf1 -all foo", .permerror),
        ("v=spf1 include:nothing.example.com -all", .permerror),
        ("v=spf1 redirect=nothing.example.com", .permerror),
    ])
    func results(record: String, expected: SPFResult.Kind) async {
        #expect(await Self.check(Self.zone(["example.com": [["TXT": record]]])).kind == expected)
    }

    @Test func noRecordIsNone() async {
        #expect(await Self.check(Self.zone(["example.com": [["TXT": "hello"]]])).kind == .none)
        #expect(await Self.check(Self.zone([:])).kind == .none)
    }

    @Test func ipv4MappedAddressesAreEvaluatedAsIPv4() async {
        let zone = Self.zone(["example.com": [["TXT": "v=spf1 ip4:192.0.2.10 -all"]]])
        let result = await SPFEvaluator(dns: zone).checkMailFrom(
            ip: DNSIPAddress("::ffff:192.0.2.10")!, mailFrom: "a@example.com", helo: "h.example.com")
        #expect(result.kind == .pass)
    }
}

/// A zone that records every question asked of it.
final class RecordingZone: SPFDNS {
    let zone: SuiteZone
    let asked = Mutex<[String]>([])

    init(_ data: [String: [Any]]) { zone = SuiteZone(data) }

    func note(_ question: String) { asked.withLock { $0.append(question) } }
    func txt(_ name: String) async throws(SPFDNSError) -> [String] {
        note("TXT \(name)")
        return try await zone.txt(name)
    }
    func a(_ name: String) async throws(SPFDNSError) -> [DNSIPAddress] {
        note("A \(name)")
        return try await zone.a(name)
    }
    func aaaa(_ name: String) async throws(SPFDNSError) -> [DNSIPAddress] {
        note("AAAA \(name)")
        return try await zone.aaaa(name)
    }
    func mx(_ name: String) async throws(SPFDNSError) -> [String] {
        note("MX \(name)")
        return try await zone.mx(name)
    }
    func ptr(_ address: DNSIPAddress) async throws(SPFDNSError) -> [String] {
        note("PTR \(address)")
        return try await zone.ptr(address)
    }
}

@Suite struct SPFLookupTests {
    @Test func theEleventhTermIsNotAsked() async {
        var data: [String: [Any]] = [:]
        data["example.com"] = [["TXT": "v=spf1 " + (1...11).map { "a:h\($0).example.com" }.joined(separator: " ")]]
        for i in 1...11 { data["h\(i).example.com"] = [["A": "198.51.100.\(i)"]] }
        let dns = RecordingZone(data)
        let result = await SPFEvaluator(dns: dns).checkMailFrom(
            ip: DNSIPAddress("192.0.2.1")!, mailFrom: "a@example.com", helo: "h.example.com")
        #expect(result.kind == .permerror)
        let asked = dns.asked.withLock { $0 }
        #expect(asked.first == "TXT example.com")
        #expect(asked.contains("A h10.example.com"))
        #expect(!asked.contains("A h11.example.com"))
    }

    @Test func anIncludedFailAsksNoExplanation() async {
        let dns = RecordingZone([
            "example.com": [["TXT": "v=spf1 include:inc.example.com -all exp=top.example.com"]],
            "inc.example.com": [["TXT": "v=spf1 -all exp=inner.example.com"]],
            "top.example.com": [["TXT": "no: %{i}"]],
            "inner.example.com": [["TXT": "inner"]],
        ])
        let result = await SPFEvaluator(dns: dns).checkMailFrom(
            ip: DNSIPAddress("192.0.2.1")!, mailFrom: "a@example.com", helo: "h.example.com")
        #expect(result.kind == .fail)
        #expect(result.explanation == "no: 192.0.2.1")
        #expect(result.lookups == 1)
        let asked = dns.asked.withLock { $0 }
        #expect(asked == ["TXT example.com", "TXT inc.example.com", "TXT top.example.com"])
    }

    @Test func aRedirectedFailExplainsWithTheTargetsExp() async {
        let dns = RecordingZone([
            "example.com": [["TXT": "v=spf1 redirect=policy.example.net exp=ignored.example.com"]],
            "policy.example.net": [["TXT": "v=spf1 -all exp=why.example.net"]],
            "why.example.net": [["TXT": "%{d} and %{o}"]],
        ])
        let result = await SPFEvaluator(dns: dns).checkMailFrom(
            ip: DNSIPAddress("192.0.2.1")!, mailFrom: "a@example.com", helo: "h.example.com")
        #expect(result.kind == .fail)
        #expect(result.explanation == "policy.example.net and example.com")
    }

    @Test func heloIdentity() async {
        let dns = RecordingZone(["mail.example.com": [["TXT": "v=spf1 a -all"], ["A": "192.0.2.7"]]])
        let spf = SPFEvaluator(dns: dns)
        #expect(await spf.checkHelo(ip: DNSIPAddress("192.0.2.7")!, helo: "mail.example.com").kind == .pass)
        #expect(await spf.checkHelo(ip: DNSIPAddress("192.0.2.8")!, helo: "mail.example.com").kind == .fail)
        #expect(await spf.checkHelo(ip: DNSIPAddress("192.0.2.8")!, helo: "localhost").kind == .none)
    }
}
