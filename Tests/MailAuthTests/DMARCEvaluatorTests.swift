import Testing

@testable import MailAuth

@Suite struct DMARCEvaluatorTests {
    static let psl = PublicSuffixList(parsing: "com\norg\nuk\nco.uk\n")

    static func discover(_ from: String, _ zone: [String: [Any]]) async -> DMARCDiscovery {
        await DMARCEvaluator.discover(fromDomain: from, dns: SuiteZone(zone), publicSuffixes: psl)
    }

    static func verdict(
        from: String, spf: SPFResult.Kind = .none, spfDomain: String = "", dkim: [DMARCDKIMInput] = [],
        zone: [String: [Any]], pctSample: Int = 0
    ) async -> DMARCResult {
        await DMARCEvaluator.check(
            fromDomain: from, spf: spf, spfDomain: spfDomain, dkim: dkim, dns: SuiteZone(zone), pctSample: pctSample,
            publicSuffixes: psl)
    }

    static var reject: [String: [Any]] { ["_dmarc.example.com": [["TXT": "v=DMARC1; p=reject"]]] }
    static var strict: [String: [Any]] { ["_dmarc.example.com": [["TXT": "v=DMARC1; p=reject; aspf=s; adkim=s"]]] }

    @Test func alignedSPFPasses() async {
        let r = await Self.verdict(from: "example.com", spf: .pass, spfDomain: "example.com", zone: Self.reject)
        #expect(r.kind == .pass)
        #expect(r.spfAligned)
        #expect(r.policy == .none)
        #expect(r.requestedPolicy == .reject)
    }

    @Test func alignedDKIMPasses() async {
        let r = await Self.verdict(
            from: "example.com", spf: .fail, spfDomain: "example.com",
            dkim: [
                DMARCDKIMInput(domain: "other.org", passed: true), DMARCDKIMInput(domain: "example.com", passed: true),
            ],
            zone: Self.reject)
        #expect(r.kind == .pass)
        #expect(r.alignedDKIMDomain == "example.com")
    }

    @Test func unalignedFailsWithThePolicy() async {
        let r = await Self.verdict(
            from: "example.com", spf: .pass, spfDomain: "mailer.org",
            dkim: [DMARCDKIMInput(domain: "mailer.org", passed: true)],
            zone: Self.reject)
        #expect(r.kind == .fail)
        #expect(r.policy == .reject)
        #expect(r.reason.contains("not aligned"))
    }

    @Test func aFailedDKIMSignatureDoesNotAlign() async {
        let r = await Self.verdict(
            from: "example.com", dkim: [DMARCDKIMInput(domain: "example.com", passed: false)], zone: Self.reject)
        #expect(r.kind == .fail)
        #expect(r.alignedDKIMDomain == nil)
    }

    @Test func subdomainsAlignRelaxedButNotStrict() async {
        let relaxed = await Self.verdict(
            from: "news.example.com", spf: .pass, spfDomain: "bounce.example.com",
            dkim: [DMARCDKIMInput(domain: "example.com", passed: true)], zone: Self.reject)
        #expect(relaxed.kind == .pass)
        #expect(relaxed.spfAligned)
        #expect(relaxed.recordDomain == "example.com")
        let strict = await Self.verdict(
            from: "news.example.com", spf: .pass, spfDomain: "bounce.example.com",
            dkim: [DMARCDKIMInput(domain: "example.com", passed: true)], zone: Self.strict)
        #expect(strict.kind == .fail)
        let exact = await Self.verdict(
            from: "example.com", spf: .pass, spfDomain: "EXAMPLE.com.", zone: Self.strict)
        #expect(exact.kind == .pass)
    }

    @Test func relaxedAlignmentUsesThePublicSuffixList() async {
        let zone: [String: [Any]] = ["_dmarc.example.co.uk": [["TXT": "v=DMARC1; p=quarantine"]]]
        let same = await Self.verdict(
            from: "mail.example.co.uk", spf: .pass, spfDomain: "bounce.example.co.uk", zone: zone)
        #expect(same.kind == .pass)
        #expect(same.organizationalDomain == "example.co.uk")
        let other = await Self.verdict(from: "mail.example.co.uk", spf: .pass, spfDomain: "evil.co.uk", zone: zone)
        #expect(other.kind == .fail)
        #expect(other.policy == .quarantine)
    }

    @Test func discoveryFallsBackToTheOrganizationalDomain() async {
        let zone: [String: [Any]] = [
            "_dmarc.example.com": [["TXT": "v=DMARC1; p=reject"]],
            "_dmarc.own.example.com": [["TXT": "v=DMARC1; p=none"]],
        ]
        #expect(
            await Self.discover("a.b.example.com", zone)
                == .found(try! DMARCRecord(parsing: "v=DMARC1; p=reject"), domain: "example.com"))
        guard case .found(_, let domain) = await Self.discover("own.example.com", zone) else {
            Issue.record("no record found")
            return
        }
        #expect(domain == "own.example.com")
    }

    @Test func subdomainPolicyAppliesBelowTheOrganizationalDomain() async {
        let zone: [String: [Any]] = ["_dmarc.example.com": [["TXT": "v=DMARC1; p=reject; sp=quarantine"]]]
        let sub = await Self.verdict(from: "news.example.com", zone: zone)
        #expect(sub.kind == .fail)
        #expect(sub.policy == .quarantine)
        let top = await Self.verdict(from: "example.com", zone: zone)
        #expect(top.policy == .reject)
        // A record at the subdomain itself: its p= applies, not the organizational sp=.
        var own = zone
        own["_dmarc.news.example.com"] = [["TXT": "v=DMARC1; p=none; sp=reject"]]
        #expect(await Self.verdict(from: "news.example.com", zone: own).policy == .none)
    }

    @Test func percentSamplesTheMilderPolicy() async {
        let zone: [String: [Any]] = ["_dmarc.example.com": [["TXT": "v=DMARC1; p=reject; pct=20"]]]
        let applied = await Self.verdict(from: "example.com", zone: zone, pctSample: 19)
        #expect(applied.policy == .reject)
        #expect(!applied.sampledOut)
        let left = await Self.verdict(from: "example.com", zone: zone, pctSample: 20)
        #expect(left.policy == .quarantine)
        #expect(left.sampledOut)
        let quarantine: [String: [Any]] = ["_dmarc.example.com": [["TXT": "v=DMARC1; p=quarantine; pct=0"]]]
        #expect(await Self.verdict(from: "example.com", zone: quarantine, pctSample: 0).policy == .none)
    }

    @Test func multipleRecordsMeanNoPolicy() async {
        let zone: [String: [Any]] = [
            "_dmarc.example.com": [["TXT": "v=DMARC1; p=reject"], ["TXT": "v=DMARC1; p=none"]]
        ]
        let r = await Self.verdict(from: "example.com", zone: zone)
        #expect(r.kind == .none)
        #expect(r.policy == .none)
        #expect(r.reason.contains("2 DMARC records"))
        // Non-DMARC TXT records beside one DMARC record are discarded (RFC 7489 §6.6.3 step 2).
        let mixed: [String: [Any]] = ["_dmarc.example.com": [["TXT": "v=DMARC1; p=reject"], ["TXT": "hello"]]]
        #expect(await Self.verdict(from: "example.com", zone: mixed).kind == .fail)
    }

    @Test func aBrokenRecordIsAPermerror() async {
        let zone: [String: [Any]] = ["_dmarc.example.com": [["TXT": "v=DMARC1; p=reject; pct=150"]]]
        let r = await Self.verdict(from: "example.com", spf: .pass, spfDomain: "example.com", zone: zone)
        #expect(r.kind == .permerror)
        #expect(r.policy == .none)
    }

    @Test func anInvalidPolicyIsNoneUnlessReportsAreAsked() async {
        let bare: [String: [Any]] = ["_dmarc.example.com": [["TXT": "v=DMARC1; p=bogus"]]]
        #expect(await Self.verdict(from: "example.com", zone: bare).kind == .none)
        let reports: [String: [Any]] = [
            "_dmarc.example.com": [["TXT": "v=DMARC1; p=bogus; rua=mailto:d@example.com"]]
        ]
        let r = await Self.verdict(from: "example.com", zone: reports)
        #expect(r.kind == .fail)
        #expect(r.requestedPolicy == DMARCRecord.Policy.none)
        #expect(r.policy == .none)
    }

    @Test func noRecordAndDNSFailure() async {
        #expect(await Self.verdict(from: "example.com", zone: [:]).kind == .none)
        let down: [String: [Any]] = ["_dmarc.example.com": ["TIMEOUT"]]
        #expect(await Self.verdict(from: "example.com", zone: down).kind == .temperror)
    }

    @Test func dkimInputsParse() {
        #expect(DMARCDKIMInput(parsing: "example.com=pass") == DMARCDKIMInput(domain: "example.com", passed: true))
        #expect(DMARCDKIMInput(parsing: "example.com=fail") == DMARCDKIMInput(domain: "example.com", passed: false))
        #expect(DMARCDKIMInput(parsing: "example.com") == nil)
    }
}
