import Delivery
import SMTPCore
import Yams

extension MailflowConfig {
    /// `tenants`: who Mailflow receives mail for (domains, mailboxes, catch-all), each tenant's own
    /// size limit and outbound connector. A file with `tenants` replaces the sample tenant.
    mutating func decodeTenants(_ list: [Node], path: String) throws {
        var seenNames = Set<String>()
        var seenDomains: [String: String] = [:]
        tenants = []
        for (i, n) in list.enumerated() {
            let t = try ConfigReader(n, "\(path)[\(i)]")
            try t.only([
                "name", "domains", "mailboxes", "catch_all", "max_message_size", "outbound_connector", "dmarc_reject",
                "hide_client_address", "dkim",
            ])
            let connector = try t.mapping("outbound_connector").map(Self.decodeConnector)
            guard let name = try t.string("name"), !name.isEmpty else { throw t.error("name", "is required") }
            guard seenNames.insert(name).inserted else {
                throw t.error("name", "\(Self.quote(name)) is used by two tenants")
            }
            guard let domains = try t.stringList("domains"), !domains.isEmpty else {
                throw t.error("domains", "is required and needs at least one domain")
            }
            for (j, dom) in domains.enumerated() {
                guard dom.utf8.count <= Self.maxHostNameLength,
                    (try? Mailbox.validateDomain(dom[...], allowUTF8: false)) != nil
                else {
                    throw t.error("domains[\(j)]", "\(Self.quote(dom)) is not a valid domain")
                }
                if let other = seenDomains[dom.lowercased()] {
                    throw t.error("domains[\(j)]", "\(Self.quote(dom)) already belongs to tenant \(Self.quote(other))")
                }
                seenDomains[dom.lowercased()] = name
            }
            let boxes = try t.stringList("mailboxes") ?? []
            for (j, b) in boxes.enumerated() {
                do {
                    try Mailbox.validateLocalPart(b[...], allowUTF8: true)
                } catch {
                    throw t.error("mailboxes[\(j)]", "\(Self.quote(b)) is not a valid local part")
                }
            }
            let catchAll = try t.bool("catch_all") ?? false
            let size = try t.size("max_message_size")
            if let size, !Self.messageSizeRange.contains(size) {
                throw t.error("max_message_size", "must be between 1 KB and 150 MB")
            }
            var tenant = TenantConfig(
                name: name, domains: domains, mailboxes: boxes, catchAll: catchAll, maxMessageSize: size,
                connector: connector)
            tenant.dmarcReject = try t.bool("dmarc_reject") ?? false
            tenant.hideClientAddress = try t.bool("hide_client_address") ?? false
            tenants.append(tenant)
            tenants[tenants.count - 1].dkim = try Self.decodeTenantDKIM(t, domains: domains)
        }
    }

    /// A tenant's `outbound_connector`: the smart host its external mail goes to, and how TLS is
    /// required there.
    static func decodeConnector(_ c: ConfigReader) throws -> OutboundConnector {
        try c.only(["smart_host", "tls", "verify_name"])
        guard let hp = try c.string("smart_host"), let (host, port) = ListenAddress.parse(hp) else {
            throw c.error("smart_host", "is required, as host:port")
        }
        let tlsText = try c.string("tls") ?? "opportunistic"
        guard let tls = TLSRequirement(rawValue: tlsText) else {
            throw c.error("tls", "\(quote(tlsText)) is not one of required, opportunistic, disabled")
        }
        return OutboundConnector(host: host, port: port, tls: tls, verifyName: try c.string("verify_name"))
    }

    /// The outbound connector for mail from `sender`: that of the tenant owning the sender's domain
    /// (a tenant's connector carries mail from its own domains), nil for MX delivery.
    public func connector(forSender sender: String) -> OutboundConnector? {
        guard let at = sender.lastIndex(of: "@") else { return nil }
        let domain = sender[sender.index(after: at)...].lowercased()
        return tenants.first { $0.domains.contains { $0.lowercased() == domain } }?.connector
    }
}
