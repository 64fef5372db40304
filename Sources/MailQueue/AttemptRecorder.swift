/// Group commit for delivery outcomes, as `GroupCommitter` is for acceptances: attempts finished
/// while a batch is being written go together in the next transaction, so a hundred deliveries in
/// flight share one WAL sync instead of paying one each. A `BatchWriter` does the batching.
///
/// Each caller resumes only after the batch holding its outcome is on disk. If a batch fails, it
/// is written again in smaller parts down to single attempts, so one bad record fails alone.
public final class AttemptRecorder: Sendable {
    let writer: BatchWriter<SQLiteQueueStore.Attempt, String?>

    public init(store: SQLiteQueueStore) {
        writer = BatchWriter(name: "mailflow-record") { attempts in
            do {
                return try store.recordAttempts(attempts)
            } catch {
                // Not recorded: the messages stay due and are delivered again (a Maildir copy is
                // found by its name and not written twice); the fault shows in the admin API.
                store.storage.recordFault(error, during: "delivery record")
                throw error
            }
        }
    }

    /// Records `attempt` in the next batch; returns the spool path to remove once the message is
    /// finished (as `SQLiteQueueStore.recordAttempt`).
    public func record(_ attempt: SQLiteQueueStore.Attempt) async throws -> String? {
        try await writer.submit(attempt)
    }

    /// Batches and attempts written so far (the ratio shows how much the batching saves).
    public var statistics: (batches: Int, attempts: Int) {
        let s = writer.statistics
        return (s.batches, s.items)
    }

    /// Writes what is pending, including attempts that arrive meanwhile, then stops the writer
    /// thread; later attempts fail with `BatchWriterStopped`. Call after the deliveries in flight
    /// have finished. Blocks the caller: from async code use `shutdownGracefully()`.
    public func shutdown() {
        writer.shutdown()
    }

    /// `shutdown` without blocking a thread of the cooperative pool.
    public func shutdownGracefully() async {
        await writer.shutdownGracefully()
    }
}
