import NIOCore

/// What is wrong with a message body, decided while it streams.
public enum BodyViolation: Hashable, Sendable {
    /// A CR not followed by LF, or an LF not preceded by CR: the SMTP smuggling class
    /// (CVE-2023-51764). RFC 5321 §2.3.8 allows only CRLF as a line ending.
    case bareLineEnding
    /// A line over RFC 5321 §4.5.3.1.6's 1000 octets.
    case lineTooLong
    /// More octets than the size limit (RFC 1870).
    case tooLarge
}

/// Decodes a `DATA` body (RFC 5321 §4.1.1.4, §4.5.2) with strict line endings.
///
/// Only `CRLF "." CRLF` ends the body; the leading dot of a stuffed line is removed. A bare CR or LF
/// anywhere poisons the message (it will be refused as a whole) but does not end it, so the sender and
/// Mailflow always agree on where the message ends: `<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR>.<CR>` and
/// `<CR><LF>.<LF>` are all just content of a refused message.
///
/// ```swift
/// var d = DataBodyDecoder(maxSize: 1024)
/// var input = ByteBuffer(string: "Hi\r\n..dot\r\n.\r\nQUIT\r\n")
/// var out = ByteBuffer()
/// d.decode(&input, into: &out)  // .finished; out == "Hi\r\n.dot\r\n", input holds "QUIT\r\n"
/// ```
public struct DataBodyDecoder: Sendable {
    enum State: Sendable {
        case lineStart
        case midLine
        case sawCR
        case dotAtLineStart
        case dotCR
    }

    public enum Progress: Equatable, Sendable {
        case needMoreData
        case finished
    }

    var state: State = .lineStart
    var lineLength = 0
    public private(set) var size = 0
    public let maxSize: Int
    public private(set) var violations: Set<BodyViolation> = []

    public init(maxSize: Int) {
        self.maxSize = maxSize
    }

    /// The first violation in order of severity: a smuggling attempt wins over size.
    public var violation: BodyViolation? {
        if violations.contains(.bareLineEnding) { return .bareLineEnding }
        if violations.contains(.lineTooLong) { return .lineTooLong }
        if violations.contains(.tooLarge) { return .tooLarge }
        return nil
    }

    /// Consumes bytes from `input`, appending the unstuffed body to `output` (nothing once the body is
    /// poisoned or too large), and stops right after the end marker.
    public mutating func decode(_ input: inout ByteBuffer, into output: inout ByteBuffer) -> Progress {
        let view = input.readableBytesView
        var consumed = 0
        var runStart: Int? = nil  // start (offset in view) of a run of bytes to copy verbatim
        var finished = false

        func flushRun(_ end: Int) {
            if let s = runStart, end > s {
                append(view[(view.startIndex + s)..<(view.startIndex + end)], to: &output)
            }
            runStart = nil
        }

        var i = 0
        let count = view.count
        outer: while i < count {
            let b = view[view.startIndex + i]
            switch state {
            case .lineStart, .midLine:
                if b == 0x0D {
                    state = .sawCR
                    flushRun(i)
                } else if b == 0x0A {
                    flushRun(i)
                    violations.insert(.bareLineEnding)
                    state = .midLine
                } else if state == .lineStart && b == 0x2E {
                    flushRun(i)
                    state = .dotAtLineStart
                    lineLength = 1
                } else {
                    if runStart == nil { runStart = i }
                    state = .midLine
                    lineLength += 1
                    if lineLength > SMTPLimits.textLineLength - 2 { violations.insert(.lineTooLong) }
                }
            case .sawCR:
                if b == 0x0A {
                    appendBytes("\r\n", to: &output)
                    state = .lineStart
                    lineLength = 0
                } else {
                    violations.insert(.bareLineEnding)
                    state = .midLine
                    continue outer  // re-examine this byte in mid-line
                }
            case .dotAtLineStart:
                if b == 0x0D {
                    state = .dotCR
                } else if b == 0x0A {
                    violations.insert(.bareLineEnding)
                    state = .midLine
                } else {
                    // RFC 5321 §4.5.2: the first dot of a line with more on it is removed.
                    state = .midLine
                    continue outer
                }
            case .dotCR:
                if b == 0x0A {
                    i += 1
                    finished = true
                    break outer
                }
                violations.insert(.bareLineEnding)
                state = .midLine
                continue outer
            }
            i += 1
        }
        if !finished { flushRun(i) }
        consumed = i
        input.moveReaderIndex(forwardBy: consumed)
        return finished ? .finished : .needMoreData
    }

    mutating func append(_ bytes: ByteBufferView.SubSequence, to output: inout ByteBuffer) {
        size += bytes.count
        if size > maxSize { violations.insert(.tooLarge) }
        guard violations.isEmpty else { return }
        output.writeBytes(bytes)
    }

    mutating func appendBytes(_ s: StaticString, to output: inout ByteBuffer) {
        size += s.utf8CodeUnitCount
        if size > maxSize { violations.insert(.tooLarge) }
        guard violations.isEmpty else { return }
        output.writeStaticString(s)
    }
}

/// Checks `BDAT` chunks (RFC 3030) for the same line-ending and line-length rules as DATA, across
/// chunk boundaries; content is not dot-stuffed and passes through unchanged.
public struct ChunkBodyChecker: Sendable {
    var pendingCR = false
    var lineLength = 0
    public private(set) var size = 0
    public let maxSize: Int
    public private(set) var violations: Set<BodyViolation> = []

    public init(maxSize: Int) {
        self.maxSize = maxSize
    }

    public var violation: BodyViolation? {
        if violations.contains(.bareLineEnding) { return .bareLineEnding }
        if violations.contains(.lineTooLong) { return .lineTooLong }
        if violations.contains(.tooLarge) { return .tooLarge }
        return nil
    }

    /// Inspects the next slice of chunk data; returns `true` while the content is still acceptable.
    public mutating func check(_ bytes: ByteBufferView) -> Bool {
        size += bytes.count
        if size > maxSize { violations.insert(.tooLarge) }
        for b in bytes {
            if pendingCR {
                if b != 0x0A { violations.insert(.bareLineEnding) }
                pendingCR = false
                if b == 0x0A {
                    lineLength = 0
                    continue
                }
            }
            if b == 0x0D {
                pendingCR = true
            } else if b == 0x0A {
                violations.insert(.bareLineEnding)
            } else {
                lineLength += 1
                if lineLength > SMTPLimits.textLineLength - 2 { violations.insert(.lineTooLong) }
            }
        }
        return violations.isEmpty
    }

    /// Called after the `LAST` chunk: a trailing lone CR is a bare CR.
    public mutating func finish() {
        if pendingCR { violations.insert(.bareLineEnding) }
    }
}
