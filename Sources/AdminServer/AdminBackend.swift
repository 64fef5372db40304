import Delivery
import Foundation
import Ingress
import MailQueue

/// A tenant as the admin center shows it.
public struct TenantInfo: Sendable, Codable, Equatable {
    public var name: String
    public var domains: [String]
    public var forest: String
    public var maxMessageSize: Int

    public init(name: String, domains: [String], forest: String, maxMessageSize: Int) {
        self.name = name
        self.domains = domains
        self.forest = forest
        self.maxMessageSize = maxMessageSize
    }
}

/// What the admin listener reads and controls in the running server. The queue store is shared;
/// the rest are closures so tests can run the listener on a bare store.
public struct AdminBackend: Sendable {
    public var store: SQLiteQueueStore
    public var hostname: String
    public var version: String
    public var usage: @Sendable () -> AdmissionUsage?
    public var destinations: @Sendable () async -> [DestinationStatus]
    public var tenants: @Sendable () -> [TenantInfo]
    /// Called after a queue action that makes a message due (release, retry, bounce).
    public var wakeDelivery: @Sendable () -> Void
    /// Prometheus text for `/metrics`.
    public var metrics: @Sendable () -> String

    public init(
        store: SQLiteQueueStore, hostname: String, version: String,
        usage: @escaping @Sendable () -> AdmissionUsage? = { nil },
        destinations: @escaping @Sendable () async -> [DestinationStatus] = { [] },
        tenants: @escaping @Sendable () -> [TenantInfo] = { [] },
        wakeDelivery: @escaping @Sendable () -> Void = {},
        metrics: @escaping @Sendable () -> String = { "" }
    ) {
        self.store = store
        self.hostname = hostname
        self.version = version
        self.usage = usage
        self.destinations = destinations
        self.tenants = tenants
        self.wakeDelivery = wakeDelivery
        self.metrics = metrics
    }
}
