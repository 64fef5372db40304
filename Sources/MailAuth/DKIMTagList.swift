/// A DKIM tag list (RFC 6376 §3.2), as a DKIM-Signature field value or a DKIM key record writes it:
/// `tag=value; tag=value`, FWS around tags, values and separators, a trailing `;` allowed.
///
/// Parsing is strict and bounded: a tag name is `ALPHA *(ALPHA / DIGIT / "_")`, a value is VALCHARs
/// (%x21-3A / %x3C-7E) with white space only between them, a duplicate tag is an error (§3.2: "Tags
/// with duplicate names MUST NOT occur"), and the text may be at most ``maxLength`` bytes with at most
/// ``maxTags`` tags, so a hostile header costs little. Each tag keeps the byte range of its raw value
/// (with the white space around it) because the verifier deletes exactly that range of `b=` (§3.7).
///
/// ```swift
/// let list = try DKIMTagList(parsing: "v=1; a=ed25519-sha256; d=example.org")
/// list["d"]  // "example.org"
/// ```
public struct DKIMTagList: Sendable, Hashable {
    /// Longer texts are refused: a 8192-bit RSA signature with a long `h=` fits in well under 8 KiB.
    public static let maxLength = 16_384
    /// More tags are refused: RFC 6376 defines 14 signature tags and 7 key record tags.
    public static let maxTags = 64

    public struct Tag: Sendable, Hashable {
        /// The tag name, case-sensitive (§3.2).
        public var name: String
        /// The value without the white space around it (white space inside is kept).
        public var value: String
        /// The byte offsets, in the parsed text, from just after `=` to just before the `;` or the end.
        public var rawValueRange: Range<Int>
    }

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case tooLong(Int)
        case tooManyTags
        case missingEquals(String)
        case badTagName(String)
        case badValue(tag: String)
        case duplicate(String)

        public var description: String {
            switch self {
            case .tooLong(let n): "tag list of \(n) bytes: longer than \(DKIMTagList.maxLength)"
            case .tooManyTags: "more than \(DKIMTagList.maxTags) tags"
            case .missingEquals(let spec): "'\(spec)' is not tag=value"
            case .badTagName(let name): "'\(name)' is not a valid tag name"
            case .badValue(let tag): "tag \(tag)= has a character not allowed in a tag value (RFC 6376 §3.2)"
            case .duplicate(let name): "tag '\(name)' appears more than once"
            }
        }
    }

    /// The tags in the order written.
    public var tags: [Tag]

    public init(parsing text: String) throws(ParseError) {
        try self.init(parsing: Array(text.utf8))
    }

    public init(parsing bytes: [UInt8]) throws(ParseError) {
        guard bytes.count <= Self.maxLength else { throw .tooLong(bytes.count) }
        var tags: [Tag] = []
        var seen: Set<String> = []
        var start = 0
        while start <= bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: ";") { end += 1 }
            let spec = bytes[start..<end]
            let trimmed = Self.trim(spec)
            if trimmed.isEmpty {
                // Only the text after a trailing separator (or an empty list) may be empty.
                guard end == bytes.count else { throw .missingEquals(String(decoding: spec, as: UTF8.self)) }
                break
            }
            guard let eq = spec.firstIndex(of: UInt8(ascii: "=")) else {
                throw .missingEquals(String(decoding: trimmed, as: UTF8.self))
            }
            let nameBytes = Self.trim(bytes[start..<eq])
            guard let first = nameBytes.first, Self.isAlpha(first),
                nameBytes.allSatisfy({ Self.isAlpha($0) || (0x30...0x39).contains($0) || $0 == UInt8(ascii: "_") })
            else { throw .badTagName(String(decoding: nameBytes, as: UTF8.self)) }
            let name = String(decoding: nameBytes, as: UTF8.self)
            let valueBytes = Self.trim(bytes[(eq + 1)..<end])
            guard valueBytes.allSatisfy({ Self.isValueChar($0) || Self.isWhitespace($0) }) else {
                throw .badValue(tag: name)
            }
            guard seen.insert(name).inserted else { throw .duplicate(name) }
            guard tags.count < Self.maxTags else { throw .tooManyTags }
            tags.append(
                Tag(name: name, value: String(decoding: valueBytes, as: UTF8.self), rawValueRange: (eq + 1)..<end))
            start = end + 1
        }
        self.tags = tags
    }

    /// The value of `name` (tag names are case-sensitive, §3.2).
    public subscript(name: String) -> String? { tags.first { $0.name == name }?.value }

    /// The tag named `name`.
    public func tag(_ name: String) -> Tag? { tags.first { $0.name == name } }

    static func isAlpha(_ b: UInt8) -> Bool { (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) }
    /// VALCHAR: %x21-3A / %x3C-7E (§3.2).
    static func isValueChar(_ b: UInt8) -> Bool { (0x21...0x3A).contains(b) || (0x3C...0x7E).contains(b) }
    static func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A }

    static func trim(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var s = s
        while let f = s.first, isWhitespace(f) { s.removeFirst() }
        while let l = s.last, isWhitespace(l) { s.removeLast() }
        return s
    }
}

extension String {
    /// The text without any white space (base64 values in DKIM may be folded anywhere, §3.5).
    var removingWhitespace: String { String(unicodeScalars.filter { !$0.properties.isWhitespace }) }

    /// A colon-separated list (`h=`, key record `h=`, `s=`, `t=`), items trimmed, empty items dropped.
    var colonList: [String] {
        split(separator: ":").map { String($0).removingWhitespace }.filter { !$0.isEmpty }
    }
}
