import Testing

@testable import Diagnostics

@Suite struct SPFRecordTests {
    // RFC 7208 Appendix A's records and variations, and the syntax errors of §4.6, §5, §6, §7.1.
    @Test(arguments: [
        "v=spf1 +mx a:colo.example.com/28 -all",
        "v=spf1 a -all",
        "v=spf1 a:example.org -all",
        "v=spf1 mx -all",
        "v=spf1 mx:example.org -all",
        "v=spf1 mx mx:example.org -all",
        "v=spf1 mx/30 mx:example.org/30 -all",
        "v=spf1 ptr -all",
        "v=spf1 ip4:192.0.2.128/28 -all",
        "v=spf1 ip6:2001:db8::/32 ~all",
        "v=spf1 include:example.com include:example.net -all",
        "v=spf1 redirect=example.org",
        "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all",
        "v=spf1 a//64 a/24//64 -all",
        "v=spf1 exp=explain._spf.%{d} -all",
        "V=SPF1 ?ALL",
        "v=spf1",
        "v=spf1 -all foo=bar",
    ])
    func parses(record: String) throws {
        _ = try SPFRecord(parsing: record)
    }

    @Test(arguments: [
        ("v=spf10 -all", "notSPF"),
        ("spf1 -all", "notSPF"),
        ("v=spf1 nonsense -all", "unknownMechanism"),
        ("v=spf1 include -all", "badArgument"),
        ("v=spf1 ip4:192.0.2.256 -all", "badArgument"),
        ("v=spf1 ip4:192.0.2.0/33 -all", "badArgument"),
        ("v=spf1 ip6:192.0.2.1 -all", "badArgument"),
        ("v=spf1 a/33 -all", "badArgument"),
        ("v=spf1 all:example.org", "badArgument"),
        ("v=spf1 redirect=a.example redirect=b.example", "duplicateModifier"),
        ("v=spf1 exists:%{x}.example.org -all", "badMacro"),
        ("v=spf1 include:%{d -all", "badMacro"),
        ("v=spf1 include:example -all", "badArgument"),
        ("v=spf1 include:example.123 -all", "badArgument"),
    ])
    func refuses(record: String, error: String) {
        #expect {
            try SPFRecord(parsing: record)
        } throws: { thrown in
            guard let e = thrown as? SPFRecord.ParseError else { return false }
            return Self.name(e) == error
        }
    }

    static func name(_ e: SPFRecord.ParseError) -> String {
        switch e {
        case .notSPF: "notSPF"
        case .unknownMechanism: "unknownMechanism"
        case .badArgument: "badArgument"
        case .duplicateModifier: "duplicateModifier"
        case .badMacro: "badMacro"
        }
    }

    @Test func termsAndQualifiers() throws {
        let r = try SPFRecord(parsing: "v=spf1 -ip4:192.0.2.1 ~mx:example.org/24 ?include:_spf.example.net +all")
        #expect(r.directives.map(\.qualifier) == [.fail, .softfail, .neutral, .pass])
        #expect(r.directives[1].mechanism == .mx("example.org", cidr: "/24"))
        #expect(r.directives.filter(\.mechanism.countsAsLookup).count == 2)
    }
}

@Suite struct SPFCheckTests {
    static func dns(_ records: [String: String], a: [String: [String]] = [:]) -> FakeDNS {
        FakeDNS(txt: records.mapValues { [$0] }, a: a)
    }

    @Test func goodRecord() async {
        let dns = Self.dns(
            [
                "example.org": "v=spf1 mx include:_spf.example.net -all",
                "_spf.example.net": "v=spf1 ip4:192.0.2.0/24 ~all",
            ])
        var fake = dns
        fake.mx["example.org"] = [(10, "mx.example.org")]
        let f = await SPFCheck(dns: fake).run(domain: "example.org")
        #expect(f.severity("spf.record") == .ok)
        #expect(f.severity("spf.lookups") == .ok)
        #expect(f.first { $0.check == "spf.lookups" }?.summary.hasPrefix("2 of 10") == true)
        #expect(f.severity("spf.all") == .ok)
        #expect(f.severity("spf.void-lookups") == nil)
    }

    @Test func elevenLookupsThroughIncludes() async {
        var records = ["example.org": "v=spf1 include:a.example.net include:b.example.net -all"]
        records["a.example.net"] =
            "v=spf1 " + (1...5).map { "exists:e\($0).example.net" }.joined(separator: " ") + " ~all"
        records["b.example.net"] =
            "v=spf1 " + (6...9).map { "exists:e\($0).example.net" }.joined(separator: " ") + " ~all"
        var a: [String: [String]] = [:]
        for i in 1...9 { a["e\(i).example.net"] = ["127.0.0.2"] }
        let f = await SPFCheck(dns: Self.dns(records, a: a)).run(domain: "example.org")
        // 2 includes + 9 exists = 11.
        #expect(f.severity("spf.lookups") == .failure)
        #expect(f.first { $0.check == "spf.lookups" }?.summary.hasPrefix("11 DNS lookups") == true)
    }

    @Test func redirectCountsAndCarriesAll() async {
        let f = await SPFCheck(
            dns: Self.dns(
                ["example.org": "v=spf1 redirect=_spf.example.org", "_spf.example.org": "v=spf1 a -all"],
                a: ["_spf.example.org": ["192.0.2.1"]])
        ).run(domain: "example.org")
        #expect(f.first { $0.check == "spf.lookups" }?.summary.hasPrefix("2 of 10") == true)
        #expect(f.severity("spf.all") == .ok)
    }

    @Test(arguments: [
        ("v=spf1 +all", CheckSeverity.failure),
        ("v=spf1 all", .failure),
        ("v=spf1 ?all", .warning),
        ("v=spf1 ~all", .ok),
        ("v=spf1 -all", .ok),
        ("v=spf1 ip4:192.0.2.1", .info),
    ])
    func allQualifier(record: String, severity: CheckSeverity) async {
        let f = await SPFCheck(dns: Self.dns(["example.org": record])).run(domain: "example.org")
        #expect(f.severity("spf.all") == severity)
    }

    @Test func voidLookupsOverTheLimit() async {
        let f = await SPFCheck(
            dns: Self.dns(["example.org": "v=spf1 a:n1.example.org a:n2.example.org a:n3.example.org -all"])
        ).run(domain: "example.org")
        #expect(f.severity("spf.void-lookups") == .failure)
    }

    @Test func multipleRecordsAndSyntax() async {
        let multiple = await SPFCheck(dns: FakeDNS(txt: ["example.org": ["v=spf1 -all", "v=spf1 ~all"]]))
            .run(domain: "example.org")
        #expect(multiple.severity("spf.multiple") == .failure)
        let bad = await SPFCheck(dns: Self.dns(["example.org": "v=spf1 ipv4:192.0.2.1 -all"])).run(
            domain: "example.org")
        #expect(bad.severity("spf.syntax") == .failure)
        let none = await SPFCheck(dns: FakeDNS(txt: ["example.org": ["google-site-verification=x"]]))
            .run(domain: "example.org")
        #expect(none.severity("spf.record") == .warning)
    }

    @Test func includeWithoutRecordAndLoops() async {
        let missing = await SPFCheck(dns: Self.dns(["example.org": "v=spf1 include:gone.example.net -all"]))
            .run(domain: "example.org")
        #expect(missing.severity("spf.include-missing") == .failure)
        let loop = await SPFCheck(
            dns: Self.dns([
                "example.org": "v=spf1 include:b.example.org -all", "b.example.org": "v=spf1 include:example.org -all",
            ])
        ).run(domain: "example.org")
        #expect(loop.severity("spf.loop") == .failure)
    }
}
