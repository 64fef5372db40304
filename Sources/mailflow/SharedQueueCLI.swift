import Cluster
import Foundation
import MailQueue
import MailflowApp

/// The queue a `mailflow queue` or `mailflow trace` command reads and controls: with
/// `storage.postgres` in the config, the shared queue in PostgreSQL (every node's messages, and a
/// hold or bounce from here is obeyed by every node; docs/cluster.md, "Queue control and trace in
/// shared mode"), otherwise this node's SQLite file. Both through `QueueControl`, as the admin
/// center, so a command prints (and encodes as JSON) the same whichever store it reads.
///
/// `queue destinations` and `limits` read this node's own snapshots in either mode: destinations
/// and admission are per node.
struct QueueSource {
    let control: any QueueControl
    /// The shared queue, when that is what `control` reads (for what only it has: leases).
    let shared: SharedQueue?

    static func open(_ options: ConfigOption) throws -> QueueSource {
        let config = try options.load()
        guard let settings = config.sharedQueue else {
            return QueueSource(control: LocalQueueControl(try Queue.open(options)), shared: nil)
        }
        // A command waits a little longer than a node's call may (a trace over a large queue).
        let timeout = max(settings.timeout, 10)
        let queue = SharedQueue(
            database: settings.database, timeout: .milliseconds(Int64(timeout * 1000)),
            logger: .init(label: "mailflow.queue"))
        return QueueSource(control: SharedQueueControl(queue: queue), shared: queue)
    }

    /// Runs one call; a shared queue's database failure becomes one line naming the database
    /// (never its password). `ControlError`s pass as they are.
    func call<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as SharedQueueError {
            guard let shared else { throw e }
            if case .refused(let state, _) = e, state == "42P01" {
                throw FailureMessage(
                    text:
                        "the shared queue at \(shared.database) has no tables yet: has a node with storage.postgres started?"
                )
            }
            throw FailureMessage(text: "shared queue at \(shared.database): \(e)")
        }
    }

    func trace(_ query: SQLiteQueueStore.TraceQuery) async throws -> [SQLiteQueueStore.TraceRow] {
        try await call { try await control.trace(query) }
    }

    func list(includeDone: Bool, limit: Int) async throws -> [SQLiteQueueStore.QueueListing] {
        try await call { try await control.list(tenant: nil, includeDone: includeDone, limit: limit) }
    }

    func message(_ id: String) async throws -> StoredMessage? {
        try await call { try await control.message(id) }
    }

    func traceEvents(queueID: String) async throws -> [TraceEvent] {
        try await call { try await control.traceEvents(queueID: queueID) }
    }

    func shape() async throws -> [SQLiteQueueStore.QueueShape] {
        try await call { try await control.shape() }
    }

    func control(_ action: SQLiteQueueStore.ControlAction, id: String, actor: String) async throws
        -> SQLiteQueueStore.ControlResult
    {
        try await call { try await control.control(action, id: id, actor: actor) }
    }

    /// `Lease:        node-b until 2026-12-02T03:10:04Z (claim 2)` for a message a node is
    /// delivering now; nil in local mode or when no lease runs.
    func leaseLine(_ id: String) async throws -> String? {
        guard let shared else { return nil }
        let holder = try await call { try await shared.withConnection { c in try await shared.leaseHolder(c, id) } }
        return holder.map { "Lease:        \($0.node) until \(isoDate($0.until)) (claim \($0.epoch))" }
    }
}
