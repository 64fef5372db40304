import NIOCore
import Testing

@testable import SMTPCore

/// `SMTPCommandEncoder` is the exact inverse of `SMTPCommandParser`: every command encodes to the
/// line in the table, and that line parses back to the command (as swift-nio-imap's RoundtripTests
/// hold its encoder to its parser). What cannot go on the wire as it is gets refused, never written.
struct CommandRoundtripTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var command: SMTPCommand
        var line: String
        var testDescription: String { line }
    }

    static func box(_ local: String, _ domain: String) -> Mailbox { Mailbox(localPart: local, domain: domain) }
    static let alice = box("alice", "example.test")

    static let rows: [Row] = [
        Row(command: .ehlo("mx.example.test"), line: "EHLO mx.example.test"),
        Row(command: .ehlo("[192.0.2.1]"), line: "EHLO [192.0.2.1]"),
        Row(command: .ehlo("[IPv6:2001:db8::1]"), line: "EHLO [IPv6:2001:db8::1]"),
        Row(command: .ehlo("localhost_1"), line: "EHLO localhost_1"),
        Row(command: .helo("mx.example.test"), line: "HELO mx.example.test"),
        Row(command: .mail(.null, MailParameters()), line: "MAIL FROM:<>"),
        Row(command: .mail(.mailbox(alice), MailParameters()), line: "MAIL FROM:<alice@example.test>"),
        Row(command: .mail(.mailbox(alice), MailParameters(size: 0)), line: "MAIL FROM:<alice@example.test> SIZE=0"),
        Row(
            command: .mail(.mailbox(alice), MailParameters(size: 999_999_999_999_999_999)),
            line: "MAIL FROM:<alice@example.test> SIZE=999999999999999999"),
        Row(
            command: .mail(.mailbox(alice), MailParameters(body: .sevenBit)),
            line: "MAIL FROM:<alice@example.test> BODY=7BIT"),
        Row(
            command: .mail(.mailbox(alice), MailParameters(body: .eightBitMIME)),
            line: "MAIL FROM:<alice@example.test> BODY=8BITMIME"),
        Row(
            command: .mail(.mailbox(alice), MailParameters(smtpUTF8: true)),
            line: "MAIL FROM:<alice@example.test> SMTPUTF8"),
        Row(
            command: .mail(.mailbox(alice), MailParameters(ret: .full)), line: "MAIL FROM:<alice@example.test> RET=FULL"
        ),
        Row(
            command: .mail(.mailbox(alice), MailParameters(ret: .headers)),
            line: "MAIL FROM:<alice@example.test> RET=HDRS"),
        Row(
            command: .mail(.mailbox(alice), MailParameters(envelopeID: "QQ314159")),
            line: "MAIL FROM:<alice@example.test> ENVID=QQ314159"),
        // RFC 3461 §4: `+`, `=` and space are written as xtext escapes, upper-case hex.
        Row(
            command: .mail(.null, MailParameters(envelopeID: "a+b=c d~!")),
            line: "MAIL FROM:<> ENVID=a+2Bb+3Dc+20d~!"),
        Row(
            command: .mail(
                .mailbox(alice),
                MailParameters(size: 1000, body: .eightBitMIME, smtpUTF8: true, ret: .headers, envelopeID: "id 1")),
            line: "MAIL FROM:<alice@example.test> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+201"),
        Row(
            command: .mail(.mailbox(box("jörg", "bücher.test")), MailParameters(smtpUTF8: true)),
            line: "MAIL FROM:<jörg@bücher.test> SMTPUTF8"),
        Row(
            command: .mail(.mailbox(box("\"john \\\"q\\\" doe\"", "example.test")), MailParameters()),
            line: "MAIL FROM:<\"john \\\"q\\\" doe\"@example.test>"),
        Row(
            command: .mail(.mailbox(box("\"a>b@c\"", "example.test")), MailParameters()),
            line: "MAIL FROM:<\"a>b@c\"@example.test>"),
        Row(
            command: .mail(.mailbox(box("o'neil+tag", "[192.0.2.1]")), MailParameters()),
            line: "MAIL FROM:<o'neil+tag@[192.0.2.1]>"),
        Row(
            command: .mail(.mailbox(box("a", "[IPv6:::1]")), MailParameters()), line: "MAIL FROM:<a@[IPv6:::1]>"),
        Row(command: .rcpt(.postmaster, RecipientParameters()), line: "RCPT TO:<Postmaster>"),
        Row(
            command: .rcpt(.mailbox(box("bob", "example.test")), RecipientParameters()),
            line: "RCPT TO:<bob@example.test>"),
        Row(
            command: .rcpt(.mailbox(box("用户", "例子.广告")), RecipientParameters()), line: "RCPT TO:<用户@例子.广告>"),
        Row(
            command: .rcpt(.mailbox(box("bob", "example.test")), RecipientParameters(notify: DSNNotify(never: true))),
            line: "RCPT TO:<bob@example.test> NOTIFY=NEVER"),
        Row(
            command: .rcpt(.postmaster, RecipientParameters(notify: DSNNotify(success: true))),
            line: "RCPT TO:<Postmaster> NOTIFY=SUCCESS"),
        Row(
            command: .rcpt(.postmaster, RecipientParameters(notify: DSNNotify(failure: true))),
            line: "RCPT TO:<Postmaster> NOTIFY=FAILURE"),
        Row(
            command: .rcpt(.postmaster, RecipientParameters(notify: DSNNotify(delay: true))),
            line: "RCPT TO:<Postmaster> NOTIFY=DELAY"),
        Row(
            command: .rcpt(
                .postmaster, RecipientParameters(notify: DSNNotify(success: true, failure: true, delay: true))),
            line: "RCPT TO:<Postmaster> NOTIFY=SUCCESS,FAILURE,DELAY"),
        Row(
            command: .rcpt(
                .mailbox(box("bob", "example.test")),
                RecipientParameters(
                    originalRecipient: OriginalRecipient(addressType: "rfc822", address: "bob@example.test"))),
            line: "RCPT TO:<bob@example.test> ORCPT=rfc822;bob@example.test"),
        // RFC 3461 §4.2: ORCPT's address is xtext; RFC 6533's utf-8 type carries UTF-8 as escapes.
        Row(
            command: .rcpt(
                .mailbox(box("bob", "example.test")),
                RecipientParameters(
                    notify: DSNNotify(failure: true, delay: true),
                    originalRecipient: OriginalRecipient(addressType: "utf-8", address: "bob+x=y ü@example.test"))),
            line: "RCPT TO:<bob@example.test> NOTIFY=FAILURE,DELAY ORCPT=utf-8;bob+2Bx+3Dy+20+C3+BC@example.test"),
        Row(command: .data, line: "DATA"),
        Row(command: .bdat(size: 0, last: false), line: "BDAT 0"),
        Row(command: .bdat(size: 1024, last: true), line: "BDAT 1024 LAST"),
        Row(command: .bdat(size: 999_999_999_999_999_999, last: true), line: "BDAT 999999999999999999 LAST"),
        Row(command: .rset, line: "RSET"),
        Row(command: .noop, line: "NOOP"),
        Row(command: .quit, line: "QUIT"),
        Row(command: .vrfy("bob"), line: "VRFY bob"),
        Row(command: .vrfy(" Bob Smith "), line: "VRFY  Bob Smith "),
        Row(command: .help, line: "HELP"),
        Row(command: .startTLS, line: "STARTTLS"),
        Row(command: .auth(mechanism: "SCRAM-SHA-256", initialResponse: nil), line: "AUTH SCRAM-SHA-256"),
        Row(command: .auth(mechanism: "PLAIN", initialResponse: "AGEAYg=="), line: "AUTH PLAIN AGEAYg=="),
        Row(command: .auth(mechanism: "PLAIN", initialResponse: "="), line: "AUTH PLAIN ="),
        Row(
            command: .mail(
                .mailbox(box("a", "example.test")), MailParameters(authenticatedSubmitter: "a+b@example.test")),
            line: "MAIL FROM:<a@example.test> AUTH=a+2Bb@example.test"),
    ]

    @Test(arguments: rows)
    func encodesToTheLineAndParsesBack(_ row: Row) throws {
        let line = try SMTPCommandEncoder.line(for: row.command)
        #expect(line == row.line)
        #expect(try SMTPCommandParser.parse(line[...]) == row.command)
    }

    @Test(arguments: rows)
    func wireFormEndsInOneCRLF(_ row: Row) throws {
        var buffer = ByteBuffer(string: "before\r\n")
        try SMTPCommandEncoder.encode(row.command, into: &buffer)
        #expect(String(buffer: buffer) == "before\r\n" + row.line + "\r\n")
        #expect(try SMTPCommandEncoder.encode(row.command) == ByteBuffer(string: row.line + "\r\n"))
    }

    /// Every line the parser's own table accepts comes back, once parsed and encoded, as the same
    /// command (the encoder's spelling may differ: upper-case verbs, no space after the colon, no
    /// source route, the canonical NOTIFY order).
    @Test(arguments: CommandParserTests.good)
    func parsedLinesSurviveEncoding(_ good: CommandParserTests.Good) throws {
        let command = try SMTPCommandParser.parse(good.line[...])
        let line = try SMTPCommandEncoder.line(for: command)
        #expect(try SMTPCommandParser.parse(line[...]) == command)
    }

    // MARK: refusals

    struct Refusal: Sendable, CustomTestStringConvertible {
        var name: String
        var command: SMTPCommand
        var argument: SMTPCommandEncodingError.Argument
        /// `nil`: a CR, LF or NUL; otherwise the text of `.invalid`.
        var invalid: String?
        var testDescription: String { name }
    }

    /// A CR, LF and NUL in each argument that holds text, at its start, middle and end. A CRLF in the
    /// middle is the smuggling case: `RCPT TO:<a@b.test>` then a second command of the attacker's.
    static let lineBreakRefusals: [Refusal] = {
        var out: [Refusal] = []
        let injections: [(String, String)] = [
            ("CR", "\r"), ("LF", "\n"), ("NUL", "\u{0}"), ("CRLF", "\r\n"),
            ("CRLF command", ">\r\nRCPT TO:<victim@evil.test"),
        ]
        for (what, bad) in injections {
            for (place, wrap) in [("start", { bad + $0 }), ("middle", { "a" + bad + $0 }), ("end", { $0 + bad })] {
                func row(_ field: String, _ command: SMTPCommand, _ argument: SMTPCommandEncodingError.Argument) {
                    out.append(
                        Refusal(name: "\(what) at the \(place) of \(field)", command: command, argument: argument))
                }
                row("EHLO", .ehlo(wrap("mx.test")), .helloName)
                row("HELO", .helo(wrap("mx.test")), .helloName)
                row("MAIL local part", .mail(.mailbox(box(wrap("a"), "b.test")), MailParameters()), .sender)
                row("MAIL domain", .mail(.mailbox(box("a", wrap("b.test"))), MailParameters()), .sender)
                row(
                    "MAIL UTF-8 local part", .mail(.mailbox(box(wrap("ü"), "b.test")), MailParameters(smtpUTF8: true)),
                    .sender)
                row("RCPT local part", .rcpt(.mailbox(box(wrap("a"), "b.test")), RecipientParameters()), .recipient)
                row("RCPT domain", .rcpt(.mailbox(box("a", wrap("b.test"))), RecipientParameters()), .recipient)
                row(
                    "RCPT quoted local part", .rcpt(.mailbox(box("\"" + wrap("a b") + "\"", "b.test")), .init()),
                    .recipient)
                row("ENVID", .mail(.null, MailParameters(envelopeID: wrap("id"))), .envelopeID)
                row(
                    "ORCPT address",
                    .rcpt(
                        .postmaster,
                        .init(originalRecipient: OriginalRecipient(addressType: "rfc822", address: wrap("a@b")))),
                    .originalRecipient)
                row(
                    "ORCPT type",
                    .rcpt(
                        .postmaster,
                        .init(originalRecipient: OriginalRecipient(addressType: wrap("rfc822"), address: "a@b"))),
                    .originalRecipient)
                row("VRFY", .vrfy(wrap("bob")), .vrfy)
            }
        }
        return out
    }()

    static let grammarRefusals: [Refusal] = [
        Refusal(name: "empty EHLO", command: .ehlo(""), argument: .helloName, invalid: Self.helloInvalid),
        Refusal(name: "EHLO with a space", command: .ehlo("a b"), argument: .helloName, invalid: Self.helloInvalid),
        Refusal(name: "UTF-8 EHLO", command: .ehlo("bücher.test"), argument: .helloName, invalid: Self.helloInvalid),
        Refusal(name: "EHLO with '>'", command: .helo("a>b"), argument: .helloName, invalid: Self.helloInvalid),
        Refusal(
            name: "bad EHLO literal", command: .ehlo("[300.0.0.1]"), argument: .helloName, invalid: Self.helloInvalid),
        Refusal(
            name: "sender without domain", command: .mail(.mailbox(box("alice", "")), .init()), argument: .sender,
            invalid: "empty domain"),
        Refusal(
            name: "sender with an empty atom", command: .mail(.mailbox(box("a..b", "b.test")), .init()),
            argument: .sender, invalid: "empty atom in local part"),
        Refusal(
            name: "sender local part of 65 octets",
            command: .mail(.mailbox(box(String(repeating: "a", count: 65), "b.test")), .init()), argument: .sender,
            invalid: "local part longer than 64 octets"),
        Refusal(
            name: "UTF-8 sender without SMTPUTF8", command: .mail(.mailbox(box("jörg", "b.test")), .init()),
            argument: .sender, invalid: "UTF-8 address without the SMTPUTF8 parameter"),
        Refusal(
            name: "'<' in an unquoted local part", command: .mail(.mailbox(box("a<b", "b.test")), .init()),
            argument: .sender, invalid: "bad character in local part"),
        Refusal(
            name: "'>' in a domain", command: .mail(.mailbox(box("a", "b>.test")), .init()), argument: .sender,
            invalid: "bad character in domain"),
        Refusal(
            name: "local part read as a source route",
            command: .rcpt(.mailbox(box("@relay.test:a", "b.test")), .init()), argument: .recipient,
            invalid: "bad character in local part"),
        // A combining mark after `@` fuses the two into one Character: the parser would find no `@`.
        Refusal(
            name: "combining mark after '@'",
            command: .mail(.mailbox(box("a", "\u{301}b.test")), .init(smtpUTF8: true)),
            argument: .sender, invalid: "a combining character joins a delimiter"),
        Refusal(
            name: "combining mark after '<'", command: .rcpt(.mailbox(box("\u{301}a", "b.test")), .init()),
            argument: .recipient, invalid: "a combining character joins a delimiter"),
        Refusal(
            name: "path of 259 characters",
            command: .rcpt(
                .mailbox(
                    box("a", [String](repeating: String(repeating: "b", count: 63), count: 4).joined(separator: "."))),
                .init()),
            argument: .recipient, invalid: "path longer than 256 characters"),
        Refusal(
            name: "recipient \"\"@domain", command: .rcpt(.mailbox(box("\"\"", "b.test")), .init()),
            argument: .recipient, invalid: "empty local part"),
        Refusal(
            name: "negative SIZE", command: .mail(.null, .init(size: -1)), argument: .size,
            invalid: "not a number of 0 to 18 digits"),
        Refusal(
            name: "SIZE of 19 digits", command: .mail(.null, .init(size: 1_000_000_000_000_000_000)), argument: .size,
            invalid: "not a number of 0 to 18 digits"),
        Refusal(
            name: "empty ENVID", command: .mail(.null, .init(envelopeID: "")), argument: .envelopeID,
            invalid: "empty or not printable ASCII"),
        Refusal(
            name: "ENVID with ESC", command: .mail(.null, .init(envelopeID: "\u{1B}[2J")), argument: .envelopeID,
            invalid: "empty or not printable ASCII"),
        Refusal(
            name: "UTF-8 ENVID", command: .mail(.null, .init(envelopeID: "ü")), argument: .envelopeID,
            invalid: "empty or not printable ASCII"),
        Refusal(
            name: "ENVID of 101 characters as xtext",
            command: .mail(.null, .init(envelopeID: String(repeating: "x", count: 98) + "+")), argument: .envelopeID,
            invalid: "longer than 100 characters as xtext"),
        Refusal(
            name: "NOTIFY without a condition", command: .rcpt(.postmaster, .init(notify: DSNNotify())),
            argument: .notify, invalid: "no condition"),
        Refusal(
            name: "NOTIFY=NEVER with FAILURE",
            command: .rcpt(.postmaster, .init(notify: DSNNotify(never: true, failure: true))), argument: .notify,
            invalid: "NEVER must stand alone"),
        Refusal(
            name: "ORCPT without a type",
            command: .rcpt(.postmaster, .init(originalRecipient: OriginalRecipient(addressType: "", address: "a@b"))),
            argument: .originalRecipient, invalid: "address type is not letters, digits and '-'"),
        Refusal(
            name: "ORCPT type with ';'",
            command: .rcpt(
                .postmaster, .init(originalRecipient: OriginalRecipient(addressType: "a;b", address: "a@b"))),
            argument: .originalRecipient, invalid: "address type is not letters, digits and '-'"),
        Refusal(
            name: "ORCPT with a C1 control",
            command: .rcpt(
                .postmaster, .init(originalRecipient: OriginalRecipient(addressType: "utf-8", address: "\u{9B}2J"))),
            argument: .originalRecipient, invalid: "empty address or a control character"),
        Refusal(
            name: "ORCPT of 501 characters",
            command: .rcpt(
                .postmaster,
                .init(
                    originalRecipient: OriginalRecipient(
                        addressType: "rfc822", address: String(repeating: "a", count: 494)))),
            argument: .originalRecipient, invalid: "longer than 500 characters as xtext"),
        Refusal(
            name: "negative BDAT size", command: .bdat(size: -1, last: true), argument: .chunkSize,
            invalid: "not a number of 0 to 18 digits"),
        Refusal(name: "empty VRFY", command: .vrfy(""), argument: .vrfy, invalid: "empty"),
        Refusal(name: "VRFY of spaces", command: .vrfy("  \t"), argument: .vrfy, invalid: "empty"),
        Refusal(
            name: "VRFY starting with a combining mark", command: .vrfy("\u{301}x"), argument: .vrfy,
            invalid: "starts with a combining character"),
    ]

    static let helloInvalid = "not a domain, an address literal or printable ASCII"

    @Test(arguments: lineBreakRefusals + grammarRefusals)
    func refusesWhatCannotBeSentAsItIs(_ refusal: Refusal) {
        let expected = SMTPCommandEncodingError(
            refusal.argument, refusal.invalid.map { .invalid($0) } ?? .lineBreakOrNUL)
        #expect(throws: expected) { try SMTPCommandEncoder.line(for: refusal.command) }
        // Nothing of a refused command reaches the buffer.
        var buffer = ByteBuffer(string: "RSET\r\n")
        #expect(throws: expected) { try SMTPCommandEncoder.encode(refusal.command, into: &buffer) }
        #expect(String(buffer: buffer) == "RSET\r\n")
    }

    @Test func refusalRepliesNameTheArgumentNotTheValue() {
        let smuggled = "a@b.test>\r\nRCPT TO:<victim"
        let error = SMTPCommandEncodingError(.recipient, .lineBreakOrNUL)
        #expect(throws: error) {
            try SMTPCommandEncoder.line(for: .rcpt(.mailbox(Mailbox(splitting: smuggled)), RecipientParameters()))
        }
        #expect(error.reply == SMTPReply(553, .init(5, 1, 3), "Cannot send the recipient: it holds a CR, LF or NUL"))
        #expect(SMTPCommandEncodingError(.sender, .invalid("empty domain")).reply.enhancedCode == .init(5, 1, 7))
        #expect(SMTPCommandEncodingError(.envelopeID, .lineBreakOrNUL).reply.code == 501)
        #expect(!error.reply.encoded.contains("victim"))
    }

    @Test func storedAddressesSplitAtTheLastAt() {
        #expect(Mailbox(splitting: "\"a@b\"@c.test") == Mailbox(localPart: "\"a@b\"", domain: "c.test"))
        #expect(Mailbox(splitting: "postmaster") == Mailbox(localPart: "postmaster", domain: ""))
    }
}
