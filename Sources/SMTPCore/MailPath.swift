import NIOCore

/// A mailbox, `Local-part "@" ( Domain / address-literal )` (RFC 5321 §4.1.2), with RFC 6531's UTF-8
/// extension when the transaction allows it.
///
/// `localPart` keeps the wire form (a quoted local part stays quoted) so the address can be sent on
/// unchanged; `domain` keeps the literal's brackets.
///
/// ```swift
/// try Mailbox.parse("\"john doe\"@[192.0.2.1]", allowUTF8: false)
/// ```
public struct Mailbox: Hashable, Sendable, CustomStringConvertible {
    public var localPart: String
    public var domain: String

    public init(localPart: String, domain: String) {
        self.localPart = localPart
        self.domain = domain
    }

    /// Splits a stored address at its last `@`, as `parse` does, without checking it: the address is
    /// checked where it leaves (`SMTPCommandEncoder` refuses what it cannot send). An address without
    /// `@` gets an empty domain.
    public init(splitting address: String) {
        if let at = address.lastIndex(of: "@") {
            self.init(localPart: String(address[..<at]), domain: String(address[address.index(after: at)...]))
        } else {
            self.init(localPart: address, domain: "")
        }
    }

    public var description: String { "\(localPart)@\(domain)" }

    /// `true` when the domain is an address literal such as `[192.0.2.1]` or `[IPv6:::1]`.
    public var isAddressLiteral: Bool { domain.hasPrefix("[") }

    /// `true` when any part is outside ASCII (needs SMTPUTF8 to travel).
    public var needsSMTPUTF8: Bool { !description.allSatisfy(\.isASCII) }

    /// The local part with quoting removed, for mailbox lookups: `"alice"` and `alice` are the same
    /// mailbox (RFC 5321 §4.1.2 says a quoted form should be treated like its unquoted one).
    public var unquotedLocalPart: String {
        guard localPart.hasPrefix("\"") else { return localPart }
        var out = ""
        var escaped = false
        for ch in localPart.dropFirst().dropLast() {
            if escaped {
                out.append(ch)
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else {
                out.append(ch)
            }
        }
        return out
    }

    /// Why a mailbox did not parse.
    public enum ParseError: Error, Equatable, Sendable {
        case syntax(String)
        case tooLong(String)
        case utf8NotAllowed
    }

    /// Parses a mailbox (no angle brackets).
    public static func parse(_ text: Substring, allowUTF8: Bool) throws(ParseError) -> Mailbox {
        guard let at = text.lastIndex(of: "@") else { throw .syntax("missing @domain") }
        let local = text[..<at]
        let domain = text[text.index(after: at)...]
        if !allowUTF8 && !text.allSatisfy(\.isASCII) { throw .utf8NotAllowed }
        try validateLocalPart(local, allowUTF8: allowUTF8)
        try validateDomainOrLiteral(domain, allowUTF8: allowUTF8)
        return Mailbox(localPart: String(local), domain: String(domain))
    }

    static func isAtext(_ ch: Character, allowUTF8: Bool) -> Bool {
        if ch.isASCII {
            guard let a = ch.asciiValue else { return false }
            switch a {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            default:
                return "!#$%&'*+-/=?^_`{|}~".contains(ch)
            }
        }
        return allowUTF8 && !ch.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    public static func validateLocalPart(_ local: Substring, allowUTF8: Bool) throws(ParseError) {
        guard !local.isEmpty else { throw .syntax("empty local part") }
        guard local.utf8.count <= SMTPLimits.localPartLength else {
            throw .tooLong("local part longer than \(SMTPLimits.localPartLength) octets")
        }
        if local.first == "\"" {
            guard local.count >= 2, local.last == "\"" else { throw .syntax("unterminated quoted local part") }
            var escaped = false
            for ch in local.dropFirst().dropLast() {
                guard let a = ch.asciiValue else {
                    guard allowUTF8 else { throw .utf8NotAllowed }
                    escaped = false
                    continue
                }
                if escaped {
                    guard (32...126).contains(a) else { throw .syntax("bad quoted pair") }
                    escaped = false
                } else if a == 92 {
                    escaped = true
                } else if !(a == 32 || a == 33 || (35...91).contains(a) || (93...126).contains(a)) {
                    throw .syntax("bad character in quoted local part")
                }
            }
            if escaped { throw .syntax("unterminated quoted pair") }
            return
        }
        for atom in local.split(separator: ".", omittingEmptySubsequences: false) {
            guard !atom.isEmpty else { throw .syntax("empty atom in local part") }
            guard atom.allSatisfy({ isAtext($0, allowUTF8: allowUTF8) }) else {
                throw .syntax("bad character in local part")
            }
        }
    }

    static func validateDomainOrLiteral(_ domain: Substring, allowUTF8: Bool) throws(ParseError) {
        guard !domain.isEmpty else { throw .syntax("empty domain") }
        guard domain.utf8.count <= SMTPLimits.domainLength else {
            throw .tooLong("domain longer than \(SMTPLimits.domainLength) octets")
        }
        if domain.first == "[" {
            guard domain.last == "]", domain.count > 2 else { throw .syntax("bad address literal") }
            let inner = domain.dropFirst().dropLast()
            if inner.lowercased().hasPrefix("ipv6:") {
                let addr = inner.dropFirst(5)
                // Only hex digits, colons and an IPv4 tail: inet_pton stops at a NUL, so anything
                // after one would otherwise ride along unchecked.
                guard addr.contains(":"), addr.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }),
                    (try? SocketAddress(ipAddress: String(addr), port: 0)) != nil
                else {
                    throw .syntax("bad IPv6 address literal")
                }
                return
            }
            guard isIPv4(inner) else { throw .syntax("bad address literal") }
            return
        }
        try validateDomain(domain, allowUTF8: allowUTF8)
    }

    /// `Domain = sub-domain *("." sub-domain)`, `sub-domain = Let-dig [Ldh-str]` (RFC 5321 §4.1.2);
    /// U-labels allowed with SMTPUTF8 (RFC 6531 §3.3).
    public static func validateDomain(_ domain: Substring, allowUTF8: Bool) throws(ParseError) {
        guard !domain.isEmpty else { throw .syntax("empty domain") }
        for label in domain.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.utf8.count <= 63 else { throw .syntax("bad domain label") }
            guard label.first != "-", label.last != "-" else { throw .syntax("domain label starts or ends with '-'") }
            for ch in label {
                if let a = ch.asciiValue {
                    let ok =
                        (48...57).contains(a) || (65...90).contains(a) || (97...122).contains(a) || a == 45
                    guard ok else { throw .syntax("bad character in domain") }
                } else if !allowUTF8 {
                    throw .utf8NotAllowed
                } else if !(ch.isLetter || ch.isNumber
                    || ch.unicodeScalars.allSatisfy({
                        $0.properties.isAlphabetic || $0.properties.generalCategory == .nonspacingMark
                            || $0.properties.generalCategory == .spacingMark
                    }))
                {
                    throw .syntax("bad character in domain")
                }
            }
        }
    }

    static func isIPv4(_ text: Substring) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { p in
            guard (1...3).contains(p.count), p.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int(p) else {
                return false
            }
            return v <= 255 && (p.count == 1 || p.first != "0")
        }
    }
}

/// The sender path of `MAIL FROM`: a mailbox or the null path `<>` (bounces, RFC 5321 §4.5.5).
public enum ReversePath: Hashable, Sendable, CustomStringConvertible {
    case null
    case mailbox(Mailbox)

    public var description: String {
        switch self {
        case .null: return "<>"
        case .mailbox(let m): return "<\(m)>"
        }
    }

    /// The address without brackets, empty for the null path.
    public var address: String {
        switch self {
        case .null: return ""
        case .mailbox(let m): return m.description
        }
    }
}

/// The recipient path of `RCPT TO`: a mailbox, or the bare `<Postmaster>` every server must accept
/// (RFC 5321 §4.1.1.3).
public enum ForwardPath: Hashable, Sendable, CustomStringConvertible {
    case postmaster
    case mailbox(Mailbox)

    public var description: String {
        switch self {
        case .postmaster: return "<Postmaster>"
        case .mailbox(let m): return "<\(m)>"
        }
    }
}

enum PathParser {
    /// Splits `<path> rest` into the inside of the brackets and what follows; source routes
    /// (`<@a,@b:user@c>`, RFC 5321 §4.1.2 A-d-l) are accepted and dropped as §C requires.
    static func splitPath(_ text: Substring) throws(Mailbox.ParseError) -> (inner: Substring, rest: Substring) {
        guard text.first == "<" else { throw .syntax("path must be enclosed in <>") }
        // Find the closing '>' outside a quoted string.
        var inQuote = false
        var escaped = false
        var idx = text.index(after: text.startIndex)
        while idx < text.endIndex {
            let ch = text[idx]
            if escaped {
                escaped = false
            } else if inQuote && ch == "\\" {
                escaped = true
            } else if ch == "\"" {
                inQuote.toggle()
            } else if ch == ">" && !inQuote {
                break
            }
            idx = text.index(after: idx)
        }
        guard idx < text.endIndex else { throw .syntax("missing closing >") }
        guard text.distance(from: text.startIndex, to: idx) + 1 <= SMTPLimits.pathLength else {
            throw .tooLong("path longer than \(SMTPLimits.pathLength) octets")
        }
        var inner = text[text.index(after: text.startIndex)..<idx]
        if inner.first == "@" {
            guard let colon = inner.firstIndex(of: ":") else { throw .syntax("bad source route") }
            inner = inner[inner.index(after: colon)...]
        }
        return (inner, text[text.index(after: idx)...])
    }
}
