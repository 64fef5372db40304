import NIOCore

/// Writes an `SMTPCommand` as the command line a client sends (RFC 5321 §4.1.1, with the ESMTP
/// parameters of RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8 and RFC 3461 RET, ENVID, NOTIFY and
/// ORCPT, and RFC 3030 BDAT): the exact inverse of `SMTPCommandParser.parse`.
///
/// Whatever it writes, the parser reads back as the same command; whatever the parser would read
/// differently, or not at all, it refuses with an `SMTPCommandEncodingError` instead of writing. So a
/// CR, LF or NUL in any argument can never put a second command on the wire, and the next hop is told
/// exactly the envelope Mailflow holds. ENVID and ORCPT's address travel as xtext (RFC 3461 §4):
/// `+`, `=`, space, controls and every non-ASCII octet as `+XX`.
///
/// Parameters go in a fixed order: SIZE, BODY, SMTPUTF8, RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT.
///
/// ```swift
/// let mailbox = Mailbox(localPart: "bob", domain: "example.test")
/// let params = RecipientParameters(notify: DSNNotify(failure: true))
/// try SMTPCommandEncoder.line(for: .rcpt(.mailbox(mailbox), params))
/// // "RCPT TO:<bob@example.test> NOTIFY=FAILURE"
/// ```
public enum SMTPCommandEncoder {
    /// The command line without its CRLF, as `SMTPCommandParser.parse` takes it.
    public static func line(for command: SMTPCommand) throws(SMTPCommandEncodingError) -> String {
        switch command {
        case .ehlo(let name):
            return "EHLO " + (try helloName(name))
        case .helo(let name):
            return "HELO " + (try helloName(name))
        case .mail(let path, let parameters):
            return "MAIL FROM:" + (try reversePath(path, parameters)) + (try mailParameters(parameters))
        case .rcpt(let path, let parameters):
            return "RCPT TO:" + (try forwardPath(path)) + (try recipientParameters(parameters))
        case .data:
            return "DATA"
        case .bdat(let size, let last):
            guard size >= 0, size <= maxSizeValue else {
                throw SMTPCommandEncodingError(.chunkSize, .invalid("not a number of 0 to 18 digits"))
            }
            return "BDAT \(size)" + (last ? " LAST" : "")
        case .rset:
            return "RSET"
        case .noop:
            return "NOOP"
        case .quit:
            return "QUIT"
        case .vrfy(let argument):
            try refuseLineBreaks(argument, .vrfy)
            guard !argument[...].trimmingTrailingSpaces().isEmpty else {
                throw SMTPCommandEncodingError(.vrfy, .invalid("empty"))
            }
            guard standApart(" ", argument) else {
                throw SMTPCommandEncodingError(.vrfy, .invalid("starts with a combining character"))
            }
            return "VRFY " + argument
        case .help:
            return "HELP"
        case .startTLS:
            return "STARTTLS"
        case .auth(let mechanism, let initialResponse):
            try refuseLineBreaks(mechanism, .auth)
            guard
                (try? SMTPCommandParser.parse("AUTH \(mechanism)"[...]))
                    == .auth(mechanism: mechanism, initialResponse: nil)
            else { throw SMTPCommandEncodingError(.auth, .invalid("not an upper-case SASL mechanism name")) }
            guard let initialResponse else { return "AUTH " + mechanism }
            try refuseLineBreaks(initialResponse, .auth)
            guard initialResponse == "=" || SASLBase64.isWellFormed(initialResponse[...]) else {
                throw SMTPCommandEncodingError(.auth, .invalid("the initial response is not base64 or ="))
            }
            return "AUTH " + mechanism + " " + initialResponse
        }
    }

    /// Writes the command line and its CRLF to `buffer`; writes nothing when the command is refused.
    public static func encode(_ command: SMTPCommand, into buffer: inout ByteBuffer) throws(SMTPCommandEncodingError) {
        let text = try line(for: command)
        buffer.writeString(text)
        buffer.writeStaticString("\r\n")
    }

    /// The command line and its CRLF in a buffer of its own.
    public static func encode(_ command: SMTPCommand) throws(SMTPCommandEncodingError) -> ByteBuffer {
        var buffer = ByteBuffer()
        try encode(command, into: &buffer)
        return buffer
    }

    /// The largest SIZE or BDAT size the parser reads: 18 digits (it refuses more, so that the value
    /// always fits an `Int`; RFC 1870 §3 allows 20).
    static let maxSizeValue = 999_999_999_999_999_999

    // MARK: arguments

    static func refuseLineBreaks(_ text: String, _ argument: SMTPCommandEncodingError.Argument)
        throws(SMTPCommandEncodingError)
    {
        if text.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }) {
            throw SMTPCommandEncodingError(argument, .lineBreakOrNUL)
        }
    }

    /// `true` when `a + b` keeps the boundary between them: no combining mark at the start of `b`
    /// (nor a prepended mark at the end of `a`) fuses the two into one `Character`. The parser finds
    /// delimiters by `Character`, so a fused `<`, `@`, `>` or space is no delimiter to it.
    static func standApart(_ a: String, _ b: String) -> Bool {
        (a + b).count == a.count + b.count
    }

    static func helloName(_ name: String) throws(SMTPCommandEncodingError) -> String {
        try refuseLineBreaks(name, .helloName)
        // RFC 5321 §4.1.1.1: a domain or an address literal; the parser also takes any printable
        // ASCII word, as real clients send one (see `SMTPCommandParser.validHelloName`).
        guard !name.isEmpty, SMTPCommandParser.validHelloName(name[...]) else {
            throw SMTPCommandEncodingError(.helloName, .invalid("not a domain, an address literal or printable ASCII"))
        }
        return name
    }

    static func reversePath(_ path: ReversePath, _ parameters: MailParameters) throws(SMTPCommandEncodingError)
        -> String
    {
        switch path {
        case .null: return "<>"
        case .mailbox(let m): return try mailboxPath(m, allowUTF8: parameters.smtpUTF8, .sender)
        }
    }

    static func forwardPath(_ path: ForwardPath) throws(SMTPCommandEncodingError) -> String {
        switch path {
        case .postmaster:
            return "<Postmaster>"
        case .mailbox(let m):
            // UTF-8 is the session's to check against MAIL's SMTPUTF8, as the parser leaves it.
            let text = try mailboxPath(m, allowUTF8: true, .recipient)
            // The parser refuses `""@domain`: it names no mailbox (backscatter if accepted).
            guard !m.unquotedLocalPart.isEmpty else {
                throw SMTPCommandEncodingError(.recipient, .invalid("empty local part"))
            }
            return text
        }
    }

    /// `<local@domain>`, checked against everything `Mailbox.parse` and `PathParser.splitPath` check.
    static func mailboxPath(
        _ m: Mailbox, allowUTF8: Bool, _ argument: SMTPCommandEncodingError.Argument
    ) throws(SMTPCommandEncodingError) -> String {
        try refuseLineBreaks(m.localPart, argument)
        try refuseLineBreaks(m.domain, argument)
        let inner = m.localPart + "@" + m.domain
        if !allowUTF8 && !inner.allSatisfy(\.isASCII) {
            throw SMTPCommandEncodingError(argument, .invalid("UTF-8 address without the SMTPUTF8 parameter"))
        }
        do {
            try Mailbox.validateLocalPart(m.localPart[...], allowUTF8: allowUTF8)
            try Mailbox.validateDomainOrLiteral(m.domain[...], allowUTF8: allowUTF8)
        } catch {
            switch error {
            case .syntax(let why), .tooLong(let why):
                throw SMTPCommandEncodingError(argument, .invalid(why))
            case .utf8NotAllowed:
                throw SMTPCommandEncodingError(argument, .invalid("UTF-8 address without the SMTPUTF8 parameter"))
            }
        }
        // The parser splits at the last `@` and ends the path at the first `>` outside quotes, both
        // found by Character; a local part that starts with `@` would read as a source route.
        guard standApart(m.localPart, "@"), standApart("@", m.domain), standApart("<", inner),
            standApart(inner, ">"), m.localPart.first != "@"
        else {
            throw SMTPCommandEncodingError(argument, .invalid("a combining character joins a delimiter"))
        }
        let text = "<" + inner + ">"
        // RFC 5321 §4.5.3.1.3, counted as the parser counts (in characters).
        guard text.count <= SMTPLimits.pathLength else {
            throw SMTPCommandEncodingError(argument, .invalid("path longer than \(SMTPLimits.pathLength) characters"))
        }
        return text
    }

    // MARK: parameters

    static func mailParameters(_ p: MailParameters) throws(SMTPCommandEncodingError) -> String {
        var out = ""
        if let size = p.size {
            // RFC 1870 §3: size-value ::= 1*20DIGIT.
            guard size >= 0, size <= maxSizeValue else {
                throw SMTPCommandEncodingError(.size, .invalid("not a number of 0 to 18 digits"))
            }
            out += " SIZE=\(size)"
        }
        if let body = p.body { out += " BODY=\(body.rawValue)" }
        if p.smtpUTF8 { out += " SMTPUTF8" }
        if let ret = p.ret { out += " RET=\(ret.rawValue)" }
        if let id = p.envelopeID {
            try refuseLineBreaks(id, .envelopeID)
            // RFC 3461 §4.4: the decoded ENVID is printable US-ASCII, at most 100 characters of xtext.
            guard !id.isEmpty, id.utf8.allSatisfy({ (32...126).contains($0) }) else {
                throw SMTPCommandEncodingError(.envelopeID, .invalid("empty or not printable ASCII"))
            }
            let xtext = XText.encode(id)
            guard xtext.utf8.count <= SMTPLimits.envidLength else {
                throw SMTPCommandEncodingError(
                    .envelopeID, .invalid("longer than \(SMTPLimits.envidLength) characters as xtext"))
            }
            out += " ENVID=" + xtext
        }
        if let submitter = p.authenticatedSubmitter {
            try refuseLineBreaks(submitter, .authenticatedSubmitter)
            let xtext = XText.encode(submitter)
            guard !submitter.isEmpty, submitter.utf8.allSatisfy({ (33...126).contains($0) }), xtext.utf8.count <= 500
            else {
                throw SMTPCommandEncodingError(
                    .authenticatedSubmitter, .invalid("empty, too long or not printable ASCII"))
            }
            out += " AUTH=" + xtext
        }
        return out
    }

    static func recipientParameters(_ p: RecipientParameters) throws(SMTPCommandEncodingError) -> String {
        var out = ""
        if let n = p.notify {
            // RFC 3461 §4.1: NEVER, or one or more of SUCCESS, FAILURE, DELAY.
            guard n.never || n.success || n.failure || n.delay else {
                throw SMTPCommandEncodingError(.notify, .invalid("no condition"))
            }
            guard !(n.never && (n.success || n.failure || n.delay)) else {
                throw SMTPCommandEncodingError(.notify, .invalid("NEVER must stand alone"))
            }
            out += " NOTIFY=\(n)"
        }
        if let o = p.originalRecipient {
            try refuseLineBreaks(o.addressType, .originalRecipient)
            try refuseLineBreaks(o.address, .originalRecipient)
            // RFC 3461 §4.2: addr-type is an atom (Mailflow, like the parser, takes letters, digits
            // and `-`); the address is xtext and, decoded, free of controls.
            guard !o.addressType.isEmpty,
                o.addressType.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
            else {
                throw SMTPCommandEncodingError(
                    .originalRecipient, .invalid("address type is not letters, digits and '-'"))
            }
            guard !o.address.isEmpty,
                !o.address.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw SMTPCommandEncodingError(.originalRecipient, .invalid("empty address or a control character"))
            }
            let value = o.addressType + ";" + XText.encode(o.address)
            guard value.utf8.count <= SMTPLimits.orcptLength else {
                throw SMTPCommandEncodingError(
                    .originalRecipient, .invalid("longer than \(SMTPLimits.orcptLength) characters as xtext"))
            }
            out += " ORCPT=" + value
        }
        return out
    }
}
