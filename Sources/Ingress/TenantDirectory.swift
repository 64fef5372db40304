import SMTPCore

/// A tenant: an organisation with its own domains and mailboxes.
public struct Tenant: Sendable, Hashable {
    public var name: String
    public var domains: [String]
    public var mailboxes: Set<String>
    public var catchAll: Bool
    /// The tenant's own message size limit (`552 5.3.4` past it), if smaller than the server's.
    public var maxMessageSize: Int?
    /// A DMARC `p=reject` that fails is refused at the end of DATA (`550 5.7.1`), not only recorded.
    public var dmarcReject: Bool
    /// Mail its users submit carries no `from` clause (their client's name and address) in the
    /// `Received:` stamp.
    public var hideClientInReceived = false

    public init(
        name: String, domains: [String], mailboxes: [String], catchAll: Bool = false, maxMessageSize: Int? = nil,
        dmarcReject: Bool = false
    ) {
        self.dmarcReject = dmarcReject
        self.name = name
        self.maxMessageSize = maxMessageSize
        self.domains = domains.map { $0.lowercased() }
        self.mailboxes = Set(mailboxes.map { $0.lowercased() })
        self.catchAll = catchAll
    }
}

/// The recipient policy: which domains are local, which mailboxes exist, and nothing else is relayed.
///
/// - a recipient in a tenant's domain with a mailbox (or a catch-all tenant): accepted, routed to
///   `local:<domain>/<mailbox>`;
/// - a tenant's domain without that mailbox: `550 5.1.1`;
/// - any other domain: `550 5.7.1` relaying denied (no open relay);
/// - `<Postmaster>` (RFC 5321 §4.1.1.3): delivered to `postmaster` of the first tenant's first domain.
public struct TenantDirectory: Sendable {
    public let tenants: [Tenant]
    let byDomain: [String: Tenant]

    public init(tenants: [Tenant]) {
        self.tenants = tenants
        var map: [String: Tenant] = [:]
        for t in tenants { for d in t.domains { map[d] = t } }
        self.byDomain = map
    }

    public func tenant(forDomain domain: String) -> Tenant? { byDomain[domain.lowercased()] }

    /// `relayAllowed`: the client is in the trusted networks, so other domains are relayed.
    public func decide(_ path: ForwardPath, relayAllowed: Bool = false) -> ServerSession.RecipientDecision {
        switch path {
        case .postmaster:
            guard let d = tenants.first?.domains.first else {
                return .reject(SMTPReply(550, .init(5, 1, 1), "No postmaster mailbox here"))
            }
            return .accept(route: .local(domain: d, mailbox: "postmaster"))
        case .mailbox(let m):
            let domain = m.domain.lowercased()
            guard let t = byDomain[domain] else {
                if relayAllowed { return .accept(route: .relay(domain: domain)) }
                return .reject(
                    SMTPReply(550, .init(5, 7, 1), "Relaying denied: \(m.domain) is not a domain of this server"))
            }
            let local = m.unquotedLocalPart.lowercased()
            // RFC 5321 §4.5.1: every domain must accept postmaster.
            if t.mailboxes.contains(local) || t.catchAll || local == "postmaster" {
                return .accept(route: .local(domain: domain, mailbox: local))
            }
            return .reject(SMTPReply(550, .init(5, 1, 1), "Recipient <\(m)> unknown: no such mailbox"))
        }
    }
}
