/// Group commit for acceptances: messages handed in while a batch is being written wait and go
/// together in the next transaction, so concurrent sessions share one WAL sync instead of paying one
/// each. A `BatchWriter` does the batching; this type says what a batch is (messages, plus the
/// throttle events that ride along) and how it is stored.
///
/// A completion is called only after the batch holding its message is on disk, or with the error
/// that stopped it; the session says `250` only after a successful completion. If a batch fails,
/// it is written again in smaller parts, so one bad message gets its `451` alone instead of
/// taking every session that committed at the same moment with it. A batch that fails for lack of
/// space is recorded in the store's `StorageGuard`; the session answers `452 4.3.1` (`StorageFault`).
public final class GroupCommitter: Sendable {
    public typealias Completion = @Sendable ((any Error)?) -> Void
    public typealias CommitterStopped = BatchWriterStopped

    /// What a batch holds: messages someone waits for, and trace events nobody waits for.
    enum Entry: Sendable {
        case message(NewMessage)
        case event(TraceEvent)
    }

    let writer: BatchWriter<Entry, Void>

    /// `onCommitted` is told the IDs of each durable batch (the delivery scheduler's wake-up).
    /// `priority` lets Maildir deliveries give way to these syncs (see `SyncPriority`).
    public convenience init(
        store: SQLiteQueueStore, priority: SyncPriority? = nil,
        onCommitted: @escaping @Sendable ([String]) -> Void = { _ in }
    ) {
        self.init(storage: store.storage, priority: priority, onCommitted: onCommitted) { messages, events in
            do {
                try store.insert(messages, events: events)
            } catch {
                // A full disk or a failed sync: recorded where the admin API and /metrics read it,
                // and (for a full disk) new messages are refused at MAIL for a while.
                store.storage.recordFault(error, during: "commit")
                throw error
            }
        }
    }

    /// A committer writing each batch with `write` (one transaction: all or nothing), which runs on
    /// the committer's own thread and may block there: the shared queue's (`LeasedQueue`) insert,
    /// with the batch's throttle events going to the local store.
    public init(
        storage: StorageGuard, priority: SyncPriority? = nil,
        onCommitted: @escaping @Sendable ([String]) -> Void = { _ in },
        write: @escaping @Sendable (_ messages: [NewMessage], _ events: [TraceEvent]) throws -> Void
    ) {
        let written: @Sendable ([Entry]) -> Void = { entries in
            let ids = entries.compactMap { if case .message(let m) = $0 { m.id } else { nil } }
            if !ids.isEmpty { onCommitted(ids) }
        }
        writer = BatchWriter(name: "mailflow-commit", priority: priority, written: written) { entries in
            var messages: [NewMessage] = []
            var events: [TraceEvent] = []
            for entry in entries {
                switch entry {
                case .message(let m): messages.append(m)
                case .event(let e): events.append(e)
                }
            }
            try write(messages, events)
            return Array(repeating: (), count: entries.count)
        }
        self.storage = storage
    }

    /// The filesystem watch of the queue this committer writes to.
    public let storage: StorageGuard

    /// Queues `message` for the next batch.
    public func commit(_ message: NewMessage, completion: @escaping Completion) {
        writer.submit(.message(message)) { result in
            switch result {
            case .success: completion(nil)
            case .failure(let error): completion(error)
            }
        }
    }

    public func commit(_ message: NewMessage) async throws {
        try await writer.submit(.message(message))
    }

    /// Appends a trace event with no message behind it (a throttle event) to the next batch. Such
    /// events need no reply, so they never wait; under a flood they ride along with the acceptances,
    /// and past the writer's bound (100,000 waiting) they are dropped rather than grow memory.
    public func record(_ event: TraceEvent) {
        writer.post(.event(event))
    }

    /// How many batches and messages have been committed (the group-commit ratio in tests and logs);
    /// batches of throttle events alone are not counted.
    public var statistics: (batches: Int, messages: Int) {
        let s = writer.statistics
        return (s.batches, s.items)
    }

    /// Writes what is pending, then stops the writer thread; later commits fail with
    /// `CommitterStopped`. Blocks the caller: from async code use `shutdownGracefully()`.
    public func shutdown() {
        writer.shutdown()
    }

    /// `shutdown` without blocking a thread of the cooperative pool.
    public func shutdownGracefully() async {
        await writer.shutdownGracefully()
    }
}
