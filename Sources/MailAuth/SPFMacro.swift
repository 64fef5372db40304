import DNSClient

/// RFC 7208 §7 macro expansion of domain-specs and `exp=` explanation strings.
///
/// `%{d}` is the current domain, `%{s}` the sender, `%{l}`/`%{o}` its local part and domain, `%{i}`
/// the client address (dotted, or dotted nibbles for IPv6), `%{h}` the HELO name, `%{v}` `in-addr`
/// or `ip6`, `%{p}` the validated client name; `%{c}`, `%{r}` and `%{t}` only in explanations.
/// Transformers keep the rightmost N parts (`%{d2}`) and reverse (`%{ir}`); delimiters (`.-+,/_=`)
/// say where to split; an upper-case letter URL-escapes the value (§7.3).
///
///     %{ir}.%{v}._spf.%{d2}  with 192.0.2.3 from a.example.com  →  3.2.0.192.in-addr._spf.example.com
struct SPFMacroContext: Sendable {
    var sender: String
    var domain: String
    var ip: DNSIPAddress
    var helo: String
    var receiver: String
    var timestamp: Int
    /// The `%{p}` value, computed by the evaluator only when a macro asks for it.
    var validatedName: String = "unknown"

    /// The longest domain name in text form (RFC 7208 §7.3: expansions are truncated to it).
    static let maxDomainLength = 253

    /// The local part of the sender (§4.3: `postmaster` when there is none).
    var localPart: String {
        guard let at = sender.lastIndex(of: "@") else { return "postmaster" }
        let local = sender[..<at]
        return local.isEmpty ? "postmaster" : String(local)
    }

    var senderDomain: String {
        guard let at = sender.lastIndex(of: "@") else { return sender }
        return String(sender[sender.index(after: at)...])
    }

    /// Expands `text`; nil when a macro is malformed or not allowed where it is used (a permerror).
    func expand(_ text: String, explanation: Bool) -> String? {
        var out = ""
        var chars = Substring(text)
        while let c = chars.popFirst() {
            guard c == "%" else {
                out.append(c)
                continue
            }
            guard let next = chars.popFirst() else { return nil }
            switch next {
            case "%": out += "%"
            case "_": out += " "
            case "-": out += "%20"
            case "{":
                guard let letter = chars.popFirst(), letter.isASCII, letter.isLetter else { return nil }
                let digits = chars.prefix { $0.isASCII && $0.isNumber }
                chars = chars.dropFirst(digits.count)
                var reverse = false
                if chars.first == "r" || chars.first == "R" {
                    reverse = true
                    chars.removeFirst()
                }
                let delimiters = chars.prefix { ".-+,/_=".contains($0) }
                chars = chars.dropFirst(delimiters.count)
                guard chars.popFirst() == "}" else { return nil }
                guard let value = value(of: Character(letter.lowercased()), explanation: explanation) else {
                    return nil
                }
                var keep: Int?
                if !digits.isEmpty {
                    // §7.3: a DIGIT transformer of zero is not allowed.
                    guard let n = Int(digits), n > 0 else { return nil }
                    keep = n
                }
                let splitOn = delimiters.isEmpty ? Set(["."]) : Set(delimiters)
                var parts = value.split(omittingEmptySubsequences: false) { splitOn.contains($0) }
                if reverse { parts.reverse() }
                if let keep, keep < parts.count { parts = Array(parts.suffix(keep)) }
                let joined = parts.joined(separator: ".")
                out += letter.isUppercase ? Self.urlEscape(joined) : joined
            default:
                return nil
            }
        }
        return out
    }

    /// Expands a domain-spec and cuts it to 253 characters by dropping labels from the left (§7.3).
    func expandDomain(_ text: String) -> String? {
        guard var name = expand(text, explanation: false) else { return nil }
        if name.hasSuffix(".") { name.removeLast() }
        while name.utf8.count > Self.maxDomainLength, let dot = name.firstIndex(of: ".") {
            name = String(name[name.index(after: dot)...])
        }
        return name
    }

    func value(of letter: Character, explanation: Bool) -> String? {
        switch letter {
        case "s": return sender
        case "l": return localPart
        case "o": return senderDomain
        case "d": return domain
        case "i":
            if ip.isIPv4 { return ip.description }
            let hex = Array("0123456789abcdef")
            return ip.bytes.flatMap { [String(hex[Int($0 >> 4)]), String(hex[Int($0 & 0xF)])] }
                .joined(separator: ".")
        case "p": return validatedName
        case "v": return ip.isIPv4 ? "in-addr" : "ip6"
        case "h": return helo
        case "c": return explanation ? ip.description : nil
        case "r": return explanation ? receiver : nil
        case "t": return explanation ? String(timestamp) : nil
        default: return nil
        }
    }

    /// RFC 3986 percent-encoding of everything outside the unreserved set (§7.3).
    static func urlEscape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if c.isASCII && (c.isLetter || c.isNumber || "-._~".contains(c)) {
                out.append(c)
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
