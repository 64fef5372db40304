import Foundation

/// The queue as queue control, the message trace and the admin center see it, whichever store
/// holds it: this node's SQLite file (`LocalQueueControl`) or the queue several nodes share in
/// PostgreSQL (`SharedQueueControl`, module Cluster). Both answer in `SQLiteQueueStore`'s types, so
/// the CLI and the admin API print and encode the same in either mode.
///
/// ```swift
/// let queue: any QueueControl = LocalQueueControl(store)
/// let rows = try await queue.trace(try SQLiteQueueStore.TraceQuery(parameters: ["sender": "alice"]))
/// let r = try await queue.control(.hold, id: id, actor: "cli:ops")   // ControlError when it does not apply
/// ```
public protocol QueueControl: Sendable {
    /// Per-recipient rows matching the query, newest first, each with its events.
    func trace(_ query: SQLiteQueueStore.TraceQuery) async throws -> [SQLiteQueueStore.TraceRow]
    /// Queued and held messages (and finished ones with `includeDone`), one tenant's with `tenant`.
    func list(tenant: String?, includeDone: Bool, limit: Int) async throws -> [SQLiteQueueStore.QueueListing]
    func message(_ id: String) async throws -> StoredMessage?
    func traceEvents(queueID: String) async throws -> [TraceEvent]
    /// An administrator's action; `SQLiteQueueStore.ControlError` when the message is unknown or
    /// the action does not apply to it.
    func control(_ action: SQLiteQueueStore.ControlAction, id: String, actor: String) async throws
        -> SQLiteQueueStore.ControlResult
    /// Pending recipients per destination domain by age (qshape).
    func shape() async throws -> [SQLiteQueueStore.QueueShape]
    func queueCounts() async throws -> SQLiteQueueStore.QueueCounts
    /// Per tenant: messages accepted since `since` and recipients still pending.
    func tenantActivity(since: Date) async throws -> [SQLiteQueueStore.TenantActivity]
    /// The overview's activity chart: `count` buckets of `width` seconds ending at `now`, from the
    /// trace of every node that writes to this queue.
    func activity(now: Date, width: TimeInterval, count: Int) async throws -> [SQLiteQueueStore.ActivityBucket]
    /// The overview's most frequent delivery errors and refusals since `since`.
    func topErrors(since: Date, limit: Int) async throws -> [SQLiteQueueStore.ErrorSummary]
}

/// `QueueControl` over this node's SQLite queue.
public struct LocalQueueControl: QueueControl {
    public let store: SQLiteQueueStore

    public init(_ store: SQLiteQueueStore) { self.store = store }

    public func trace(_ query: SQLiteQueueStore.TraceQuery) async throws -> [SQLiteQueueStore.TraceRow] {
        try store.trace(query)
    }

    public func list(tenant: String?, includeDone: Bool, limit: Int) async throws -> [SQLiteQueueStore.QueueListing] {
        try store.list(tenant: tenant, includeDone: includeDone, limit: limit)
    }

    public func message(_ id: String) async throws -> StoredMessage? { try store.message(id) }

    public func traceEvents(queueID: String) async throws -> [TraceEvent] { try store.traceEvents(queueID: queueID) }

    public func control(_ action: SQLiteQueueStore.ControlAction, id: String, actor: String) async throws
        -> SQLiteQueueStore.ControlResult
    {
        try store.control(action, id: id, actor: actor)
    }

    public func shape() async throws -> [SQLiteQueueStore.QueueShape] { try store.shape() }

    public func queueCounts() async throws -> SQLiteQueueStore.QueueCounts { try store.queueCounts() }

    public func tenantActivity(since: Date) async throws -> [SQLiteQueueStore.TenantActivity] {
        try store.tenantActivity(since: since)
    }

    public func activity(now: Date, width: TimeInterval, count: Int) async throws -> [SQLiteQueueStore.ActivityBucket] {
        try store.activity(now: now, width: width, count: count)
    }

    public func topErrors(since: Date, limit: Int) async throws -> [SQLiteQueueStore.ErrorSummary] {
        try store.topErrors(since: since, limit: limit)
    }
}
