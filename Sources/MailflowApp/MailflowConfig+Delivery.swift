extension MailflowConfig {
    /// `delivery`: concurrency, the retry schedule and expiry, delay notices, the MX port, the EHLO
    /// name and the per-destination window (docs/delivery.md).
    mutating func decodeDelivery(_ d: ConfigReader) throws {
        try d.only([
            "concurrency", "retry_intervals", "expiry", "mx_port", "helo_name", "max_abrupt_closes",
            "destination_concurrency", "delay_notice",
        ])
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
