import Foundation
import Logging
import MailQueue
import PostgresNIO

/// What a node needs around its leases besides claiming and recording (`SharedQueue.swift`): when
/// to look for work next, giving a lease back, and the trace of an attempt recorded too late.
extension SharedQueue {
    /// Seconds (on the database's clock) until a message becomes claimable by `node`: the earliest
    /// next attempt of a queued message whose lease is free or run out, or the earliest end of a
    /// lease another node holds on a due message (a node that died: its work is taken then). Nil
    /// when nothing waits. Through the due and lease indexes only.
    public func secondsUntilNextClaimable(
        _ c: PostgresConnection, node: String
    ) async throws(SharedQueueError) -> TimeInterval? {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT extract(epoch FROM least(
                  (SELECT next_attempt FROM mailflow_message
                   WHERE next_attempt IS NOT NULL AND state = 'queued' AND (lease_until IS NULL OR lease_until < now())
                   ORDER BY next_attempt LIMIT 1),
                  (SELECT min(lease_until) FROM mailflow_message
                   WHERE lease_until IS NOT NULL AND lease_owner <> \(node) AND next_attempt IS NOT NULL)) - now())::float8
                """, logger: logger)
            var out: Double?
            for try await s in rows.decode(Double?.self) { out = s }
            return out.map { max(0, $0) }
        }
    }

    /// Gives a lease back with no attempt made: the message is claimable again at once.
    public func releaseLease(_ c: PostgresConnection, node: String, lease: SharedLease) async throws(SharedQueueError) {
        try await bounded(c) { c, logger in
            try await PostgresCall.exec(
                c,
                """
                UPDATE mailflow_message SET lease_owner = NULL, lease_until = NULL
                WHERE id = \(lease.queueID) AND lease_owner = \(node) AND lease_epoch = \(lease.epoch)
                """, logger: logger)
        }
    }

    /// The trace of an attempt whose record came too late (`recordAttempt` answered `.leaseLost`):
    /// one event per recipient outcome, of the outcome's kind, its detail saying that the lease
    /// was lost and that the message may be delivered twice. The queue's state is left to the
    /// lease's new holder; the message trace shows what this node did.
    public func traceLostLease(
        _ c: PostgresConnection, node: String, queueID: String, attempt: SQLiteQueueStore.Attempt
    ) async throws(SharedQueueError) {
        let outcomes = try SharedQueueRows.outcomes(attempt.outcomes)
        let now = attempt.now.timeIntervalSince1970
        let prefix = "lease lost by node \(node) before this attempt was recorded (possible duplicate): "
        try await bounded(c) { c, logger in
            try await PostgresCall.exec(
                c,
                """
                INSERT INTO mailflow_trace_event (time, queue_id, recipient, kind, detail)
                SELECT to_timestamp(\(now)), \(queueID), r.address, o.kind, \(prefix) || coalesce(o.detail, '')
                FROM jsonb_to_recordset(\(outcomes)::jsonb) AS o(idx integer, status text, kind text, detail text)
                JOIN mailflow_recipient r ON r.message = \(queueID) AND r.idx = o.idx
                ORDER BY o.idx
                """, logger: logger)
        }
    }
}
