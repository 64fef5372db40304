import MailAuth

/// The DKIM key a domain publishes for one selector (RFC 6376 §3.6.2.1: `<selector>._domainkey.<domain>`):
/// present, parseable, not revoked, strong enough (RFC 8301 §3.2: RSA keys of at least 1024 bits, 2048
/// recommended). The record is read by `MailAuth.DKIMKeyRecord`, the parser the DKIM verifier uses.
public struct DKIMCheck: Sendable {
    /// Below this an RSA key is a failure (RFC 8301 §3.2: verifiers MUST NOT accept shorter keys).
    public static let minimumRSABits = 1024
    /// Below this an RSA key is a warning (RFC 8301 §3.2: signers SHOULD use at least 2048).
    public static let recommendedRSABits = 2048

    let dns: any DiagnosticsDNS

    public init(dns: any DiagnosticsDNS) { self.dns = dns }

    public func run(domain: String, selector: String) async -> [CheckFinding] {
        let name = "\(selector)._domainkey.\(domain)"
        func finding(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil)
            -> CheckFinding
        {
            CheckFinding(
                category: .dkim, subject: name, check: check, severity: severity, summary: summary, detail: detail)
        }
        let texts: [String]
        switch await dns.txt(name) {
        case .failed(let error): return [finding("dkim.dns", .warning, "DKIM key lookup failed: \(error)")]
        case .none: return [finding("dkim.record", .failure, "No DKIM key for selector '\(selector)'")]
        case .found(let found, _): texts = found
        }
        guard texts.count == 1, let text = texts.first else {
            return [
                finding(
                    "dkim.multiple", .failure, "\(texts.count) TXT records at \(name): verifiers may pick either",
                    texts.joined(separator: "\n"))
            ]
        }
        let record: DKIMKeyRecord
        do {
            record = try DKIMKeyRecord(parsing: text)
        } catch {
            return [finding("dkim.syntax", .failure, "DKIM key record does not parse: \(error)", text)]
        }
        var out = [finding("dkim.record", .ok, "DKIM key record found", text)]
        switch record.key {
        case .revoked:
            out.append(finding("dkim.key", .failure, "The key is revoked (empty p=): signatures with it fail"))
        case .ed25519:
            out.append(finding("dkim.key", .ok, "Ed25519 key (RFC 8463)"))
        case .rsa(let bits) where bits < Self.minimumRSABits:
            out.append(finding("dkim.key", .failure, "RSA key of \(bits) bits: verifiers reject keys below 1024 bits"))
        case .rsa(let bits) where bits < Self.recommendedRSABits:
            out.append(finding("dkim.key", .warning, "RSA key of \(bits) bits: use at least 2048 (RFC 8301 §3.2)"))
        case .rsa(let bits):
            out.append(finding("dkim.key", .ok, "RSA key of \(bits) bits"))
        }
        if record.testing {
            out.append(finding("dkim.testing", .info, "t=y: the domain is testing DKIM; verifiers may ignore failures"))
        }
        return out
    }
}
