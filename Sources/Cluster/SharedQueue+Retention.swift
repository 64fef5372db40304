import Foundation
import Logging
import PostgresNIO

/// Trace retention in the shared queue (`trace.retention`, as `SQLiteQueueStore.prune`): trace
/// events and finished messages older than the cutoff go, in batches, so that no statement holds
/// locks for long while nodes accept and deliver.
extension SharedQueue {
    /// One batch: up to `batch` trace events and `batch` finished messages (their recipients with
    /// them) received before `cutoff`. Returns how many of each went.
    public func prune(
        _ c: PostgresConnection, before cutoff: Date, batch: Int = 2000
    ) async throws(SharedQueueError) -> (traceEvents: Int, messages: Int) {
        let t = cutoff.timeIntervalSince1970
        return try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                WITH e AS (
                  DELETE FROM mailflow_trace_event WHERE id IN (
                    SELECT id FROM mailflow_trace_event WHERE time < to_timestamp(\(t)) LIMIT \(batch))
                  RETURNING 1),
                m AS (
                  DELETE FROM mailflow_message WHERE id IN (
                    SELECT id FROM mailflow_message WHERE state = 'done' AND received_at < to_timestamp(\(t)) LIMIT \(batch))
                  RETURNING 1)
                SELECT (SELECT count(*) FROM e)::int8, (SELECT count(*) FROM m)::int8
                """, logger: logger)
            var out = (traceEvents: 0, messages: 0)
            for try await (e, m) in rows.decode((Int64, Int64).self) { out = (Int(e), Int(m)) }
            return out
        }
    }
}
