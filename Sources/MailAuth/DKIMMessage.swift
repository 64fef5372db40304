/// A message as DKIM sees it (RFC 6376 §3.4, §5.4): header fields in order, each with its exact bytes,
/// and the body after the first empty line.
///
/// Line endings: a message from SMTP has CRLF lines; a message read from a file may have bare LF
/// lines, and those are read as CRLF (``init(normalizing:)``), as they would be sent.
public struct DKIMMessage: Sendable {
    /// The most header fields read; more make the message unverifiable (a guard against hostile input).
    public static let maxHeaderFields = 1_000

    /// One header field: its bytes as received, from the name to the CRLF that ends it (included).
    public struct HeaderField: Sendable, Hashable {
        public var raw: ArraySlice<UInt8>
        /// The offset (in `raw`'s indices) of the colon that ends the name.
        public var colon: Int
        /// The field name, lowercased (header names compare case-insensitively, RFC 5322 §1.2.2).
        public var lowercasedName: String

        /// The field value: the bytes after the colon, without the final CRLF.
        public var value: ArraySlice<UInt8> {
            var end = raw.endIndex
            if end - raw.startIndex >= 2, raw[end - 2] == 0x0D, raw[end - 1] == 0x0A { end -= 2 }
            return raw[(colon + 1)..<end]
        }
    }

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case lineWithoutColon
        case tooManyHeaderFields

        public var description: String {
            switch self {
            case .lineWithoutColon: "a header line is neither a field (name:value) nor a continuation"
            case .tooManyHeaderFields: "more than \(DKIMMessage.maxHeaderFields) header fields"
            }
        }
    }

    /// The whole message, CRLF lines.
    public let bytes: [UInt8]
    public let headerFields: [HeaderField]
    /// Where the body starts in `bytes` (after the empty line; `bytes.count` when there is no body).
    public let bodyStart: Int

    public var body: ArraySlice<UInt8> { bytes[bodyStart...] }

    /// Reads `bytes`, turning bare LF line ends into CRLF first.
    public init(normalizing bytes: [UInt8]) throws(ParseError) {
        try self.init(crlf: Self.normalizeLineEndings(bytes))
    }

    /// Reads `bytes`, which already has CRLF line ends.
    public init(crlf bytes: [UInt8]) throws(ParseError) {
        self.bytes = bytes
        var fields: [HeaderField] = []
        var index = 0
        var bodyStart = bytes.count
        while index < bytes.count {
            // An empty line ends the header section.
            if bytes[index] == 0x0D, index + 1 < bytes.count, bytes[index + 1] == 0x0A {
                bodyStart = index + 2
                break
            }
            let start = index
            var colon: Int?
            // A field runs to a CRLF not followed by WSP (RFC 5322 §2.2.3 folding).
            while index < bytes.count {
                let b = bytes[index]
                if colon == nil, b == UInt8(ascii: ":") { colon = index }
                if b == 0x0D, index + 1 < bytes.count, bytes[index + 1] == 0x0A {
                    index += 2
                    if index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x09 { continue }
                    break
                }
                index += 1
            }
            guard let colon, colon > start else { throw .lineWithoutColon }
            guard fields.count < Self.maxHeaderFields else { throw .tooManyHeaderFields }
            var nameEnd = colon
            while nameEnd > start, bytes[nameEnd - 1] == 0x20 || bytes[nameEnd - 1] == 0x09 { nameEnd -= 1 }
            let name = String(decoding: bytes[start..<nameEnd], as: UTF8.self).lowercased()
            fields.append(HeaderField(raw: bytes[start..<index], colon: colon, lowercasedName: name))
        }
        self.headerFields = fields
        self.bodyStart = bodyStart
    }

    /// Bare LF becomes CRLF; CRLF stays. Returns the input unchanged when it has no bare LF.
    public static func normalizeLineEndings(_ bytes: [UInt8]) -> [UInt8] {
        var bare = false
        for (i, b) in bytes.enumerated() where b == 0x0A && (i == 0 || bytes[i - 1] != 0x0D) {
            bare = true
            break
        }
        guard bare else { return bytes }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + bytes.count / 32)
        var previous: UInt8 = 0
        for b in bytes {
            if b == 0x0A, previous != 0x0D { out.append(0x0D) }
            out.append(b)
            previous = b
        }
        return out
    }
}
