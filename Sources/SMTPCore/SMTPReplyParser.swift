import NIOCore

/// Parses server replies on the client side (RFC 5321 §4.2): one or more lines `ddd-text`, the last
/// `ddd text` (or a bare `ddd`), CRLF-terminated, with an optional enhanced status code (RFC 2034)
/// at the start of each line's text.
///
/// Limits protect the client from a hostile server: a line over 2,048 octets (512 in RFC 5321
/// §4.5.3.1.5, with slack), a reply over 100 lines or over 64 KiB in all is a protocol error rather
/// than unbounded memory. A remote that answers EHLO with 100,000 lines is cut off at line 101, with
/// at most one line plus what the last read brought held in memory. Real replies stay far below:
/// an EHLO reply of a busy provider has about a dozen lines.
///
/// ```swift
/// var p = SMTPReplyParser()
/// var b = ByteBuffer(string: "250-mx.test\r\n250 SIZE 1000\r\n")
/// try p.parse(&b)  // SMTPReply(250, nil, lines: ["mx.test", "SIZE 1000"])
/// ```
public struct SMTPReplyParser: Sendable {
    public static let maxLineLength = 2048
    public static let maxLines = 100
    /// The octets one reply may take, CRLFs included.
    public static let maxReplyOctets = 65_536

    var code: Int?
    var lines: [String] = []
    var enhanced: EnhancedStatusCode?
    var octets = 0

    /// Octets of the reply in progress taken so far (complete lines of an unfinished multi-line
    /// reply), for a timeout's detail.
    public var pendingOctets: Int { octets }

    public init() {}

    public struct ProtocolError: Error, Hashable, CustomStringConvertible {
        public var description: String
    }

    /// Returns the next complete reply, or nil if more bytes are needed.
    public mutating func parse(_ buffer: inout ByteBuffer) throws(ProtocolError) -> SMTPReply? {
        while true {
            let view = buffer.readableBytesView
            guard let lf = view.firstIndex(of: 0x0A) else {
                if view.count > Self.maxLineLength { throw ProtocolError(description: "reply line too long") }
                return nil
            }
            let length = lf - view.startIndex + 1
            guard length <= Self.maxLineLength else { throw ProtocolError(description: "reply line too long") }
            octets += length
            guard octets <= Self.maxReplyOctets else {
                throw ProtocolError(description: "reply too long (over \(Self.maxReplyOctets) octets)")
            }
            var line = buffer.readSlice(length: length)!
            var bytes = Array(line.readBytes(length: line.readableBytes) ?? [])
            bytes.removeLast()  // LF
            if bytes.last == 0x0D { bytes.removeLast() }  // tolerate bare LF from servers (be liberal)
            guard bytes.count >= 3, bytes[0...2].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw ProtocolError(description: "malformed reply line")
            }
            let c = Int(bytes[0] - 0x30) * 100 + Int(bytes[1] - 0x30) * 10 + Int(bytes[2] - 0x30)
            guard (200...599).contains(c) else { throw ProtocolError(description: "reply code \(c) out of range") }
            if let code, code != c { throw ProtocolError(description: "reply code changed within a multi-line reply") }
            code = c
            let more: Bool
            var text: Substring
            let full = String(decoding: bytes, as: UTF8.self)
            if bytes.count == 3 {
                more = false
                text = ""
            } else if bytes[3] == UInt8(ascii: "-") {
                more = true
                text = full.dropFirst(4)
            } else if bytes[3] == UInt8(ascii: " ") {
                more = false
                text = full.dropFirst(4)
            } else {
                throw ProtocolError(description: "malformed reply line")
            }
            // Enhanced code: class must match the reply's class (RFC 3463 §2).
            if let sp = text.firstIndex(of: " ") ?? (text.isEmpty ? nil : text.endIndex),
                let e = EnhancedStatusCode(parsing: text[..<sp]), e.statusClass == c / 100
            {
                if enhanced == nil { enhanced = e }
                text = text[sp...].drop(while: { $0 == " " })
            }
            lines.append(String(text))
            guard lines.count <= Self.maxLines else {
                throw ProtocolError(description: "reply has too many lines (over \(Self.maxLines))")
            }
            if !more {
                let reply = SMTPReply(c, enhanced, lines: lines)
                self = SMTPReplyParser()
                return reply
            }
        }
    }
}
