import Foundation
import Logging
import MailQueue
import PostgresNIO

/// Queue control on the shared queue with `SQLiteQueueStore.control`'s answer: one entry point for
/// the CLI and the admin API, whichever store they act on. Hold, release and bounce are
/// `SharedQueue`'s own (they leave a lease alone, see its doc); retry and delete are here. Each is
/// one transaction that also writes an `admin` trace event naming the actor, as SQLite does.
extension SharedQueue {
    /// Applies `action` to message `id` on behalf of `actor`. Throws `.notFound` for an unknown ID
    /// and `.notApplicable` when the message's state does not allow the action.
    ///
    /// ```swift
    /// let r = try await q.control(c, .retry, id: id, actor: "cli:ops")
    /// r.outcome.summary  // "due now"
    /// ```
    @discardableResult
    public func control(
        _ c: PostgresConnection, _ action: SQLiteQueueStore.ControlAction, id: String, actor: String
    ) async throws(SharedQueueError) -> SQLiteQueueStore.ControlResult {
        let outcome: SQLiteQueueStore.ControlResult.Outcome
        switch action {
        case .hold:
            try await hold(c, id, actor: actor)
            outcome = .held
        case .release:
            try await release(c, id, actor: actor)
            outcome = .released
        case .bounce:
            try await requestBounce(c, id, actor: actor)
            outcome = .bounceRequested
        case .retry:
            try await retry(c, id, actor: actor)
            outcome = .dueNow
        case .delete:
            try await delete(c, id, actor: actor)
            outcome = .deleted
        }
        // No spool file to release: the shared queue keeps every body in the database.
        return SQLiteQueueStore.ControlResult(queueID: id, action: action, outcome: outcome)
    }

    /// Makes a queued message due now, on the database's clock. A lease running on it is left alone
    /// (its holder's record sets the next attempt), as a retry in SQLite leaves a delivery in flight.
    public func retry(_ c: PostgresConnection, _ id: String, actor: String) async throws(SharedQueueError) {
        try await control(c, id, action: "retry", actor: actor, allowed: ["queued"]) {
            "UPDATE mailflow_message SET next_attempt = now() WHERE id = \($0)"
        }
    }

    /// Ends a message without a report to its sender: pending recipients fail with a reply naming
    /// the actor, the message is done and its body dropped; the trace keeps the record. Any state but
    /// done (a held message too), as in SQLite.
    public func delete(_ c: PostgresConnection, _ id: String, actor: String) async throws(SharedQueueError) {
        let reply = "deleted by an administrator (\(actor)), no report sent"
        let detail = "delete by \(actor) (no report to the sender)"
        try await transaction(c) { c, logger in
            let state = try await Self.lockedState(c, id, logger: logger)
            if let why = SQLiteQueueStore.ControlAction.delete.refusal(state: state) {
                throw SharedQueueError.notApplicable(id, why)
            }
            try await PostgresCall.exec(
                c,
                """
                WITH r AS (
                  UPDATE mailflow_recipient SET status = 'failed', last_reply = \(reply)
                  WHERE message = \(id) AND status = 'pending' RETURNING 1),
                m AS (
                  UPDATE mailflow_message SET state = 'done', next_attempt = NULL, body = NULL WHERE id = \(id)
                  RETURNING 1)
                INSERT INTO mailflow_trace_event (time, queue_id, kind, detail)
                SELECT now(), \(id), 'admin', \(detail) FROM m
                """, logger: logger)
        }
    }
}
