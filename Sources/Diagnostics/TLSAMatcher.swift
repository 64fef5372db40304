import Crypto
import DNSClient
import MailAuth

/// Matches a presented certificate chain against TLSA records (RFC 6698 §2.1, §4; RFC 7672 §3.1 for SMTP).
///
/// SMTP uses only DANE-TA(2) and DANE-EE(3); PKIX-TA(0) and PKIX-EE(1) are "unusable" there
/// (RFC 7672 §3.1.3). DANE-EE matches the leaf, DANE-TA any certificate of the chain as presented
/// (the server must send its trust anchor, RFC 7672 §3.1.2). Selector 0 hashes the whole certificate,
/// 1 its SubjectPublicKeyInfo, taken as the exact bytes presented; matching type 0 compares them, 1 and
/// 2 their SHA-256 and SHA-512.
public enum TLSAMatcher {
    public enum Usability: Sendable, Hashable {
        case usable
        case unusable(String)
    }

    public static func usability(_ record: TLSARecord) -> Usability {
        switch record.usage {
        case 2, 3: break
        case 0, 1: return .unusable("usage \(record.usage) (PKIX) is unusable for SMTP (RFC 7672 §3.1.3)")
        default: return .unusable("unknown usage \(record.usage)")
        }
        guard record.selector <= 1 else { return .unusable("unknown selector \(record.selector)") }
        guard record.matchingType <= 2 else { return .unusable("unknown matching type \(record.matchingType)") }
        switch record.matchingType {
        case 1 where record.data.count != 32: return .unusable("a SHA-256 association is 32 bytes")
        case 2 where record.data.count != 64: return .unusable("a SHA-512 association is 64 bytes")
        default: return .usable
        }
    }

    /// The association data `record` would carry for `certificateDER` (nil when the certificate does
    /// not parse far enough to find its public key).
    public static func association(of certificateDER: [UInt8], selector: UInt8, matchingType: UInt8) -> [UInt8]? {
        let selected: [UInt8]
        switch selector {
        case 0: selected = certificateDER
        case 1:
            guard let spki = try? DERReader.subjectPublicKeyInfo(ofCertificate: certificateDER) else { return nil }
            selected = Array(spki)
        default: return nil
        }
        switch matchingType {
        case 0: return selected
        case 1: return Array(SHA256.hash(data: selected))
        case 2: return Array(SHA512.hash(data: selected))
        default: return nil
        }
    }

    /// Whether `record` matches the chain (leaf first); nil when the record is unusable.
    public static func matches(_ record: TLSARecord, chain: [[UInt8]]) -> Bool? {
        guard usability(record) == .usable else { return nil }
        let candidates = record.usage == 3 ? Array(chain.prefix(1)) : chain
        return candidates.contains { der in
            association(of: der, selector: record.selector, matchingType: record.matchingType) == record.data
        }
    }

    /// The record in presentation form, e.g. `3 1 1 ab12…`.
    public static func presentation(_ record: TLSARecord) -> String {
        let hex = record.data.map { byte in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
        return "\(record.usage) \(record.selector) \(record.matchingType) \(hex)"
    }
}
