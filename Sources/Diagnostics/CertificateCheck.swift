import Foundation
import MailAuth
@_spi(DisableValidityCheck) import X509

/// Judges the certificate chain a mail server presented after STARTTLS: order and completeness
/// (RFC 8446 §4.4.2, RFC 5246 §7.4.2: each certificate certifies the one before it), trust against
/// the system roots or a given CA file (RFC 5280 path validation by swift-certificates' `Verifier`,
/// with expiry judged apart so an expired certificate is named as expired, not as untrusted), expiry
/// (failure when expired or not yet valid, warning within 30 days), the name (RFC 6125 §6.4: SAN
/// dNSName, a wildcard only as the whole left-most label; an address against SAN iPAddress), key type
/// and size, and signature algorithm (SHA-1 and MD5 are failures).
///
/// Time is given (`now`), never read, so tests can place certificates anywhere in time.
///
/// ```swift
/// let check = CertificateCheck(trustRoots: try CertificateCheck.trustRoots(caFile: nil), now: Date())
/// let findings = await check.findings(chainDER: result.presentedChainDER, host: "mx1.example.org",
///                                      subject: "mx1.example.org [192.0.2.1]:25")
/// ```
public struct CertificateCheck: Sendable {
    public var trustRoots: [Certificate]
    public var now: Date
    /// Where the roots came from, for the findings' text.
    public var trustSource: String

    /// A certificate expiring sooner than this earns a warning.
    public static let expiryWarning: TimeInterval = 30 * 24 * 3600
    /// The system trust store on Debian and its relatives.
    public static let systemRootsFile = "/etc/ssl/certs/ca-certificates.crt"

    public init(trustRoots: [Certificate], now: Date, trustSource: String = "the system roots") {
        self.trustRoots = trustRoots
        self.now = now
        self.trustSource = trustSource
    }

    /// The certificates in a PEM file; unparseable blocks are skipped.
    public static func certificates(inPEMFile path: String) throws -> [Certificate] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return certificates(inPEM: text)
    }

    public static func certificates(inPEM text: String) -> [Certificate] {
        let begin = "-----BEGIN CERTIFICATE-----"
        let end = "-----END CERTIFICATE-----"
        var out: [Certificate] = []
        var rest = text[...]
        while let b = rest.range(of: begin), let e = rest.range(of: end, range: b.upperBound..<rest.endIndex) {
            if let c = try? Certificate(pemEncoded: String(rest[b.lowerBound..<e.upperBound])) { out.append(c) }
            rest = rest[e.upperBound...]
        }
        return out
    }

    /// The system roots, read once per process.
    static let systemRoots: [Certificate] = (try? certificates(inPEMFile: systemRootsFile)) ?? []

    /// The checker for `caFile` (its certificates are the only anchors) or the system roots.
    public static func forOptions(caFile: String?, now: Date) -> Result<CertificateCheck, TrustRootsError> {
        if let caFile {
            do {
                let roots = try certificates(inPEMFile: caFile)
                guard !roots.isEmpty else {
                    return .failure(TrustRootsError(description: "\(caFile) holds no PEM certificate"))
                }
                return .success(CertificateCheck(trustRoots: roots, now: now, trustSource: caFile))
            } catch {
                return .failure(TrustRootsError(description: "cannot read \(caFile): \(error.localizedDescription)"))
            }
        }
        guard !systemRoots.isEmpty else {
            return .failure(TrustRootsError(description: "no system roots in \(systemRootsFile)"))
        }
        return .success(CertificateCheck(trustRoots: systemRoots, now: now, trustSource: "the system roots"))
    }

    // MARK: findings

    public func findings(chainDER: [[UInt8]], host: String, subject: String) async -> [CheckFinding] {
        func finding(
            _ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil
        ) -> CheckFinding {
            CheckFinding(
                category: .certificate, subject: subject, check: check, severity: severity, summary: summary,
                detail: detail)
        }
        guard !chainDER.isEmpty else {
            return [finding("certificate.presented", .failure, "the server presented no certificate")]
        }
        var out: [CheckFinding] = []
        var chain: [Certificate] = []
        for (i, der) in chainDER.enumerated() {
            do {
                chain.append(try Certificate(derEncoded: der))
            } catch {
                out.append(
                    finding(
                        "certificate.parse", .failure, "certificate \(i + 1) of \(chainDER.count) cannot be parsed",
                        "\(error)"))
            }
        }
        // Key and signature are read from the DER itself, so even an unparseable leaf is judged.
        out.append(keyFinding(DERCertificateFacts(der: chainDER[0]), finding))
        out += signatureFindings(chainDER, finding)
        guard chain.count == chainDER.count, let leaf = chain.first else { return out }

        out.append(nameFinding(leaf, host: host, finding))
        let path = walk(chain)
        out += pathFindings(path, chain: chain, finding)
        out.append(await trustFinding(path, chain: chain, finding))
        out += expiryFindings(path, finding)
        return out
    }

    // MARK: path

    /// The chain the presented certificates form from the leaf, walked by issuer and signature.
    struct Path {
        enum End: Equatable {
            /// The last certificate is issued by (or is) a trust anchor.
            case anchored(anchor: Certificate)
            /// The last certificate signs itself and is no trust anchor.
            case selfSigned
            /// The issuer of the last certificate is neither presented nor a trust anchor.
            case missingIssuer
        }
        var certificates: [Certificate]
        var end: End
    }

    static func issued(_ child: Certificate, by parent: Certificate) -> Bool {
        child.issuer == parent.subject && parent.publicKey.isValidSignature(child.signature, for: child)
    }

    static func isSelfSigned(_ c: Certificate) -> Bool { issued(c, by: c) }

    func walk(_ chain: [Certificate]) -> Path {
        var path = [chain[0]]
        var current = chain[0]
        while path.count <= chain.count {
            if trustRoots.contains(where: { $0.subject == current.subject && $0.publicKey == current.publicKey }) {
                return Path(certificates: path, end: .anchored(anchor: current))
            }
            if let anchor = trustRoots.first(where: { Self.issued(current, by: $0) }) {
                return Path(certificates: path, end: .anchored(anchor: anchor))
            }
            if Self.isSelfSigned(current) { return Path(certificates: path, end: .selfSigned) }
            guard let next = chain.first(where: { c in Self.issued(current, by: c) && !path.contains(c) }) else {
                break
            }
            path.append(next)
            current = next
        }
        return Path(certificates: path, end: .missingIssuer)
    }

    private func pathFindings(
        _ path: Path, chain: [Certificate], _ finding: (String, CheckSeverity, String, String?) -> CheckFinding
    ) -> [CheckFinding] {
        var out: [CheckFinding] = []
        // Order: each presented certificate is certified by the next one (RFC 5246 §7.4.2).
        let inOrder = zip(chain, chain.dropFirst()).allSatisfy { Self.issued($0, by: $1) }
        let unused = chain.filter { c in !path.certificates.contains(c) }
        if !inOrder, chain.count > 1 {
            let order = chain.map { "\($0.subject)" }.joined(separator: " | ")
            out.append(
                finding(
                    "certificate.chain-order", .warning,
                    "the presented certificates are not in order (each should certify the one before it)",
                    "presented: " + order))
        } else {
            out.append(
                finding("certificate.chain-order", .ok, "\(chain.count) certificate(s) presented, in order", nil))
        }
        if !unused.isEmpty {
            out.append(
                finding(
                    "certificate.chain-extra", .warning,
                    "\(unused.count) presented certificate(s) are not part of the leaf's chain",
                    unused.map { "\($0.subject)" }.joined(separator: " | ")))
        }
        switch path.end {
        case .anchored(let anchor):
            out.append(
                finding(
                    "certificate.chain-complete", .ok, "complete: chains to \(anchor.subject)", nil))
        case .selfSigned:
            if path.certificates.count == 1 {
                // Nothing is missing from a chain of one self-signed certificate; its problem is
                // trust, named by its own finding. Every presented chain gets a chain-complete finding.
                out.append(
                    finding(
                        "certificate.chain-complete", .ok, "complete: the leaf is self-signed (its own root)", nil))
                out.append(
                    finding(
                        "certificate.self-signed", .failure,
                        "self-signed certificate (\(path.certificates[0].subject)), not trusted by \(trustSource)", nil)
                )
            } else {
                out.append(
                    finding(
                        "certificate.chain-complete", .ok,
                        "complete up to the self-signed \(path.certificates.last!.subject)", nil))
            }
        case .missingIssuer:
            let last = path.certificates.last!
            out.append(
                finding(
                    "certificate.chain-complete", .failure,
                    "incomplete chain: the issuer of \(last.subject) (\(last.issuer)) was not presented and is not "
                        + "a trust anchor",
                    "the server must send its intermediate certificates after the leaf"))
        }
        if case .anchored(let anchor) = path.end, path.certificates.count == 1,
            anchor.subject == path.certificates[0].subject, Self.isSelfSigned(path.certificates[0])
        {
            out.append(
                finding(
                    "certificate.self-signed", .info,
                    "self-signed certificate, trusted because it is in \(trustSource)", nil))
        }
        return out
    }

    private func trustFinding(
        _ path: Path, chain: [Certificate], _ finding: (String, CheckSeverity, String, String?) -> CheckFinding
    ) async -> CheckFinding {
        // A certificate listed as an anchor itself is trusted as it stands (pinned, as OpenSSL's
        // verifier does), whatever its basicConstraints say.
        if trustRoots.contains(chain[0]) {
            return finding("certificate.trust", .ok, "trusted: the certificate itself is in \(trustSource)", nil)
        }
        // RFC 5280 path validation without the time checks, which `expiryFindings` reports on their own.
        var verifier = Verifier(rootCertificates: CertificateStore(trustRoots)) {
            RFC5280Policy.withValidityCheckDisabled()
        }
        let result = await verifier.validate(leaf: chain[0], intermediates: CertificateStore(chain.dropFirst()))
        switch result {
        case .validCertificate(let validated):
            let root = validated.last.map { "\($0.subject)" } ?? "?"
            return finding("certificate.trust", .ok, "trusted: chains to \(root) in \(trustSource)", nil)
        case .couldNotValidate(let failures):
            let why: String
            switch path.end {
            case .selfSigned where path.certificates.count == 1: why = "self-signed"
            case .selfSigned: why = "its root \(path.certificates.last!.subject) is not in \(trustSource)"
            case .missingIssuer: why = "the chain is incomplete"
            case .anchored: why = "path validation failed"
            }
            let reasons = failures.prefix(3).map { "\($0.policyFailureReason)" }.joined(separator: "; ")
            return finding(
                "certificate.trust", .failure, "not trusted by \(trustSource): \(why)", reasons.isEmpty ? nil : reasons)
        }
    }

    // MARK: time

    private func expiryFindings(
        _ path: Path, _ finding: (String, CheckSeverity, String, String?) -> CheckFinding
    ) -> [CheckFinding] {
        var out: [CheckFinding] = []
        for (i, c) in path.certificates.enumerated() {
            let isLeaf = i == 0
            if !isLeaf, case .anchored(let anchor) = path.end, anchor == c { continue }
            let check = isLeaf ? "certificate.expiry" : "certificate.chain-expiry"
            let what = isLeaf ? "the certificate" : "intermediate \(c.subject)"
            let left = c.notValidAfter.timeIntervalSince(now)
            let days = Int((left / 86400).rounded(.down))
            let date = Self.day(c.notValidAfter)
            if now < c.notValidBefore {
                out.append(finding(check, .failure, "\(what) is not valid before \(Self.day(c.notValidBefore))", nil))
            } else if left < 0 {
                out.append(finding(check, .failure, "\(what) expired on \(date)", nil))
            } else if left < Self.expiryWarning {
                out.append(finding(check, .warning, "\(what) expires in \(days) days (\(date))", nil))
            } else if isLeaf {
                out.append(finding(check, .ok, "valid until \(date) (\(days) days)", nil))
            }
        }
        return out
    }

    static func day(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withFullDate]
        return f.string(from: d)
    }

    // MARK: name

    private func nameFinding(
        _ leaf: Certificate, host: String, _ finding: (String, CheckSeverity, String, String?) -> CheckFinding
    ) -> CheckFinding {
        let sans = (try? leaf.extensions.subjectAlternativeNames) ?? nil
        var dnsNames: [String] = []
        var ipAddresses: [[UInt8]] = []
        for name in sans ?? SubjectAlternativeNames() {
            switch name {
            case .dnsName(let n): dnsNames.append(n)
            case .ipAddress(let a): ipAddresses.append(Array(a.bytes))
            default: break
            }
        }
        let names = (dnsNames + ipAddresses.map(Self.addressText)).joined(separator: ", ")
        if let address = Self.addressBytes(host) {
            if ipAddresses.contains(address) {
                return finding("certificate.name", .ok, "the certificate names \(host)", nil)
            }
            return finding(
                "certificate.name", .info, "not checked: probed by address, and the certificate names no address",
                names.isEmpty ? "no subjectAltName" : "names: " + names)
        }
        if let match = dnsNames.first(where: { Self.nameMatches(pattern: $0, host: host) }) {
            return finding("certificate.name", .ok, "the certificate names \(host) (\(match))", nil)
        }
        return finding(
            "certificate.name", .failure, "the certificate does not name \(host)",
            names.isEmpty
                ? "no subjectAltName dNSName (the subject's CN is not used, RFC 6125 §6.4.4): \(leaf.subject)"
                : "names: " + names)
    }

    /// RFC 6125 §6.4.1 and §6.4.3: case-insensitive, a trailing dot ignored, `*` only as the whole
    /// left-most label of a name with at least two more labels, matching exactly one label.
    public static func nameMatches(pattern: String, host: String) -> Bool {
        func normal(_ s: String) -> [Substring] {
            let t = s.lowercased()
            return (t.hasSuffix(".") ? String(t.dropLast()) : t).split(separator: ".", omittingEmptySubsequences: false)
        }
        let p = normal(pattern)
        let h = normal(host)
        guard p.count == h.count, !h.contains(where: \.isEmpty) else { return false }
        if p.first == "*" {
            guard p.count >= 3, !p.dropFirst().contains(where: { $0.contains("*") }) else { return false }
            return Array(p.dropFirst()) == Array(h.dropFirst())
        }
        return p == h
    }

    static func addressBytes(_ s: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func addressText(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        return stride(from: 0, to: bytes.count, by: 2).map {
            String(UInt16(bytes[$0]) << 8 | UInt16(bytes[min($0 + 1, bytes.count - 1)]), radix: 16)
        }.joined(separator: ":")
    }

    // MARK: key and signature

    private func keyFinding(
        _ facts: DERCertificateFacts?, _ finding: (String, CheckSeverity, String, String?) -> CheckFinding
    ) -> CheckFinding {
        guard let facts else {
            return finding("certificate.key", .failure, "the certificate's key cannot be read", nil)
        }
        switch facts.key {
        case .rsa(let bits) where bits < 1024:
            return finding("certificate.key", .failure, "RSA \(bits)-bit key: far too short (at least 2048)", nil)
        case .rsa(let bits) where bits < 2048:
            return finding("certificate.key", .warning, "RSA \(bits)-bit key: too short (at least 2048)", nil)
        case .rsa(let bits):
            return finding("certificate.key", .ok, "RSA \(bits)-bit key", nil)
        case .ec(let curve?):
            return finding("certificate.key", .ok, "EC key on \(curve)", nil)
        case .ec(nil):
            return finding("certificate.key", .warning, "EC key on a curve other than P-256, P-384 or P-521", nil)
        case .ed25519:
            return finding("certificate.key", .ok, "Ed25519 key", nil)
        case .other(let oid):
            return finding("certificate.key", .warning, "key of an unusual type (\(oid))", nil)
        }
    }

    private func signatureFindings(
        _ chainDER: [[UInt8]], _ finding: (String, CheckSeverity, String, String?) -> CheckFinding
    ) -> [CheckFinding] {
        var weak: [String] = []
        var leafName = "?"
        for (i, der) in chainDER.enumerated() {
            guard let facts = DERCertificateFacts(der: der) else { continue }
            // A self-signed root's own signature is not checked by anyone; skip it.
            if i > 0, i == chainDER.count - 1, facts.isSelfIssued { continue }
            if i == 0 { leafName = facts.signatureName }
            if facts.signatureIsWeak { weak.append("certificate \(i + 1): \(facts.signatureName)") }
        }
        if !weak.isEmpty {
            return [
                finding(
                    "certificate.signature", .failure, "signed with a broken hash (SHA-1 or MD5)",
                    weak.joined(separator: "; "))
            ]
        }
        return [finding("certificate.signature", .ok, "signature: \(leafName)", nil)]
    }
}

/// Why no trust anchors could be loaded.
public struct TrustRootsError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// What the probe reads straight from a certificate's DER (RFC 5280 §4.1): the signature algorithm
/// and the subject public key, so that a certificate swift-certificates will not parse (an RSA key
/// under 1024 bits, say) is still judged on both.
struct DERCertificateFacts: Sendable, Equatable {
    enum Key: Sendable, Equatable {
        case rsa(bits: Int)
        /// The named curve, nil for another curve.
        case ec(String?)
        case ed25519
        case other(String)
    }
    var signatureOID: [UInt8]
    var key: Key
    var isSelfIssued: Bool

    init?(der: [UInt8]) {
        var top = DERReader(der[...])
        guard let cert = top.read(tag: 0x30) else { return nil }
        var certFields = DERReader(cert)
        guard let tbs = certFields.read(tag: 0x30), let sigAlg = certFields.read(tag: 0x30) else { return nil }
        var sigAlgFields = DERReader(sigAlg)
        guard let oid = sigAlgFields.read(tag: 0x06) else { return nil }
        signatureOID = Array(oid)
        var t = DERReader(tbs)
        if t.peekTag == 0xA0 { _ = t.read(tag: 0xA0) }
        guard t.read(tag: 0x02) != nil, t.read(tag: 0x30) != nil, let issuer = t.read(tag: 0x30),
            t.read(tag: 0x30) != nil, let subject = t.read(tag: 0x30), let spki = t.read(tag: 0x30)
        else { return nil }
        isSelfIssued = Array(issuer) == Array(subject)
        var s = DERReader(spki)
        guard let algorithm = s.read(tag: 0x30), let bits = s.read(tag: 0x03) else { return nil }
        var a = DERReader(algorithm)
        guard let keyOID = a.read(tag: 0x06) else { return nil }
        switch Array(keyOID) {
        case [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]:
            var k = DERReader(bits.dropFirst())
            guard let rsa = k.read(tag: 0x30) else { return nil }
            var r = DERReader(rsa)
            guard let modulus = r.read(tag: 0x02) else { return nil }
            let digits = modulus.drop(while: { $0 == 0 })
            let top = digits.first.map { 8 - $0.leadingZeroBitCount } ?? 0
            key = .rsa(bits: max(0, digits.count - 1) * 8 + top)
        case [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]:
            let curve = a.read(tag: 0x06).map(Array.init)
            switch curve {
            case [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]: key = .ec("P-256")
            case [0x2B, 0x81, 0x04, 0x00, 0x22]: key = .ec("P-384")
            case [0x2B, 0x81, 0x04, 0x00, 0x23]: key = .ec("P-521")
            default: key = .ec(nil)
            }
        case [0x2B, 0x65, 0x70]:
            key = .ed25519
        default:
            key = .other(keyOID.map { String($0, radix: 16) }.joined(separator: " "))
        }
    }

    private static let signatureNames: [[UInt8]: (String, Bool)] = [
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x02]: ("md2WithRSAEncryption", true),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x04]: ("md5WithRSAEncryption", true),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x05]: ("sha1WithRSAEncryption", true),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A]: ("RSASSA-PSS", false),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B]: ("sha256WithRSAEncryption", false),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C]: ("sha384WithRSAEncryption", false),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D]: ("sha512WithRSAEncryption", false),
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0E]: ("sha224WithRSAEncryption", false),
        [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01]: ("ecdsa-with-SHA1", true),
        [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]: ("ecdsa-with-SHA256", false),
        [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03]: ("ecdsa-with-SHA384", false),
        [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04]: ("ecdsa-with-SHA512", false),
        [0x2A, 0x86, 0x48, 0xCE, 0x38, 0x04, 0x03]: ("dsa-with-SHA1", true),
        [0x2B, 0x65, 0x70]: ("Ed25519", false),
    ]

    var signatureName: String {
        Self.signatureNames[signatureOID]?.0 ?? "OID "
            + signatureOID.map { String($0, radix: 16) }.joined(separator: " ")
    }

    var signatureIsWeak: Bool { Self.signatureNames[signatureOID]?.1 ?? false }
}
