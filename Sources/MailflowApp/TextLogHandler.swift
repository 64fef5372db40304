import Foundation
import Logging

/// The default log format for people: one line per event,
/// `TIME LEVEL LOGGER [SOURCE] MESSAGE key=value ...`, metadata keys sorted.
///
/// Values come from remote parties (a recipient's local part, a HELO name, a reply text), so a value
/// is written bare only when it is a plain token (letters, digits, `.-_:@/+[]`); anything else is
/// double-quoted with `"`, `\` and control characters escaped, the way logfmt quotes. A local part
/// such as `x [Ingress] client=6.6.6.6 queue_id=FORGED` therefore stays one quoted field and cannot
/// pose as fields of its own, and no value can start a new line. The message gets the same treatment
/// when it holds anything but plain words. `log_format: json` writes one JSON object instead.
public struct TextLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let write: @Sendable (String) -> Void

    /// `write` receives each line with its newline; the default writes to stderr, one line at a time.
    public init(label: String, write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        var line = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        line += " \(event.level.rawValue) \(Self.value(label)) [\(Self.value(event.source))] "
        line += Self.message("\(event.message)")
        for key in merged.keys.sorted() {
            line += " \(Self.key(key))=\(Self.value("\(merged[key]!)"))"
        }
        write(line + "\n")
    }

    static func isPlain(_ u: Unicode.Scalar) -> Bool {
        switch u {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "-", "_", ":", "@", "/", "+", "[", "]", ",": return true
        default: return false
        }
    }

    /// A value: bare when it is one plain token, else quoted and escaped.
    static func value(_ s: String) -> String {
        if !s.isEmpty, s.unicodeScalars.allSatisfy(isPlain) { return s }
        return quote(s)
    }

    /// A key: plain characters only (keys are ours, but a library's key must not break the line).
    static func key(_ s: String) -> String {
        let k = String(String.UnicodeScalarView(s.unicodeScalars.map { isPlain($0) && $0 != "=" ? $0 : "_" }))
        return k.isEmpty ? "_" : k
    }

    /// The message: free words as they are, quoted once it holds `=`, a quote or a control character.
    static func message(_ s: String) -> String {
        let needsQuoting =
            s.isEmpty
            || s.unicodeScalars.contains { u in
                u == "=" || u == "\"" || u == "\\" || u.properties.generalCategory == .control || u.value == 0x2028
                    || u.value == 0x2029
            }
        return needsQuoting ? quote(s) : s
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.properties.generalCategory == .control || u.value == 0x2028 || u.value == 0x2029:
                out += u.value < 0x100 ? String(format: "\\x%02x", u.value) : String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
