import Dispatch
import Foundation
import Synchronization

/// Group commit for acceptances: messages handed in while a batch is being written wait and go
/// together in the next transaction, so concurrent sessions share one WAL sync instead of paying one
/// each (the way PostgreSQL and InnoDB group commits work).
///
/// A completion is called only after the batch holding its message is on disk, or with the error
/// that stopped it; the session says `250` only after a successful completion.
public final class GroupCommitter: Sendable {
    public typealias Completion = @Sendable (Error?) -> Void

    struct Pending: Sendable {
        var message: NewMessage
        var completion: Completion
    }

    struct State: Sendable {
        var pending: [Pending] = []
        var events: [TraceEvent] = []
        var stopping = false
        var batches = 0
        var messages = 0
    }

    let store: SQLiteQueueStore
    let state = Mutex(State())
    let wake = DispatchSemaphore(value: 0)
    let finished = DispatchSemaphore(value: 0)
    let onCommitted: @Sendable ([String]) -> Void

    /// `onCommitted` is told the IDs of each durable batch (the delivery scheduler's wake-up).
    public init(store: SQLiteQueueStore, onCommitted: @escaping @Sendable ([String]) -> Void = { _ in }) {
        self.store = store
        self.onCommitted = onCommitted
        let thread = Thread { [self] in self.run() }
        thread.name = "mailflow-commit"
        thread.start()
    }

    /// Queues `message` for the next batch.
    public func commit(_ message: NewMessage, completion: @escaping Completion) {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopping else { return false }
            s.pending.append(Pending(message: message, completion: completion))
            return true
        }
        if accepted {
            wake.signal()
        } else {
            completion(CommitterStopped())
        }
    }

    public func commit(_ message: NewMessage) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            commit(message) { error in
                if let error { c.resume(throwing: error) } else { c.resume() }
            }
        }
    }

    /// Appends a trace event with no message behind it (a throttle event) to the next batch. Such
    /// events need no reply, so they never wait; under a flood they ride along with the acceptances.
    public func record(_ event: TraceEvent) {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopping else { return false }
            // A bound, so a flood of refusals cannot grow memory without limit.
            guard s.events.count < 100_000 else { return false }
            s.events.append(event)
            return true
        }
        if accepted { wake.signal() }
    }

    /// How many batches and messages have been committed (the group-commit ratio in tests and logs).
    public var statistics: (batches: Int, messages: Int) {
        state.withLock { ($0.batches, $0.messages) }
    }

    /// Writes what is pending, then stops the writer thread.
    public func shutdown() {
        let already = state.withLock { s -> Bool in
            let was = s.stopping
            s.stopping = true
            return was
        }
        guard !already else { return }
        wake.signal()
        finished.wait()
    }

    public struct CommitterStopped: Error, CustomStringConvertible {
        public var description: String { "the queue is shutting down" }
    }

    func run() {
        while true {
            wake.wait()
            let (batch, events, stopping) = state.withLock { s -> ([Pending], [TraceEvent], Bool) in
                let b = s.pending
                let e = s.events
                s.pending = []
                s.events = []
                return (b, e, s.stopping)
            }
            if !batch.isEmpty || !events.isEmpty {
                do {
                    try store.insert(batch.map(\.message), events: events)
                    if !batch.isEmpty {
                        state.withLock {
                            $0.batches += 1
                            $0.messages += batch.count
                        }
                        for p in batch { p.completion(nil) }
                        onCommitted(batch.map(\.message.id))
                    }
                } catch {
                    for p in batch { p.completion(error) }
                }
            }
            if stopping {
                let rest = state.withLock { s -> [Pending] in
                    let b = s.pending
                    s.pending = []
                    return b
                }
                for p in rest { p.completion(CommitterStopped()) }
                finished.signal()
                return
            }
        }
    }
}
