import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// How the cluster talks to PostgreSQL: every statement read to its end, every call bounded.
enum PostgresCall {
    /// Runs a statement and reads its answer to the end: postgres-nio hands back the row sequence
    /// before the statement has finished, and an error during execution (a duplicate key, a lock
    /// timeout) or the commit's confirmation only arrives with the end of that sequence.
    static func exec(_ c: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws {
        let rows = try await c.query(query, logger: logger)
        for try await _ in rows {}
    }

    /// Runs `body`, or throws `ClusterTimeout` after `timeout`, whether or not `body` has ended by
    /// then: a query waiting on the server (a row lock, a stopped database) does not end when its
    /// task is cancelled, so the answer must not wait for it (a task group would). At the timeout
    /// the connection is closed: its transaction state is unknown, and closing ends the query on
    /// our side.
    static func bounded<T: Sendable>(
        _ c: PostgresConnection, timeout: TimeAmount, logger: Logger,
        _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws -> T {
        let limit = Duration.nanoseconds(timeout.nanoseconds)
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let race = FirstAnswer(continuation)
            // A timer on the connection's event loop, not a sleeping task: cancelling one throws
            // nothing (a `Task.sleep` cancelled at every call throws a CancellationError each time,
            // and a test runner that records a backtrace for every error thrown spun on those).
            let timer = c.eventLoop.scheduleTask(in: timeout) {
                if race.finish(.failure(ClusterTimeout(after: limit))) {
                    let closed: EventLoopFuture<Void> = c.close()
                    closed.whenComplete { _ in }
                }
            }
            Task {
                let result: Result<T, any Error>
                do { result = .success(try await body(c, logger)) } catch { result = .failure(error) }
                timer.cancel()
                _ = race.finish(result)
            }
        }
    }
}

/// The first of a call's answer and its timeout, delivered once.
final class FirstAnswer<T: Sendable>: Sendable {
    let continuation: Mutex<CheckedContinuation<T, any Error>?>

    init(_ continuation: CheckedContinuation<T, any Error>) { self.continuation = Mutex(continuation) }

    /// Resumes the caller with `result` unless it was answered already; true if this did it.
    func finish(_ result: Result<T, any Error>) -> Bool {
        guard let c = continuation.withLock({ $0.take() }) else { return false }
        c.resume(with: result)
        return true
    }
}

/// A call to the cluster's database that did not answer in time.
public struct ClusterTimeout: Error, CustomStringConvertible {
    public var after: Duration
    public var description: String { "the cluster database did not answer within \(after)" }
}
