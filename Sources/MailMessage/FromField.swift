import Foundation

/// The RFC5322.From identity DMARC judges (RFC 7489 §6.6.1), read from a header section on its own:
/// exactly one From field naming exactly one address. Lenient about everything else in the header
/// (a line without a colon, a huge field count), so that oddly formed mail cannot slip past DMARC.
public enum FromField {
    public enum Identity: Sendable, Equatable {
        /// The From address's domain, lowercased.
        case domain(String)
        /// No From, several, several addresses, or one that does not parse: why, in words.
        case invalid(String)
    }

    /// The header section of `message`: up to and including the first empty line (CRLF CRLF), or
    /// all of it when there is none.
    public static func headerSection(_ message: [UInt8]) -> [UInt8] {
        if message.starts(with: [0x0D, 0x0A]) { return [0x0D, 0x0A] }
        var i = 0
        while i + 3 < message.count {
            if message[i] == 0x0D, message[i + 1] == 0x0A, message[i + 2] == 0x0D, message[i + 3] == 0x0A {
                return Array(message[0..<(i + 4)])
            }
            i += 1
        }
        return message
    }

    /// The From identity of a header section.
    public static func identity(header: [UInt8]) -> Identity {
        let froms = fields(header).filter { $0.name.lowercased() == "from" }
        guard froms.count == 1 else {
            return .invalid(
                froms.isEmpty ? "the message has no From field" : "the message has \(froms.count) From fields")
        }
        return identity(value: froms[0].value)
    }

    /// The domain of the single address in a From value: display names, quoted strings and comments
    /// are set aside first, so `"help@bank.example" <x@evil.example>` is `evil.example`.
    public static func identity(value: String) -> Identity {
        var plain = ""
        var inQuote = false
        var depth = 0
        var escaped = false
        for ch in value {
            if escaped {
                escaped = false
                continue
            }
            if ch == "\\" && (inQuote || depth > 0) {
                escaped = true
                continue
            }
            if inQuote {
                if ch == "\"" { inQuote = false }
                continue
            }
            if depth > 0 {
                if ch == "(" { depth += 1 } else if ch == ")" { depth -= 1 }
                continue
            }
            switch ch {
            case "\"": inQuote = true
            case "(": depth = 1
            default: plain.append(ch)
            }
        }
        // A group or a list is more than one address (or none).
        guard !plain.contains(where: { $0 == "," || $0 == ";" || $0 == ":" }) else {
            return .invalid("the From field names more than one address")
        }
        var address = plain
        if let open = plain.firstIndex(of: "<") {
            guard let close = plain[open...].firstIndex(of: ">"), !plain[plain.index(after: close)...].contains("<")
            else { return .invalid("the From field's address does not parse") }
            address = String(plain[plain.index(after: open)..<close])
        }
        address = address.trimmingCharacters(in: .whitespaces)
        guard address.filter({ $0 == "@" }).count == 1, let at = address.firstIndex(of: "@"), at != address.startIndex
        else { return .invalid("the From field does not name one address") }
        var domain = String(address[address.index(after: at)...]).lowercased()
        while domain.hasSuffix(".") { domain.removeLast() }
        guard !domain.isEmpty, !domain.contains(where: { $0 == " " || $0 == "\t" || $0 == "<" || $0 == ">" }) else {
            return .invalid("the From field's domain does not parse")
        }
        return .domain(domain)
    }

    /// Header fields, unfolded, names as written; lines without a colon are skipped.
    static func fields(_ header: [UInt8]) -> [(name: String, value: String)] {
        let text = String(decoding: header, as: UTF8.self)
        var out: [(String, String)] = []
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: false) {
            if line.first == " " || line.first == "\t" {
                if !out.isEmpty { out[out.count - 1].1 += String(line) }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces)
            out.append((String(name), String(line[line.index(after: colon)...])))
        }
        return out
    }
}
