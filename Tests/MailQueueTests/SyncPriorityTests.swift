import Dispatch
import Foundation
import Synchronization
import Testing

@testable import MailQueue

/// Background writers wait for the foreground (a group commit in progress), but never longer than
/// `maxWait`. Bounds on wall time are loose on purpose: the suite runs in parallel on two cores.
struct SyncPriorityTests {
    @Test func withNoForegroundWriteTheBackgroundGoesAtOnce() {
        let priority = SyncPriority(maxWait: .seconds(5), settle: .milliseconds(2))
        #expect(priority.waitForTurn() < .seconds(1))
    }

    @Test func aForegroundWriteHoldsTheBackgroundForAtMostMaxWait() {
        let priority = SyncPriority(maxWait: .milliseconds(200), settle: .milliseconds(2))
        priority.foregroundBegan()
        let waited = priority.waitForTurn()
        #expect(waited >= .milliseconds(190))
        #expect(waited < .seconds(5))
        priority.foregroundEnded()
    }

    @Test func theBackgroundGoesWhenTheForegroundEnds() {
        let priority = SyncPriority(maxWait: .seconds(20), settle: .milliseconds(2))
        priority.foregroundBegan()
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(150)) { priority.foregroundEnded() }
        let waited = priority.waitForTurn()
        #expect(waited >= .milliseconds(140))
        // Well before maxWait: the end of the write woke it.
        #expect(waited < .seconds(10))
    }

    @Test func aBatchWriterBracketsEachBatchAsForeground() {
        let priority = SyncPriority(maxWait: .seconds(20), settle: .milliseconds(2))
        let entered = DispatchSemaphore(value: 0)
        let gate = DispatchSemaphore(value: 0)
        let writer = BatchWriter<String, Void>(name: "test-priority", priority: priority) { batch in
            entered.signal()
            gate.wait()
            return batch.map { _ in () }
        }
        let written = DispatchSemaphore(value: 0)
        writer.submit("a") { _ in written.signal() }
        #expect(entered.wait(timeout: .now() + 10) == .success)
        // The batch is being written: a background writer waits until it is released.
        let waitedFor = Mutex<Duration?>(nil)
        let started = DispatchSemaphore(value: 0)
        let background = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            started.signal()
            let w = priority.waitForTurn()
            waitedFor.withLock { $0 = w }
            background.signal()
        }
        #expect(started.wait(timeout: .now() + 10) == .success)
        #expect(background.wait(timeout: .now() + .milliseconds(300)) == .timedOut)
        gate.signal()
        #expect(written.wait(timeout: .now() + 10) == .success)
        #expect(background.wait(timeout: .now() + 10) == .success)
        #expect(waitedFor.withLock { $0 } ?? .zero >= .milliseconds(250))
        writer.shutdown()
    }
}
