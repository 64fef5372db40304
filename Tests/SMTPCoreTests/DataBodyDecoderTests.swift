import NIOCore
import Testing

@testable import SMTPCore

struct DataBodyDecoderTests {
    func decode(_ chunks: [String], maxSize: Int = 1 << 20) -> (
        DataBodyDecoder.Progress, String, String, BodyViolation?
    ) {
        var d = DataBodyDecoder(maxSize: maxSize)
        var out = ByteBuffer()
        var input = ByteBuffer()
        var progress = DataBodyDecoder.Progress.needMoreData
        for c in chunks {
            input.writeString(c)
            progress = d.decode(&input, into: &out)
            if progress == .finished { break }
        }
        return (progress, String(buffer: out), String(buffer: input), d.violation)
    }

    @Test func endsAtCRLFDotCRLFAndUnstuffs() {
        let (p, body, rest, v) = decode(["Subject: x\r\n\r\nline\r\n..dot\r\n.\r\nQUIT\r\n"])
        #expect(p == .finished)
        #expect(body == "Subject: x\r\n\r\nline\r\n.dot\r\n")
        #expect(rest == "QUIT\r\n")
        #expect(v == nil)
    }

    @Test func emptyBody() {
        let (p, body, _, v) = decode([".\r\n"])
        #expect(p == .finished)
        #expect(body == "")
        #expect(v == nil)
    }

    @Test func endMarkerSplitAcrossEveryByte() {
        let text = "a\r\nb\r\n.\r\nNOOP\r\n"
        let (p, body, rest, v) = decode(text.map { String($0) })
        #expect(p == .finished)
        #expect(body == "a\r\nb\r\n")
        #expect(v == nil)
        #expect(rest == "")  // the chunked feed stopped at the end marker
    }

    struct Smuggle: Sendable, CustomTestStringConvertible {
        var name: String
        var body: String
        var testDescription: String { name }
    }

    /// Each variant is content of one message: the smuggled transaction must never end the body, and
    /// the whole message is refused once the real end arrives.
    static let smuggling: [Smuggle] = [
        Smuggle(name: "<LF>.<LF>", body: "hi\n.\nMAIL FROM:<evil@x.test>\r\n"),
        Smuggle(name: "<LF>.<CR><LF>", body: "hi\n.\r\nMAIL FROM:<evil@x.test>\r\n"),
        Smuggle(name: "<CR>.<CR>", body: "hi\r.\rMAIL FROM:<evil@x.test>\r\n"),
        Smuggle(name: "<CR><LF>.<LF>", body: "hi\r\n.\nMAIL FROM:<evil@x.test>\r\n"),
        Smuggle(name: "<CR><LF>.<CR>", body: "hi\r\n.\rMAIL FROM:<evil@x.test>\r\n"),
        Smuggle(name: "bare LF mid-line", body: "hi\nthere\r\n"),
        Smuggle(name: "bare CR mid-line", body: "hi\rthere\r\n"),
        Smuggle(name: "bare LF at start", body: "\nhi\r\n"),
        Smuggle(name: "CR CR LF", body: "hi\r\r\n"),
    ]

    @Test(arguments: smuggling)
    func bareLineEndingsPoisonButNeverEnd(_ s: Smuggle) {
        // Without the real end marker, the body must still be open.
        let (p1, _, _, v1) = decode([s.body])
        #expect(p1 == .needMoreData)
        #expect(v1 == .bareLineEnding)
        // With it, the body ends exactly there and is refused.
        let (p2, body, rest, v2) = decode([s.body + "\r\n.\r\nRSET\r\n"])
        #expect(p2 == .finished)
        #expect(v2 == .bareLineEnding)
        #expect(rest == "RSET\r\n")
        #expect(!body.contains("evil") || body.isEmpty || v2 != nil)
    }

    @Test func lineLengthLimit() {
        let ok = String(repeating: "a", count: 998)
        #expect(decode([ok + "\r\n.\r\n"]).3 == nil)
        #expect(decode([ok + "a\r\n.\r\n"]).3 == .lineTooLong)
        // Dot-stuffed lines count their stuffing octet too.
        #expect(decode(["." + String(repeating: "a", count: 997) + "\r\n.\r\n"]).3 == nil)
    }

    @Test func sizeLimitCountsUnstuffedOctets() {
        #expect(decode(["12345678\r\n.\r\n"], maxSize: 10).3 == nil)
        #expect(decode(["123456789\r\n.\r\n"], maxSize: 10).3 == .tooLarge)
    }

    @Test func chunkCheckerFindsBareEndingsAcrossChunks() {
        var c = ChunkBodyChecker(maxSize: 100)
        let first = c.check(ByteBuffer(string: "abc\r").readableBytesView)
        let second = c.check(ByteBuffer(string: "\ndef\r\n").readableBytesView)
        #expect(first && second)
        c.finish()
        #expect(c.violation == nil)

        var bad = ChunkBodyChecker(maxSize: 100)
        _ = bad.check(ByteBuffer(string: "abc\r").readableBytesView)
        _ = bad.check(ByteBuffer(string: "x\n").readableBytesView)
        #expect(bad.violation == .bareLineEnding)

        var trailing = ChunkBodyChecker(maxSize: 100)
        _ = trailing.check(ByteBuffer(string: "abc\r").readableBytesView)
        trailing.finish()
        #expect(trailing.violation == .bareLineEnding)

        var big = ChunkBodyChecker(maxSize: 3)
        _ = big.check(ByteBuffer(string: "abcd").readableBytesView)
        #expect(big.violation == .tooLarge)
    }
}
