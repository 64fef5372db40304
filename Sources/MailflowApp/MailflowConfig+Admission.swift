import Ingress
import Yams

extension MailflowConfig {
    /// A forest's `max_connections` when the file leaves it out.
    static let defaultForestMaxConnections = 200

    /// `forests`: resource forests, named pools of tenants with their own session and message-rate
    /// caps (docs/admission.md). Decoded after `tenants`, whose names they refer to.
    mutating func decodeForests(_ list: [Node], path: String) throws {
        var names = Set<String>()
        var forestOfTenant: [String: String] = [:]
        let tenantNames = Set(tenants.map(\.name))
        for (i, n) in list.enumerated() {
            let f = try ConfigReader(n, "\(path)[\(i)]")
            try f.only(["name", "region", "tenants", "max_connections", "max_messages_per_minute"])
            guard let name = try f.string("name"), !name.isEmpty else { throw f.error("name", "is required") }
            guard name != ResourceForest.defaultName else {
                throw f.error("name", "\(Self.quote(name)) is reserved for tenants in no forest")
            }
            guard names.insert(name).inserted else {
                throw f.error("name", "\(Self.quote(name)) is used by two forests")
            }
            let members = try f.stringList("tenants") ?? []
            for (j, t) in members.enumerated() {
                guard tenantNames.contains(t) else {
                    throw f.error("tenants[\(j)]", "no tenant is named \(Self.quote(t))")
                }
                if let other = forestOfTenant[t] {
                    throw f.error("tenants[\(j)]", "tenant \(Self.quote(t)) is already in forest \(Self.quote(other))")
                }
                forestOfTenant[t] = name
            }
            let maxConnections = try f.int("max_connections", in: 1...1_000_000) ?? Self.defaultForestMaxConnections
            let rate = try f.int("max_messages_per_minute") ?? 0
            guard (0...100_000_000).contains(rate) else {
                throw f.error("max_messages_per_minute", "must be between 0 (no limit) and 100000000")
            }
            admissionLimits.forests.append(
                ResourceForest(
                    name: name, region: try f.string("region") ?? "default", tenants: members,
                    maxConnections: maxConnections, maxMessagesPerMinute: rate))
        }
    }
}
