import SMTPCore
import Testing

@testable import Ingress

struct TrustedNetworksTests {
    @Test(arguments: [
        ("127.0.0.1", true), ("127.255.0.9", true), ("10.1.2.3", true), ("10.2.0.1", false), ("192.0.2.1", false),
        ("::1", true), ("2001:db8:1::5", true), ("2001:db8:2::5", false), ("::ffff:127.0.0.1", true),
    ])
    func matchesCIDRBlocks(_ ip: String, _ expected: Bool) throws {
        let t = try TrustedNetworks(["127.0.0.0/8", "10.1.0.0/16", "::1", "2001:db8:1::/48"])
        #expect(t.contains(ip) == expected)
    }

    @Test func emptyTrustsNobody() {
        #expect(!TrustedNetworks().contains("127.0.0.1"))
    }

    @Test(arguments: ["127.0.0.0/33", "banana", "10.0.0.0/x", "::/129"])
    func rejectsBadBlocks(_ text: String) {
        #expect(throws: TrustedNetworks.ParseError.self) { try TrustedNetworks([text]) }
    }

    @Test func openRelayEntriesAreJudgedEachByItsPrefix() throws {
        let t = try TrustedNetworks([
            "127.0.0.0/8", "0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/7", "2001:db8::/16", "::/0", "2000::/3", "::1",
            "192.0.2.1", "::ffff:10.0.0.0/7",
        ])
        #expect(t.openRelayEntries == [1, 2, 3, 5, 6, 9])
        #expect(try TrustedNetworks(["10.0.0.0/8", "2001:db8::/16", "192.0.2.0/24"]).openRelayEntries.isEmpty)
        #expect(TrustedNetworks().openRelayEntries.isEmpty)
    }

    @Test(arguments: ["/", "/8", "//"])
    func rejectsAPrefixWithoutAnAddress(_ text: String) {
        #expect(throws: TrustedNetworks.ParseError.self) { try TrustedNetworks([text]) }
    }

    @Test func errorsQuoteAtMost80Characters() {
        do {
            _ = try TrustedNetworks([String(repeating: "x", count: 5000) + "\n"])
            Issue.record("accepted")
        } catch {
            #expect("\(error)" == "'\(String(repeating: "x", count: 80))…' is not an IP address or CIDR block")
        }
    }

    @Test func relayOnlyForTrustedClients() {
        let d = TenantDirectory(tenants: [Tenant(name: "c", domains: ["contoso.test"], mailboxes: ["alice"])])
        let remote = ForwardPathFixture.remote
        guard case .reject(let r, _) = d.decide(remote, relayAllowed: false) else {
            Issue.record("open relay")
            return
        }
        #expect(r.code == 550 && r.enhancedCode?.description == "5.7.1")
        #expect(d.decide(remote, relayAllowed: true) == .accept(route: .relay(domain: "remote.test")))
    }
}

enum ForwardPathFixture {
    static let remote = ForwardPath.mailbox(Mailbox(localPart: "bob", domain: "Remote.test"))
}
