import Foundation
import MailAuth
import Testing

@testable import Diagnostics

@Suite struct DKIMTests {
    /// DER length octets.
    static func length(_ n: Int) -> [UInt8] {
        if n < 0x80 { return [UInt8(n)] }
        if n < 0x100 { return [0x81, UInt8(n)] }
        return [0x82, UInt8(n >> 8), UInt8(n & 0xff)]
    }

    static func tlv(_ tag: UInt8, _ body: [UInt8]) -> [UInt8] { [tag] + length(body.count) + body }

    /// An RSA public key of `bits` bits (a synthetic modulus), as SubjectPublicKeyInfo or bare RSAPublicKey.
    static func rsaKey(bits: Int, spki: Bool = true) -> String {
        let modulus: [UInt8] = [0x00, 0xC1] + [UInt8](repeating: 0x5A, count: bits / 8 - 1)
        let rsaPublicKey = tlv(0x30, tlv(0x02, modulus) + tlv(0x02, [0x01, 0x00, 0x01]))
        guard spki else { return Data(rsaPublicKey).base64EncodedString() }
        let algorithm = tlv(0x30, tlv(0x06, [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]) + [0x05, 0x00])
        return Data(tlv(0x30, algorithm + tlv(0x03, [0x00] + rsaPublicKey))).base64EncodedString()
    }

    @Test(arguments: [
        ("v=DKIM1; k=rsa; p=\(rsaKey(bits: 2048))", DKIMKeyRecord.Key.rsa(bits: 2048)),
        ("v=DKIM1; p=\(rsaKey(bits: 1024))", .rsa(bits: 1024)),
        ("k=rsa; p=\(rsaKey(bits: 4096, spki: false))", .rsa(bits: 4096)),
        ("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", .ed25519),
        ("v=DKIM1; k=rsa; p=", .revoked),
        ("v=DKIM1; p=; t=y", .revoked),
    ])
    func keys(text: String, key: DKIMKeyRecord.Key) throws {
        #expect(try DKIMKeyRecord(parsing: text).key == key)
    }

    @Test(arguments: [
        "v=DKIM1; k=rsa",
        "v=DKIM2; p=\(rsaKey(bits: 2048))",
        "k=dsa; p=\(rsaKey(bits: 2048))",
        "k=ed25519; p=AAAA",
        "p=!!!notbase64",
        "p=AAAA",
    ])
    func refuses(text: String) {
        #expect(throws: DKIMKeyRecord.ParseError.self) { try DKIMKeyRecord(parsing: text) }
    }

    @Test(arguments: [
        ("v=DKIM1; k=rsa; p=\(rsaKey(bits: 768))", CheckSeverity.failure),
        ("v=DKIM1; k=rsa; p=\(rsaKey(bits: 1024))", .warning),
        ("v=DKIM1; k=rsa; p=\(rsaKey(bits: 2048))", .ok),
        ("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", .ok),
        ("v=DKIM1; p=", .failure),
    ])
    func evaluation(text: String, severity: CheckSeverity) async {
        let f = await DKIMCheck(dns: FakeDNS(txt: ["s1._domainkey.example.org": [text]]))
            .run(domain: "example.org", selector: "s1")
        #expect(f.severity("dkim.key") == severity)
    }

    @Test func missingSelector() async {
        let f = await DKIMCheck(dns: FakeDNS()).run(domain: "example.org", selector: "nope")
        #expect(f.severity("dkim.record") == .failure)
    }
}
