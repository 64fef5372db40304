import Foundation

/// A parsed DKIM-Signature field value (RFC 6376 §3.5), checked for what §6.1.1 makes a verifier
/// refuse before any key is fetched: `v=1`, a known `a=` (never `rsa-sha1`, RFC 8301 §3.1), the
/// required tags, `h=` naming `from`, `i=` within `d=`, `q=dns/txt`, and `x=` after `t=`.
public struct DKIMSignature: Sendable, Hashable {
    /// At most this many names in `h=`.
    public static let maxSignedHeaders = 128

    public var algorithm: DKIMAlgorithm
    public var headerCanonicalization: DKIMCanonicalization
    public var bodyCanonicalization: DKIMCanonicalization
    /// `d=`, lowercased: the signing domain (SDID), DMARC's `header.d`.
    public var domain: String
    /// `s=`: the selector.
    public var selector: String
    /// `h=`, lowercased, in order (names may repeat).
    public var signedHeaders: [String]
    /// `bh=`, decoded.
    public var bodyHash: [UInt8]
    /// `b=`, decoded.
    public var signature: [UInt8]
    /// `i=` as written, or nil (then it is `@` + `d=`).
    public var identity: String?
    /// `l=`: the number of canonical body octets signed, or nil for the whole body.
    public var bodyLength: Int?
    /// `t=`: when it was signed (seconds since 1970).
    public var timestamp: Int64?
    /// `x=`: when it expires (seconds since 1970).
    public var expiration: Int64?

    /// The tags as parsed, kept for `b=`'s byte range and for reporting.
    public var tags: DKIMTagList

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case tags(DKIMTagList.ParseError)
        case missingTag(String)
        case unsupportedVersion(String)
        case unsupportedAlgorithm(String)
        case rsaSHA1
        case badCanonicalization(String)
        case badBase64(String)
        case badNumber(String)
        case badDomain(String)
        case fromNotSigned
        case tooManySignedHeaders
        case identityOutsideDomain(String)
        case unsupportedQueryMethod(String)
        case expiresBeforeTimestamp

        public var description: String {
            switch self {
            case .tags(let e): "tag list: \(e)"
            case .missingTag(let t): "no \(t)= tag (RFC 6376 §3.5: required)"
            case .unsupportedVersion(let v): "v=\(v): only v=1 is defined"
            case .unsupportedAlgorithm(let a): "a=\(a): not rsa-sha256 or ed25519-sha256"
            case .rsaSHA1: "a=rsa-sha1: verifiers must not accept rsa-sha1 (RFC 8301 §3.1)"
            case .badCanonicalization(let c): "c=\(c): not simple or relaxed"
            case .badBase64(let t): "\(t)= is not base64"
            case .badNumber(let t): "\(t)= is not a number"
            case .badDomain(let t): "\(t)= is not a domain name"
            case .fromNotSigned: "h= does not name From (RFC 6376 §5.4: it must be signed)"
            case .tooManySignedHeaders: "h= names more than \(DKIMSignature.maxSignedHeaders) fields"
            case .identityOutsideDomain(let i): "i=\(i) is not in d= or a subdomain of it"
            case .unsupportedQueryMethod(let q): "q=\(q): only dns/txt is defined"
            case .expiresBeforeTimestamp: "x= is not after t= (RFC 6376 §3.5)"
            }
        }
    }

    /// Parses the field value (the bytes after `DKIM-Signature:`).
    public init(parsing value: [UInt8]) throws(ParseError) {
        let list: DKIMTagList
        do {
            list = try DKIMTagList(parsing: value)
        } catch {
            throw .tags(error)
        }
        try self.init(tags: list)
    }

    public init(tags list: DKIMTagList) throws(ParseError) {
        self.tags = list
        func required(_ name: String) throws(ParseError) -> String {
            guard let v = list[name] else { throw .missingTag(name) }
            return v
        }
        let version = try required("v")
        guard version == "1" else { throw .unsupportedVersion(version) }
        let a = try required("a").lowercased()
        if a == "rsa-sha1" { throw .rsaSHA1 }
        guard let algorithm = DKIMAlgorithm(rawValue: a) else { throw .unsupportedAlgorithm(a) }
        self.algorithm = algorithm
        let c = list["c"] ?? "simple/simple"
        guard let pair = DKIMCanonicalization.pair(c) else { throw .badCanonicalization(c) }
        headerCanonicalization = pair.header
        bodyCanonicalization = pair.body
        domain = try required("d").lowercased()
        guard Self.isDomainName(domain) else { throw .badDomain("d") }
        selector = try required("s").lowercased()
        guard Self.isDomainName(selector) else { throw .badDomain("s") }
        signedHeaders = try required("h").colonList.map { $0.lowercased() }
        guard signedHeaders.count <= Self.maxSignedHeaders else { throw .tooManySignedHeaders }
        guard signedHeaders.contains("from") else { throw .fromNotSigned }
        guard let bh = Data(base64Encoded: try required("bh").removingWhitespace), !bh.isEmpty else {
            throw .badBase64("bh")
        }
        bodyHash = Array(bh)
        guard let b = Data(base64Encoded: try required("b").removingWhitespace), !b.isEmpty else {
            throw .badBase64("b")
        }
        signature = Array(b)
        identity = list["i"]
        if let identity {
            guard let at = identity.lastIndex(of: "@") else { throw .identityOutsideDomain(identity) }
            let idDomain = identity[identity.index(after: at)...].lowercased()
            guard idDomain == domain || idDomain.hasSuffix("." + domain) else {
                throw .identityOutsideDomain(identity)
            }
        }
        if let q = list["q"], !q.colonList.map({ $0.lowercased() }).contains("dns/txt") {
            throw .unsupportedQueryMethod(q)
        }
        func number(_ name: String, digits: Int) throws(ParseError) -> Int64? {
            guard let text = list[name] else { return nil }
            guard !text.isEmpty, text.count <= digits, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else {
                throw .badNumber(name)
            }
            // Up to 18 digits fit; a longer l= (76 digits allowed) is larger than any body.
            return Int64(text.prefix(18)) ?? .max
        }
        timestamp = try number("t", digits: 12)
        expiration = try number("x", digits: 12)
        bodyLength = try number("l", digits: 76).map { Int(clamping: $0) }
        if let t = timestamp, let x = expiration, x <= t { throw .expiresBeforeTimestamp }
    }

    /// The domain of the agent or user identity: `i=`'s domain, or `d=` (RFC 6376 §3.5).
    public var identityDomain: String {
        guard let identity, let at = identity.lastIndex(of: "@") else { return domain }
        return identity[identity.index(after: at)...].lowercased()
    }

    /// Labels of letters, digits, `-` and `_`, 1 to 63 bytes each, 253 in all (d= and s= values).
    public static func isDomainName(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 253 else { return false }
        return text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count)
                && label.utf8.allSatisfy {
                    (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) || (0x41...0x5A).contains($0)
                        || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
                }
        }
    }
}

/// The two hashes of RFC 6376 §3.7: the body hash over the canonical body (to `l=` octets), and the
/// data hash over the selected header fields and the signature field itself with `b=` empty.
public enum DKIMHash {
    /// The header fields `h=` names, each the last not yet used instance counting from the bottom
    /// (§5.4.2); a name with no instance left contributes nothing. `excluding` is the signature
    /// field being verified, which is never one of its own signed fields.
    public static func selectHeaders(
        _ fields: [DKIMMessage.HeaderField], names: [String], excluding: Int? = nil
    ) -> [DKIMMessage.HeaderField] {
        var byName: [String: [Int]] = [:]
        for (i, f) in fields.enumerated() where i != excluding { byName[f.lowercasedName, default: []].append(i) }
        var selected: [DKIMMessage.HeaderField] = []
        for name in names {
            if let i = byName[name]?.popLast() { selected.append(fields[i]) }
        }
        return selected
    }

    /// The bytes the data hash is taken over: the selected fields canonicalized with their CRLFs,
    /// then the signature field (whose `b=` value, white space included, is already empty) without
    /// its final CRLF.
    public static func headerHashInput(
        selected: [DKIMMessage.HeaderField], signatureField: ArraySlice<UInt8>, colon: Int,
        canonicalization: DKIMCanonicalization
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(selected.reduce(signatureField.count) { $0 + $1.raw.count })
        for field in selected { canonicalization.appendHeader(field.raw, colon: field.colon, to: &out, withCRLF: true) }
        canonicalization.appendHeader(signatureField, colon: colon, to: &out, withCRLF: false)
        return out
    }

    /// The field with its `b=` value (the bytes in `range`, relative to the value's start) deleted.
    public static func removingSignatureValue(
        _ field: DKIMMessage.HeaderField, valueRange range: Range<Int>
    ) -> [UInt8] {
        let valueStart = field.colon + 1
        return Array(field.raw[field.raw.startIndex..<(valueStart + range.lowerBound)])
            + Array(field.raw[(valueStart + range.upperBound)...])
    }
}
