import Testing

@testable import MailAuth

@Suite struct DKIMCanonicalizationTests {
    /// RFC 6376 §3.4.6 example: the header fields and body of the example message in both forms.
    static let example = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n"

    @Test func rfc6376Example() throws {
        let message = try DKIMMessage(crlf: Array(Self.example.utf8))
        #expect(message.headerFields.map(\.lowercasedName) == ["a", "b"])
        let relaxed = message.headerFields.map { DKIMCanonicalization.relaxed.header($0).text }
        #expect(relaxed == ["a:X\r\n", "b:Y Z\r\n"])
        let simple = message.headerFields.map { DKIMCanonicalization.simple.header($0).text }
        #expect(simple == ["A: X\r\n", "B : Y\t\r\n\tZ  \r\n"])
        #expect(DKIMCanonicalization.relaxed.body(message.body).text == " C\r\nD E\r\n")
        #expect(DKIMCanonicalization.simple.body(message.body).text == " C \r\nD \t E\r\n")
    }

    @Test(arguments: [
        // (body, simple, relaxed)
        ("", "\r\n", ""),
        ("\r\n", "\r\n", ""),
        ("\r\n\r\n\r\n", "\r\n", ""),
        ("abc", "abc\r\n", "abc\r\n"),
        ("abc\r\n", "abc\r\n", "abc\r\n"),
        ("abc\r\n\r\n\r\n", "abc\r\n", "abc\r\n"),
        ("abc  \r\n \t \r\n", "abc  \r\n \t \r\n", "abc\r\n"),
        ("a\r\n\r\nb\r\n\r\n", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"),
        ("  lead\tand  inner \r\n", "  lead\tand  inner \r\n", " lead and inner\r\n"),
        ("end without crlf  ", "end without crlf  \r\n", "end without crlf\r\n"),
    ])
    func bodies(body: String, simple: String, relaxed: String) {
        let bytes = Array(body.utf8)[...]
        #expect(DKIMCanonicalization.simple.body(bytes).text == simple)
        #expect(DKIMCanonicalization.relaxed.body(bytes).text == relaxed)
    }

    @Test(arguments: [
        ("Subject: Hello\r\n", "subject:Hello\r\n"),
        ("SUBJECT  :   Hello   World  \r\n", "subject:Hello World\r\n"),
        ("Subject: folded\r\n  over\r\n\tthree lines\r\n", "subject:folded over three lines\r\n"),
        ("X-Empty:\r\n", "x-empty:\r\n"),
        ("X-Empty:   \r\n", "x-empty:\r\n"),
    ])
    func relaxedHeaders(field: String, canonical: String) throws {
        let message = try DKIMMessage(crlf: Array((field + "\r\n").utf8))
        #expect(DKIMCanonicalization.relaxed.header(try #require(message.headerFields.first)).text == canonical)
        #expect(DKIMCanonicalization.simple.header(try #require(message.headerFields.first)).text == field)
    }

    @Test func bareLineFeedsAreReadAsCRLF() throws {
        let message = try DKIMMessage(normalizing: Array("From: a@b\nSubject: x\n y\n\nbody\n".utf8))
        #expect(message.headerFields.count == 2)
        #expect(message.body.text == "body\r\n")
    }

    @Test func aHeaderLineWithoutColonIsRefused() {
        #expect(throws: DKIMMessage.ParseError.lineWithoutColon) {
            try DKIMMessage(crlf: Array("From: a@b\r\nnot a header\r\n\r\n".utf8))
        }
    }

    @Test(arguments: [
        ("simple", true), ("relaxed/simple", true), ("relaxed/relaxed", true), ("fancy", false),
        ("relaxed/", false), ("a/b/c", false),
    ])
    func canonicalizationTag(text: String, valid: Bool) {
        #expect((DKIMCanonicalization.pair(text) != nil) == valid)
    }
}
