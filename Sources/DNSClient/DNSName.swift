/// A domain name as a sequence of labels (RFC 1035 §3.1).
///
/// Comparison and hashing are ASCII case-insensitive (RFC 4343). Labels are kept as raw bytes so that a name
/// decoded from the wire round-trips exactly; names built from strings must be ASCII (IDNA is out of scope).
/// Limits of RFC 1035 §2.3.4 apply: a label is at most 63 octets, the whole name at most 255 octets on the wire.
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    /// Maximum length of one label in octets (RFC 1035 §2.3.4).
    public static let maxLabelLength = 63
    /// Maximum length of a name in wire form, length octets and the root label included (RFC 1035 §2.3.4).
    public static let maxWireLength = 255

    /// The labels, most specific first, without the empty root label.
    public let labels: [[UInt8]]

    /// The root name `.`.
    public static let root = DNSName(uncheckedLabels: [])

    init(uncheckedLabels labels: [[UInt8]]) {
        self.labels = labels
    }

    /// Builds a name from labels, checking the RFC 1035 §2.3.4 limits.
    public init(labels: [[UInt8]]) throws(DNSNameError) {
        var wireLength = 1
        for label in labels {
            guard !label.isEmpty else { throw .emptyLabel }
            guard label.count <= Self.maxLabelLength else { throw .labelTooLong(label.count) }
            wireLength += label.count + 1
        }
        guard wireLength <= Self.maxWireLength else { throw .nameTooLong(wireLength) }
        self.labels = labels
    }

    /// Parses a dotted ASCII name such as `mail.example.com` or `mail.example.com.`; `.` and `""` are the root.
    ///
    /// Non-ASCII characters are rejected with ``DNSNameError/nonASCII`` (no IDNA conversion is done).
    public init(_ string: String) throws(DNSNameError) {
        if string.isEmpty || string == "." {
            self = .root
            return
        }
        var text = Substring(string)
        if text.hasSuffix(".") {
            text = text.dropLast()
        }
        var labels: [[UInt8]] = []
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(part.utf8)
            guard bytes.allSatisfy({ $0 < 0x80 }) else { throw .nonASCII(string) }
            labels.append(bytes)
        }
        try self.init(labels: labels)
    }

    /// True for the root name `.`.
    public var isRoot: Bool { labels.isEmpty }

    /// Length of the name in uncompressed wire form.
    public var wireLength: Int { labels.reduce(1) { $0 + $1.count + 1 } }

    /// The name in presentation form with a trailing dot; bytes outside printable ASCII, `.` and `\` are escaped.
    public var description: String {
        if labels.isEmpty { return "." }
        var out = ""
        for label in labels {
            for byte in label {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    out.append("\\")
                    out.append(Character(Unicode.Scalar(byte)))
                case 0x21...0x7E:
                    out.append(Character(Unicode.Scalar(byte)))
                default:
                    let digits = String(byte)
                    out.append("\\" + String(repeating: "0", count: 3 - digits.count) + digits)
                }
            }
            out.append(".")
        }
        return out
    }

    /// The name without the trailing dot, as used in SMTP (`example.com`); the root is `.`.
    public var unrooted: String {
        let text = description
        return text == "." ? text : String(text.dropLast())
    }

    /// Returns this name with `label` prepended, e.g. `_tcp` + `example.com`.
    public func prepending(_ label: String) throws(DNSNameError) -> DNSName {
        let bytes = Array(label.utf8)
        guard bytes.allSatisfy({ $0 < 0x80 }) else { throw .nonASCII(label) }
        return try DNSName(labels: [bytes] + labels)
    }

    /// A copy with every label lower-cased (ASCII only).
    public var lowercased: DNSName {
        DNSName(uncheckedLabels: labels.map { $0.map(Self.lower) })
    }

    static func lower(_ byte: UInt8) -> UInt8 {
        (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte
    }

    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        guard lhs.labels.count == rhs.labels.count else { return false }
        for (left, right) in zip(lhs.labels, rhs.labels) {
            guard left.count == right.count else { return false }
            for (leftByte, rightByte) in zip(left, right) where lower(leftByte) != lower(rightByte) {
                return false
            }
        }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(labels.count)
        for label in labels {
            hasher.combine(label.count)
            for byte in label {
                hasher.combine(Self.lower(byte))
            }
        }
    }
}

/// Why a string or label list is not a valid ``DNSName`` (RFC 1035 §2.3.4).
public enum DNSNameError: Error, Sendable, Hashable {
    /// The text contains non-ASCII characters; IDNA (RFC 5890) is not supported.
    case nonASCII(String)
    /// An empty label, as in `a..b`.
    case emptyLabel
    /// A label longer than 63 octets (the length is attached).
    case labelTooLong(Int)
    /// A name longer than 255 octets in wire form (the length is attached).
    case nameTooLong(Int)
}
