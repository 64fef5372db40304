import Foundation

/// A DKIM key record (RFC 6376 §3.6.1; Ed25519 from RFC 8463) parsed to its key type and size.
public struct DKIMKeyRecord: Sendable, Hashable {
    public enum Key: Sendable, Hashable {
        case rsa(bits: Int)
        case ed25519
        /// `p=` empty: the key was revoked (RFC 6376 §3.6.1).
        case revoked
    }

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case tags(TagList.ParseError)
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
    /// `t=y`: the domain is testing DKIM (RFC 6376 §3.6.1).
    public var testing: Bool

    public init(parsing text: String) throws(ParseError) {
        let list: TagList
        do {
            list = try TagList(parsing: text)
        } catch {
            throw .tags(error)
        }
        if let v = list["v"] {
            guard v == "DKIM1", list.tags.first?.name == "v" else { throw .badVersion(v) }
        }
        guard let p = list["p"] else { throw .missingKey }
        testing = (list["t"] ?? "").split(separator: ":").contains { $0.trimmingWhitespace == "y" }
        let base64 = p.filter { !$0.isWhitespace }
        if base64.isEmpty {
            key = .revoked
            return
        }
        guard let data = Data(base64Encoded: base64) else { throw .badKeyData("not valid base64") }
        let keyType = (list["k"] ?? "rsa").lowercased()
        switch keyType {
        case "rsa":
            do {
                key = .rsa(bits: try DERReader.rsaModulusBits(Array(data)))
            } catch {
                throw .badKeyData("not a DER RSA public key")
            }
        case "ed25519":
            // RFC 8463 §4: the raw 32-byte public key, base64.
            guard data.count == 32 else { throw .badKeyData("an Ed25519 key is 32 bytes, this is \(data.count)") }
            key = .ed25519
        default:
            throw .unknownKeyType(keyType)
        }
    }
}
