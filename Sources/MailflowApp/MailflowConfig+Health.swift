import Foundation

extension MailflowConfig {
    /// `health`: the live service-health monitor, its time scales and where it reports
    /// (docs/health.md).
    mutating func decodeHealth(_ health: ConfigReader) throws {
        try health.only([
            "enabled", "webhook", "webhook_secret", "notify", "warm_up", "bucket", "window", "minimum_duration",
            "restore_after",
        ])
        if let b = try health.duration("bucket") {
            guard (1...300).contains(b) else { throw health.error("bucket", "must be between 1s and 5m") }
            healthPolicy.bucketSeconds = b
        }
        if let w = try health.duration("window") {
            let buckets = Int((w / healthPolicy.bucketSeconds).rounded())
            guard (2...120).contains(buckets) else {
                throw health.error("window", "must be 2 to 120 buckets long")
            }
            healthPolicy.windowBuckets = buckets
        }
        if let d = try health.duration("minimum_duration") { healthPolicy.minimumDuration = d }
        if let r = try health.duration("restore_after") { healthPolicy.restoreAfter = r }
        if let e = try health.bool("enabled") { healthEnabled = e }
        if let u = try health.string("webhook") {
            guard let url = URL(string: u), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
                url.host != nil
            else { throw health.error("webhook", "\(Self.quote(u)) is not an http(s) URL") }
            healthWebhook = url
        }
        if let secret = try health.string("webhook_secret") {
            guard secret.utf8.count >= 16 else {
                throw health.error("webhook_secret", "must be at least 16 characters (it signs each webhook call)")
            }
            healthWebhookSecret = secret
        }
        if healthWebhook != nil && healthWebhookSecret == nil {
            throw health.error("webhook_secret", "is required with webhook (the receiver checks the signature)")
        }
        if let list = try health.stringList("notify") {
            for a in list where !a.contains("@") {
                throw health.error("notify", "\(Self.quote(a)) is not a mail address")
            }
            healthNotify = list
        }
        if let w = try health.duration("warm_up") { healthWarmUp = w }
    }
}
