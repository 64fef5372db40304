import Foundation
import MailQueue

extension MailflowConfig {
    /// The range `limits.max_message_size` and a tenant's `max_message_size` must lie in.
    static let messageSizeRange = 1024...(150 * 1024 * 1024)

    /// `limits`: message size, recipients, errors, and the admission caps (server-wide, per source,
    /// per mailbox), tarpit and greet pause. See docs/admission.md for the reply past each one.
    mutating func decodeLimits(_ limits: ConfigReader) throws {
        try limits.only([
            "max_message_size", "recipients_per_message", "max_errors_per_session",
            "recipients_per_domain_per_transaction", "max_connections", "per_source", "mailbox_messages_per_hour",
            "mailbox_messages_per_hour_per_sender", "tarpit", "greet_pause", "queue_min_free", "descriptor_reserve",
        ])
        if let v = try limits.int("descriptor_reserve", in: 0...1_000_000) { admissionLimits.descriptorReserve = v }
        if let v = try limits.int("recipients_per_domain_per_transaction", in: 1...1000) {
            recipientsPerDomainPerTransaction = v
        }
        if let v = try limits.int("max_connections", in: 1...1_000_000) { admissionLimits.maxConnections = v }
        if let v = try limits.int("mailbox_messages_per_hour", in: 1...10_000_000) {
            admissionLimits.mailboxMessagesPerHour = v
        }
        if let v = try limits.int("mailbox_messages_per_hour_per_sender", in: 1...10_000_000) {
            admissionLimits.mailboxMessagesPerHourPerSender = v
        }
        if let v = try limits.duration("tarpit", allowZero: true) {
            guard v <= 60 else { throw limits.error("tarpit", "must be at most 60 seconds") }
            tarpit = v
        }
        if let v = try limits.duration("greet_pause", allowZero: true) {
            guard v <= 60 else { throw limits.error("greet_pause", "must be at most 60 seconds") }
            greetPause = v
        }
        if let ps = try limits.mapping("per_source") {
            try ps.only(["max_connections", "connections_per_minute", "messages_per_minute"])
            if let v = try ps.int("max_connections", in: 1...1_000_000) { admissionLimits.perSourceMaxConnections = v }
            if let v = try ps.int("connections_per_minute", in: 1...10_000_000) {
                admissionLimits.perSourceConnectionsPerMinute = v
            }
            if let v = try ps.int("messages_per_minute", in: 1...10_000_000) {
                admissionLimits.perSourceMessagesPerMinute = v
            }
        }
        if let s = try limits.size("max_message_size") {
            guard Self.messageSizeRange.contains(s) else {
                throw limits.error("max_message_size", "must be between 1 KB and 150 MB")
            }
            maxMessageSize = s
        }
        if let r = try limits.int("recipients_per_message", in: 1...1000) { recipientsPerMessage = r }
        if let e = try limits.int("max_errors_per_session", in: 1...1000) { maxErrorsPerSession = e }
        if let f = try limits.size("queue_min_free") { queueMinFree = f }
    }

    /// The reserve of free space `StorageGuard` keeps on the data directory's filesystem:
    /// `limits.queue_min_free`, by default one and a half times `limits.max_message_size` (Postfix's
    /// `queue_minfree` default). 0 turns the reserve off; a write that fails still pauses acceptance.
    public var queueMinimumFree: Int64 {
        queueMinFree.map(Int64.init) ?? StorageGuard.defaultMinimumFree(maxMessageSize: maxMessageSize)
    }
}
