import Foundation

/// A DKIM key record, the TXT record at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1; Ed25519
/// from RFC 8463 §4): the one parser for it, used by the verifier and by `mailflow check`.
///
/// ```swift
/// let record = try DKIMKeyRecord(parsing: "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
/// record.key  // .ed25519
/// ```
public struct DKIMKeyRecord: Sendable, Hashable {
    public enum Key: Sendable, Hashable {
        /// An RSA key; `bits` is its modulus size.
        case rsa(bits: Int)
        /// An Ed25519 key (RFC 8463 §4: the raw 32-byte public key).
        case ed25519
        /// `p=` empty: the key was revoked (§3.6.1).
        case revoked
    }

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case tags(DKIMTagList.ParseError)
        case badVersion(String)
        case missingKey
        case unknownKeyType(String)
        case badKeyData(String)

        public var description: String {
            switch self {
            case .tags(let e): "\(e)"
            case .badVersion(let v): "v=\(v): a DKIM key record has v=DKIM1, first (RFC 6376 §3.6.1)"
            case .missingKey: "no p= tag (RFC 6376 §3.6.1: required)"
            case .unknownKeyType(let k): "k=\(k): not rsa or ed25519"
            case .badKeyData(let reason): "p=: \(reason)"
            }
        }
    }

    public var key: Key
    /// The public key bytes from `p=` (DER for RSA, 32 raw bytes for Ed25519; empty when revoked).
    public var publicKeyData: [UInt8]
    /// `h=`: the hash algorithms the key may be used with; nil means any (§3.6.1).
    public var hashAlgorithms: [String]?
    /// `s=`: the service types; the key serves mail when this holds `*` or `email`.
    public var serviceTypes: [String]
    /// `t=y`: the domain is testing DKIM (§3.6.1).
    public var testing: Bool
    /// `t=s`: the `i=` domain must equal `d=`, not be a subdomain of it (§3.6.1).
    public var strictIdentity: Bool

    /// True when the key may sign mail (`s=` holds `*` or `email`).
    public var servesEmail: Bool { serviceTypes.contains("*") || serviceTypes.contains("email") }

    public init(parsing text: String) throws(ParseError) {
        let list: DKIMTagList
        do {
            list = try DKIMTagList(parsing: text)
        } catch {
            throw .tags(error)
        }
        if let v = list["v"] {
            guard v == "DKIM1", list.tags.first?.name == "v" else { throw .badVersion(v) }
        }
        guard let p = list["p"] else { throw .missingKey }
        let flags = (list["t"] ?? "").colonList
        testing = flags.contains("y")
        strictIdentity = flags.contains("s")
        hashAlgorithms = list["h"].map { $0.colonList.map { $0.lowercased() } }
        serviceTypes = (list["s"] ?? "*").colonList.map { $0.lowercased() }
        let base64 = p.removingWhitespace
        if base64.isEmpty {
            key = .revoked
            publicKeyData = []
            return
        }
        guard let data = Data(base64Encoded: base64) else { throw .badKeyData("not valid base64") }
        publicKeyData = Array(data)
        let keyType = (list["k"] ?? "rsa").lowercased()
        switch keyType {
        case "rsa":
            guard let bits = try? DERReader.rsaModulusBits(publicKeyData) else {
                throw .badKeyData("not a DER RSA public key")
            }
            key = .rsa(bits: bits)
        case "ed25519":
            guard data.count == 32 else { throw .badKeyData("an Ed25519 key is 32 bytes, this is \(data.count)") }
            key = .ed25519
        default:
            throw .unknownKeyType(keyType)
        }
    }
}
