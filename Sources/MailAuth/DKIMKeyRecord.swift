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
            guard let bits = DKIMDER.rsaModulusBits(publicKeyData) else {
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

/// Just enough DER (ITU-T X.690) to find an RSA key's modulus size, given as SubjectPublicKeyInfo
/// (RFC 5280 §4.1.2.7) or a bare RSAPublicKey (RFC 8017 §A.1.1); DKIM records carry either.
enum DKIMDER {
    /// (tag, contents range, end) of the element at `index`; nil when malformed.
    static func element(_ der: [UInt8], at index: Int, in end: Int) -> (tag: UInt8, contents: Range<Int>)? {
        guard end - index >= 2 else { return nil }
        let tag = der[index]
        var i = index + 1
        let first = der[i]
        i += 1
        var length = 0
        if first < 0x80 {
            length = Int(first)
        } else {
            let count = Int(first & 0x7f)
            guard (1...4).contains(count), end - i >= count else { return nil }
            for _ in 0..<count {
                length = length << 8 | Int(der[i])
                i += 1
            }
        }
        guard end - i >= length else { return nil }
        return (tag, i..<(i + length))
    }

    /// The modulus size of an RSA private key, PKCS#8 (RFC 5208 §5) or PKCS#1 (RFC 8017 §A.1.2).
    static func rsaPrivateModulusBits(_ der: [UInt8]) -> Int? {
        guard let top = element(der, at: 0, in: der.count), top.tag == 0x30,
            let version = element(der, at: top.contents.lowerBound, in: top.contents.upperBound), version.tag == 0x02,
            let second = element(der, at: version.contents.upperBound, in: top.contents.upperBound)
        else { return nil }
        let modulus: Range<Int>
        if second.tag == 0x02 {
            modulus = second.contents
        } else if second.tag == 0x30,
            let octets = element(der, at: second.contents.upperBound, in: top.contents.upperBound), octets.tag == 0x04,
            let inner = element(der, at: octets.contents.lowerBound, in: octets.contents.upperBound), inner.tag == 0x30,
            let v = element(der, at: inner.contents.lowerBound, in: inner.contents.upperBound), v.tag == 0x02,
            let n = element(der, at: v.contents.upperBound, in: inner.contents.upperBound), n.tag == 0x02
        {
            modulus = n.contents
        } else {
            return nil
        }
        return bits(der, modulus)
    }

    static func bits(_ der: [UInt8], _ range: Range<Int>) -> Int {
        var modulus = range
        while !modulus.isEmpty, der[modulus.lowerBound] == 0 { modulus = (modulus.lowerBound + 1)..<modulus.upperBound }
        guard let lead = modulus.first.map({ der[$0] }) else { return 0 }
        return (modulus.count - 1) * 8 + (8 - lead.leadingZeroBitCount)
    }

    static func rsaModulusBits(_ der: [UInt8]) -> Int? {
        guard let top = element(der, at: 0, in: der.count), top.tag == 0x30,
            let first = element(der, at: top.contents.lowerBound, in: top.contents.upperBound)
        else { return nil }
        let modulus: Range<Int>
        if first.tag == 0x30 {
            // SubjectPublicKeyInfo: AlgorithmIdentifier, then a BIT STRING holding RSAPublicKey.
            guard let bits = element(der, at: first.contents.upperBound, in: top.contents.upperBound),
                bits.tag == 0x03, !bits.contents.isEmpty, der[bits.contents.lowerBound] == 0,
                let key = element(der, at: bits.contents.lowerBound + 1, in: bits.contents.upperBound), key.tag == 0x30,
                let n = element(der, at: key.contents.lowerBound, in: key.contents.upperBound), n.tag == 0x02
            else { return nil }
            modulus = n.contents
        } else if first.tag == 0x02 {
            modulus = first.contents
        } else {
            return nil
        }
        return bits(der, modulus)
    }
}
