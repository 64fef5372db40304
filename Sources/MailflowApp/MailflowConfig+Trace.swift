extension MailflowConfig {
    /// `trace`: how long the trace stream and finished messages are kept, and how often the queue
    /// size is sampled.
    mutating func decodeTrace(_ trace: ConfigReader) throws {
        try trace.only(["retention", "prune_interval", "sample_interval"])
        if let t = try trace.duration("retention") {
            guard t >= 3600 else { throw trace.error("retention", "must be at least 1h") }
            traceRetention = t
        }
        if let t = try trace.duration("prune_interval") { tracePruneInterval = t }
        if let t = try trace.duration("sample_interval") { queueSampleInterval = t }
    }
}
