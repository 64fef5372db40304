import NIOCore

/// One SMTP reply: a three-digit code, an enhanced status code (RFC 2034) and one or more text lines.
///
/// RFC 2034 §3 puts the enhanced code on every reply except the greeting and the replies to
/// HELO/EHLO, whose lines carry the host name and the extension keywords; `enhancedCode` is `nil`
/// only there.
///
/// ```swift
/// SMTPReply(250, .init(2, 1, 0), "Sender <a@b.test> OK").encoded  // "250 2.1.0 Sender <a@b.test> OK\r\n"
/// ```
public struct SMTPReply: Hashable, Sendable, CustomStringConvertible {
    public var code: Int
    public var enhancedCode: EnhancedStatusCode?
    public var lines: [String]

    public init(_ code: Int, _ enhancedCode: EnhancedStatusCode?, _ text: String) {
        self.code = code
        self.enhancedCode = enhancedCode
        self.lines = [text]
    }

    public init(_ code: Int, _ enhancedCode: EnhancedStatusCode?, lines: [String]) {
        precondition(!lines.isEmpty)
        self.code = code
        self.enhancedCode = enhancedCode
        self.lines = lines
    }

    /// `true` for 4xx: the client keeps the mail and tries again.
    public var isTransient: Bool { code / 100 == 4 }
    /// `true` for 5xx.
    public var isPermanent: Bool { code / 100 == 5 }
    public var isPositive: Bool { code / 100 == 2 || code / 100 == 3 }

    /// The reply as it goes on the wire, every line ending in CRLF.
    public var encoded: String {
        var out = ""
        for (i, line) in lines.enumerated() {
            out += String(code)
            out += i == lines.count - 1 ? " " : "-"
            if let enhancedCode { out += "\(enhancedCode) " }
            out += line
            out += "\r\n"
        }
        return out
    }

    public func write(into buffer: inout ByteBuffer) {
        buffer.writeString(encoded)
    }

    public var description: String {
        lines.map { line in
            "\(code) " + (enhancedCode.map { "\($0) " } ?? "") + line
        }.joined(separator: "\n")
    }
}
