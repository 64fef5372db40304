/// An SMTP reply or connection error reduced to a template, so the same failure from a thousand
/// sessions is one signature and a text never seen before groups by itself, with no list written in
/// advance.
///
/// The basic code and the enhanced status code (RFC 3463) are kept as they are; in the text,
/// numbers become `<n>`, IP addresses `<ip>`, mail addresses `<addr>`, host names `<host>`, queue
/// IDs, hex and other identifiers `<id>`; runs of spaces become one, and the text is cut at
/// `maxLength`.
///
/// ```swift
/// ErrorSignature("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel")
/// // text unchanged: no variable parts
/// ErrorSignature("550 5.1.1 <bob@contoso.test>: Recipient address rejected [BN8NAM11FT066.eop-nam11.prod.protection.outlook.com 2026-06-10T08:00:03.123Z 08DCA]")
/// // "550 5.1.1 <addr>: Recipient address rejected [<host> <id> <id>]"
/// ```
public struct ErrorSignature: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let text: String

    public static let maxLength = 160

    public init(_ reply: String) {
        text = Self.normalise(reply)
    }

    public init(template: String) {
        text = template
    }

    public var description: String { text }

    public static func < (a: ErrorSignature, b: ErrorSignature) -> Bool { a.text < b.text }

    /// The basic reply code (`421`), or nil for a connection error without one.
    public var code: Int? {
        let digits = text.utf8.prefix(3)
        guard digits.count == 3, digits.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return Int(String(decoding: digits, as: UTF8.self))
    }

    /// Whether a reply is a failure (a 4xx or 5xx reply, or anything without a 2xx/3xx code, such as
    /// a connection error).
    public static func isFailure(_ reply: String) -> Bool {
        let u = Array(reply.utf8.prefix(1))
        guard let c = u.first else { return true }
        return !(c == UInt8(ascii: "2") || c == UInt8(ascii: "3"))
    }

    static func normalise(_ reply: String) -> String {
        var words: [String] = []
        var first = true
        for raw in reply.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }) {
            if first, raw.utf8.count == 3, raw.utf8.allSatisfy({ (48...57).contains($0) }) {
                words.append(String(raw))
                first = false
                continue
            }
            if words.count == 1, isEnhancedCode(raw) {
                words.append(String(raw))
                continue
            }
            first = false
            words.append(template(raw))
        }
        var out = ""
        for w in words {
            if !out.isEmpty { out += " " }
            out += w
            if out.utf8.count >= maxLength { break }
        }
        if out.utf8.count > maxLength { out = String(decoding: out.utf8.prefix(maxLength), as: UTF8.self) }
        return out
    }

    static func isEnhancedCode(_ w: Substring) -> Bool {
        let parts = w.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, ["2", "4", "5"].contains(parts[0]) else { return false }
        return parts[1...].allSatisfy { !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isNumber) }
    }

    /// One word with its variable parts replaced; punctuation around it is kept
    /// (`<bob@x.test>:` becomes `<addr>:`, `[10.0.0.1]` becomes `[<ip>]`).
    static func template(_ word: Substring) -> String {
        let openers: Set<Character> = ["<", "(", "[", "{", "\"", "'"]
        let closers: Set<Character> = [">", ")", "]", "}", "\"", "'", ",", ";", ":", ".", "!", "?"]
        var lead = word.startIndex
        while lead < word.endIndex, openers.contains(word[lead]) { lead = word.index(after: lead) }
        var trail = word.endIndex
        while trail > lead, closers.contains(word[word.index(before: trail)]) { trail = word.index(before: trail) }
        let core = word[lead..<trail]
        guard !core.isEmpty else { return String(word) }
        let kind = classify(core)
        guard let kind else { return String(word) }
        var before = word[word.startIndex..<lead]
        var after = word[trail...]
        // `<bob@x.test>` becomes `<addr>`, not `<<addr>>`.
        if before.last == "<" && after.first == ">" {
            before = before.dropLast()
            after = after.dropFirst()
        }
        return String(before) + kind + String(after)
    }

    /// The placeholder for a variable token, or nil for an ordinary word.
    static func classify(_ t: Substring) -> String? {
        let u = t.utf8
        var digits = 0
        var letters = 0
        var upper = 0
        var dots = 0
        var colons = 0
        var other = 0
        var at = 0
        var hexOnly = true
        for b in u {
            switch b {
            case 48...57: digits += 1
            case 65...90:
                letters += 1
                upper += 1
                if b > 70 { hexOnly = false }
            case 97...122:
                letters += 1
                if b > 102 { hexOnly = false }
            case UInt8(ascii: "."): dots += 1
            case UInt8(ascii: ":"): colons += 1
            case UInt8(ascii: "@"): at += 1
            case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "/"), UInt8(ascii: "+"), UInt8(ascii: "="):
                other += 1
            default:
                if b >= 0x80 { letters += 1 } else { other += 1 }
                hexOnly = false
            }
        }
        if at == 1, letters + digits > 1 { return "<addr>" }
        if digits > 0, letters == 0, dots == 3, colons == 0, other == 0 { return "<ip>" }
        if colons >= 2, hexOnly, dots <= 3 { return "<ip>" }
        if digits > 0, letters == 0 { return "<n>" }
        // Host names: two or more labels with a letter-led TLD (mx.contoso.test, BN8NAM11FT066.eop.outlook.com).
        if dots >= 1, letters > 0 {
            let labels = t.split(separator: ".", omittingEmptySubsequences: false)
            // "e.g" or "i.e" are words: a host has a letter-only TLD of 2+ and a label of 2+ before it.
            if let last = labels.last, last.count >= 2, last.allSatisfy({ $0.isLetter }),
                labels.allSatisfy({ !$0.isEmpty }), labels.dropLast().contains(where: { $0.count >= 2 })
            {
                return "<host>"
            }
        }
        // Identifiers: mixed letters and digits (queue IDs, session IDs, timestamps), long hex.
        if digits > 0, letters > 0 { return "<id>" }
        if hexOnly, digits + letters >= 12 { return "<id>" }
        if digits > 0, other > 0, letters == 0 { return "<n>" }
        return nil
    }
}
