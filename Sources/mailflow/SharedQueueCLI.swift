import Cluster
import Foundation
import MailQueue
import MailflowApp

/// The queue a `mailflow queue` or `mailflow trace` command reads and controls: with
/// `storage.postgres` in the config, the shared queue in PostgreSQL (every node's messages, and a
/// hold or bounce from here is obeyed by every node; docs/cluster.md, "Queue control and trace in
/// shared mode"), otherwise this node's SQLite file.
///
/// Both answer in `SQLiteQueueStore`'s types, so a command prints (and encodes as JSON) the same
/// whichever store it reads. `queue destinations` reads this node's own snapshot in either mode:
/// destinations are per node.
enum QueueSource {
    case local(SQLiteQueueStore)
    case shared(SharedQueue)

    static func open(_ options: ConfigOption) throws -> QueueSource {
        let config = try options.load()
        guard let settings = config.sharedQueue else { return .local(try Queue.open(options)) }
        // A command waits a little longer than a node's call may (a trace over a large queue).
        let timeout = max(settings.timeout, 10)
        return .shared(
            SharedQueue(
                database: settings.database, timeout: .milliseconds(Int64(timeout * 1000)),
                logger: .init(label: "mailflow.queue")))
    }

    /// Runs one call (`body`, on a connection of its own: `withConnection`); database failures
    /// become one line naming the database (never its password).
    static func call<T>(_ q: SharedQueue, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as SharedQueueError {
            switch e {
            case .notFound, .notApplicable: throw e
            case .refused(let state, _) where state == "42P01":
                throw FailureMessage(
                    text:
                        "the shared queue at \(q.database) has no tables yet: has a node with storage.postgres started?"
                )
            default: throw FailureMessage(text: "shared queue at \(q.database): \(e)")
            }
        }
    }

    func trace(_ query: SQLiteQueueStore.TraceQuery) async throws -> [SQLiteQueueStore.TraceRow] {
        switch self {
        case .local(let store): return try store.trace(query)
        case .shared(let q):
            return try await Self.call(q) { try await q.withConnection { c in try await q.trace(c, query) } }
        }
    }

    func list(includeDone: Bool, limit: Int) async throws -> [SQLiteQueueStore.QueueListing] {
        switch self {
        case .local(let store): return try store.list(includeDone: includeDone, limit: limit)
        case .shared(let q):
            return try await Self.call(q) {
                try await q.withConnection { c in try await q.list(c, includeDone: includeDone, limit: limit) }
            }
        }
    }

    func message(_ id: String) async throws -> StoredMessage? {
        switch self {
        case .local(let store): return try store.message(id)
        case .shared(let q):
            return try await Self.call(q) { try await q.withConnection { c in try await q.message(c, id) } }
        }
    }

    func traceEvents(queueID: String) async throws -> [TraceEvent] {
        switch self {
        case .local(let store): return try store.traceEvents(queueID: queueID)
        case .shared(let q):
            return try await Self.call(q) {
                try await q.withConnection { c in try await q.traceEvents(c, queueID: queueID) }
            }
        }
    }

    /// `Lease:        node-b until 2026-12-02T03:10:04Z (claim 2)` for a message a node is
    /// delivering now; nil in local mode or when no lease runs.
    func leaseLine(_ id: String) async throws -> String? {
        guard case .shared(let q) = self else { return nil }
        guard let lease = try await Self.call(q, { try await q.withConnection { c in try await q.leaseHolder(c, id) } })
        else {
            return nil
        }
        return "Lease:        \(lease.node) until \(isoDate(lease.until)) (claim \(lease.epoch))"
    }

    func shape() async throws -> [SQLiteQueueStore.QueueShape] {
        switch self {
        case .local(let store): return try store.shape()
        case .shared(let q): return try await Self.call(q) { try await q.withConnection { c in try await q.shape(c) } }
        }
    }

    /// Queue control with `SQLiteQueueStore.control`'s answer and errors (`ControlError`), so the
    /// CLI's lines read alike in both modes.
    func control(_ action: SQLiteQueueStore.ControlAction, id: String, actor: String) async throws
        -> SQLiteQueueStore.ControlResult
    {
        switch self {
        case .local(let store): return try store.control(action, id: id, actor: actor)
        case .shared(let q):
            do {
                return try await Self.call(q) {
                    try await q.withConnection { c in try await q.control(c, action, id: id, actor: actor) }
                }
            } catch let e as SharedQueueError {
                switch e {
                case .notFound(let id): throw SQLiteQueueStore.ControlError.notFound(id)
                case .notApplicable(let id, let why): throw SQLiteQueueStore.ControlError.notApplicable(id, why)
                default: throw e
                }
            }
        }
    }
}
