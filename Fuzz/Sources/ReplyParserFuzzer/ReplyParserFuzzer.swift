import FuzzSupport
import NIOCore
import SMTPCore

/// Feeds the bytes as what a remote server sends to `SMTPReplyParser` (as Delivery does: append,
/// then parse until nil or an error) and checks:
///
/// - no crash, no hang, no memory error;
/// - every reply has a code in 200...599, 1 to 100 lines, no LF in a line, an enhanced code of the
///   reply's class if any; the bytes held unparsed never exceed the line limit;
/// - chunking does not matter: one chunk, one byte at a time (inputs up to 512 bytes) and a split in
///   two (at every point of an input up to 64 bytes; above that on both sides of its first 16 CR and
///   LF and at 8 spread points) give the same replies, the same error and the same unparsed rest;
/// - the reply re-encoded (`SMTPReply.encoded`, as the server writes its replies) parses to the same
///   code, enhanced code and number of lines, and a second round trip changes nothing;
/// - ServerCapabilities(ehloReply:) takes any reply.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    beginInput(bytes)
    let input = Array(bytes)

    let whole = parseAll([input[...]])
    for reply in whole.replies { checkReply(reply) }
    if input.count <= 512 {
        let bytewise = parseAll(input.map { [$0][...] })
        check(bytewise == whole, "one byte at a time gives \(bytewise), one chunk gives \(whole)")
    }
    for cut in splitPoints(input, everyPointUpTo: 64, marks: [0x0D, 0x0A], maxMarked: 16, spread: 8) {
        let split = parseAll([input[..<cut], input[cut...]])
        check(split == whole, "split at \(cut) gives \(split), one chunk gives \(whole)")
    }
    return 0
}

struct Outcome: Equatable, CustomStringConvertible {
    var replies: [SMTPReply]
    var error: String?
    var rest: [UInt8]

    var description: String {
        "(replies: \(replies.map { escaped($0.encoded) }), error: \(error ?? "none"), rest: \(escaped(rest)))"
    }
}

func parseAll(_ chunks: [ArraySlice<UInt8>]) -> Outcome {
    var parser = SMTPReplyParser()
    var buffer = ByteBuffer()
    var replies: [SMTPReply] = []
    for chunk in chunks {
        buffer.writeBytes(chunk)
        do {
            while let reply = try parser.parse(&buffer) { replies.append(reply) }
        } catch {
            return Outcome(replies: replies, error: error.description, rest: [])
        }
        check(
            buffer.readableBytes <= SMTPReplyParser.maxLineLength,
            "\(buffer.readableBytes) bytes held without a complete line")
    }
    return Outcome(replies: replies, error: nil, rest: Array(buffer.readableBytesView))
}

func checkReply(_ reply: SMTPReply) {
    check((200...599).contains(reply.code), "reply code \(reply.code)")
    check(!reply.lines.isEmpty && reply.lines.count <= SMTPReplyParser.maxLines, "\(reply.lines.count) lines")
    check(!reply.lines.contains { $0.utf8.contains(0x0A) }, "LF in a reply line: \(escaped(reply.encoded))")
    if let e = reply.enhancedCode {
        check(e.statusClass == reply.code / 100, "enhanced code \(e) in a \(reply.code) reply")
    }
    _ = ServerCapabilities(ehloReply: reply)

    // Re-encoded replies with lines over the limit are refused, rightly: skip those.
    guard let again = reparse(reply) else { return }
    check(
        again.code == reply.code && again.enhancedCode == reply.enhancedCode
            && again.lines.count == reply.lines.count,
        "re-encoded \(escaped(reply.encoded)) parses to \(escaped(again.encoded))")
    if let third = reparse(again) {
        check(third == again, "second round trip changes \(escaped(again.encoded)) to \(escaped(third.encoded))")
    }
}

func reparse(_ reply: SMTPReply) -> SMTPReply? {
    let text = reply.encoded
    guard text.split(separator: "\r\n").allSatisfy({ $0.utf8.count + 2 <= SMTPReplyParser.maxLineLength }),
        text.utf8.count <= SMTPReplyParser.maxReplyOctets
    else { return nil }
    let o = parseAll([Array(text.utf8)[...]])
    check(
        o.error == nil && o.replies.count == 1 && o.rest.isEmpty,
        "re-encoded reply \(escaped(text)) does not parse back to one reply: \(o)")
    return o.replies[0]
}

@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
