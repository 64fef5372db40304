import NIOCore
import NIOPosix

/// Settings of a ``DNSResolver``.
public struct DNSResolverConfiguration: Sendable {
    /// Recursive servers, tried in order in each round.
    public var servers: [DNSServer]
    /// How long to wait for each UDP (and each TCP fallback) exchange.
    public var timeout: TimeAmount
    /// Rounds over `servers` before giving up (resolv.conf `attempts`).
    public var attempts: Int
    /// Set the DO bit (RFC 3225) in queries.
    public var dnssecOK: Bool
    /// Set the AD bit in queries to ask for it in answers (RFC 6840 §5.7).
    public var requestAuthenticData: Bool
    /// Cap on the lifetime of a positive cache entry, in seconds (1 day).
    public var maxPositiveTTL: UInt32
    /// Cap on the lifetime of a negative cache entry, in seconds (1 hour; RFC 2308 §5 suggests 1–3 hours).
    public var maxNegativeTTL: UInt32
    /// Negative TTL when the server sent no SOA; 0 means do not cache, as RFC 2308 §5 says.
    public var negativeTTLWithoutSOA: UInt32
    /// Maximum CNAME hops to follow (RFC 1034 §3.6.2 leaves this to the resolver).
    public var maxCNAMEHops: Int
    /// Maximum number of cache entries.
    public var cacheCapacity: Int

    public init(
        servers: [DNSServer], timeout: TimeAmount = .seconds(2), attempts: Int = 2, dnssecOK: Bool = false,
        requestAuthenticData: Bool = true, maxPositiveTTL: UInt32 = 86_400, maxNegativeTTL: UInt32 = 3_600,
        negativeTTLWithoutSOA: UInt32 = 0, maxCNAMEHops: Int = 8, cacheCapacity: Int = 10_000
    ) {
        self.servers = servers
        self.timeout = timeout
        self.attempts = attempts
        self.dnssecOK = dnssecOK
        self.requestAuthenticData = requestAuthenticData
        self.maxPositiveTTL = maxPositiveTTL
        self.maxNegativeTTL = maxNegativeTTL
        self.negativeTTLWithoutSOA = negativeTTLWithoutSOA
        self.maxCNAMEHops = maxCNAMEHops
        self.cacheCapacity = cacheCapacity
    }

    /// Servers, timeout and attempts taken from a parsed resolv.conf.
    public init(resolvConf: ResolvConf) {
        self.init(servers: resolvConf.servers, timeout: resolvConf.timeout, attempts: resolvConf.attempts)
    }
}

/// A source of random 64-bit values for query IDs and MX shuffling; inject a deterministic one in tests.
public struct DNSRandomSource: Sendable {
    private let nextValue: @Sendable () -> UInt64

    /// Wraps a closure returning uniformly random 64-bit values.
    public init(_ next: @escaping @Sendable () -> UInt64) {
        self.nextValue = next
    }

    /// `SystemRandomNumberGenerator` (the OS CSPRNG), which query IDs need (RFC 5452 §9.2).
    public static let system = DNSRandomSource {
        var generator = SystemRandomNumberGenerator()
        return generator.next()
    }

    /// The next raw value.
    public func next() -> UInt64 { nextValue() }

    /// A value in `0..<upperBound` (multiply-high reduction); 0 when `upperBound` is 0.
    public func next(upperBound: Int) -> Int {
        guard upperBound > 0 else { return 0 }
        return Int(next().multipliedFullWidth(by: UInt64(upperBound)).high)
    }
}

/// A caching DNS stub resolver over UDP with TCP fallback (RFC 1034 §5.3.1, RFC 1035 §4.2).
///
/// Answers follow CNAME chains (at most ``DNSResolverConfiguration/maxCNAMEHops``, loops detected) and are
/// cached for their smallest TTL; NXDOMAIN and NODATA are cached for the SOA-derived negative TTL (RFC 2308 §5).
/// Failures are reported as ``DNSError``. All state is immutable or actor-isolated, so one instance can be shared.
public final class DNSResolver: Sendable {
    /// The settings this resolver was made with.
    public let configuration: DNSResolverConfiguration
    let transport: DNSTransport
    let clock: @Sendable () -> NIODeadline
    let random: DNSRandomSource
    let cache: DNSCache

    /// A resolver.
    /// - Parameters:
    ///   - configuration: servers, timeouts, cache limits.
    ///   - group: event loops for the sockets.
    ///   - clock: the time source for cache expiry (tests inject a manual clock).
    ///   - random: the source of query IDs and of the MX shuffle.
    public init(
        configuration: DNSResolverConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        clock: @escaping @Sendable () -> NIODeadline = { .now() },
        random: DNSRandomSource = .system
    ) {
        self.configuration = configuration
        self.transport = DNSTransport(group: group)
        self.clock = clock
        self.random = random
        self.cache = DNSCache(capacity: configuration.cacheCapacity)
    }

    /// A resolver using /etc/resolv.conf (or `path`).
    public convenience init(resolvConfPath path: String = ResolvConf.defaultPath) {
        self.init(configuration: DNSResolverConfiguration(resolvConf: ResolvConf.load(path: path)))
    }

    /// Drops every cached entry.
    public func clearCache() async {
        await cache.removeAll()
    }

    // MARK: Queries

    /// Looks up records of `type` for `name` (ASCII, trailing dot optional), following CNAMEs.
    /// - Throws: ``DNSError``: `.nxdomain`/`.noData` (permanent), `.serverFailure`/`.timeout` (transient), …
    public func query(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> DNSAnswer {
        try await query(Self.parse(name), type)
    }

    /// Looks up records of `type` for `name`, following CNAMEs, using and filling the cache.
    public func query(_ name: DNSName, _ type: DNSRecordType) async throws(DNSError) -> DNSAnswer {
        let key = DNSCache.Key(name: name, type: type)
        if let (value, remaining) = await cache.lookup(key, now: clock()) {
            switch value {
            case .answer(var answer):
                answer.ttl = min(answer.ttl, remaining)
                return answer
            case .negative(let error):
                throw error
            }
        }
        switch try await resolve(name, type) {
        case .answer(let answer):
            await cache.store(key, .answer(answer), ttl: min(answer.ttl, configuration.maxPositiveTTL), now: clock())
            return answer
        case .negative(let error, let ttl):
            await cache.store(key, .negative(error), ttl: min(ttl, configuration.maxNegativeTTL), now: clock())
            throw error
        }
    }

    /// MX records of `domain` (RFC 1035 §3.3.9), sorted by preference; see also ``mailExchangers(for:)``.
    public func mx(_ domain: String) async throws(DNSError) -> [MXRecord] {
        let answer = try await query(domain, .mx)
        return answer.mxRecords.sorted { $0.preference < $1.preference }
    }

    /// IPv4 then IPv6 addresses of `host` (A and AAAA, RFC 3596), asked in parallel.
    ///
    /// One family failing transiently while the other answers yields the answering family's addresses.
    public func addresses(_ host: String) async throws(DNSError) -> [DNSIPAddress] {
        try await addresses(Self.parse(host))
    }

    /// IPv4 then IPv6 addresses of `host`.
    public func addresses(_ host: DNSName) async throws(DNSError) -> [DNSIPAddress] {
        async let v4Result = result(host, .a)
        async let v6Result = result(host, .aaaa)
        let (v4, v6) = await (v4Result, v6Result)
        var found: [DNSIPAddress] = []
        var errors: [DNSError] = []
        for outcome in [v4, v6] {
            switch outcome {
            case .success(let answer): found += answer.addresses
            case .failure(let error): errors.append(error)
            }
        }
        if !found.isEmpty { return found }
        if let transient = errors.first(where: { !$0.isPermanent }) { throw transient }
        if let nxdomain = errors.first(where: { if case .nxdomain = $0 { return true } else { return false } }) {
            throw nxdomain
        }
        throw errors.first ?? .noData(host, .a)
    }

    /// The TXT strings of `name`, one entry per record with its character-strings concatenated
    /// (the RFC 7208 §3.3 convention used by SPF, DKIM, DMARC and MTA-STS); bytes decoded as UTF-8.
    public func txt(_ name: String) async throws(DNSError) -> [String] {
        let answer = try await query(name, .txt)
        return answer.records.compactMap { record in
            guard case .txt(let strings) = record.data else { return nil }
            return String(decoding: strings.joined(), as: UTF8.self)
        }
    }

    /// TLSA records at `_port._proto.host` (RFC 6698 §3, RFC 7672 §2.2); check `authenticated` before use.
    public func tlsa(port: Int = 25, proto: String = "tcp", host: String) async throws(DNSError) -> DNSAnswer {
        let base = try Self.parse(host)
        let name: DNSName
        do {
            name = try base.prepending("_" + proto).prepending("_\(port)")
        } catch {
            throw .invalidName(error)
        }
        return try await query(name, .tlsa)
    }

    /// PTR names for an IP address (RFC 1035 §3.5 in-addr.arpa, RFC 3596 §2.5 ip6.arpa).
    public func ptr(for ip: String) async throws(DNSError) -> [DNSName] {
        guard let address = DNSIPAddress(ip) else { throw .invalidAddress(ip) }
        return try await ptr(for: address)
    }

    /// PTR names for an IP address.
    public func ptr(for address: DNSIPAddress) async throws(DNSError) -> [DNSName] {
        let answer = try await query(address.reverseName, .ptr)
        return answer.records.compactMap { record in
            guard case .ptr(let name) = record.data else { return nil }
            return name
        }
    }

    // MARK: Internals

    enum Outcome {
        case answer(DNSAnswer)
        case negative(DNSError, ttl: UInt32)
    }

    static func parse(_ name: String) throws(DNSError) -> DNSName {
        do {
            return try DNSName(name)
        } catch {
            throw .invalidName(error)
        }
    }

    private func result(_ name: DNSName, _ type: DNSRecordType) async -> Result<DNSAnswer, DNSError> {
        do {
            return .success(try await query(name, type))
        } catch {
            return .failure(error)
        }
    }

    /// Resolves without the cache, following the CNAME chain inside each response and re-querying the chain's
    /// target when a response stops at a CNAME.
    func resolve(_ name: DNSName, _ type: DNSRecordType) async throws(DNSError) -> Outcome {
        var current = name
        var seen: Set<DNSName> = [name]
        var hops = 0
        var chainTTL = UInt32.max
        var authenticated = true
        while true {
            let response = try await exchange(current, type)
            authenticated = authenticated && response.header.authenticData
            var followed = false
            while true {
                let records = response.answers.filter { $0.name == current && $0.type == type }
                if !records.isEmpty {
                    let ttl = records.reduce(chainTTL) { min($0, $1.ttl) }
                    return .answer(
                        DNSAnswer(
                            name: name, type: type, canonicalName: current, records: records, ttl: ttl,
                            authenticated: authenticated
                        )
                    )
                }
                guard type != .cname,
                    let alias = response.answers.first(where: { $0.name == current && $0.type == .cname }),
                    case .cname(let target) = alias.data
                else { break }
                hops += 1
                guard hops <= configuration.maxCNAMEHops, seen.insert(target).inserted else {
                    throw .cnameChainTooLong(target)
                }
                chainTTL = min(chainTTL, alias.ttl)
                current = target
                followed = true
            }
            let negativeTTL = min(negativeTTL(response), chainTTL)
            if response.responseCode == .nameError {
                return .negative(.nxdomain(current), ttl: negativeTTL)
            }
            if !followed {
                return .negative(.noData(current, type), ttl: negativeTTL)
            }
            // The chain ends at a name the response says nothing about: ask for it (RFC 1034 §5.3.3 step 3c).
        }
    }

    /// RFC 2308 §5: the negative TTL is the smaller of the SOA record's TTL and its MINIMUM field.
    private func negativeTTL(_ response: DNSMessage) -> UInt32 {
        for record in response.authority {
            if case .soa(let soa) = record.data {
                return min(record.ttl, soa.minimum)
            }
        }
        return configuration.negativeTTLWithoutSOA
    }

    /// Sends the query to each server in turn, for `attempts` rounds, until one gives NOERROR or NXDOMAIN.
    func exchange(_ name: DNSName, _ type: DNSRecordType) async throws(DNSError) -> DNSMessage {
        guard !configuration.servers.isEmpty else { throw .noServers }
        var failures: [DNSError] = []
        for _ in 0..<max(configuration.attempts, 1) {
            for server in configuration.servers {
                var useEDNS = true
                while true {
                    var query = DNSMessage.query(
                        id: UInt16(truncatingIfNeeded: random.next()), name: name, type: type, edns: useEDNS,
                        dnssecOK: configuration.dnssecOK
                    )
                    query.header.authenticData = configuration.requestAuthenticData
                    let response: DNSMessage
                    do {
                        response = try await transport.exchange(query, with: server, timeout: configuration.timeout)
                    } catch {
                        failures.append(error)
                        break
                    }
                    switch response.responseCode {
                    case .noError, .nameError:
                        return response
                    case .formatError where useEDNS:
                        // A pre-EDNS server (RFC 6891 §7): ask again without the OPT record.
                        useEDNS = false
                        continue
                    default:
                        failures.append(.serverFailure(response.responseCode))
                    }
                    break
                }
            }
        }
        let order: [(DNSError) -> Bool] = [
            { if case .serverFailure = $0 { return true } else { return false } },
            { if case .malformed = $0 { return true } else { return false } },
            { if case .network = $0 { return true } else { return false } },
        ]
        for matches in order {
            if let failure = failures.last(where: matches) { throw failure }
        }
        throw failures.last ?? .timeout
    }
}

extension DNSAnswer {
    /// The A and AAAA addresses among the records.
    public var addresses: [DNSIPAddress] {
        records.compactMap { record in
            switch record.data {
            case .a(let address), .aaaa(let address): return address
            default: return nil
            }
        }
    }

    /// The MX records among the records.
    public var mxRecords: [MXRecord] {
        records.compactMap { record in
            guard case .mx(let mx) = record.data else { return nil }
            return mx
        }
    }

    /// The TLSA records among the records.
    public var tlsaRecords: [TLSARecord] {
        records.compactMap { record in
            guard case .tlsa(let tlsa) = record.data else { return nil }
            return tlsa
        }
    }
}
