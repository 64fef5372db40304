import Foundation

/// Where service health keeps and reads its state: the trace stream it detects from, users' problem
/// reports, the issues it writes and admins' actions on them. Two implementations: the node's own
/// queue database (`SQLiteQueueStore`, one node) and the shared queue's database (cluster mode,
/// `SharedHealthStore` in the Cluster module), where every node's trace lands and one node at a
/// time, the health **leader**, runs the monitor for the whole cluster.
///
/// Reading the stream goes by an opaque **position**: a read returns what was written from a
/// position on and the position to read from next, so a reader neither misses nor repeats an
/// event, even where events commit out of the order their IDs were given (PostgreSQL).
///
/// Calls block (SQLite, or a wait on PostgreSQL): make them off the cooperative pool and off event
/// loops (the live monitor runs on a thread pool).
///
/// ```swift
/// var at = try store.healthTraceStart(atOrAfter: Date().addingTimeInterval(-3600))
/// repeat {
///     let batch = try store.healthTrace(from: at, limit: 50_000)
///     for row in batch.rows { ... }
///     at = batch.next
/// } while batch.more
/// ```
public protocol HealthStore: Sendable {
    /// Outcomes and refusals (`received`, `delivered`, `deferred`, `failed`, `throttled`) written
    /// from `position` on, about in time order, at most `limit`.
    func healthTrace(from position: Int64, limit: Int) throws -> HealthTraceBatch
    /// The position of the first trace event at or after `time` (where a warm-up starts); the end of
    /// the stream when there is none.
    func healthTraceStart(atOrAfter time: Date) throws -> Int64

    /// Problem reports written from `position` on, in the order written.
    func problemReports(from position: Int64, limit: Int) throws -> ProblemReportBatch
    /// The position after the last report written (where a reader that wants only new ones starts).
    func problemReportsEnd() throws -> Int64
    @discardableResult
    func addProblemReport(
        time: Date, tenant: String, region: String, text: String, error: String?, reporter: String
    ) throws -> Int64

    /// Every stored issue document (JSON), newest first.
    func healthIssueDocuments() throws -> [String]
    /// Stores an issue's document (the monitor's writer only: the leader, in cluster mode).
    func saveHealthIssue(id: String, number: Int, resolved: Bool, lastModified: Date, document: String) throws

    /// Queues an admin's action for the monitor (from the CLI, or a node that is not the leader).
    @discardableResult
    func addHealthAction(issue: String, kind: String, value: String, actor: String, time: Date) throws -> Int64
    func pendingHealthActions() throws -> [SQLiteQueueStore.HealthAction]
    /// Marks an action done (`applied` 1) or refused (2).
    func finishHealthAction(_ id: Int64, applied: Bool) throws
    /// 0 while waiting, 1 applied, 2 refused, 3 withdrawn; nil for no such action.
    func healthActionState(_ id: Int64) throws -> Int?
    /// Withdraws an action still waiting (state 3), so that no monitor applies it later; false when
    /// it was applied or refused meanwhile.
    func withdrawHealthAction(_ id: Int64) throws -> Bool
}

/// Trace rows read for service health, and where to read on.
public struct HealthTraceBatch: Sendable {
    public var rows: [SQLiteQueueStore.HealthTraceRow]
    /// The position to read from next.
    public var next: Int64
    /// More was there than `limit` let through: read again from `next` at once.
    public var more: Bool

    public init(rows: [SQLiteQueueStore.HealthTraceRow], next: Int64, more: Bool) {
        self.rows = rows
        self.next = next
        self.more = more
    }
}

/// Problem reports read for service health, and where to read on.
public struct ProblemReportBatch: Sendable {
    public var reports: [SQLiteQueueStore.StoredProblemReport]
    public var next: Int64

    public init(reports: [SQLiteQueueStore.StoredProblemReport], next: Int64) {
        self.reports = reports
        self.next = next
    }
}

/// Which node runs the service-health monitor in a cluster: one at a time, holding a lease it
/// renews at every pass, with the stream positions the monitor has read to, so that the node taking
/// over after the leader died goes on where it stopped (nothing counted twice, nothing skipped).
public protocol HealthLeadership: Sendable {
    /// Takes or renews the leadership for this node; nil when another node holds it.
    func lead() throws -> HealthLead?
    /// Saves how far the leader has read (only while it leads).
    func saveProgress(trace: Int64, reports: Int64) throws
    /// Gives the leadership up (a clean stop): another node may take it at once.
    func resign()
    /// The node leading now and until when, if any (for status lines).
    func leader() throws -> (node: String, until: Date)?
}

/// The leadership as taken or renewed.
public struct HealthLead: Sendable, Equatable {
    /// The stream positions the previous leader (or this node) saved; nil when none was ever saved.
    public var trace: Int64?
    public var reports: Int64?
    /// One more each time the leadership changes hands (or lapses): a node whose term is not the
    /// one it warmed up under starts again from the stored state.
    public var term: Int64

    public init(trace: Int64?, reports: Int64?, term: Int64) {
        self.trace = trace
        self.reports = reports
        self.term = term
    }
}
