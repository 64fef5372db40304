/// A `tag=value; tag=value` list as DKIM (RFC 6376 §3.2), DMARC (RFC 7489 §6.4), MTA-STS TXT
/// (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3) records write it.
///
/// Whitespace around tags, values and separators is dropped, a trailing `;` is allowed, a tag
/// appearing twice is an error (RFC 6376 §3.2: "Tags with duplicate names MUST NOT occur").
public struct TagList: Sendable, Hashable {
    public struct Tag: Sendable, Hashable {
        public var name: String
        public var value: String
    }

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case missingEquals(String)
        case badTagName(String)
        case duplicate(String)

        public var description: String {
            switch self {
            case .missingEquals(let spec): "'\(spec)' is not tag=value"
            case .badTagName(let name): "'\(name)' is not a valid tag name"
            case .duplicate(let name): "tag '\(name)' appears more than once"
            }
        }
    }

    /// The tags in record order.
    public var tags: [Tag]

    public init(parsing text: String) throws(ParseError) {
        var tags: [Tag] = []
        var seen: Set<String> = []
        let specs = text.split(separator: ";", omittingEmptySubsequences: false)
        for (index, raw) in specs.enumerated() {
            let spec = raw.trimmingWhitespace
            if spec.isEmpty {
                // Only a trailing separator may leave an empty spec.
                if index == specs.count - 1 { continue }
                throw .missingEquals(String(raw))
            }
            guard let eq = spec.firstIndex(of: "=") else { throw .missingEquals(String(spec)) }
            let name = spec[..<eq].trimmingWhitespace
            let value = spec[spec.index(after: eq)...].trimmingWhitespace
            guard let first = name.unicodeScalars.first, first.properties.isAlphabetic, first.isASCII,
                name.unicodeScalars.allSatisfy({
                    $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_")
                })
            else { throw .badTagName(String(name)) }
            guard seen.insert(String(name)).inserted else { throw .duplicate(String(name)) }
            tags.append(Tag(name: String(name), value: String(value)))
        }
        self.tags = tags
    }

    /// The value of `name` (tag names are case-sensitive, RFC 6376 §3.2).
    public subscript(name: String) -> String? { tags.first { $0.name == name }?.value }
}

extension StringProtocol {
    /// The text without leading and trailing spaces, tabs, CR and LF.
    var trimmingWhitespace: Substring {
        let ws: Set<Character> = [" ", "\t", "\r", "\n", "\r\n"]
        var s = Substring(self)
        while let f = s.first, ws.contains(f) { s.removeFirst() }
        while let l = s.last, ws.contains(l) { s.removeLast() }
        return s
    }
}
