import Dispatch
import Foundation
import Synchronization

/// The queue's group-commit machine: items handed in while one batch is being written wait and go
/// together in the next, so concurrent callers share one transaction and one WAL sync instead of
/// paying one each (the way PostgreSQL's and InnoDB's group commits work). `GroupCommitter`
/// (acceptances) and `AttemptRecorder` (delivery outcomes) are this type with their own `write`.
///
/// - `write` is called with each batch and must be all-or-nothing (one transaction); it returns
///   one output per item, in order. A completion is called only after `write` has returned for the
///   batch holding its item, so "completed" means "on disk".
/// - When a batch fails, it is split in halves and each half written again, down to single items,
///   so one bad item fails alone while the others are still written. Halving rather than retrying
///   item by item matters under a flood: a batch of thousands of throttle events with one bad
///   record costs a few dozen syncs, not thousands.
/// - Items posted without a completion (`post`) ride along in the next batch. Nobody waits for
///   them, so nothing slows their producers down: their number is bounded by `postLimit`.
/// - `shutdown` writes everything handed in until the writer finds nothing left, including items
///   that arrive while it drains; after that, every item fails at once with `BatchWriterStopped`.
///
/// Thread model: one dedicated thread per writer. A `Mutex` guards the pending batch; with nothing
/// to write the thread parks on a semaphore, which only the first item after it parked signals,
/// so there is no polling and no wake-up per item. SQLite is synchronous and a commit
/// blocks in `fsync`; that must never happen on an event loop or on Swift's cooperative pool,
/// whose few threads every task shares. A thread of our own may block, and a single writer per
/// database is what SQLite's WAL allows anyway. A `NIOThreadPool` would block one of its threads
/// the same way, while adding a hop per batch and a dependency on NIOPosix that MailQueue does not
/// otherwise need; batches must also be written one at a time, so more threads would buy nothing.
/// Completions run on the writer thread, so they must be quick (resume a continuation, hop to an
/// event loop) and must never call `shutdown()`, which would wait for that very thread.
///
/// ```swift
/// let writer = BatchWriter<SQLiteQueueStore.Attempt, String?>(name: "mailflow-record") {
///     try store.recordAttempts($0)
/// }
/// let spoolPath = try await writer.submit(attempt)
/// ```
/// An error a `BatchWriter` need not isolate by halving the batch: with `failsEveryItem` every item
/// of the batch fails at once (the store is unreachable, say, whatever the items).
public protocol WholeBatchFailure: Error {
    var failsEveryItem: Bool { get }
}

public final class BatchWriter<Item: Sendable, Output: Sendable>: Sendable {
    public typealias Completion = @Sendable (Result<Output, any Error>) -> Void
    /// Writes one batch in one transaction, returning one output per item in order.
    public typealias Write = @Sendable ([Item]) throws -> [Output]

    /// What has been written so far: `items / batches` is how many callers shared each sync.
    public struct Statistics: Sendable, Equatable {
        /// Successful writes that held at least one item someone waited for.
        public var batches = 0
        /// Items with a completion that were written.
        public var items = 0
        /// Items posted without a completion that were written.
        public var posted = 0
        /// Items whose write failed, alone, after the fallback (posted ones included).
        public var failed = 0
    }

    /// One item in the queue, with the completion of whoever waits for it (nil for a posted item).
    struct Submission: Sendable {
        var item: Item
        var completion: Completion?
    }

    struct State: Sendable {
        var pending: [Submission] = []
        var pendingPosts = 0
        /// The writer is waiting on `wake` (so the next submitter must signal it).
        var parked = false
        var stopping = false
        var stopped = false
        /// Told when the writer has drained and stopped.
        var onStopped: [@Sendable () -> Void] = []
        var statistics = Statistics()
    }

    let name: String
    let postLimit: Int
    let writeBatch: Write
    let written: @Sendable ([Item]) -> Void
    /// Told when each batch's write starts and ends, so background syncs can wait (acceptances).
    let priority: SyncPriority?
    let state = Mutex(State())
    /// Signalled at most once per park (see `State.parked`), so its count never exceeds one.
    let wake = DispatchSemaphore(value: 0)

    /// Starts the writer thread, named `name` (it shows in `top -H` and in crash reports).
    /// `written` is told the items of each successful write after their completions have run:
    /// waking other work (the delivery scheduler) before the waiting callers would make them
    /// compete for the CPU with the replies they are waiting to send. With `priority`, each batch
    /// is a foreground write that background writers give way to. Call `shutdown` to stop it.
    public init(
        name: String, postLimit: Int = 100_000, priority: SyncPriority? = nil,
        written: @escaping @Sendable ([Item]) -> Void = { _ in }, write: @escaping Write
    ) {
        self.name = name
        self.priority = priority
        self.postLimit = postLimit
        self.written = written
        self.writeBatch = write
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    /// Queues `item` for the next batch; `completion` is called once it is on disk, or with the
    /// error that stopped it.
    public func submit(_ item: Item, completion: @escaping Completion) {
        if !enqueue(Submission(item: item, completion: completion)) {
            completion(.failure(BatchWriterStopped(writer: name)))
        }
    }

    /// Queues `item` for the next batch and returns its output once it is on disk. Cancelling the
    /// task does not withdraw the item: once handed in, it is written.
    public func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Output, any Error>) in
            submit(item) { c.resume(with: $0) }
        }
    }

    /// Adds `item` to the next batch with nobody waiting for it. Returns false, dropping it, once
    /// `postLimit` posted items are waiting or the writer has stopped.
    @discardableResult
    public func post(_ item: Item) -> Bool {
        enqueue(Submission(item: item, completion: nil))
    }

    public var statistics: Statistics {
        state.withLock { $0.statistics }
    }

    /// Writes everything pending, then stops the writer thread; returns once it has stopped.
    /// Blocks the calling thread: from async code use `shutdownGracefully()`.
    public func shutdown() {
        let done = DispatchSemaphore(value: 0)
        shutdown { done.signal() }
        done.wait()
    }

    /// `shutdown` without blocking a thread of the cooperative pool.
    public func shutdownGracefully() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            shutdown { c.resume() }
        }
    }

    func shutdown(then done: @escaping @Sendable () -> Void) {
        let (alreadyStopped, signal) = state.withLock { s -> (Bool, Bool) in
            guard !s.stopped else { return (true, false) }
            s.stopping = true
            s.onStopped.append(done)
            defer { s.parked = false }
            return (false, s.parked)
        }
        if signal { wake.signal() }
        if alreadyStopped { done() }
    }

    /// Appends to the pending batch, waking the writer if it is parked; false once stopped.
    func enqueue(_ submission: Submission) -> Bool {
        let (accepted, signal) = state.withLock { s -> (Bool, Bool) in
            guard !s.stopped else { return (false, false) }
            if submission.completion == nil {
                guard s.pendingPosts < postLimit else { return (false, false) }
                s.pendingPosts += 1
            }
            s.pending.append(submission)
            defer { s.parked = false }
            return (true, s.parked)
        }
        if signal { wake.signal() }
        return accepted
    }

    enum Step {
        case write([Submission])
        case park
        case stop([@Sendable () -> Void])
    }

    func run() {
        while true {
            let step = state.withLock { s -> Step in
                if !s.pending.isEmpty {
                    defer {
                        s.pending = []
                        s.pendingPosts = 0
                    }
                    return .write(s.pending)
                }
                if s.stopping {
                    s.stopped = true
                    defer { s.onStopped = [] }
                    return .stop(s.onStopped)
                }
                s.parked = true
                return .park
            }
            switch step {
            case .write(let batch):
                priority?.foregroundBegan()
                write(batch[...])
                priority?.foregroundEnded()
            case .park: wake.wait()
            case .stop(let waiters):
                for w in waiters { w() }
                return
            }
        }
    }

    /// Writes `batch` in one transaction; if that fails, each half again, so a bad item fails alone.
    func write(_ batch: ArraySlice<Submission>) {
        let outputs: [Output]
        do {
            outputs = try writeBatch(batch.map(\.item))
            precondition(outputs.count == batch.count, "\(name): write returned \(outputs.count) for \(batch.count)")
        } catch {
            // One item cannot have caused it (a database that is away): halving would only
            // repeat the failure, each time after its timeout.
            if let whole = error as? any WholeBatchFailure, whole.failsEveryItem {
                state.withLock { $0.statistics.failed += batch.count }
                for s in batch { s.completion?(.failure(error)) }
                return
            }
            guard batch.count > 1 else {
                state.withLock { $0.statistics.failed += 1 }
                batch.first?.completion?(.failure(error))
                return
            }
            let middle = batch.startIndex + batch.count / 2
            write(batch[..<middle])
            write(batch[middle...])
            return
        }
        let waited = batch.count { $0.completion != nil }
        state.withLock {
            if waited > 0 { $0.statistics.batches += 1 }
            $0.statistics.items += waited
            $0.statistics.posted += batch.count - waited
        }
        for (s, output) in zip(batch, outputs) { s.completion?(.success(output)) }
        written(batch.map(\.item))
    }
}

/// An item handed to a `BatchWriter` after it has shut down: nothing was written.
public struct BatchWriterStopped: Error, CustomStringConvertible {
    public var writer: String
    public var description: String { "\(writer) has stopped (the queue is shutting down): nothing was written" }
}
