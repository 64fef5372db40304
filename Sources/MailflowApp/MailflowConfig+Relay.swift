import Ingress

extension MailflowConfig {
    /// `relay`: the client networks that may send to domains that are not local, and the
    /// confirmation an open relay needs.
    mutating func decodeRelay(_ relay: ConfigReader) throws {
        try relay.only(["trusted_networks", "allow_open_relay"])
        let nets = try relay.stringList("trusted_networks") ?? []
        let trusted: TrustedNetworks
        do {
            trusted = try TrustedNetworks(nets)
        } catch {
            throw relay.error("trusted_networks", "\(error)")
        }
        let allowOpen = try relay.bool("allow_open_relay") ?? false
        // Each block is judged alone, so 0.0.0.0/1 plus 128.0.0.0/1 is caught as well as 0.0.0.0/0.
        if !allowOpen, let i = trusted.openRelayEntries.first {
            throw ConfigError(
                path: relay.path("trusted_networks[\(i)]"),
                message: "\(Self.quote(nets[i])) is wider than /\(TrustedNetworks.openRelayIPv4Prefix) (IPv4) or "
                    + "/\(TrustedNetworks.openRelayIPv6Prefix) (IPv6): anyone in it may relay, an open relay; "
                    + "narrow it, or confirm with relay.allow_open_relay: true",
                line: relay.line(ofItem: i, in: "trusted_networks"))
        }
        trustedNetworks = nets
        allowOpenRelay = allowOpen
    }

    /// `trustedNetworks` as ingress checks clients against them. A config built in code (not read
    /// from a file) may hold a bad entry: that is the same error a file gets, never an empty list.
    public func trustedNetworkBlocks() throws -> TrustedNetworks {
        do {
            return try TrustedNetworks(trustedNetworks)
        } catch {
            throw ConfigError(path: "relay.trusted_networks", message: "\(error)")
        }
    }

    /// The trusted networks that make Mailflow an open relay (accepted only with `allowOpenRelay`);
    /// none when the list does not parse (`trustedNetworkBlocks()` refuses it).
    public var openRelayNetworks: [String] {
        guard let t = try? trustedNetworkBlocks() else { return [] }
        return t.openRelayEntries.map { trustedNetworks[$0] }
    }
}
