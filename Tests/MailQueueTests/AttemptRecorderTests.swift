import Foundation
import Synchronization
import Testing

@testable import MailQueue

private typealias Submission = BatchWriter<SQLiteQueueStore.Attempt, String?>.Submission

struct AttemptRecorderTests {
    @Test func concurrentAttemptsAreAllRecordedInBatches() async throws {
        let store = try SQLiteQueueStore(path: "\(try temporaryDirectory())/q.sqlite")
        try store.insert((0..<50).map { newMessage("M\($0)") })
        let recorder = AttemptRecorder(store: store)
        try await withThrowingTaskGroup(of: String?.self) { g in
            for i in 0..<50 {
                g.addTask {
                    try await recorder.record(
                        .init(
                            messageID: "M\(i)", outcomes: [0: .delivered(detail: "250 ok")], nextAttempt: nil,
                            now: Date()))
                }
            }
            for try await path in g { #expect(path == nil) }  // inline bodies: nothing to unlink
        }
        let stats = recorder.statistics
        #expect(stats.attempts == 50 && stats.batches >= 1 && stats.batches <= 50)
        for i in 0..<50 { #expect(try store.message("M\(i)")?.state == .done) }
        recorder.shutdown()
    }

    @Test func aBadAttemptFailsAloneWhenItsBatchFails() throws {
        let store = try SQLiteQueueStore(path: "\(try temporaryDirectory())/q.sqlite")
        try store.insert([newMessage("A"), newMessage("B"), newMessage("C")])
        let recorder = AttemptRecorder(store: store)
        let results = Mutex<[String: Bool]>([:])
        func pending(_ id: String, notifications: [NewMessage] = []) -> Submission {
            Submission(
                item: .init(
                    messageID: id, outcomes: [0: .failed(reason: "550 5.1.1 no")], nextAttempt: nil, now: Date(),
                    notifications: notifications),
                completion: { r in
                    results.withLock {
                        $0[id] = {
                            if case .success = r { return true } else { return false }
                        }()
                    }
                })
        }
        // B's DSN reuses an existing queue ID: its insert violates the primary key, failing the batch.
        recorder.writer.write([pending("A"), pending("B", notifications: [newMessage("C")]), pending("C")])
        #expect(results.withLock { $0 } == ["A": true, "B": false, "C": true])
        #expect(try store.message("A")?.state == .done && store.message("C")?.state == .done)
        #expect(try store.message("B")?.state == .queued)  // nothing of B's attempt was written
        recorder.shutdown()
    }
}
