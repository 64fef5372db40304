import Foundation
import Testing

@testable import MailAuth

@Suite struct DKIMSigningTableTests {
    static let key = DKIMPrivateKey.ed25519(seed: Array(Data(base64Encoded: RFC8463.ed25519Seed)!))
    static let table = DKIMSigningTable([
        .init(domain: "Contoso.test", selector: "a", key: key),
        .init(domain: "mail.contoso.test", selector: "b", key: key),
    ])

    @Test(arguments: [
        ("contoso.test", "a"), ("CONTOSO.TEST", "a"), ("sub.contoso.test", "a"), ("mail.contoso.test", "b"),
        ("x.mail.contoso.test", "b"), ("notcontoso.test", nil), ("test", nil),
    ])
    func picksTheNearestDomain(from: String, selector: String?) {
        #expect(Self.table.entry(forFromDomain: from)?.selector == selector)
    }

    @Test(arguments: [
        ("From: Alice <alice@contoso.test>", "d=contoso.test; s=a;"),
        ("From: alice@mail.contoso.test", "d=mail.contoso.test; s=b;"),
        ("From: \"A <b@evil.test>\" <alice@contoso.test>", "d=contoso.test; s=a;"),
    ])
    func signsByFromDomain(from: String, tags: String) async throws {
        let message = Array("\(from)\r\nSubject: x\r\n\r\nbody\r\n".utf8)
        let field = try #require(Self.table.signatureField(for: message, now: Date()))
        #expect(field.replacingOccurrences(of: "\r\n\t", with: " ").contains(tags))
        let results = await DKIMVerifier(resolver: AnyKey(record: Self.key.publicKeyRecord))
            .verify(Array(field.utf8) + message, now: Date())
        #expect(results.map(\.status) == [.pass])
    }

    @Test(arguments: [
        "From: a@elsewhere.test\r\n\r\nx\r\n", "From: a@contoso.test\r\nFrom: b@contoso.test\r\n\r\nx\r\n",
        "Subject: no from\r\n\r\nx\r\n", "From: no address\r\n\r\nx\r\n",
    ])
    func doesNotSign(message: String) {
        #expect(Self.table.signatureField(for: Array(message.utf8), now: Date()) == nil)
    }

    struct AnyKey: DKIMKeyResolver {
        var record: String
        func keyRecords(selector: String, domain: String) async -> DKIMKeyLookup { .records([record]) }
    }
}
