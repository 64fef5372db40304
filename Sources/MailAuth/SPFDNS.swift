import DNSClient

/// The DNS lookups sender authentication makes (RFC 7208 §4.4, §5; RFC 7489 §6.6.3): TXT, A, AAAA,
/// MX and PTR, reduced to what an evaluator needs to decide.
///
/// An empty answer means the name has no such records (NXDOMAIN or NODATA, both "void" in RFC 7208
/// §4.6.4); a thrown ``SPFDNSError`` means the answer could not be had (timeout, SERVFAIL), which
/// SPF turns into temperror (RFC 7208 §4.4, §5). ``ResolverSPFDNS`` is the implementation over
/// Mailflow's resolver; tests give an in-process zone.
public protocol SPFDNS: Sendable {
    /// TXT strings of `name`, one per record with its character-strings joined (RFC 7208 §3.3).
    func txt(_ name: String) async throws(SPFDNSError) -> [String]
    /// IPv4 addresses of `name`.
    func a(_ name: String) async throws(SPFDNSError) -> [DNSIPAddress]
    /// IPv6 addresses of `name`.
    func aaaa(_ name: String) async throws(SPFDNSError) -> [DNSIPAddress]
    /// Exchange names of `name`'s MX records, in the order received.
    func mx(_ name: String) async throws(SPFDNSError) -> [String]
    /// Names the reverse zone gives for `address`.
    func ptr(_ address: DNSIPAddress) async throws(SPFDNSError) -> [String]
}

/// A lookup that gave no usable answer: the server failed, timed out or could not be reached.
public struct SPFDNSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, for the result's reason (never message content).
    public var reason: String

    public init(_ reason: String) { self.reason = reason }

    public var description: String { reason }
}

/// ``SPFDNS`` over `DNSClient`'s ``DNSResolver`` (with its cache and CNAME following).
///
/// NXDOMAIN, NODATA and names that are not valid DNS names answer empty; every other failure throws.
public struct ResolverSPFDNS: SPFDNS {
    let resolver: DNSResolver

    public init(resolver: DNSResolver) { self.resolver = resolver }

    public func txt(_ name: String) async throws(SPFDNSError) -> [String] {
        try await Self.mapping { () async throws(DNSError) -> [String] in try await resolver.txt(name) }
    }

    public func a(_ name: String) async throws(SPFDNSError) -> [DNSIPAddress] {
        try await Self.mapping { () async throws(DNSError) -> [DNSIPAddress] in
            try await resolver.query(name, .a).addresses
        }
    }

    public func aaaa(_ name: String) async throws(SPFDNSError) -> [DNSIPAddress] {
        try await Self.mapping { () async throws(DNSError) -> [DNSIPAddress] in
            try await resolver.query(name, .aaaa).addresses
        }
    }

    public func mx(_ name: String) async throws(SPFDNSError) -> [String] {
        try await Self.mapping { () async throws(DNSError) -> [String] in
            try await resolver.query(name, .mx).mxRecords.map { $0.exchange.unrooted }
        }
    }

    public func ptr(_ address: DNSIPAddress) async throws(SPFDNSError) -> [String] {
        try await Self.mapping { () async throws(DNSError) -> [String] in
            try await resolver.ptr(for: address).map(\.unrooted)
        }
    }

    static func mapping<T>(_ body: () async throws(DNSError) -> [T]) async throws(SPFDNSError) -> [T] {
        do {
            return try await body()
        } catch {
            switch error {
            case .nxdomain, .noData, .invalidName: return []
            default: throw SPFDNSError(error.description)
            }
        }
    }
}
