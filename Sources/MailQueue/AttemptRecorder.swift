import Dispatch
import Foundation
import Synchronization

/// Group commit for delivery outcomes, as `GroupCommitter` is for acceptances: attempts finished
/// while a batch is being written go together in the next transaction, so a hundred deliveries in
/// flight share one WAL sync instead of paying one each.
///
/// Each caller resumes only after the batch holding its outcome is on disk. If a batch fails, its
/// attempts are written again one transaction each, so one bad record fails alone.
public final class AttemptRecorder: Sendable {
    public typealias Completion = @Sendable (Result<String?, Error>) -> Void

    struct Pending: Sendable {
        var attempt: SQLiteQueueStore.Attempt
        var completion: Completion
    }

    struct State: Sendable {
        var pending: [Pending] = []
        var stopping = false
        var batches = 0
        var attempts = 0
    }

    let store: SQLiteQueueStore
    let state = Mutex(State())
    let wake = DispatchSemaphore(value: 0)
    let finished = DispatchSemaphore(value: 0)

    public init(store: SQLiteQueueStore) {
        self.store = store
        let thread = Thread { [self] in self.run() }
        thread.name = "mailflow-record"
        thread.start()
    }

    /// Records `attempt` in the next batch; returns the spool path to remove once the message is
    /// finished (as `SQLiteQueueStore.recordAttempt`).
    public func record(_ attempt: SQLiteQueueStore.Attempt) async throws -> String? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<String?, Error>) in
            // While stopping, attempts still in flight are written: shutdown waits for them.
            state.withLock { $0.pending.append(Pending(attempt: attempt, completion: { c.resume(with: $0) })) }
            wake.signal()
        }
    }

    /// Batches and attempts written so far (the ratio shows how much the batching saves).
    public var statistics: (batches: Int, attempts: Int) {
        state.withLock { ($0.batches, $0.attempts) }
    }

    /// Writes what is pending, then stops the writer thread. Call after the deliveries in flight
    /// have finished.
    public func shutdown() {
        let already = state.withLock { s -> Bool in
            defer { s.stopping = true }
            return s.stopping
        }
        guard !already else { return }
        wake.signal()
        finished.wait()
    }

    func run() {
        while true {
            wake.wait()
            let (batch, stopping) = state.withLock { s -> ([Pending], Bool) in
                defer { s.pending = [] }
                return (s.pending, s.stopping)
            }
            if !batch.isEmpty { write(batch) }
            if stopping {
                let rest = state.withLock { s -> [Pending] in
                    defer { s.pending = [] }
                    return s.pending
                }
                if !rest.isEmpty { write(rest) }
                finished.signal()
                return
            }
        }
    }

    func write(_ batch: [Pending]) {
        do {
            let paths = try store.recordAttempts(batch.map(\.attempt))
            state.withLock {
                $0.batches += 1
                $0.attempts += batch.count
            }
            for (p, path) in zip(batch, paths) { p.completion(.success(path)) }
        } catch {
            guard batch.count > 1 else {
                batch[0].completion(.failure(error))
                return
            }
            for p in batch { write([p]) }
        }
    }
}
