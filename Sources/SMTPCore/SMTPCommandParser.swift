/// Parses one command line (without its CRLF) into an `SMTPCommand`.
///
/// Errors carry the reply the client gets: `500 5.5.2` for a line that is not a command at all,
/// `502 5.5.1` for a command Mailflow does not implement, `501` with a precise enhanced code for bad
/// arguments, `555 5.5.4` for unknown ESMTP parameters (RFC 5321 §4.1.1.11), and `553 5.6.7` for a
/// UTF-8 address without `SMTPUTF8` (RFC 6531 §3.5).
public enum SMTPCommandParser {
    public static func parse(_ line: Substring) throws(SMTPCommandError) -> SMTPCommand {
        let verbEnd = line.firstIndex(of: " ") ?? line.endIndex
        let verb = line[..<verbEnd].uppercased()
        var args = line[verbEnd...]
        if args.first == " " { args = args.dropFirst() }

        switch verb {
        case "EHLO", "HELO":
            let name = args.trimmingTrailingSpaces()
            guard !name.isEmpty else {
                throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Syntax: \(verb) hostname"))
            }
            guard !name.contains(" "), validHelloName(name) else {
                throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Invalid \(verb) hostname"))
            }
            return verb == "EHLO" ? .ehlo(String(name)) : .helo(String(name))
        case "MAIL":
            return try parseMail(args)
        case "RCPT":
            return try parseRcpt(args)
        case "DATA":
            try requireNoArguments(args, verb)
            return .data
        case "BDAT":
            return try parseBDAT(args)
        case "RSET":
            try requireNoArguments(args, verb)
            return .rset
        case "NOOP":
            return .noop
        case "QUIT":
            try requireNoArguments(args, verb)
            return .quit
        case "VRFY":
            guard !args.trimmingTrailingSpaces().isEmpty else {
                throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Syntax: VRFY address"))
            }
            return .vrfy(String(args))
        case "HELP":
            return .help
        case "STARTTLS":
            try requireNoArguments(args, verb)
            return .startTLS
        case "AUTH":
            return try parseAuth(args)
        case "":
            throw SMTPCommandError(SMTPReply(500, .init(5, 5, 2), "Syntax error, empty command"))
        default:
            guard verb.allSatisfy({ $0.isASCII && $0.isLetter }) else {
                throw SMTPCommandError(SMTPReply(500, .init(5, 5, 2), "Syntax error, command unrecognized"))
            }
            throw SMTPCommandError(SMTPReply(502, .init(5, 5, 1), "Command not implemented"))
        }
    }

    /// `AUTH mechanism [initial-response]`: a SASL mechanism name (RFC 4422 §3.1: 1 to 20 of
    /// A-Z, 0-9, `-`, `_`) and base64 text or `=` (RFC 4954 §4).
    static func parseAuth(_ args: Substring) throws(SMTPCommandError) -> SMTPCommand {
        let parts = args.trimmingTrailingSpaces().split(separator: " ", omittingEmptySubsequences: false)
        let syntax = SMTPCommandError(SMTPReply(501, .init(5, 5, 2), "Syntax: AUTH mechanism [initial-response]"))
        guard (1...2).contains(parts.count) else { throw syntax }
        let mechanism = parts[0].uppercased()
        guard (1...20).contains(mechanism.utf8.count),
            mechanism.utf8.allSatisfy({ ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 })
        else { throw syntax }
        guard parts.count == 2 else { return .auth(mechanism: mechanism, initialResponse: nil) }
        let initial = parts[1]
        guard initial == "=" || SASLBase64.isWellFormed(initial) else {
            throw SMTPCommandError(SMTPReply(501, .init(5, 5, 2), "Invalid base64 in the initial response"))
        }
        return .auth(mechanism: mechanism, initialResponse: String(initial))
    }

    static func requireNoArguments(_ args: Substring, _ verb: String) throws(SMTPCommandError) {
        guard args.trimmingTrailingSpaces().isEmpty else {
            throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Syntax: \(verb) takes no arguments"))
        }
    }

    static func validHelloName(_ name: Substring) -> Bool {
        if name.first == "[" {
            return (try? Mailbox.validateDomainOrLiteral(name, allowUTF8: false)) != nil
        }
        // Accept any printable ASCII host name: many real clients send bare words or underscores,
        // and refusing them earns nothing (RFC 5321 §4.1.4 forbids refusing on a mismatch).
        return name.allSatisfy { ch in
            guard let a = ch.asciiValue else { return false }
            return a > 32 && a < 127 && a != UInt8(ascii: "<") && a != UInt8(ascii: ">")
        }
    }

    static func stripPrefix(_ args: Substring, _ prefix: String) -> Substring? {
        guard args.count >= prefix.count, args.prefix(prefix.count).uppercased() == prefix else { return nil }
        var rest = args.dropFirst(prefix.count)
        // RFC 5321 has no space after the colon; many clients send one, and it is harmless.
        while rest.first == " " { rest = rest.dropFirst() }
        return rest
    }

    static func parseMail(_ args: Substring) throws(SMTPCommandError) -> SMTPCommand {
        guard let rest = stripPrefix(args, "FROM:") else {
            throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Syntax: MAIL FROM:<address>"))
        }
        let inner: Substring
        let paramText: Substring
        do {
            (inner, paramText) = try PathParser.splitPath(rest)
        } catch {
            throw addressError(error, sender: true)
        }
        let params = try parseParameterList(paramText)
        var mail = MailParameters()
        var seen = Set<String>()
        for (key, value) in params {
            guard seen.insert(key).inserted else {
                throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Duplicate parameter \(key)"))
            }
            switch key {
            case "SIZE":
                // RFC 1870 §3: size-value ::= 1*20DIGIT. No sign, no spaces (Postfix says the same).
                guard let v = value, (1...18).contains(v.utf8.count), v.utf8.allSatisfy({ (48...57).contains($0) }),
                    let n = Int(v)
                else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad message size syntax"))
                }
                mail.size = n
            case "BODY":
                switch value?.uppercased() {
                case "7BIT": mail.body = .sevenBit
                case "8BITMIME": mail.body = .eightBitMIME
                default:
                    throw SMTPCommandError(SMTPReply(555, .init(5, 5, 4), "Unsupported BODY type"))
                }
            case "SMTPUTF8":
                guard value == nil else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "SMTPUTF8 takes no value"))
                }
                mail.smtpUTF8 = true
            case "RET":
                guard let v = value?.uppercased(), let r = DSNReturn(rawValue: v) else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad RET value, use FULL or HDRS"))
                }
                mail.ret = r
            case "ENVID":
                // RFC 3461 §4.4: the decoded ENVID is printable US-ASCII; control characters (CR, LF,
                // ESC) would reach DSNs, logs and terminals.
                guard let v = value, let decoded = XText.decode(v), !decoded.isEmpty,
                    v.count <= SMTPLimits.envidLength, decoded.utf8.allSatisfy({ (32...126).contains($0) })
                else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad ENVID value"))
                }
                mail.envelopeID = decoded
            case "AUTH":
                guard let v = value, v.utf8.count <= 500, let decoded = XText.decode(v),
                    decoded.utf8.allSatisfy({ (33...126).contains($0) })
                else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad AUTH parameter"))
                }
                mail.authenticatedSubmitter = decoded
            default:
                throw SMTPCommandError(SMTPReply(555, .init(5, 5, 4), "Unsupported parameter \(key)"))
            }
        }
        if inner.isEmpty { return .mail(.null, mail) }
        do {
            return .mail(.mailbox(try Mailbox.parse(inner, allowUTF8: mail.smtpUTF8)), mail)
        } catch {
            throw addressError(error, sender: true)
        }
    }

    static func parseRcpt(_ args: Substring) throws(SMTPCommandError) -> SMTPCommand {
        guard let rest = stripPrefix(args, "TO:") else {
            throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Syntax: RCPT TO:<address>"))
        }
        let inner: Substring
        let paramText: Substring
        do {
            (inner, paramText) = try PathParser.splitPath(rest)
        } catch {
            throw addressError(error, sender: false)
        }
        let params = try parseParameterList(paramText)
        var rcpt = RecipientParameters()
        var seen = Set<String>()
        for (key, value) in params {
            guard seen.insert(key).inserted else {
                throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Duplicate parameter \(key)"))
            }
            switch key {
            case "NOTIFY":
                guard let v = value else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "NOTIFY needs a value"))
                }
                var n = DSNNotify()
                for item in v.uppercased().split(separator: ",", omittingEmptySubsequences: false) {
                    switch item {
                    case "NEVER": n.never = true
                    case "SUCCESS": n.success = true
                    case "FAILURE": n.failure = true
                    case "DELAY": n.delay = true
                    default:
                        throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad NOTIFY value"))
                    }
                }
                // RFC 3461 §4.1: NEVER stands alone.
                if n.never && (n.success || n.failure || n.delay) {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "NOTIFY=NEVER must stand alone"))
                }
                rcpt.notify = n
            case "ORCPT":
                guard let v = value, v.count <= SMTPLimits.orcptLength, let semi = v.firstIndex(of: ";") else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad ORCPT value, use type;address"))
                }
                let type = v[..<semi]
                guard !type.isEmpty, type.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }),
                    let addr = XText.decode(v[v.index(after: semi)...]), !addr.isEmpty,
                    !addr.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
                else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad ORCPT value, use type;address"))
                }
                rcpt.originalRecipient = OriginalRecipient(addressType: String(type), address: addr)
            default:
                throw SMTPCommandError(SMTPReply(555, .init(5, 5, 4), "Unsupported parameter \(key)"))
            }
        }
        if inner.count == "postmaster".count, inner.lowercased() == "postmaster" {
            return .rcpt(.postmaster, rcpt)
        }
        guard !inner.isEmpty else {
            throw SMTPCommandError(SMTPReply(501, .init(5, 1, 3), "Bad recipient address syntax: empty path"))
        }
        let mailbox: Mailbox
        do {
            // UTF-8 is checked against the transaction's SMTPUTF8 by the session.
            mailbox = try Mailbox.parse(inner, allowUTF8: true)
        } catch {
            throw addressError(error, sender: false)
        }
        // `""@domain` is grammatical (RFC 5321 §4.1.2) but names no mailbox anywhere: accepted, it
        // could only bounce later (backscatter), so it is refused now.
        guard !mailbox.unquotedLocalPart.isEmpty else {
            throw SMTPCommandError(SMTPReply(553, .init(5, 1, 3), "Bad recipient address syntax: empty local part"))
        }
        return .rcpt(.mailbox(mailbox), rcpt)
    }

    static func parseBDAT(_ args: Substring) throws(SMTPCommandError) -> SMTPCommand {
        let parts = args.split(separator: " ")
        guard (1...2).contains(parts.count), parts[0].count <= 18, parts[0].allSatisfy({ $0.isASCII && $0.isNumber }),
            let size = Int(parts[0])
        else {
            throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Syntax: BDAT size [LAST]"))
        }
        if parts.count == 2 {
            guard parts[1].uppercased() == "LAST" else {
                throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Syntax: BDAT size [LAST]"))
            }
            return .bdat(size: size, last: true)
        }
        return .bdat(size: size, last: false)
    }

    /// `esmtp-param = esmtp-keyword ["=" esmtp-value]` (RFC 5321 §4.1.2); keyword upper-cased.
    static func parseParameterList(_ text: Substring) throws(SMTPCommandError) -> [(String, String?)] {
        var out: [(String, String?)] = []
        for token in text.split(separator: " ") {
            let key: Substring
            let value: Substring?
            if let eq = token.firstIndex(of: "=") {
                key = token[..<eq]
                value = token[token.index(after: eq)...]
            } else {
                key = token
                value = nil
            }
            guard !key.isEmpty, key.first.map({ $0.isASCII && ($0.isLetter || $0.isNumber) }) == true,
                key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
            else {
                throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad parameter syntax"))
            }
            if let value {
                guard !value.isEmpty,
                    value.unicodeScalars.allSatisfy({ $0.value > 32 && $0.value != 61 && $0.value != 127 })
                else {
                    throw SMTPCommandError(SMTPReply(501, .init(5, 5, 4), "Bad parameter value"))
                }
            }
            out.append((key.uppercased(), value.map(String.init)))
        }
        return out
    }

    static func addressError(_ error: Mailbox.ParseError, sender: Bool) -> SMTPCommandError {
        let code: EnhancedStatusCode = sender ? .init(5, 1, 7) : .init(5, 1, 3)
        let who = sender ? "sender" : "recipient"
        switch error {
        case .syntax(let why):
            return SMTPCommandError(SMTPReply(501, code, "Bad \(who) address syntax: \(why)"))
        case .tooLong(let why):
            return SMTPCommandError(SMTPReply(501, code, "Bad \(who) address: \(why)"))
        case .utf8NotAllowed:
            return SMTPCommandError(
                SMTPReply(553, .init(5, 6, 7), "UTF-8 \(who) address needs the SMTPUTF8 parameter on MAIL"))
        }
    }
}

extension Substring {
    func trimmingTrailingSpaces() -> Substring {
        var s = self
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}

/// xtext of RFC 3461 §4: printable ASCII except `+` and `=`, with `+XX` hex escapes.
public enum XText {
    public static func decode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var it = text.utf8.makeIterator()
        while let b = it.next() {
            if b == UInt8(ascii: "+") {
                guard let h = it.next(), let l = it.next(), let hv = hex(h), let lv = hex(l) else { return nil }
                bytes.append(hv << 4 | lv)
            } else if b >= 33 && b <= 126 && b != UInt8(ascii: "=") {
                bytes.append(b)
            } else {
                return nil
            }
        }
        // Decoded octets that are not UTF-8 are refused rather than replaced: a lossy decode would
        // change the value on its next hop (RFC 6533's utf-8-addr-xtext carries UTF-8 only).
        return String(validating: bytes, as: UTF8.self)
    }

    public static func decode(_ text: String) -> String? { decode(text[...]) }

    public static func encode(_ text: String) -> String {
        var out = ""
        for b in text.utf8 {
            if b >= 33 && b <= 126 && b != UInt8(ascii: "+") && b != UInt8(ascii: "=") {
                out.append(Character(Unicode.Scalar(b)))
            } else {
                out += "+" + String(b, radix: 16, uppercase: true).leftPad(2)
            }
        }
        return out
    }

    static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - 48
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - 55
        default: return nil  // RFC 3461 says upper-case hex only
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { String(repeating: "0", count: Swift.max(0, n - count)) + self }
}
