extension MailflowConfig {
    /// `diagnostics`: what `mailflow check` and the admin API's checks use beyond their defaults.
    ///
    /// `blocklists` are the DNS blocklist zones (RFC 5782) that `check ip` asks about an address;
    /// none by default, because asking a public list sends it every address checked and most lists
    /// have terms of use. Each zone is a host name (`zen.example.net`), at most
    /// `maxDiagnosticsBlocklists` of them, no duplicates.
    ///
    /// ```yaml
    /// diagnostics:
    ///   blocklists: [bl.example.net, dnsbl.example.org]
    /// ```
    mutating func decodeDiagnostics(_ diagnostics: ConfigReader) throws {
        try diagnostics.only(["blocklists"])
        if let zones = try diagnostics.stringList("blocklists") {
            guard zones.count <= Self.maxDiagnosticsBlocklists else {
                throw diagnostics.error(
                    "blocklists", "lists \(zones.count) zones; at most \(Self.maxDiagnosticsBlocklists) are asked")
            }
            var seen = Set<String>()
            for (i, zone) in zones.enumerated() {
                let name = zone.hasSuffix(".") ? String(zone.dropLast()) : zone
                try Self.checkHostName(name, diagnostics, "blocklists[\(i)]")
                guard seen.insert(name.lowercased()).inserted else {
                    throw diagnostics.error("blocklists[\(i)]", "\(Self.quote(zone)) is listed twice")
                }
            }
            diagnosticsBlocklists = zones.map {
                $0.hasSuffix(".") ? String($0.dropLast()).lowercased() : $0.lowercased()
            }
        }
    }

    /// Each zone is one more DNS query per checked address, asked in parallel.
    static let maxDiagnosticsBlocklists = 20
}
