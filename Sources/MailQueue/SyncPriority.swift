import Dispatch
import Synchronization

/// Puts the disk syncs a client is waiting for ahead of those nobody is waiting for.
///
/// An acceptance's `250` waits for its group commit's WAL sync; a Maildir delivery's fsync has no
/// one waiting. Both share one disk, and a sync issued while another file's sync is in flight waits
/// for it (one journal on ext4 and most filesystems). Measured with `scripts/bench` on a quiet
/// machine: with Maildir deliveries syncing during acceptance, durable acceptance fell by 20-45%
/// against the build that deferred them. So background writers ask `waitForTurn` before they
/// write, and wait while a foreground write is running or has just ended, up to `maxWait`, so
/// delivery still makes progress under a steady stream of acceptances (at least one mailbox write
/// per `maxWait` on each writer thread) and runs at full speed the moment acceptance pauses.
///
/// The foreground is a `BatchWriter` (`GroupCommitter`), which brackets each batch with
/// `foregroundBegan` and `foregroundEnded`.
///
/// ```swift
/// let priority = SyncPriority()
/// let committer = GroupCommitter(store: store, priority: priority)
/// priority.waitForTurn()   // on a mailbox writer thread, before the write and its fsync
/// ```
public final class SyncPriority: Sendable {
    struct State {
        /// Foreground writes running now.
        var running = 0
        /// When the last foreground write ended (its batch's successor usually starts at once).
        var lastEnded: ContinuousClock.Instant?
        /// Background writers parked until the foreground is idle, each with its own semaphore.
        var waiters: [DispatchSemaphore] = []
    }

    /// Longest a background write waits for its turn.
    public let maxWait: Duration
    /// How long the foreground must have been idle: batches follow each other with a gap of
    /// microseconds under load, and a background sync started in that gap would delay the next.
    public let settle: Duration
    let state = Mutex(State())

    public init(maxWait: Duration = .milliseconds(20), settle: Duration = .milliseconds(2)) {
        self.maxWait = maxWait
        self.settle = settle
    }

    /// A foreground write (one group-commit batch) starts.
    public func foregroundBegan() {
        state.withLock { $0.running += 1 }
    }

    /// A foreground write ended: waiters get their turn once the foreground has settled.
    public func foregroundEnded() {
        let now = ContinuousClock.now
        let wake = state.withLock { s -> [DispatchSemaphore] in
            s.running -= 1
            s.lastEnded = now
            guard s.running == 0 else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in wake { w.signal() }
    }

    /// Blocks the calling thread (never an event loop or the cooperative pool) until the foreground
    /// is idle and settled, or `maxWait` has passed. Returns how long it waited.
    @discardableResult
    public func waitForTurn() -> Duration {
        let start = ContinuousClock.now
        let deadline = start + maxWait
        while true {
            let now = ContinuousClock.now
            if now >= deadline { return now - start }
            let semaphore = DispatchSemaphore(value: 0)
            let decision = state.withLock { s -> Duration? in
                if s.running == 0 {
                    let quietFor = s.lastEnded.map { now - $0 } ?? settle
                    if quietFor >= settle { return nil }
                    return settle - quietFor
                }
                s.waiters.append(semaphore)
                return deadline - now
            }
            guard let wait = decision else { return now - start }
            let nanoseconds = max(
                0, wait.components.seconds * 1_000_000_000 + wait.components.attoseconds / 1_000_000_000)
            _ = semaphore.wait(timeout: .now() + .nanoseconds(Int(min(nanoseconds, Int64(Int.max)))))
            // A timed-out waiter may still be in the list; a later signal on its semaphore is harmless.
            state.withLock { s in s.waiters.removeAll { $0 === semaphore } }
        }
    }
}
