/// The outcome of an SPF evaluation (RFC 7208 §2.6, §8) with what decided it.
///
///     SPFResult(kind: .fail, domain: "example.org", mechanism: "-all", explanation: "...", reason: "...")
public struct SPFResult: Sendable, Hashable, CustomStringConvertible {
    /// The seven results of RFC 7208 §2.6.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// No usable domain, or no SPF record at it (§2.6.1).
        case none
        /// The domain states nothing about the address (§2.6.2); also the default when nothing matches.
        case neutral
        /// The address is authorised (§2.6.3).
        case pass
        /// The address is not authorised (§2.6.4); the receiver may refuse the mail.
        case fail
        /// Probably not authorised (§2.6.5); accept, perhaps mark.
        case softfail
        /// A transient DNS error (§2.6.6); a receiver may defer with 4xx.
        case temperror
        /// The records could not be interpreted (§2.6.7): syntax, limits, missing include targets.
        case permerror
    }

    public var kind: Kind
    /// The domain whose policy was evaluated (the MAIL FROM or HELO domain).
    public var domain: String
    /// The directive that matched, as written (`-all`, `ip4:192.0.2.0/24`, `include:_spf.example.net`).
    public var mechanism: String?
    /// For `fail` only: the domain's `exp=` text, expanded (§6.2), or nil when it gave none.
    public var explanation: String?
    /// Why, in a sentence an operator can act on.
    public var reason: String
    /// DNS-querying terms evaluated (§4.6.4 limit 10).
    public var lookups: Int
    /// Lookups that found no records (§4.6.4 limit 2).
    public var voidLookups: Int

    public init(
        kind: Kind, domain: String, mechanism: String? = nil, explanation: String? = nil, reason: String,
        lookups: Int = 0, voidLookups: Int = 0
    ) {
        self.kind = kind
        self.domain = domain
        self.mechanism = mechanism
        self.explanation = explanation
        self.reason = reason
        self.lookups = lookups
        self.voidLookups = voidLookups
    }

    public var description: String {
        var text = "\(kind.rawValue) (\(reason))"
        if let explanation { text += " explanation: \(explanation)" }
        return text
    }
}
