extension MailflowConfig {
    /// `timeouts`: per-request deadlines for commands and bodies, the session cap and the shutdown
    /// grace (RFC 5321 §4.5.3.2 sets the command minimum).
    mutating func decodeTimeouts(_ t: ConfigReader) throws {
        try t.only(["command", "data", "session", "shutdown_grace", "request_deadline", "min_data_rate"])
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
        if let v = try t.duration("shutdown_grace") { shutdownGrace = v }
    }
}
