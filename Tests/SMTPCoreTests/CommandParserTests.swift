import Testing

@testable import SMTPCore

struct CommandParserTests {
    struct Good: Sendable, CustomTestStringConvertible {
        var line: String
        var command: SMTPCommand
        var testDescription: String { line }
    }

    static let good: [Good] = [
        Good(line: "EHLO client.test", command: .ehlo("client.test")),
        Good(line: "ehlo [127.0.0.1]", command: .ehlo("[127.0.0.1]")),
        Good(line: "HELO client", command: .helo("client")),
        Good(line: "MAIL FROM:<>", command: .mail(.null, MailParameters())),
        Good(
            line: "MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME",
            command: .mail(
                .mailbox(Mailbox(localPart: "a", domain: "b.test")), MailParameters(size: 1000, body: .eightBitMIME))),
        Good(
            line: "mail from: <a@b.test>",
            command: .mail(.mailbox(Mailbox(localPart: "a", domain: "b.test")), MailParameters())),
        Good(
            line: "MAIL FROM:<\"john doe\"@b.test>",
            command: .mail(.mailbox(Mailbox(localPart: "\"john doe\"", domain: "b.test")), MailParameters())),
        Good(
            line: "MAIL FROM:<@relay.test,@r2.test:a@b.test>",
            command: .mail(.mailbox(Mailbox(localPart: "a", domain: "b.test")), MailParameters())),
        Good(
            line: "MAIL FROM:<a@[192.0.2.1]>",
            command: .mail(.mailbox(Mailbox(localPart: "a", domain: "[192.0.2.1]")), MailParameters())),
        Good(
            line: "MAIL FROM:<a@[IPv6:2001:db8::1]>",
            command: .mail(.mailbox(Mailbox(localPart: "a", domain: "[IPv6:2001:db8::1]")), MailParameters())),
        Good(
            line: "MAIL FROM:<ü@b.test> SMTPUTF8",
            command: .mail(.mailbox(Mailbox(localPart: "ü", domain: "b.test")), MailParameters(smtpUTF8: true))),
        Good(
            line: "MAIL FROM:<a@b.test> RET=HDRS ENVID=abc+2Bdef",
            command: .mail(
                .mailbox(Mailbox(localPart: "a", domain: "b.test")),
                MailParameters(ret: .headers, envelopeID: "abc+def"))),
        Good(
            line: "RCPT TO:<alice@contoso.test>",
            command: .rcpt(.mailbox(Mailbox(localPart: "alice", domain: "contoso.test")), RecipientParameters())),
        Good(line: "RCPT TO:<Postmaster>", command: .rcpt(.postmaster, RecipientParameters())),
        Good(
            line: "RCPT TO:<a@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b.test",
            command: .rcpt(
                .mailbox(Mailbox(localPart: "a", domain: "b.test")),
                RecipientParameters(
                    notify: DSNNotify(success: true, failure: true),
                    originalRecipient: OriginalRecipient(addressType: "rfc822", address: "a@b.test")))),
        Good(
            line: "RCPT TO:<a@b.test> NOTIFY=NEVER",
            command: .rcpt(
                .mailbox(Mailbox(localPart: "a", domain: "b.test")), RecipientParameters(notify: DSNNotify(never: true))
            )),
        Good(line: "DATA", command: .data),
        Good(line: "BDAT 100", command: .bdat(size: 100, last: false)),
        Good(line: "BDAT 0 LAST", command: .bdat(size: 0, last: true)),
        Good(line: "bdat 5 last", command: .bdat(size: 5, last: true)),
        Good(line: "RSET", command: .rset),
        Good(line: "NOOP", command: .noop),
        Good(line: "NOOP anything", command: .noop),
        Good(line: "QUIT", command: .quit),
        Good(line: "VRFY alice", command: .vrfy("alice")),
        Good(line: "HELP", command: .help),
        Good(line: "HELP MAIL", command: .help),
        Good(line: "STARTTLS", command: .startTLS),
    ]

    @Test(arguments: good)
    func parsesValidCommands(_ c: Good) throws {
        #expect(try SMTPCommandParser.parse(c.line[...]) == c.command)
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        var line: String
        var code: Int
        var enhanced: String
        var testDescription: String { "\(line) -> \(code) \(enhanced)" }
    }

    static let bad: [Bad] = [
        Bad(line: "", code: 500, enhanced: "5.5.2"),
        Bad(line: "EXPN staff", code: 502, enhanced: "5.5.1"),
        Bad(line: "AUTH PL@IN", code: 501, enhanced: "5.5.2"),
        Bad(line: "AUTH PLAIN not-base64", code: 501, enhanced: "5.5.2"),
        Bad(line: "TURN", code: 502, enhanced: "5.5.1"),
        Bad(line: "#$%^", code: 500, enhanced: "5.5.2"),
        Bad(line: "EHLO", code: 501, enhanced: "5.5.4"),
        Bad(line: "HELO ", code: 501, enhanced: "5.5.4"),
        Bad(line: "EHLO a b", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL TO:<a@b.test>", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:a@b.test", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<a@b.test", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<a>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<a..b@c.test>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<a@-b.test>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<a@b..test>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<a@[300.1.1.1]>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<a@[IPv6:zz::1]>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<\"unterminated@b.test>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<\(String(repeating: "a", count: 65))@b.test>", code: 501, enhanced: "5.1.7"),
        Bad(line: "MAIL FROM:<ü@b.test>", code: 553, enhanced: "5.6.7"),
        Bad(line: "MAIL FROM:<a@b.test> FOO=BAR", code: 555, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> BODY=BINARYMIME", code: 555, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> SIZE=abc", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> SIZE=1 SIZE=2", code: 501, enhanced: "5.5.4"),
        // Issue 10: what a hostile probe sent (also in the parser's fuzz corpus).
        Bad(line: "MAIL FROM:<a@b.test> SIZE=+5", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> SIZE=-0", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> SIZE=", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> ENVID=a+0D+0Ab", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> ENVID=+1B[31mred", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> ENVID=+00", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> ENVID=+7F", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<a@b.test> ORCPT=rfc822;a+0D+0AX-Injected:+20yes", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<a@b.test> ORCPT=rfc822;+1B]0;title+07", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<a@b.test> ORCPT=utf-8;+C2+9B2J", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<\"\"@b.test>", code: 553, enhanced: "5.1.3"),
        // Found by the fuzzer (docs/fuzzing.md, KI-1 and KI-2).
        Bad(line: "MAIL FROM:<a@[IPv6:::1\u{0}x]>", code: 501, enhanced: "5.1.7"),
        Bad(line: "EHLO [IPv6:::1\u{1B}[2J]", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<bob@ex.test> ORCPT=rfc822;bob+A2", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> RET=ALL", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> ENVID=a+zz", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> SMTPUTF8=yes", code: 501, enhanced: "5.5.4"),
        Bad(line: "MAIL FROM:<a@b.test> =x", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<>", code: 501, enhanced: "5.1.3"),
        Bad(line: "RCPT TO:alice@b.test", code: 501, enhanced: "5.1.3"),
        Bad(line: "RCPT FROM:<a@b.test>", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<a@b.test> NOTIFY=NEVER,SUCCESS", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<a@b.test> NOTIFY=SOMETIMES", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<a@b.test> ORCPT=nosemicolon", code: 501, enhanced: "5.5.4"),
        Bad(line: "RCPT TO:<a@b.test> XFOO", code: 555, enhanced: "5.5.4"),
        Bad(line: "DATA now", code: 501, enhanced: "5.5.4"),
        Bad(line: "BDAT", code: 501, enhanced: "5.5.4"),
        Bad(line: "BDAT -1", code: 501, enhanced: "5.5.4"),
        Bad(line: "BDAT 10 FIRST", code: 501, enhanced: "5.5.4"),
        Bad(line: "BDAT 99999999999999999999", code: 501, enhanced: "5.5.4"),
        Bad(line: "RSET x", code: 501, enhanced: "5.5.4"),
        Bad(line: "QUIT now", code: 501, enhanced: "5.5.4"),
        Bad(line: "STARTTLS now", code: 501, enhanced: "5.5.4"),
        Bad(line: "VRFY", code: 501, enhanced: "5.5.4"),
    ]

    @Test(arguments: bad)
    func rejectsMalformedCommands(_ c: Bad) {
        #expect(throws: SMTPCommandError.self) { try SMTPCommandParser.parse(c.line[...]) }
        do {
            _ = try SMTPCommandParser.parse(c.line[...])
        } catch {
            #expect(error.reply.code == c.code)
            #expect(error.reply.enhancedCode?.description == c.enhanced)
        }
    }

    @Test func replyEncodingIsMultilineWithEnhancedCodes() {
        let r = SMTPReply(250, .init(2, 0, 0), lines: ["one", "two"])
        #expect(r.encoded == "250-2.0.0 one\r\n250 2.0.0 two\r\n")
        #expect(SMTPReply(220, nil, "hi").encoded == "220 hi\r\n")
    }

    @Test(arguments: ["2.0.0", "4.4.316", "5.7.233", "4.3.2"])
    func enhancedCodesParse(_ text: String) {
        #expect(EnhancedStatusCode(parsing: text)?.description == text)
    }

    @Test(arguments: ["3.0.0", "2.0", "2.0.0.0", "x.1.1", "5.1234.1", ""])
    func enhancedCodesRejectNonsense(_ text: String) {
        #expect(EnhancedStatusCode(parsing: text) == nil)
    }

    @Test func xtextRoundTrips() {
        #expect(XText.encode("a+b=c d") == "a+2Bb+3Dc+20d")
        #expect(XText.decode("a+2Bb+3Dc+20d") == "a+b=c d")
        #expect(XText.decode("a+2") == nil)
        #expect(XText.decode("a=b") == nil)
    }

    @Test func unquotedLocalPartNormalises() throws {
        let m = try Mailbox.parse("\"al\\\"ice\"@b.test", allowUTF8: false)
        #expect(m.unquotedLocalPart == "al\"ice")
    }
}
