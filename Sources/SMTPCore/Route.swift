/// How one accepted recipient is delivered, decided once by the recipient policy at `RCPT` time.
///
/// The session carries it, the queue stores it with the recipient, and delivery follows it; no
/// module parses it back out of text. Its stored form (`local:<domain>/<mailbox>`,
/// `relay:<domain>`) exists only for the queue's `route` column and for display.
///
/// ```swift
/// Route.local(domain: "example.org", mailbox: "alice").stored   // "local:example.org/alice"
/// Route(stored: "relay:example.net")                            // .relay(domain: "example.net")
/// ```
public enum Route: Hashable, Sendable, CustomStringConvertible {
    /// A mailbox of one of this server's tenants, already lower-cased and unquoted.
    case local(domain: String, mailbox: String)
    /// Another server's domain: its MX hosts, or the sending tenant's connector.
    case relay(domain: String)

    /// Parses the stored form; nil for anything else (an empty domain or mailbox included).
    public init?(stored text: some StringProtocol) {
        if text.hasPrefix("relay:") {
            let domain = text.dropFirst(6)
            guard !domain.isEmpty else { return nil }
            self = .relay(domain: String(domain))
        } else if text.hasPrefix("local:") {
            let rest = text.dropFirst(6)
            guard let slash = rest.firstIndex(of: "/") else { return nil }
            let domain = rest[..<slash]
            let mailbox = rest[rest.index(after: slash)...]
            guard !domain.isEmpty, !mailbox.isEmpty else { return nil }
            self = .local(domain: String(domain), mailbox: String(mailbox))
        } else {
            return nil
        }
    }

    /// The stored form, as the queue's `route` column holds it.
    public var stored: String {
        switch self {
        case .local(let domain, let mailbox): "local:\(domain)/\(mailbox)"
        case .relay(let domain): "relay:\(domain)"
        }
    }

    public var description: String { stored }

    /// The recipient's domain.
    public var domain: String {
        switch self {
        case .local(let domain, _), .relay(let domain): domain
        }
    }

    /// The domain of a local route, nil for a relayed one.
    public var localDomain: String? {
        if case .local(let domain, _) = self { return domain }
        return nil
    }

    /// The domain of a relayed route, nil for a local one.
    public var relayDomain: String? {
        if case .relay(let domain) = self { return domain }
        return nil
    }
}
