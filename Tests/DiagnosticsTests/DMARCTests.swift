import Testing

@testable import Diagnostics

@Suite struct DMARCTests {
    // RFC 7489 Appendix B.2 examples and variations.
    @Test(arguments: [
        ("v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com", DMARCRecord.Policy.none),
        (
            "v=DMARC1; p=none; rua=mailto:dmarc-feedback@example.com; ruf=mailto:auth-reports@thirdparty.example.net",
            .none
        ),
        (
            "v=DMARC1; p=quarantine; rua=mailto:dmarc-feedback@example.com,mailto:tld-test@thirdparty.example.net!10m; pct=25",
            .quarantine
        ),
        ("v=DMARC1;p=reject;sp=none;adkim=s;aspf=s", .reject),
        ("v=DMARC1; p=reject; fo=1:d:s; ri=86400; rf=afrf;", .reject),
    ])
    func parses(text: String, policy: DMARCRecord.Policy) throws {
        let r = try DMARCRecord(parsing: text)
        #expect(r.policy == policy)
    }

    @Test func fields() throws {
        let r = try DMARCRecord(
            parsing:
                "v=DMARC1; p=quarantine; sp=reject; pct=25; adkim=s; rua=mailto:a@example.com,mailto:b@x.example.net!10m"
        )
        #expect(r.subdomainPolicy == .reject)
        #expect(r.percent == 25)
        #expect(r.dkimAlignment == .strict)
        #expect(r.spfAlignment == .relaxed)
        #expect(r.aggregateReports.map(\.domain) == ["example.com", "x.example.net"])
    }

    @Test(arguments: [
        "p=reject; v=DMARC1",
        "v=DMARC2; p=reject",
        "v=DMARC1; p=block",
        "v=DMARC1; p=reject; pct=101",
        "v=DMARC1; p=reject; adkim=x",
        "v=DMARC1; p=reject; rua=dmarc@example.com",
        "v=DMARC1; p=reject; rua=mailto:@example.com",
        "v=DMARC1; p=reject; p=none",
        "v=DMARC1; p=reject; fo=2",
    ])
    func refuses(text: String) {
        #expect(throws: DMARCRecord.ParseError.self) { try DMARCRecord(parsing: text) }
    }

    @Test(arguments: [
        ("v=DMARC1; p=reject; rua=mailto:d@example.org", "dmarc.policy", CheckSeverity.ok),
        ("v=DMARC1; p=none; rua=mailto:d@example.org", "dmarc.policy", .warning),
        ("v=DMARC1; rua=mailto:d@example.org", "dmarc.policy", .warning),
        ("v=DMARC1; p=reject", "dmarc.rua", .info),
        ("v=DMARC1; p=reject; pct=50", "dmarc.pct", .info),
        ("v=DMARC1; p=reject; rua=mailto:d@reports.example.net", "dmarc.external-destination", .warning),
        ("v=DMARC1; p=reject; rua=mailto:d@auth.example.com", "dmarc.external-destination", .ok),
        ("v=DMARC1; p=bogus", "dmarc.syntax", .failure),
    ])
    func evaluation(text: String, check: String, severity: CheckSeverity) async {
        let dns = FakeDNS(txt: [
            "_dmarc.example.org": [text], "example.org._report._dmarc.auth.example.com": ["v=DMARC1"],
        ])
        let f = await DMARCCheck(dns: dns).run(domain: "example.org")
        #expect(f.severity(check) == severity)
    }

    @Test func organisationalFallbackUsesSubdomainPolicy() async {
        let dns = FakeDNS(txt: ["_dmarc.example.org": ["v=DMARC1; p=reject; sp=quarantine"]])
        let f = await DMARCCheck(dns: dns).run(domain: "mail.example.org")
        #expect(f.first { $0.check == "dmarc.record" }?.summary.contains("organisational") == true)
        #expect(f.first { $0.check == "dmarc.policy" }?.summary.hasPrefix("p=quarantine") == true)
        let none = await DMARCCheck(dns: FakeDNS()).run(domain: "mail.example.org")
        #expect(none.severity("dmarc.record") == .warning)
        let two = await DMARCCheck(
            dns: FakeDNS(txt: ["_dmarc.example.org": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]])
        )
        .run(domain: "example.org")
        #expect(two.severity("dmarc.multiple") == .failure)
    }
}
