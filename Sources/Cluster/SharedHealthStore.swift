import Foundation
import Logging
import MailQueue
import NIOCore
import PostgresNIO
import Synchronization

/// Service health's store and leadership in the shared queue's database (cluster mode): what the
/// health service of every node, and `mailflow health` on any node, use instead of the node's own
/// SQLite file. The trace it reads is the whole cluster's: every node's acceptances, throttle
/// refusals and delivery outcomes. Issues are written by the leader only (`lead`), which runs the
/// monitor; the other nodes read the issues and queue their admins' actions for it.
///
/// One connection, opened at first use and again after a failure, used by one call at a time;
/// the tables are created at the first connection (`SharedQueue.migrate`). A command's store
/// (`keepConnection: false`) closes it after each call instead: a process that ends must not leave
/// one open. Calls block (see `HealthStore`).
///
/// ```swift
/// let store = SharedHealthStore(settings: settings, group: group, logger: logger)
/// let health = HealthService(store: store, leadership: store, ...)
/// ```
public final class SharedHealthStore: HealthStore, HealthLeadership {
    /// The leadership's lease is the queue's (`storage.postgres.lease`) but at least three of the
    /// health service's 5-second rounds, each of which renews it: a leader alive is never passed
    /// over between two rounds.
    public static let minimumLease: TimeInterval = 15
    /// The longest a call may take, at least.
    public static let minimumTimeout: TimeInterval = 30

    public let node: String
    let queue: SharedQueue
    let lease: Duration
    let slot: ConnectionSlot
    let keepConnection: Bool
    /// The term of this node's leadership as last taken or renewed (its writes carry it).
    let term = Mutex<Int64?>(nil)

    public init(
        settings: SharedQueueSettings, group: any EventLoopGroup, logger: Logger, timeout: TimeInterval? = nil,
        keepConnection: Bool = true, minimumLease: TimeInterval = SharedHealthStore.minimumLease
    ) {
        self.keepConnection = keepConnection
        node = settings.node
        lease = .milliseconds(Int64(max(settings.lease, minimumLease) * 1000))
        // A read of the stream is one batch of up to 50,000 events: more than acceptance's
        // `storage.postgres.timeout` may allow.
        queue = SharedQueue(
            database: settings.database,
            timeout: .milliseconds(Int64((timeout ?? max(settings.timeout, Self.minimumTimeout)) * 1000)),
            logger: logger)
        slot = ConnectionSlot(role: "health", queue: queue, group: group, migrated: MigrationFlag(), logger: logger)
    }

    /// Where the store is, for messages (never with the password).
    public var database: String { "\(queue.database)" }

    /// Closes the connection.
    public func close() async { await slot.close() }

    func call<T: Sendable>(
        _ body: @escaping @Sendable (SharedQueue, PostgresConnection) async throws(SharedQueueError) -> T
    ) throws -> T {
        try blockingCall { [slot, queue, keepConnection] in
            do {
                let value = try await slot.use { c throws(SharedQueueError) in try await body(queue, c) }
                if !keepConnection { await slot.close() }
                return value
            } catch {
                if !keepConnection { await slot.close() }
                throw error
            }
        }
    }

    // MARK: HealthStore

    public func healthTrace(from position: Int64, limit: Int) throws -> HealthTraceBatch {
        try call { q, c throws(SharedQueueError) in try await q.healthTrace(c, from: position, limit: limit) }
    }

    public func healthTraceStart(atOrAfter time: Date) throws -> Int64 {
        try call { q, c throws(SharedQueueError) in try await q.healthTraceStart(c, atOrAfter: time) }
    }

    public func problemReports(from position: Int64, limit: Int) throws -> ProblemReportBatch {
        try call { q, c throws(SharedQueueError) in try await q.problemReports(c, from: position) }
    }

    public func problemReportsEnd() throws -> Int64 {
        try call { q, c throws(SharedQueueError) in try await q.streamHorizon(c) }
    }

    @discardableResult
    public func addProblemReport(
        time: Date, tenant: String, region: String, text: String, error: String?, reporter: String
    ) throws -> Int64 {
        let r = SQLiteQueueStore.StoredProblemReport(
            id: 0, time: time, tenant: tenant, region: region, text: text, error: error, reporter: reporter)
        return try call { q, c throws(SharedQueueError) in try await q.addProblemReport(c, r) }
    }

    public func healthIssueDocuments() throws -> [String] {
        try call { q, c throws(SharedQueueError) in try await q.healthIssueDocuments(c) }
    }

    /// Writes only while this node leads: a node that lost the leadership (stopped past its lease)
    /// gets `SharedHealthError.notLeader` and writes nothing.
    public func saveHealthIssue(id: String, number: Int, resolved: Bool, lastModified: Date, document: String) throws {
        let (node, term) = (self.node, try currentTerm())
        let saved = try call { q, c throws(SharedQueueError) in
            try await q.saveHealthIssue(
                c, node: node, term: term, id: id, number: number, resolved: resolved, lastModified: lastModified,
                document: document)
        }
        guard saved else { throw SharedHealthError.notLeader(node) }
    }

    func currentTerm() throws -> Int64 {
        guard let t = term.withLock({ $0 }) else { throw SharedHealthError.notLeader(node) }
        return t
    }

    @discardableResult
    public func addHealthAction(issue: String, kind: String, value: String, actor: String, time: Date) throws -> Int64 {
        try call { q, c throws(SharedQueueError) in
            try await q.addHealthAction(c, issue: issue, kind: kind, value: value, actor: actor, time: time)
        }
    }

    public func pendingHealthActions() throws -> [SQLiteQueueStore.HealthAction] {
        try call { q, c throws(SharedQueueError) in try await q.pendingHealthActions(c) }
    }

    /// Only while this node leads (`SharedHealthError.notLeader` otherwise).
    public func finishHealthAction(_ id: Int64, applied: Bool) throws {
        let (node, term) = (self.node, try currentTerm())
        let done = try call { q, c throws(SharedQueueError) in
            try await q.finishHealthAction(c, node: node, term: term, id, applied: applied)
        }
        guard done else { throw SharedHealthError.notLeader(node) }
    }

    public func withdrawHealthAction(_ id: Int64) throws -> Bool {
        try call { q, c throws(SharedQueueError) in try await q.withdrawHealthAction(c, id) }
    }

    public func healthActionState(_ id: Int64) throws -> Int? {
        try call { q, c throws(SharedQueueError) in try await q.healthActionState(c, id) }
    }

    // MARK: HealthLeadership

    public func lead() throws -> HealthLead? {
        let (node, lease) = (self.node, self.lease)
        let lead = try call { q, c throws(SharedQueueError) in try await q.leadHealth(c, node: node, lease: lease) }
        term.withLock { $0 = lead?.term }
        return lead
    }

    /// Only while this node leads (`SharedHealthError.notLeader` otherwise).
    public func saveProgress(trace: Int64, reports: Int64) throws {
        let (node, term) = (self.node, try currentTerm())
        let saved = try call { q, c throws(SharedQueueError) in
            try await q.saveHealthProgress(c, node: node, term: term, trace: trace, reports: reports)
        }
        guard saved else { throw SharedHealthError.notLeader(node) }
    }

    public func resign() {
        let node = self.node
        _ = try? call { q, c throws(SharedQueueError) in try await q.resignHealth(c, node: node) }
    }

    public func leader() throws -> (node: String, until: Date)? {
        try call { q, c throws(SharedQueueError) in try await q.healthLeader(c) }
    }
}

/// A write refused to a node that no longer leads service health.
public enum SharedHealthError: Error, CustomStringConvertible {
    case notLeader(String)

    public var description: String {
        switch self {
        case .notLeader(let node): "node \(node) no longer leads service health: its change was not written"
        }
    }
}
