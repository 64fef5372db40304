/// One mail host to try, from an MX record or the implicit MX (RFC 5321 §5.1).
public struct MXHost: Hashable, Sendable, CustomStringConvertible {
    /// The host name to resolve to addresses.
    public var name: DNSName
    /// The MX preference (0 for the implicit MX).
    public var preference: UInt16

    public init(name: DNSName, preference: UInt16) {
        self.name = name
        self.preference = preference
    }

    public var description: String { "\(preference) \(name)" }
}

/// The ordered list of mail hosts for a domain (RFC 5321 §5.1): MX hosts by ascending preference, in random
/// order among equal preferences; or the domain itself when it has no MX but has addresses (implicit MX).
public struct MXPlan: Hashable, Sendable {
    /// The domain mail is addressed to.
    public var domain: DNSName
    /// The hosts to try, in order.
    public var hosts: [MXHost]
    /// True when `hosts` is the implicit MX (the domain itself).
    public var isImplicit: Bool
    /// True when the MX answer had the AD bit (RFC 7672 §2.2.1 needs this for DANE).
    public var authenticated: Bool

    public init(domain: DNSName, hosts: [MXHost], isImplicit: Bool, authenticated: Bool) {
        self.domain = domain
        self.hosts = hosts
        self.isImplicit = isImplicit
        self.authenticated = authenticated
    }
}

/// Why no mail host list could be made. ``isPermanent`` tells bounce (5xx) from retry later (4xx).
public enum MXPlanError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The domain publishes a Null MX: it accepts no mail (RFC 7505 §3; reply 556 5.1.10). Permanent.
    case nullMX(DNSName)
    /// The domain does not exist (NXDOMAIN; RFC 5321 §5.1, 550 5.1.2). Permanent.
    case noSuchDomain(DNSName)
    /// The domain exists but has neither MX nor A/AAAA records (RFC 5321 §5.1). Permanent.
    case noMailHost(DNSName)
    /// The domain is not a valid ASCII name. Permanent.
    case invalidDomain(String)
    /// SERVFAIL, timeout or another transient DNS failure; retry later (RFC 5321 §4.5.4.1).
    case temporary(String)

    /// True for the failures that should bounce.
    public var isPermanent: Bool {
        if case .temporary = self { return false }
        return true
    }

    public var description: String {
        switch self {
        case .nullMX(let domain): return "\(domain) does not accept mail (null MX)"
        case .noSuchDomain(let domain): return "domain \(domain) does not exist"
        case .noMailHost(let domain): return "domain \(domain) has no MX and no address records"
        case .invalidDomain(let text): return "invalid domain \(text)"
        case .temporary(let reason): return "temporary DNS failure: \(reason)"
        }
    }
}

extension DNSResolver {
    /// Plans delivery to `domain` per RFC 5321 §5.1 and RFC 7505.
    ///
    /// MX records are sorted by preference, equal preferences shuffled with the injected random source, and
    /// duplicates removed. A sole MX whose exchange is `.` is a Null MX. With no MX records (NODATA), the domain
    /// itself is the implicit MX if it has A or AAAA records. Resolve each host with ``addresses(for:)``.
    public func mailExchangers(for domain: String) async throws(MXPlanError) -> MXPlan {
        let name: DNSName
        do {
            name = try DNSName(domain)
        } catch {
            throw .invalidDomain(domain)
        }
        return try await mailExchangers(for: name)
    }

    /// Plans delivery to `domain` per RFC 5321 §5.1 and RFC 7505.
    public func mailExchangers(for domain: DNSName) async throws(MXPlanError) -> MXPlan {
        let answer: DNSAnswer
        do {
            answer = try await query(domain, .mx)
        } catch {
            switch error {
            case .nxdomain:
                throw .noSuchDomain(domain)
            case .noData:
                return try await implicitPlan(domain)
            case .invalidName, .invalidAddress:
                throw .invalidDomain(domain.description)
            default:
                throw .temporary(error.description)
            }
        }
        let records = answer.mxRecords
        let usable = records.filter { !$0.exchange.isRoot }
        if usable.isEmpty {
            // RFC 7505 §3: a Null MX is a single MX RR with an empty exchange; anything left unusable is
            // treated the same way, as there is no host to deliver to.
            throw .nullMX(domain)
        }
        var best: [DNSName: UInt16] = [:]
        for record in usable {
            best[record.exchange] = min(best[record.exchange] ?? .max, record.preference)
        }
        var hosts: [MXHost] = []
        var seen: Set<DNSName> = []
        for record in usable.sorted(by: { $0.preference < $1.preference })
        where best[record.exchange] == record.preference && seen.insert(record.exchange).inserted {
            hosts.append(MXHost(name: record.exchange, preference: record.preference))
        }
        hosts = shuffleWithinPreference(hosts)
        return MXPlan(domain: domain, hosts: hosts, isImplicit: false, authenticated: answer.authenticated)
    }

    /// Addresses of a planned host, IPv4 first (RFC 5321 §5.1 leaves the order to the client).
    public func addresses(for host: MXHost) async throws(DNSError) -> [DNSIPAddress] {
        try await addresses(host.name)
    }

    private func implicitPlan(_ domain: DNSName) async throws(MXPlanError) -> MXPlan {
        do {
            _ = try await addresses(domain)
        } catch {
            switch error {
            case .nxdomain: throw .noSuchDomain(domain)
            case .noData: throw .noMailHost(domain)
            default: throw .temporary(error.description)
            }
        }
        return MXPlan(
            domain: domain, hosts: [MXHost(name: domain, preference: 0)], isImplicit: true, authenticated: false
        )
    }

    /// Fisher–Yates shuffle of each run of equal preference in an already sorted list.
    func shuffleWithinPreference(_ sorted: [MXHost]) -> [MXHost] {
        var result = sorted
        var start = 0
        while start < result.count {
            var end = start
            while end < result.count && result[end].preference == result[start].preference { end += 1 }
            var index = end - 1
            while index > start {
                let other = start + random.next(upperBound: index - start + 1)
                result.swapAt(index, other)
                index -= 1
            }
            start = end
        }
        return result
    }
}
