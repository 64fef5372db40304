import Dispatch
import Foundation
import Synchronization
import Testing

@testable import MailQueue

/// A `BatchWriter` sink that records every batch it is given, fails any batch holding an item in
/// `bad`, and holds the writer thread inside the batch holding `hold` until `release()`, so a
/// test can hand in items while a write is in progress.
private final class FakeSink: Sendable {
    struct Rejected: Error, Equatable { var items: [String] }

    let bad: Set<String>
    let calls = Mutex<[[String]]>([])
    let entered = DispatchSemaphore(value: 0)
    let gate = DispatchSemaphore(value: 0)

    init(bad: Set<String> = []) { self.bad = bad }

    func write(_ batch: [String]) throws -> [String] {
        calls.withLock { $0.append(batch) }
        if batch.contains("hold") {
            entered.signal()
            gate.wait()
        }
        if !bad.isDisjoint(with: batch) { throw Rejected(items: batch) }
        return batch.map { $0.uppercased() }
    }

    /// Batches that were written (the sink returned).
    var written: [[String]] { calls.withLock { $0 }.filter { bad.isDisjoint(with: $0) } }

    func waitUntilHolding() -> Bool { entered.wait(timeout: .now() + 10) == .success }
    func release() { gate.signal() }

    func writer(postLimit: Int = 100_000) -> BatchWriter<String, String> {
        BatchWriter(name: "test-writer", postLimit: postLimit) { try self.write($0) }
    }
}

/// Completions collected by item, and a group to wait for them.
private final class Results: Sendable {
    let results = Mutex<[String: Result<String, any Error>]>([:])
    let group = DispatchGroup()

    func submit(_ item: String, to writer: BatchWriter<String, String>) {
        group.enter()
        writer.submit(item) { r in
            self.results.withLock { $0[item] = r }
            self.group.leave()
        }
    }

    func waitForAll() -> Bool { group.wait(timeout: .now() + 10) == .success }

    func output(_ item: String) -> String? {
        results.withLock { if case .success(let o)? = $0[item] { o } else { nil } }
    }

    func error(_ item: String) -> (any Error)? {
        results.withLock { if case .failure(let e)? = $0[item] { e } else { nil } }
    }
}

struct BatchWriterTests {
    @Test func itemsArrivingDuringAWriteGoTogetherInTheNextBatch() {
        let sink = FakeSink()
        let writer = sink.writer()
        let results = Results()
        results.submit("hold", to: writer)
        #expect(sink.waitUntilHolding())
        for item in ["a", "b", "c"] { results.submit(item, to: writer) }
        sink.release()
        #expect(results.waitForAll())
        #expect(sink.written == [["hold"], ["a", "b", "c"]])
        #expect(["hold", "a", "b", "c"].map(results.output) == ["HOLD", "A", "B", "C"])
        writer.shutdown()
    }

    @Test func aFailingBatchIsSplitAndOnlyTheBadItemFails() {
        let sink = FakeSink(bad: ["bad"])
        let writer = sink.writer()
        let results = Results()
        results.submit("hold", to: writer)
        #expect(sink.waitUntilHolding())
        for item in ["a", "bad", "c", "d", "e"] { results.submit(item, to: writer) }
        sink.release()
        #expect(results.waitForAll())
        // Each good item gets its own output, however the batch was split.
        #expect(["a", "c", "d", "e"].map(results.output) == ["A", "C", "D", "E"])
        #expect(results.error("bad") as? FakeSink.Rejected == FakeSink.Rejected(items: ["bad"]))
        // The failed batch was written again in parts: every good item exactly once, the bad one never.
        #expect(sink.written.dropFirst().flatMap { $0 }.sorted() == ["a", "c", "d", "e"])
        #expect(sink.calls.withLock { $0[1] } == ["a", "bad", "c", "d", "e"])
        #expect(sink.calls.withLock { $0.contains(["bad"]) })
        let stats = writer.statistics
        #expect(stats.items == 5 && stats.failed == 1)
        writer.shutdown()
    }

    @Test func aFailingSingleItemFailsWithTheSinksError() async throws {
        let sink = FakeSink(bad: ["bad"])
        let writer = sink.writer()
        #expect(try await writer.submit("ok") == "OK")
        await #expect(throws: FakeSink.Rejected(items: ["bad"])) { try await writer.submit("bad") }
        #expect(sink.calls.withLock { $0 } == [["ok"], ["bad"]])  // a single item is not retried
        await writer.shutdownGracefully()
    }

    @Test func shutdownDrainsAndLaterItemsGetAClearError() {
        let sink = FakeSink()
        let writer = sink.writer()
        let results = Results()
        results.submit("hold", to: writer)
        #expect(sink.waitUntilHolding())
        let stopped = DispatchSemaphore(value: 0)
        writer.shutdown { stopped.signal() }
        // Handed in while the writer drains: still written.
        results.submit("a", to: writer)
        #expect(writer.post("p"))
        #expect(stopped.wait(timeout: .now() + 0.2) == .timedOut)  // still writing "hold"
        sink.release()
        #expect(stopped.wait(timeout: .now() + 10) == .success)
        #expect(results.waitForAll())
        #expect(results.output("a") == "A")
        #expect(sink.written == [["hold"], ["a", "p"]])

        results.submit("late", to: writer)
        #expect(results.waitForAll())
        let error = results.error("late")
        #expect(error is BatchWriterStopped)
        #expect("\(error.map { "\($0)" } ?? "")".contains("test-writer has stopped"))
        #expect(!writer.post("late post"))
        #expect(sink.written == [["hold"], ["a", "p"]])  // nothing after the stop reached the sink
        writer.shutdown()  // a second shutdown returns at once
    }

    @Test func statisticsCountBatchesItemsAndPostedItems() {
        let sink = FakeSink()
        let writer = sink.writer(postLimit: 2)
        let results = Results()
        results.submit("hold", to: writer)
        #expect(sink.waitUntilHolding())
        #expect(writer.post("p1"))
        #expect(writer.post("p2"))
        #expect(!writer.post("p3"))  // past postLimit: dropped
        results.submit("x", to: writer)
        sink.release()
        #expect(results.waitForAll())
        #expect(writer.post("p4"))  // after the batch, the limit counts afresh
        writer.shutdown()
        #expect(sink.written == [["hold"], ["p1", "p2", "x"], ["p4"]])
        // The batch of p4 alone had nobody waiting: not a batch in the group-commit ratio.
        #expect(writer.statistics == .init(batches: 2, items: 2, posted: 3, failed: 0))
    }
}

/// `GroupCommitter` on the writer: a batch that fails on one message is written again in parts.
struct GroupCommitterFallbackTests {
    @Test func aDuplicateMessageFailsAloneAndTheOthersAreCommitted() throws {
        let store = try SQLiteQueueStore(path: "\(try temporaryDirectory())/q.sqlite")
        try store.insert([newMessage("DUP")])
        let committed = Mutex<[String]>([])
        let committer = GroupCommitter(store: store) { ids in committed.withLock { $0 += ids } }
        let results = Mutex<[String: Bool]>([:])
        func submission(_ entry: GroupCommitter.Entry, id: String) -> BatchWriter<GroupCommitter.Entry, Void>.Submission
        {
            .init(item: entry) { r in results.withLock { $0[id] = (try? r.get()) != nil } }
        }
        let throttled = TraceEvent(time: Date(), queueID: "", recipient: nil, kind: .throttled, detail: "t")
        committer.writer.write([
            submission(.message(newMessage("A")), id: "A"), submission(.message(newMessage("DUP")), id: "DUP"),
            .init(item: .event(throttled), completion: nil), submission(.message(newMessage("B")), id: "B"),
        ])
        #expect(results.withLock { $0 } == ["A": true, "DUP": false, "B": true])
        #expect(try store.counts().queued == 3)
        #expect(committed.withLock { $0.sorted() } == ["A", "B"])
        #expect(committer.statistics.messages == 2)
        #expect(committer.writer.statistics.posted == 1)  // the throttle event was written too
        committer.shutdown()
    }
}
