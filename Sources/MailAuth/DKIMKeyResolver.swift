import DNSClient

/// What a key lookup found (RFC 6376 §3.6.2.2): the TXT strings at the name, none, or a failure that
/// may clear up later (the verifier reports that as `temperror`).
public enum DKIMKeyLookup: Sendable, Hashable {
    case records([String])
    case notFound
    case temporaryFailure(String)
}

/// Where the verifier gets key records: `<selector>._domainkey.<domain>` TXT (RFC 6376 §3.6.2.1).
public protocol DKIMKeyResolver: Sendable {
    func keyRecords(selector: String, domain: String) async -> DKIMKeyLookup
}

extension DKIMKeyResolver {
    /// The DNS name a key is published at.
    public static func keyName(selector: String, domain: String) -> String { "\(selector)._domainkey.\(domain)" }
}

/// Key records through Mailflow's own resolver (`DNSClient`): NXDOMAIN and NODATA are "no key",
/// every other failure is temporary.
public struct DNSKeyResolver: DKIMKeyResolver {
    public let resolver: DNSResolver

    public init(resolver: DNSResolver) { self.resolver = resolver }

    public func keyRecords(selector: String, domain: String) async -> DKIMKeyLookup {
        do {
            let records = try await resolver.txt(Self.keyName(selector: selector, domain: domain))
            return records.isEmpty ? .notFound : .records(records)
        } catch {
            switch error {
            case .nxdomain, .noData, .invalidName: return .notFound
            default: return .temporaryFailure("\(error)")
            }
        }
    }
}
