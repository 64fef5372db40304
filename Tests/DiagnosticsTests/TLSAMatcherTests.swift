import Crypto
import DNSClient
import Foundation
import MailAuth
import Testing
import X509

@testable import Diagnostics

@Suite struct TLSAMatcherTests {
    struct Issued {
        var key: P256.Signing.PrivateKey
        var der: [UInt8]
    }

    static func certificate(_ name: String, issuer: Issued? = nil, issuerName: String? = nil) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(name) }
        let issuerDN = try DistinguishedName { CommonName(issuerName ?? name) }
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86400),
            issuer: issuerDN, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions { SubjectAlternativeNames([.dnsName(name)]) },
            issuerPrivateKey: Certificate.PrivateKey(issuer?.key ?? key))
        return Issued(key: key, der: try cert.serializeAsPEM().derBytes)
    }

    @Test func spkiIsTheKeysDER() throws {
        let leaf = try Self.certificate("mx.example.org")
        // swift-crypto's derRepresentation of a P-256 public key is its SubjectPublicKeyInfo.
        let spki = try DERReader.subjectPublicKeyInfo(ofCertificate: leaf.der)
        #expect(Array(spki) == Array(leaf.key.publicKey.derRepresentation))
    }

    @Test(arguments: [
        // (usage, selector, matching type, which certificate the data is from, expected)
        (UInt8(3), UInt8(1), UInt8(1), "leaf", true as Bool?),
        (3, 0, 1, "leaf", true),
        (3, 1, 2, "leaf", true),
        (3, 0, 0, "leaf", true),
        (3, 1, 0, "leaf", true),
        (3, 1, 1, "ca", false),
        (2, 1, 1, "ca", true),
        (2, 0, 2, "ca", true),
        (2, 1, 1, "other", false),
        (1, 1, 1, "leaf", nil),
        (0, 1, 1, "ca", nil),
    ])
    func matching(usage: UInt8, selector: UInt8, matchingType: UInt8, source: String, expected: Bool?) throws {
        let ca = try Self.certificate("Test CA")
        let leaf = try Self.certificate("mx.example.org", issuer: ca, issuerName: "Test CA")
        let other = try Self.certificate("other")
        let from = ["leaf": leaf, "ca": ca, "other": other][source]!
        let data = try #require(TLSAMatcher.association(of: from.der, selector: selector, matchingType: matchingType))
        let record = TLSARecord(usage: usage, selector: selector, matchingType: matchingType, data: data)
        #expect(TLSAMatcher.matches(record, chain: [leaf.der, ca.der]) == expected)
    }

    @Test func wrongDigestLengthIsUnusable() {
        let record = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [1, 2, 3])
        #expect(TLSAMatcher.usability(record) != .usable)
    }

    @Test func daneFindings() throws {
        let leaf = try Self.certificate("mx.example.org")
        let data = try #require(TLSAMatcher.association(of: leaf.der, selector: 1, matchingType: 1))
        let good = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: data)
        let bad = TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [UInt8](repeating: 0, count: 32))
        let probe = HostProbeResult(findings: [], presentedChainDER: [leaf.der], starttlsOffered: true)
        func evaluate(_ records: [TLSARecord], authenticated: Bool, probe: HostProbeResult) -> [CheckFinding] {
            DANECheck.evaluate(
                host: "mx.example.org", port: 25, lookup: .records(records, authenticated: authenticated),
                probes: [("192.0.2.1", probe)])
        }
        #expect(evaluate([good], authenticated: true, probe: probe).severity("dane.match") == .ok)
        #expect(evaluate([bad], authenticated: true, probe: probe).severity("dane.match") == .failure)
        #expect(evaluate([bad], authenticated: false, probe: probe).severity("dane.match") == .info)
        #expect(evaluate([good], authenticated: false, probe: probe).severity("dane.dnssec") == .info)
        let plain = HostProbeResult(findings: [], starttlsOffered: false)
        #expect(evaluate([good], authenticated: true, probe: plain).severity("dane.starttls") == .failure)
        #expect(
            DANECheck.evaluate(host: "mx.example.org", port: 25, lookup: .none, probes: []).severity("dane.tlsa")
                == .info)
    }
}
