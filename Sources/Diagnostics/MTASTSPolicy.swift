/// An MTA-STS policy file (RFC 8461 §3.2) parsed, and the MX matching rule of §4.1.
public struct MTASTSPolicy: Sendable, Hashable {
    public enum Mode: String, Sendable, Hashable {
        case enforce, testing, none
    }

    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case badLine(String)
        case missing(String)
        case badValue(key: String, value: String, expected: String)
        case duplicate(String)

        public var description: String {
            switch self {
            case .badLine(let line): "'\(line)' is not key: value"
            case .missing(let key): "no \(key): line (RFC 8461 §3.2)"
            case .badValue(let key, let value, let expected): "\(key): \(value): expected \(expected)"
            case .duplicate(let key): "\(key): appears more than once"
            }
        }
    }

    /// RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
    public static let maxAgeLimit = 31_557_600

    public var mode: Mode
    public var maxAge: Int
    /// `mx:` patterns, lowercased, in file order.
    public var mx: [String]

    /// Parses the policy text; lines end in LF or CRLF (§3.2), unknown keys are ignored.
    public init(parsing text: String) throws(ParseError) {
        var version: String?
        var mode: Mode?
        var maxAge: Int?
        var mx: [String] = []
        for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            if line.trimmingWhitespace.isEmpty { continue }
            guard let colon = line.firstIndex(of: ":") else { throw .badLine(String(line)) }
            let key = String(line[..<colon].trimmingWhitespace)
            let value = String(line[line.index(after: colon)...].trimmingWhitespace)
            switch key {
            case "version":
                guard version == nil else { throw .duplicate(key) }
                guard value == "STSv1" else { throw .badValue(key: key, value: value, expected: "STSv1") }
                version = value
            case "mode":
                guard mode == nil else { throw .duplicate(key) }
                guard let m = Mode(rawValue: value) else {
                    throw .badValue(key: key, value: value, expected: "enforce, testing or none")
                }
                mode = m
            case "max_age":
                guard maxAge == nil else { throw .duplicate(key) }
                guard value.count <= 10, value.allSatisfy(\.isNumber), let n = Int(value), n <= Self.maxAgeLimit else {
                    throw .badValue(key: key, value: value, expected: "seconds, 0 to \(Self.maxAgeLimit)")
                }
                maxAge = n
            case "mx":
                guard Self.isPattern(value) else {
                    throw .badValue(key: key, value: value, expected: "a host name, optionally starting with *.")
                }
                mx.append(value.lowercased())
            default:
                continue
            }
        }
        guard version != nil else { throw .missing("version") }
        guard let mode else { throw .missing("mode") }
        guard let maxAge else { throw .missing("max_age") }
        if mode != .none, mx.isEmpty { throw .missing("mx") }
        self.mode = mode
        self.maxAge = maxAge
        self.mx = mx
    }

    static func isPattern(_ text: String) -> Bool {
        let name = text.hasPrefix("*.") ? String(text.dropFirst(2)) : text
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return labels.count >= 2
            && labels.allSatisfy { label in
                !label.isEmpty && label.count <= 63
                    && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
            }
    }

    /// RFC 8461 §4.1: `host` matches a pattern exactly, or a `*.` pattern with exactly one more
    /// leftmost label; case-insensitive, trailing dots ignored.
    public static func matches(host: String, pattern: String) -> Bool {
        let h = host.lowercased().trimmingCharacters(inTrailingDot: ())
        let p = pattern.lowercased().trimmingCharacters(inTrailingDot: ())
        if p.hasPrefix("*.") {
            let suffix = p.dropFirst(1)  // ".example.com"
            guard h.hasSuffix(suffix) else { return false }
            let label = h.dropLast(suffix.count)
            return !label.isEmpty && !label.contains(".")
        }
        return h == p
    }

    /// The first pattern `host` matches, if any.
    public func pattern(matching host: String) -> String? {
        mx.first { Self.matches(host: host, pattern: $0) }
    }
}

extension String {
    fileprivate func trimmingCharacters(inTrailingDot: Void) -> String {
        hasSuffix(".") ? String(dropLast()) : self
    }
}
