import Testing

@testable import Diagnostics

@Suite struct IPCheckTests {
    static let dns = FakeDNS(
        txt: ["2.2.0.192.bl.example.net": ["listed for testing"]],
        a: [
            "good.example.org": ["192.0.2.1"], "liar.example.org": ["192.0.2.99"],
            "2.2.0.192.bl.example.net": ["127.0.0.2"],
        ],
        ptr: ["1.2.0.192.in-addr.arpa": ["good.example.org"], "2.2.0.192.in-addr.arpa": ["liar.example.org"]])

    @Test(arguments: [
        ("192.0.2.1", "reverse-dns.fcrdns", CheckSeverity.ok),
        ("192.0.2.2", "reverse-dns.fcrdns", .warning),
        ("192.0.2.3", "reverse-dns.ptr", .warning),
        ("192.0.2.1", "blocklist.listed", .ok),
        ("192.0.2.2", "blocklist.listed", .failure),
        ("not-an-ip", "address.invalid", .failure),
    ])
    func findings(address: String, check: String, severity: CheckSeverity) async {
        let f = await IPCheck(dns: Self.dns).run(address: address, blocklists: ["bl.example.net"])
        #expect(f.severity(check) == severity)
    }

    @Test func listedCarriesTheReason() async {
        let f = await IPCheck(dns: Self.dns).run(address: "192.0.2.2", blocklists: ["bl.example.net"])
        let listed = f.first { $0.check == "blocklist.listed" }
        #expect(listed?.summary == "Listed on bl.example.net (127.0.0.2)")
        #expect(listed?.detail == "listed for testing")
    }

    @Test func noBlocklistsIsSaid() async {
        let f = await IPCheck(dns: Self.dns).run(address: "192.0.2.1", blocklists: [])
        #expect(f.severity("blocklist.none") == .info)
    }
}
