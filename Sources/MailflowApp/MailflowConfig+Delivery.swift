import Delivery
import Yams

extension MailflowConfig {
    /// `delivery`: concurrency, the retry schedule and expiry, delay notices, the MX port, the EHLO
    /// name and the per-destination window (docs/delivery.md).
    mutating func decodeDelivery(_ d: ConfigReader) throws {
        try d.only([
            "concurrency", "retry_intervals", "expiry", "mx_port", "helo_name", "max_abrupt_closes",
            "destination_concurrency", "delay_notice", "lmtp",
        ])
        try decodeLMTP(d)
        if let p = try d.int("mx_port", in: 1...65535) { mxPort = p }
        if let h = try d.string("helo_name") {
            try Self.checkHostName(h, d, "helo_name")
            heloName = h
        }
        if let dn = try d.duration("delay_notice", allowZero: true) { delayNotice = dn == 0 ? nil : dn }
        if let m = try d.int("max_abrupt_closes", in: 1...100) { maxAbruptCloses = m }
        if let dc = try d.mapping("destination_concurrency") {
            try dc.only(["initial", "maximum"])
            if let i = try dc.int("initial", in: 1...1000) { destinationInitialConcurrency = i }
            if let m = try dc.int("maximum", in: 1...1000) { destinationMaxConcurrency = m }
        }
        if let c = try d.int("concurrency", in: 1...256) { deliveryConcurrency = c }
        if let list = try d.list("retry_intervals") {
            guard !list.isEmpty else { throw d.error("retry_intervals", "needs at least one interval") }
            retryIntervals = try list.enumerated().map { i, n in
                try ConfigReader.duration(n, path: d.path("retry_intervals[\(i)]"))
            }
        }
        if let e = try d.duration("expiry") { expiry = e }
    }
}

extension MailflowConfig {
    /// `delivery.lmtp`: `"unix:/run/dovecot/lmtp"`, `"inet:127.0.0.1:24"` (Postfix's
    /// `mailbox_transport = lmtp:...` nexthop), or `{address, lhlo_name, max_connections}`.
    mutating func decodeLMTP(_ d: ConfigReader) throws {
        // Empty or `null`: Maildir, as when the key is missing.
        guard let node = d["lmtp"], node.scalar?.string != "", node.scalar?.tag.description != Tag.Name.null.rawValue
        else { return }
        let addressText: String
        var settings: (lhlo: String?, max: Int?) = (nil, nil)
        var at = d
        var key = "lmtp"
        if node.mapping != nil, let m = try d.mapping("lmtp") {
            try m.only(["address", "lhlo_name", "max_connections"])
            guard let a = try m.string("address") else { throw m.error("address", "is required") }
            addressText = a
            if let h = try m.string("lhlo_name") {
                try Self.checkHostName(h, m, "lhlo_name")
                settings.lhlo = h
            }
            settings.max = try m.int("max_connections", in: 1...1000)
            at = m
            key = "address"
        } else {
            guard let a = try d.string("lmtp") else { return }
            addressText = a
        }
        do {
            lmtp = LMTPSettings(
                address: try LMTPAddress(parsing: addressText), lhloName: settings.lhlo,
                maxConnections: settings.max ?? LMTPSettings.defaultMaxConnections)
        } catch {
            throw at.error(key, "\(error)")
        }
    }
}
