import NIOCore

/// Dot-stuffing for DATA (RFC 5321 §4.5.2): a line that starts with `.` gets one more `.` in front,
/// tracked across chunk boundaries; `terminator` ends the body with `CRLF.CRLF`, adding the CRLF the
/// body may lack.
///
/// ```swift
/// var s = DotStuffer()
/// s.stuff(ByteBuffer(string: ".hidden\r\n"))  // "..hidden\r\n"
/// ```
public struct DotStuffer: Sendable {
    var atLineStart = true
    var lastWasCR = false

    public init() {}

    public mutating func stuff(_ input: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(input.readableBytes + 64)
        let view = input.readableBytesView
        var runStart = view.startIndex
        var i = view.startIndex
        while i < view.endIndex {
            let b = view[i]
            if atLineStart && b == UInt8(ascii: ".") {
                out.writeBytes(view[runStart..<i])
                out.writeInteger(UInt8(ascii: "."))
                runStart = i
            }
            atLineStart = (b == 0x0A && lastWasCR)
            lastWasCR = (b == 0x0D)
            i = view.index(after: i)
        }
        out.writeBytes(view[runStart..<view.endIndex])
        return out
    }

    /// The end-of-data marker, preceded by CRLF if the body did not end with one.
    public var terminator: String { atLineStart ? ".\r\n" : "\r\n.\r\n" }
}
