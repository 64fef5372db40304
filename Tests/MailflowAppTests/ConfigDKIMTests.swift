import Foundation
import Testing

@testable import MailflowApp

/// `tenants[].dkim` (docs/dkim.md): decoding, key loading relative to the config file, refusals, and
/// the signer chosen for a sender.
@Suite struct ConfigDKIMTests {
    /// The RFC 8463 Appendix A Ed25519 key as PKCS#8 PEM.
    static let pem =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n"

    static func folder() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dkim-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try pem.write(to: dir.appendingPathComponent("k.pem"), atomically: true, encoding: .utf8)
        return dir.path
    }

    static func yaml(_ dkim: String, domains: String = "[contoso.test, mail.contoso.test]") -> String {
        """
        tenants:
          - name: contoso
            domains: \(domains)
            mailboxes: [alice]
            dkim:
        \(dkim)

        """
    }

    @Test func decodesAndLoadsKeysRelativeToTheConfigFile() throws {
        let dir = try Self.folder()
        let config = try MailflowConfig.parse(
            yaml: Self.yaml("      - {domain: contoso.test, selector: 2026A, key_file: k.pem}"), baseDirectory: dir)
        let key = try #require(config.tenants.first?.dkim.first)
        #expect(key.domain == "contoso.test")
        #expect(key.selector == "2026a")
        #expect(key.keyFile == dir + "/k.pem")
        #expect(key.pem == Self.pem)
    }

    @Test func signsMailFromTheTenantOnly() throws {
        let dir = try Self.folder()
        let config = try MailflowConfig.parse(
            yaml: Self.yaml("      - {domain: contoso.test, selector: s1, key_file: k.pem}"), baseDirectory: dir)
        #expect(config.dkimSigning(forSender: "bob@fabrikam.test") == nil)
        #expect(config.dkimSigning(forSender: "") == nil)
        let signing = try #require(config.dkimSigning(forSender: "alice@contoso.test"))
        let message = Array("From: Alice <alice@mail.contoso.test>\r\nSubject: hi\r\n\r\nhello\r\n".utf8)
        let field = try #require(signing.sign(message))
        #expect(
            field.replacingOccurrences(of: "\r\n\t", with: " ").hasPrefix(
                "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=contoso.test; s=s1;"))
        // A From outside the tenant's key domains is not signed.
        #expect(signing.sign(Array("From: x@elsewhere.test\r\n\r\nhello\r\n".utf8)) == nil)
    }

    @Test(arguments: [
        ("      - {domain: fabrikam.test, selector: s1, key_file: k.pem}", "is not one of this tenant's domains"),
        ("      - {selector: s1, key_file: k.pem}", "dkim[0].domain: is required"),
        ("      - {domain: contoso.test, key_file: k.pem}", "dkim[0].selector: is required"),
        ("      - {domain: contoso.test, selector: s1}", "dkim[0].key_file: is required"),
        ("      - {domain: contoso.test, selector: s1, key_file: missing.pem}", "dkim[0].key_file: cannot read"),
        ("      - {domain: contoso.test, selector: s1, key_file: k.pem, l: 5}", "unknown key"),
        (
            "      - {domain: contoso.test, selector: s1, key_file: k.pem}\n      - {domain: contoso.test, selector: s2, key_file: k.pem}",
            "has two keys"
        ),
    ])
    func refuses(dkim: String, message: String) throws {
        let dir = try Self.folder()
        do {
            _ = try MailflowConfig.parse(yaml: Self.yaml(dkim), baseDirectory: dir)
            Issue.record("accepted: \(dkim)")
        } catch let error as MailflowConfig.ConfigError {
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    @Test func refusesAKeyThatIsNotASigningKey() throws {
        let dir = try Self.folder()
        try "not a key".write(toFile: dir + "/bad.pem", atomically: true, encoding: .utf8)
        #expect(throws: MailflowConfig.ConfigError.self) {
            try MailflowConfig.parse(
                yaml: Self.yaml("      - {domain: contoso.test, selector: s1, key_file: bad.pem}"), baseDirectory: dir)
        }
    }
}
