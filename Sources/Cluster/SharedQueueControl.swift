import Foundation
import Logging
import MailQueue
import NIOCore
import NIOPosix
import PostgresNIO

/// `QueueControl` over the shared queue in PostgreSQL: what `mailflow queue`, `mailflow trace`
/// and the admin center read and do in cluster mode, from any node. A hold or bounce here is
/// obeyed by every node (docs/cluster.md). Each call runs on a connection of its own, opened for it
/// (`SharedQueue.withConnection`): queue control is rare next to delivery, and a stuck admin page
/// must not hold up a node's claims. Errors: `ControlError` as SQLite's; the database away or
/// refusing is a `SharedQueueError`, whose text names the database without its password.
public struct SharedQueueControl: QueueControl {
    public let queue: SharedQueue
    let group: any EventLoopGroup

    public init(queue: SharedQueue, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.queue = queue
        self.group = group
    }

    func call<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await queue.withConnection(on: group, body)
        } catch let e as SharedQueueError {
            switch e {
            case .notFound(let id): throw SQLiteQueueStore.ControlError.notFound(id)
            case .notApplicable(let id, let why): throw SQLiteQueueStore.ControlError.notApplicable(id, why)
            default: throw e
            }
        }
    }

    public func trace(_ query: SQLiteQueueStore.TraceQuery) async throws -> [SQLiteQueueStore.TraceRow] {
        try await call { c in try await queue.trace(c, query) }
    }

    public func list(tenant: String?, includeDone: Bool, limit: Int) async throws -> [SQLiteQueueStore.QueueListing] {
        try await call { c in try await queue.list(c, tenant: tenant, includeDone: includeDone, limit: limit) }
    }

    public func message(_ id: String) async throws -> StoredMessage? {
        try await call { c in try await queue.message(c, id) }
    }

    public func traceEvents(queueID: String) async throws -> [TraceEvent] {
        try await call { c in try await queue.traceEvents(c, queueID: queueID) }
    }

    public func control(_ action: SQLiteQueueStore.ControlAction, id: String, actor: String) async throws
        -> SQLiteQueueStore.ControlResult
    {
        try await call { c in try await queue.control(c, action, id: id, actor: actor) }
    }

    public func shape() async throws -> [SQLiteQueueStore.QueueShape] {
        try await call { c in try await queue.shape(c) }
    }

    public func queueCounts() async throws -> SQLiteQueueStore.QueueCounts {
        try await call { c in try await queue.queueCounts(c) }
    }

    public func tenantActivity(since: Date) async throws -> [SQLiteQueueStore.TenantActivity] {
        try await call { c in try await queue.tenantActivity(c, since: since) }
    }

    public func activity(now: Date, width: TimeInterval, count: Int) async throws -> [SQLiteQueueStore.ActivityBucket] {
        try await call { c in try await queue.activity(c, now: now, width: width, count: count) }
    }

    public func topErrors(since: Date, limit: Int) async throws -> [SQLiteQueueStore.ErrorSummary] {
        try await call { c in try await queue.topErrors(c, since: since, limit: limit) }
    }
}

extension SharedQueue {
    /// The queue right now, as `SQLiteQueueStore.queueCounts` counts it, through the due and held
    /// indexes.
    public func queueCounts(_ c: PostgresConnection) async throws(SharedQueueError) -> SQLiteQueueStore.QueueCounts {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT
                  (SELECT count(*) FROM mailflow_message WHERE next_attempt IS NOT NULL)::int8,
                  (SELECT count(*) FROM mailflow_message WHERE state = 'held')::int8,
                  (SELECT count(*) FROM mailflow_recipient WHERE status = 'pending')::int8,
                  (SELECT count(*) FROM mailflow_message WHERE next_attempt IS NOT NULL AND attempts > 0)::int8
                """, logger: logger)
            var out = SQLiteQueueStore.QueueCounts(
                queuedMessages: 0, heldMessages: 0, pendingRecipients: 0, deferredMessages: 0)
            for try await (q, h, p, d) in rows.decode((Int64, Int64, Int64, Int64).self) {
                out = .init(
                    queuedMessages: Int(q), heldMessages: Int(h), pendingRecipients: Int(p), deferredMessages: Int(d))
            }
            return out
        }
    }

    /// Per tenant, as `SQLiteQueueStore.tenantActivity`: messages received since `since`, and
    /// recipients pending (through the pending-recipient index).
    public func tenantActivity(
        _ c: PostgresConnection, since: Date
    ) async throws(SharedQueueError) -> [SQLiteQueueStore.TenantActivity] {
        let t = since.timeIntervalSince1970
        return try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT tenant, sum(received)::int8, sum(pending)::int8 FROM (
                  SELECT tenant, count(*) AS received, 0 AS pending FROM mailflow_message
                  WHERE tenant IS NOT NULL AND received_at >= to_timestamp(\(t)) GROUP BY tenant
                  UNION ALL
                  SELECT m.tenant, 0, count(*) FROM mailflow_recipient r JOIN mailflow_message m ON m.id = r.message
                  WHERE m.tenant IS NOT NULL AND r.status = 'pending' GROUP BY m.tenant) x
                GROUP BY tenant ORDER BY tenant
                """, logger: logger)
            var out: [SQLiteQueueStore.TenantActivity] = []
            for try await (tenant, received, pending) in rows.decode((String, Int64, Int64).self) {
                out.append(.init(tenant: tenant, received: Int(received), pending: Int(pending)))
            }
            return out
        }
    }
}
