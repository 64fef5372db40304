import FuzzSupport
import NIOCore
import SMTPCore

/// Feeds the bytes as what follows `DATA` (the body, its end marker and whatever comes after) to
/// `DataBodyDecoder` and checks:
///
/// - no crash, no hang, no memory error;
/// - the end is exactly the first `CRLF . CRLF` (or `. CRLF` at the very start): `.finished` with the
///   input consumed up to there, or `.needMoreData` with all of it consumed when there is none; no
///   other sequence (`<LF>.<LF>`, `<CR>.<CR>`, `<LF>.<CR><LF>`, ...) ends the body;
/// - chunking does not matter: the same bytes in one chunk, one byte at a time (inputs up to 1200
///   bytes), or split in two (at every point of an input up to 128 bytes; above that on both sides of
///   its first 24 CR, LF and dots and at 8 spread points) give the same progress, leftover, size and
///   violations, and the same output when there is no violation (the output of a refused body stops
///   at the violation, so it depends on where the chunks end);
/// - a body without violation unstuffed is clean (ChunkBodyChecker finds no bare CR/LF in it) and no
///   larger than maxSize; stuffed again by DotStuffer and decoded, it comes back unchanged;
/// - relay agreement: any input taken as a message body, stuffed by DotStuffer (what Mailflow sends
///   when it relays) and decoded, ends exactly at the terminator, and comes back as it was (plus the
///   CRLF the terminator adds) when the decoder finds no violation; a body that ChunkBodyChecker finds
///   free of bare CR/LF is free of them for the decoder too;
/// - ChunkBodyChecker (BDAT) gives the same violations and size in one chunk and split at the same
///   points.
///
/// Each input is decoded with a large limit and with a limit of half its length, to reach `.tooLarge`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    beginInput(bytes)
    let input = Array(bytes)

    let points = splitPoints(input, everyPointUpTo: 128, marks: [0x0D, 0x0A, 0x2E], maxMarked: 24, spread: 8)
    for maxSize in [SMTPLimits.defaultMessageSize, input.count / 2] {
        let whole = decode([input[...]], maxSize: maxSize)
        checkEnd(input, whole)
        checkClean(whole, maxSize: maxSize)
        if input.count <= 1200 {
            let bytewise = decode(input.map { [$0][...] }, maxSize: maxSize)
            check(bytewise.sameResult(as: whole), "one byte at a time gives \(bytewise), one chunk gives \(whole)")
        }
        // The small limit is checked in one chunk and byte by byte only, to keep the runs fast.
        guard maxSize == SMTPLimits.defaultMessageSize else { continue }
        for cut in points {
            let split = decode([input[..<cut], input[cut...]], maxSize: maxSize)
            check(split.sameResult(as: whole), "split at \(cut) gives \(split), one chunk gives \(whole)")
        }
    }
    checkRelay(input)
    checkChunkChecker(input, points)
    return 0
}

struct Outcome: Equatable, CustomStringConvertible {
    var finished: Bool
    var output: [UInt8]
    var leftover: [UInt8]
    var size: Int
    var violations: Set<BodyViolation>
    var violation: BodyViolation?

    /// Equal, except for the output of a refused body: once a violation is found the message is refused
    /// whole, and how much of it was passed on before depends on where the chunks ended (by design).
    func sameResult(as other: Outcome) -> Bool {
        var a = self
        var b = other
        if !a.violations.isEmpty || !b.violations.isEmpty {
            a.output = []
            b.output = []
        }
        return a == b
    }

    var description: String {
        "(finished: \(finished), output: \(escaped(output)), leftover: \(escaped(leftover)), size: \(size), "
            + "violations: \(violations.sorted { "\($0)" < "\($1)" }))"
    }
}

/// Decodes the chunks as they would arrive from the socket: each appended to the input buffer, the
/// decoder called once per chunk, stopping at `.finished`.
func decode(_ chunks: [ArraySlice<UInt8>], maxSize: Int) -> Outcome {
    var decoder = DataBodyDecoder(maxSize: maxSize)
    var input = ByteBuffer()
    var output = ByteBuffer()
    var finished = false
    var next = 0
    while next < chunks.count {
        input.writeBytes(chunks[next])
        next += 1
        let progress = decoder.decode(&input, into: &output)
        if progress == .finished {
            finished = true
            break
        }
        check(input.readableBytes == 0, "needMoreData left \(input.readableBytes) bytes unread")
    }
    var leftover = input.readableBytesView.map { $0 }
    for c in chunks[next...] { leftover += c }
    return Outcome(
        finished: finished, output: Array(output.readableBytesView), leftover: leftover, size: decoder.size,
        violations: decoder.violations, violation: decoder.violation)
}

/// Where the body must end: right after the first CRLF.CRLF, or after ".CRLF" at the very start.
func endOffset(_ b: [UInt8]) -> Int? {
    if b.count >= 3 && b[0] == 0x2E && b[1] == 0x0D && b[2] == 0x0A { return 3 }
    var i = 0
    while i + 5 <= b.count {
        if b[i] == 0x0D && b[i + 1] == 0x0A && b[i + 2] == 0x2E && b[i + 3] == 0x0D && b[i + 4] == 0x0A {
            return i + 5
        }
        i += 1
    }
    return nil
}

func checkEnd(_ input: [UInt8], _ o: Outcome) {
    if let end = endOffset(input) {
        check(o.finished, "not finished although CRLF.CRLF ends at \(end)")
        check(o.leftover == Array(input[end...]), "finished at \(input.count - o.leftover.count), expected \(end)")
    } else {
        check(!o.finished, "finished without a CRLF.CRLF: \(o)")
        check(o.leftover.isEmpty, "needMoreData with leftover")
    }
    check(o.violation == nil ? o.violations.isEmpty : o.violations.contains(o.violation!), "violation summary")
}

func checkClean(_ o: Outcome, maxSize: Int) {
    guard o.finished, o.violations.isEmpty else { return }
    check(o.output.count == o.size, "output \(o.output.count) bytes, size says \(o.size)")
    check(o.size <= maxSize, "size \(o.size) over the limit \(maxSize) without tooLarge")
    var checker = ChunkBodyChecker(maxSize: Int.max)
    _ = checker.check(ByteBuffer(bytes: o.output).readableBytesView)
    checker.finish()
    check(!checker.violations.contains(.bareLineEnding), "clean body's output has a bare CR or LF: \(o)")
    // Stuff and decode again: the same body.
    var stuffer = DotStuffer()
    var wire = Array(stuffer.stuff(ByteBuffer(bytes: o.output)).readableBytesView)
    wire += Array(stuffer.terminator.utf8)
    let again = decode([wire[...]], maxSize: maxSize)
    check(again.finished && again.leftover.isEmpty, "restuffed body does not end at its terminator: \(again)")
    check(again.output == o.output && again.violations.isEmpty, "restuffed body decodes to \(again), was \(o)")
}

/// The input as a message Mailflow relays: DotStuffer and the terminator on the sending side, the
/// decoder on the receiving side. They must agree on where the message ends.
func checkRelay(_ body: [UInt8]) {
    var stuffer = DotStuffer()
    // Stuffed in two chunks, as a spooled body is read: DotStuffer carries its state across them.
    let cut = body.count / 2
    var wire = Array(stuffer.stuff(ByteBuffer(bytes: body[..<cut])).readableBytesView)
    wire += Array(stuffer.stuff(ByteBuffer(bytes: body[cut...])).readableBytesView)
    var whole = DotStuffer()
    check(
        Array(whole.stuff(ByteBuffer(bytes: body)).readableBytesView) == wire,
        "DotStuffer differs when the body comes in two chunks")
    wire += Array(stuffer.terminator.utf8)
    let o = decode([wire[...]], maxSize: Int.max)
    check(o.finished && o.leftover.isEmpty, "relayed body does not end at its terminator: \(o)")
    var checker = ChunkBodyChecker(maxSize: Int.max)
    _ = checker.check(ByteBuffer(bytes: body).readableBytesView)
    checker.finish()
    if !checker.violations.contains(.bareLineEnding) {
        check(!o.violations.contains(.bareLineEnding), "decoder finds a bare CR/LF the chunk checker does not")
    }
    if o.violations.isEmpty {
        let endsWithCRLF = body.count >= 2 && body[body.count - 2] == 0x0D && body[body.count - 1] == 0x0A
        let expected = body.isEmpty || endsWithCRLF ? body : body + [0x0D, 0x0A]
        check(o.output == expected, "relayed body decodes to \(escaped(o.output))")
    }
}

func checkChunkChecker(_ body: [UInt8], _ points: [Int]) {
    func run(_ chunks: [ArraySlice<UInt8>]) -> (Set<BodyViolation>, Int) {
        var c = ChunkBodyChecker(maxSize: max(1, body.count / 2))
        for chunk in chunks { _ = c.check(ByteBuffer(bytes: chunk).readableBytesView) }
        c.finish()
        return (c.violations, c.size)
    }
    let whole = run([body[...]])
    for cut in points {
        check(run([body[..<cut], body[cut...]]) == whole, "ChunkBodyChecker differs when split at \(cut)")
    }
}

@main
enum Main {
    static func main() { runLibFuzzer(fuzz) }
}
