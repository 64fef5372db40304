import Delivery
import Testing
import Yams

@testable import MailflowApp

/// `delivery.lmtp`: where local routes go instead of Maildir, written as Postfix's
/// `mailbox_transport = lmtp:...` nexthop.
struct ConfigLMTPTests {
    func decode(_ yaml: String) throws -> MailflowConfig {
        var c = MailflowConfig()
        try c.decodeDelivery(try ConfigReader(try #require(try Yams.compose(yaml: yaml)), "delivery"))
        return c
    }

    func refusal(_ yaml: String) -> String {
        do {
            _ = try decode(yaml)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func maildirIsTheDefault() throws {
        #expect(MailflowConfig().lmtp == nil)
        #expect(try decode("concurrency: 5").lmtp == nil)
        #expect(try decode("lmtp:").lmtp == nil)
    }

    @Test(arguments: [
        ("unix:/run/dovecot/lmtp", LMTPAddress.unix(path: "/run/dovecot/lmtp")),
        ("/run/dovecot/lmtp", .unix(path: "/run/dovecot/lmtp")),
        ("inet:127.0.0.1:24", .inet(host: "127.0.0.1", port: 24)),
        ("10.0.0.5:2424", .inet(host: "10.0.0.5", port: 2424)),
        ("inet:[::1]:24", .inet(host: "::1", port: 24)),
    ])
    func addressForms(_ text: String, _ expected: LMTPAddress) throws {
        let c = try decode("lmtp: \"\(text)\"")
        #expect(c.lmtp == LMTPSettings(address: expected))
    }

    @Test func mappingForm() throws {
        let c = try decode(
            """
            lmtp:
              address: inet:127.0.0.1:24
              lhlo_name: node1.mail.test
              max_connections: 3
            """)
        #expect(
            c.lmtp
                == LMTPSettings(
                    address: .inet(host: "127.0.0.1", port: 24), lhloName: "node1.mail.test", maxConnections: 3))
    }

    @Test(arguments: [
        ("lmtp: \"unix:run/lmtp\"", "delivery.lmtp: a UNIX socket needs an absolute path"),
        ("lmtp: \"mailbox.example:24\"", "delivery.lmtp: \"mailbox.example\" is not an IP address"),
        ("lmtp: \"127.0.0.1:0\"", "delivery.lmtp: the port must be 1-65535"),
        ("lmtp: \"127.0.0.1\"", "delivery.lmtp: expected unix:/path"),
        ("lmtp: {lhlo_name: a.test}", "delivery.lmtp.address: is required"),
        ("lmtp: {address: \"127.0.0.1:24\", pool: 3}", "delivery.lmtp.pool: unknown key"),
        ("lmtp: {address: \"127.0.0.1:x\"}", "delivery.lmtp.address: the port must be 1-65535"),
    ])
    func refusals(_ yaml: String, _ expected: String) {
        let said = refusal(yaml)
        #expect(said.contains(expected), "\(said)")
    }
}
