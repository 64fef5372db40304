import Delivery
import NIOCore

extension MailflowConfig {
    /// `timeouts`: per-request deadlines for commands and bodies, the session cap and the shutdown
    /// grace (RFC 5321 §4.5.3.2 sets the command minimum), and `timeouts.outbound`, the deadlines
    /// Mailflow gives remote servers (`OutboundTimeouts`).
    mutating func decodeTimeouts(_ t: ConfigReader) throws {
        try t.only([
            "command", "data", "session", "shutdown_grace", "request_deadline", "min_data_rate", "outbound",
            "tls_handshake",
        ])
        if let v = try t.bool("request_deadline") { requestDeadline = v }
        if let v = try t.int("min_data_rate") {
            guard (1...1_000_000_000).contains(v) else {
                throw t.error("min_data_rate", "must be between 1 and 1000000000 octets a second")
            }
            minDataRate = v
        }
        if let v = try t.duration("command") { commandTimeout = v }
        if let v = try t.duration("data") { dataTimeout = v }
        if let v = try t.duration("session") { sessionTimeout = v }
        if let v = try t.duration("tls_handshake") { tlsHandshakeTimeout = v }
        if let v = try t.duration("shutdown_grace") { shutdownGrace = v }
        if let o = try t.mapping("outbound") { try decodeOutboundTimeouts(o) }
    }

    /// `timeouts.outbound`: each a deadline for a whole reply (a remote trickling bytes does not
    /// extend it), Postfix's `smtp_*_timeout` with RFC 5321 §4.5.3.2's values as defaults.
    mutating func decodeOutboundTimeouts(_ o: ConfigReader) throws {
        let keys: [(String, WritableKeyPath<OutboundTimeouts, TimeAmount>)] = [
            ("connect", \.connect), ("greeting", \.greeting), ("command", \.command),
            ("tls_handshake", \.tlsHandshake), ("data_init", \.dataInitiation), ("data_block", \.dataBlock),
            ("data_done", \.dataTermination),
        ]
        try o.only(keys.map(\.0))
        for (key, path) in keys {
            guard let v = try o.duration(key) else { continue }
            guard v <= 3600 else { throw o.error(key, "must be at most 1h") }
            outboundTimeouts[keyPath: path] = .nanoseconds(Int64(v * 1e9))
        }
    }
}
