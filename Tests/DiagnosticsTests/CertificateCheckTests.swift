import Crypto
import Foundation
import Testing
import X509

@testable import Diagnostics

/// Certificates made in the test: a CA, an intermediate and leaves with any names and dates.
struct TestPKI {
    struct Issued {
        var certificate: Certificate
        var key: P256.Signing.PrivateKey
        var der: [UInt8] { (try? certificate.serializeAsPEM().derBytes) ?? [] }
    }

    static let day: TimeInterval = 86400
    let now = Date()

    func name(_ cn: String) throws -> DistinguishedName {
        try DistinguishedName {
            OrganizationName("Mailflow tests")
            CommonName(cn)
        }
    }

    func ca(_ cn: String = "Test Root CA", issuer: Issued? = nil) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let subject = try name(cn)
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now - 10 * Self.day, notValidAfter: now + 3650 * Self.day,
            issuer: issuer?.certificate.subject ?? subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(issuer?.key ?? key))
        return Issued(certificate: cert, key: key)
    }

    func leaf(
        _ names: [String], issuer: Issued?, notBefore: Date? = nil, notAfter: Date? = nil, ips: [[UInt8]] = []
    ) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let subject = try name(names.first ?? "leaf")
        var sans = names.map { GeneralName.dnsName($0) }
        sans += ips.map { GeneralName.ipAddress(.init(contentBytes: $0[...])) }
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: notBefore ?? now - Self.day, notValidAfter: notAfter ?? now + 90 * Self.day,
            issuer: issuer?.certificate.subject ?? subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(sans)
            },
            issuerPrivateKey: .init(issuer?.key ?? key))
        return Issued(certificate: cert, key: key)
    }
}

@Suite struct CertificateCheckTests {
    let pki = TestPKI()

    func run(
        _ chain: [TestPKI.Issued], roots: [TestPKI.Issued], host: String = "mx.good.test", now: Date? = nil
    ) async -> [String: CheckFinding] {
        let check = CertificateCheck(
            trustRoots: roots.map(\.certificate), now: now ?? pki.now, trustSource: "the test CA")
        let findings = await check.findings(chainDER: chain.map(\.der), host: host, subject: "test")
        var byCheck: [String: CheckFinding] = [:]
        for f in findings { byCheck[f.check] = f }
        return byCheck
    }

    @Test func goodChainIsTrustedNamedAndInOrder() async throws {
        let root = try pki.ca()
        let inter = try pki.ca("Test Intermediate", issuer: root)
        let leaf = try pki.leaf(["mx.good.test"], issuer: inter)
        let f = await run([leaf, inter], roots: [root])
        #expect(f["certificate.trust"]?.severity == .ok)
        #expect(f["certificate.chain-order"]?.severity == .ok)
        #expect(f["certificate.chain-complete"]?.severity == .ok)
        #expect(f["certificate.name"]?.severity == .ok)
        #expect(f["certificate.expiry"]?.severity == .ok)
        #expect(f["certificate.key"]?.summary == "EC key on P-256")
        #expect(f["certificate.signature"]?.severity == .ok)
        #expect(f["certificate.self-signed"] == nil)
        #expect(f.values.allSatisfy { $0.severity <= .info })
    }

    @Test func incompleteChainIsNamed() async throws {
        let root = try pki.ca()
        let inter = try pki.ca("Test Intermediate", issuer: root)
        let leaf = try pki.leaf(["mx.good.test"], issuer: inter)
        let f = await run([leaf], roots: [root])
        #expect(f["certificate.chain-complete"]?.severity == .failure)
        #expect(f["certificate.chain-complete"]?.summary.contains("Test Intermediate") == true)
        #expect(f["certificate.trust"]?.severity == .failure)
        #expect(f["certificate.trust"]?.summary.contains("incomplete") == true)
    }

    @Test func outOfOrderChainIsAWarningButTrusted() async throws {
        let root = try pki.ca()
        let inter = try pki.ca("Test Intermediate", issuer: root)
        let inter2 = try pki.ca("Test Intermediate 2", issuer: inter)
        let leaf = try pki.leaf(["mx.good.test"], issuer: inter2)
        let f = await run([leaf, inter, inter2], roots: [root])
        #expect(f["certificate.chain-order"]?.severity == .warning)
        #expect(f["certificate.chain-complete"]?.severity == .ok)
        #expect(f["certificate.trust"]?.severity == .ok)
    }

    @Test func selfSignedIsNamedAndUntrusted() async throws {
        let root = try pki.ca()
        let leaf = try pki.leaf(["mx.good.test"], issuer: nil)
        let f = await run([leaf], roots: [root])
        #expect(f["certificate.self-signed"]?.severity == .failure)
        #expect(f["certificate.chain-complete"]?.severity == .ok)
        #expect(f["certificate.trust"]?.severity == .failure)
        #expect(f["certificate.trust"]?.summary.contains("self-signed") == true)
    }

    @Test func selfSignedInTheCAFileIsTrusted() async throws {
        let leaf = try pki.leaf(["mx.good.test"], issuer: nil)
        let f = await run([leaf], roots: [leaf])
        #expect(f["certificate.trust"]?.severity == .ok, "\(f["certificate.trust"]?.detail ?? "")")
        #expect(f["certificate.self-signed"]?.severity == .info)
    }

    @Test func untrustedRootIsNamed() async throws {
        let root = try pki.ca()
        let other = try pki.ca("Other Root")
        let leaf = try pki.leaf(["mx.good.test"], issuer: root)
        let f = await run([leaf, root], roots: [other])
        #expect(f["certificate.trust"]?.severity == .failure)
        #expect(f["certificate.trust"]?.summary.contains("Test Root CA") == true)
    }

    @Test(arguments: [
        (-5.0, CheckSeverity.failure, "expired"),
        (10.0, .warning, "expires in"),
        (29.5, .warning, "expires in"),
        (31.0, .ok, "valid until"),
    ])
    func expiry(daysLeft: Double, severity: CheckSeverity, words: String) async throws {
        let root = try pki.ca()
        let leaf = try pki.leaf(
            ["mx.good.test"], issuer: root, notBefore: pki.now - 100 * TestPKI.day,
            notAfter: pki.now + daysLeft * TestPKI.day)
        let f = await run([leaf], roots: [root])
        #expect(f["certificate.expiry"]?.severity == severity)
        #expect(f["certificate.expiry"]?.summary.contains(words) == true)
        // Expiry is its own finding: an expired certificate from a good CA is still trusted.
        #expect(f["certificate.trust"]?.severity == .ok)
    }

    @Test func notYetValidIsAFailure() async throws {
        let root = try pki.ca()
        let leaf = try pki.leaf(["mx.good.test"], issuer: root, notBefore: pki.now + TestPKI.day)
        let f = await run([leaf], roots: [root])
        #expect(f["certificate.expiry"]?.severity == .failure)
        #expect(f["certificate.expiry"]?.summary.contains("not valid before") == true)
    }

    @Test func expiredIntermediateIsNamed() async throws {
        let root = try pki.ca()
        let interKey = P256.Signing.PrivateKey()
        let interName = try pki.name("Old Intermediate")
        let interCert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(interKey.publicKey),
            notValidBefore: pki.now - 100 * TestPKI.day, notValidAfter: pki.now - TestPKI.day,
            issuer: root.certificate.subject, subject: interName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(root.key))
        let inter = TestPKI.Issued(certificate: interCert, key: interKey)
        let leaf = try pki.leaf(["mx.good.test"], issuer: inter)
        let f = await run([leaf, inter], roots: [root])
        #expect(f["certificate.chain-expiry"]?.severity == .failure)
        #expect(f["certificate.expiry"]?.severity == .ok)
    }

    @Test(arguments: [
        ("mx.good.test", "mx.good.test", true),
        ("MX.Good.Test.", "mx.good.test", true),
        ("*.good.test", "mx.good.test", true),
        ("*.good.test", "a.mx.good.test", false),
        ("*.good.test", "good.test", false),
        ("*.test", "good.test", false),
        ("m*.good.test", "mx.good.test", false),
        ("mx.*.test", "mx.good.test", false),
        ("mx.good.test", "mx.bad.test", false),
        ("", "mx.good.test", false),
    ])
    func nameMatching(pattern: String, host: String, matches: Bool) {
        #expect(CertificateCheck.nameMatches(pattern: pattern, host: host) == matches)
    }

    @Test func wrongNameIsAFailureThatListsTheNames() async throws {
        let root = try pki.ca()
        let leaf = try pki.leaf(["other.test", "*.else.test"], issuer: root)
        let f = await run([leaf], roots: [root], host: "mx.good.test")
        #expect(f["certificate.name"]?.severity == .failure)
        #expect(f["certificate.name"]?.detail?.contains("other.test") == true)
    }

    @Test func addressIsMatchedAgainstIPSANsOnly() async throws {
        let root = try pki.ca()
        let withIP = try pki.leaf(["mx.good.test"], issuer: root, ips: [[127, 0, 0, 1]])
        #expect((await run([withIP], roots: [root], host: "127.0.0.1"))["certificate.name"]?.severity == .ok)
        let without = try pki.leaf(["mx.good.test"], issuer: root)
        #expect((await run([without], roots: [root], host: "127.0.0.1"))["certificate.name"]?.severity == .info)
    }

    @Test func noCertificateIsAFailure() async {
        let check = CertificateCheck(trustRoots: [], now: Date())
        let findings = await check.findings(chainDER: [], host: "mx.good.test", subject: "test")
        #expect(findings.map(\.check) == ["certificate.presented"])
    }

    @Test func pemBundleIsSplit() throws {
        let a = try pki.ca("A")
        let b = try pki.ca("B")
        let pem = try [a, b].map { try $0.certificate.serializeAsPEM().pemString }.joined(separator: "\n")
        let parsed = CertificateCheck.certificates(inPEM: "junk\n" + pem + "\ntrailer")
        #expect(parsed == [a.certificate, b.certificate])
    }

    /// RSA key sizes and SHA-1 signatures, from certificates made by `openssl` (swift-crypto signs
    /// neither SHA-1 nor with short RSA keys).
    @Test(arguments: [
        (["-newkey", "rsa:1024", "-sha256"], "certificate.key", CheckSeverity.warning, "RSA 1024-bit"),
        (["-newkey", "rsa:2048", "-sha256"], "certificate.key", .ok, "RSA 2048-bit"),
        (["-newkey", "rsa:2048", "-sha1"], "certificate.signature", .failure, "broken hash"),
        (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha384"], "certificate.key", .ok, "P-384"),
    ])
    func opensslMadeCertificates(args: [String], check: String, severity: CheckSeverity, words: String) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mf-cert-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl"), "openssl is needed")
        p.arguments =
            [
                "req", "-x509", "-nodes", "-days", "90", "-subj", "/CN=mx.good.test", "-addext",
                "subjectAltName=DNS:mx.good.test", "-keyout", dir.appendingPathComponent("k.pem").path,
                "-outform", "DER", "-out", dir.appendingPathComponent("c.der").path,
            ] + args
        p.standardError = FileHandle.nullDevice
        p.environment = ["OPENSSL_CONF": "/dev/null"]
        // Waited for without blocking a thread of the cooperative pool (two threads on this machine:
        // a blocked one starves every other test's async work, such as the DNS fake servers).
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            p.terminationHandler = { _ in c.resume() }
            do { try p.run() } catch { c.resume(throwing: error) }
        }
        try #require(p.terminationStatus == 0)
        // Read as bytes: swift-certificates refuses RSA keys under 2048 bits, the check must not.
        let der = [UInt8](try Data(contentsOf: dir.appendingPathComponent("c.der")))
        let checker = CertificateCheck(trustRoots: [], now: Date())
        let findings = await checker.findings(chainDER: [der], host: "mx.good.test", subject: "t")
        let f = try #require(findings.first { $0.check == check })
        #expect(f.severity == severity)
        #expect(f.summary.contains(words))
    }
}
