import Delivery
import Foundation
import Ingress
import MailQueue
import ServiceHealth

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

/// What the admin listener reads and controls in the running server. The rest are closures so
/// tests can run the listener on a bare store.
///
/// Two stores: `queue` is the queue as queue control and the message trace see it (this node's
/// SQLite file, or in cluster mode the queue every node shares in PostgreSQL, so the admin API and
/// pages of any node list, trace, hold and bounce every node's messages); `store` is this node's
/// own SQLite file, which keeps what stays per node: admin tokens, users, the audit trail and the
/// overview's charts (its activity, samples and top errors come from this node's trace, which in
/// cluster mode holds the node's own acceptances and delivery outcomes).
public struct AdminBackend: Sendable {
    public var store: SQLiteQueueStore
    /// Queue listing, message detail, trace, queue actions, qshape and the overview's queue counts.
    public var queue: any QueueControl
    /// How a `503` names `queue` when it cannot be read: `the shared queue at
    /// postgres://mailflow:***@db:5432/mailflow` (never with a password).
    public var queueName: String
    public var hostname: String
    public var version: String
    public var usage: @Sendable () -> AdmissionUsage?
    public var destinations: @Sendable () async -> [DestinationStatus]
    public var tenants: @Sendable () -> [TenantInfo]
    /// Called after a queue action that makes a message due (release, retry, bounce).
    public var wakeDelivery: @Sendable () -> Void
    /// Prometheus text for `/metrics`.
    public var metrics: @Sendable () -> String
    /// Service health: every issue (open and ended), oldest first; empty when health is off.
    public var healthIssues: @Sendable () -> [HealthIssue]
    /// An admin's action on an issue (post, status, post-incident review); throws `HealthActionError`.
    public var healthAct: @Sendable (String, HealthAdminAction, String) async throws -> HealthIssue
    /// A tenant admin's problem report (report, reporter name); the monitor reads it within seconds.
    public var healthReport: @Sendable (ProblemReport, String) async throws -> Void
    /// Runs one `mailflow check` (docs/check.md) with the server's DNS servers and probe defaults;
    /// nil when the server offers no checks (`503`). See ``AdminCheckRequest``.
    public var runCheck: (@Sendable (AdminCheckRequest) async throws -> AdminCheckResult)?

    public init(
        store: SQLiteQueueStore, queue: (any QueueControl)? = nil, queueName: String = "the queue database",
        hostname: String, version: String,
        usage: @escaping @Sendable () -> AdmissionUsage? = { nil },
        destinations: @escaping @Sendable () async -> [DestinationStatus] = { [] },
        tenants: @escaping @Sendable () -> [TenantInfo] = { [] },
        wakeDelivery: @escaping @Sendable () -> Void = {},
        metrics: @escaping @Sendable () -> String = { "" },
        healthIssues: @escaping @Sendable () -> [HealthIssue] = { [] },
        healthAct: @escaping @Sendable (String, HealthAdminAction, String) async throws -> HealthIssue = { id, _, _ in
            throw HealthActionError.unknownIssue(id)
        },
        healthReport: @escaping @Sendable (ProblemReport, String) async throws -> Void = { _, _ in },
        runCheck: (@Sendable (AdminCheckRequest) async throws -> AdminCheckResult)? = nil
    ) {
        self.store = store
        self.queue = queue ?? LocalQueueControl(store)
        self.queueName = queueName
        self.hostname = hostname
        self.version = version
        self.usage = usage
        self.destinations = destinations
        self.tenants = tenants
        self.wakeDelivery = wakeDelivery
        self.metrics = metrics
        self.healthIssues = healthIssues
        self.healthAct = healthAct
        self.healthReport = healthReport
        self.runCheck = runCheck
    }
}

/// One check the admin API or the Diagnostics page asks for, its target already validated.
///
/// The admin listener does not link Diagnostics: the check runs behind an opaque closure that the
/// server (MailflowApp) provides, and comes back as the report's JSON. That keeps the probing code
/// (SMTP, TLS, DNS clients that contact other hosts) out of the listener's module and its tests, and
/// makes the API answer byte for byte what `mailflow check --json` prints (docs/check.schema.json),
/// with no second encoder to drift; the page reads the same JSON through the documented schema.
public struct AdminCheckRequest: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case domain, host, ip
    }

    public var kind: Kind
    /// A hostname (LDH labels, no trailing dot) or an IP literal, as validated by the listener.
    public var target: String
    /// The SMTP port probed (domain and host; 25 unless given); nil for `ip`.
    public var port: Int?
    /// A DKIM selector whose key at `SEL._domainkey.DOMAIN` is also checked (domain only).
    public var dkimSelector: String?

    public init(kind: Kind, target: String, port: Int? = nil, dkimSelector: String? = nil) {
        self.kind = kind
        self.target = target
        self.port = port
        self.dkimSelector = dkimSelector
    }
}

/// A finished check: the `CheckReport` encoded as `mailflow check --json` prints it, and its verdict
/// (`ok`, `info`, `warning`, `failure`) for the log.
public struct AdminCheckResult: Sendable {
    public var report: Data
    public var verdict: String

    public init(report: Data, verdict: String) {
        self.report = report
        self.verdict = verdict
    }
}
