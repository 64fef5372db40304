import Foundation
import Logging
import Synchronization

/// A swift-log handler that writes one JSON object per line (for Loki, Elasticsearch, CloudWatch
/// and the like): `time` (ISO 8601, milliseconds, UTC), `level`, `logger`, `message`, `source`, and
/// every metadata key (`queue_id`, `client`, `to`, `reason`, ...) as a top-level string field.
/// A metadata key that would overwrite one of those is written as `meta.<key>`.
public struct JSONLogHandler: LogHandler {
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

    static let reserved: Set<String> = ["time", "level", "logger", "message", "source"]

    public func log(event: LogEvent) {
        var fields: [String: String] = [:]
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        for (k, v) in merged { fields[Self.reserved.contains(k) ? "meta.\(k)" : k] = "\(v)" }
        fields["time"] = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        fields["level"] = event.level.rawValue
        fields["logger"] = label
        fields["message"] = "\(event.message)"
        fields["source"] = event.source
        let ordered =
            ["time", "level", "logger", "message", "source"]
            + fields.keys.filter { !Self.reserved.contains($0) }.sorted()
        let body = ordered.compactMap { k in fields[k].map { "\(Self.quote(k)):\(Self.quote($0))" } }
        write("{" + body.joined(separator: ",") + "}\n")
    }

    /// A JSON string literal (RFC 8259 §7): quotes, backslashes and control characters escaped.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20 || u.value == 0x7F || u.value == 0x2028 || u.value == 0x2029:
                out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    static let lock = Mutex(())

    /// One `write(2)` per line (looping on short writes) under a lock, so lines never interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        lock.withLock { _ in
            var bytes = Array(line.utf8)[...]
            while !bytes.isEmpty {
                let n = bytes.withUnsafeBytes { Foundation.write(2, $0.baseAddress, $0.count) }
                if n <= 0 { return }
                bytes = bytes.dropFirst(n)
            }
        }
    }
}
