/// The outcome of a lookup that produced no records (RFC 1035 §4.1.1 RCODEs, RFC 2308 negative answers).
///
/// ``isPermanent`` separates answers that will not change on retry (``nxdomain``, ``noData``) from transient
/// failures (``serverFailure``, ``timeout``, ``network``) for the RFC 5321 §4.5.4.1 retry logic.
public enum DNSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// NXDOMAIN: the name does not exist (RFC 1035 §4.1.1 RCODE 3; RFC 2308 §2.1). Permanent.
    case nxdomain(DNSName)
    /// NODATA: the name exists but has no records of the type (RFC 2308 §2.2). Permanent.
    case noData(DNSName, DNSRecordType)
    /// SERVFAIL, REFUSED or another error RCODE from every server tried. Transient.
    case serverFailure(DNSResponseCode)
    /// No server answered within the per-attempt timeout. Transient.
    case timeout
    /// A socket-level failure (e.g. connection refused on the TCP fallback). Transient.
    case network(String)
    /// A response could not be decoded, or did not match the query. Transient (another server may do better).
    case malformed(String)
    /// The name given is not a valid ASCII domain name.
    case invalidName(DNSNameError)
    /// The text given is not an IPv4 or IPv6 address.
    case invalidAddress(String)
    /// A CNAME chain longer than the hop limit or looping back on itself.
    case cnameChainTooLong(DNSName)
    /// No name server is configured.
    case noServers

    /// True when retrying later cannot help.
    public var isPermanent: Bool {
        switch self {
        case .nxdomain, .noData, .invalidName, .invalidAddress, .cnameChainTooLong, .noServers: return true
        case .serverFailure, .timeout, .network, .malformed: return false
        }
    }

    public var description: String {
        switch self {
        case .nxdomain(let name): return "NXDOMAIN for \(name)"
        case .noData(let name, let type): return "no \(type) records for \(name)"
        case .serverFailure(let rcode): return "server failure (\(rcode))"
        case .timeout: return "DNS timeout"
        case .network(let reason): return "DNS network error: \(reason)"
        case .malformed(let reason): return "malformed DNS response: \(reason)"
        case .invalidName(let error): return "invalid domain name: \(error)"
        case .invalidAddress(let text): return "not an IP address: \(text)"
        case .cnameChainTooLong(let name): return "CNAME chain too long or looping at \(name)"
        case .noServers: return "no DNS servers configured"
        }
    }
}

/// A successful lookup: the records of the asked type, after following any CNAME chain (RFC 1034 §3.6.2).
public struct DNSAnswer: Hashable, Sendable {
    /// The name that was asked for.
    public var name: DNSName
    /// The type that was asked for.
    public var type: DNSRecordType
    /// The end of the CNAME chain (equal to `name` when there was none).
    public var canonicalName: DNSName
    /// The records of `type` owned by `canonicalName`, in the order the server sent them.
    public var records: [DNSResourceRecord]
    /// The smallest TTL over the records and CNAMEs used, in seconds (the remaining TTL when served from cache).
    public var ttl: UInt32
    /// True when every response used had the AD bit set (RFC 4035 §3.2.3); only meaningful with a trusted,
    /// validating resolver on a secure path (RFC 6698 §4.1, RFC 7672 §2.1.1).
    public var authenticated: Bool

    public init(
        name: DNSName, type: DNSRecordType, canonicalName: DNSName, records: [DNSResourceRecord], ttl: UInt32,
        authenticated: Bool
    ) {
        self.name = name
        self.type = type
        self.canonicalName = canonicalName
        self.records = records
        self.ttl = ttl
        self.authenticated = authenticated
    }
}
