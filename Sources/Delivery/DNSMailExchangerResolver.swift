import DNSClient
import NIOCore
import SMTPCore

/// Answers outbound delivery's DNS questions with Mailflow's own resolver (`DNSClient`): the MX
/// plan of RFC 5321 §5.1 and RFC 7505, and a host's addresses.
public struct DNSMailExchangerResolver: MailExchangerResolving {
    public let resolver: DNSResolver

    public init(resolver: DNSResolver) {
        self.resolver = resolver
    }

    public func exchangers(for domain: String) async -> MailExchangerLookup {
        do {
            let plan = try await resolver.mailExchangers(for: domain)
            return .hosts(plan.hosts.map { $0.name.description.trimmingTrailingDot() })
        } catch {
            switch error {
            case .nullMX:
                return .permanent(SMTPReply(556, .init(5, 1, 10), "\(domain) does not accept mail (Null MX, RFC 7505)"))
            case .noSuchDomain:
                return .permanent(SMTPReply(550, .init(5, 1, 2), "Domain \(domain) does not exist (NXDOMAIN)"))
            case .noMailHost:
                return .permanent(SMTPReply(550, .init(5, 1, 2), "Domain \(domain) has no MX and no address records"))
            case .invalidDomain(let why):
                return .permanent(SMTPReply(550, .init(5, 1, 2), "Invalid domain \(why)"))
            case .temporary(let why):
                return .transient(SMTPReply(451, .init(4, 4, 3), "DNS lookup for \(domain) failed, will retry: \(why)"))
            }
        }
    }

    public func addresses(for host: String) async throws -> [String] {
        do {
            return try await resolver.addresses(host).map(\.description)
        } catch {
            throw SMTPClientFailure.addressLookup(
                SMTPReply(
                    error.isPermanent ? 550 : 451, error.isPermanent ? .init(5, 4, 4) : .init(4, 4, 3),
                    "No address for \(host): \(error)"))
        }
    }
}

extension String {
    func trimmingTrailingDot() -> String { hasSuffix(".") ? String(dropLast()) : self }
}
