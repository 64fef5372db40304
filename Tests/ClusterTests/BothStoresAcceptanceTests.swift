import Cluster
import Foundation
import MailQueue
import SMTPCore
import Testing

/// Acceptance through the group committer into either store (`QueueStoreKind`): what makes a `250`
/// true. Concurrent sessions share transactions; a message the store refuses fails alone, the rest
/// of its batch still commits; throttle events ride along into the same trace.
struct BothStoresAcceptanceTests {
    static let stores = QueueStoreKind.allCases

    /// 200 concurrent acceptances: every one durable and due, in fewer transactions than messages.
    @Test(arguments: stores)
    func groupCommitSharesTransactions(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let committer = q.committer()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<200 { group.addTask { try await committer.commit(bothStoresMessage(n)) } }
            try await group.waitForAll()
        }
        let stats = committer.statistics
        #expect(stats.messages == 200)
        #expect(stats.batches < 200, "200 concurrent acceptances must not cost 200 transactions")
        #expect(
            try await q.control.queueCounts()
                == .init(queuedMessages: 200, heldMessages: 0, pendingRecipients: 200, deferredMessages: 0))
        #expect(try await q.control.traceEvents(queueID: "B000000000000123").map(\.kind) == [.received])
        #expect(try await q.claimIDs(limit: 500).count == 200)
        await committer.shutdownGracefully()
        await #expect(throws: GroupCommitter.CommitterStopped.self) {
            try await committer.commit(bothStoresMessage(999))
        }
        await q.stop()
    }

    /// A message the store refuses (its queue ID taken) gets its error alone: the messages that
    /// shared its batch are written again without it, and nothing of the refused one is kept.
    @Test(arguments: stores)
    func aRefusedMessageFailsAloneInItsBatch(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let committer = q.committer()
        try await committer.commit(bothStoresMessage(1))
        let results = await withTaskGroup(of: (Int, Bool).self) { group in
            for n in [2, 1, 3, 4, 5, 6] {
                group.addTask {
                    var m = bothStoresMessage(n)
                    if n == 1 { m.sender = "imposter@example.org" }
                    do {
                        try await committer.commit(m)
                        return (n, true)
                    } catch {
                        return (n, false)
                    }
                }
            }
            var out: [Int: Bool] = [:]
            for await (n, ok) in group { out[n] = ok }
            return out
        }
        #expect(results == [1: false, 2: true, 3: true, 4: true, 5: true, 6: true])
        #expect(try await q.stored("B000000000000001").sender == "a@example.org", "the first one stands")
        #expect(try await q.control.traceEvents(queueID: "B000000000000001").map(\.kind) == [.received])
        #expect(try await q.control.queueCounts().queuedMessages == 6)
        await committer.shutdownGracefully()
        await q.stop()
    }

    /// Throttle events (admission control's refusals, which have no message) go into the store's
    /// trace with the batch they ride along with, every field kept.
    @Test(arguments: stores)
    func throttleEventsRideAlongIntoTheTrace(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let committer = q.committer()
        let event = TraceEvent(
            time: Date(), queueID: "", recipient: "bob@contoso.test", kind: .throttled,
            detail: "forest NAMPR01 full", forest: "NAMPR01", region: "north-america", tenant: "contoso",
            clientAddress: "192.0.2.7", reply: "451 4.3.2 try this recipient again later")
        committer.record(event)
        try await committer.commit(bothStoresMessage(1))
        let events = try await q.control.traceEvents(queueID: "")
        #expect(events.count == 1)
        let stored = try #require(events.first)
        #expect(stored.kind == .throttled && stored.recipient == event.recipient && stored.detail == event.detail)
        #expect(abs(stored.time.timeIntervalSince(event.time)) < 0.001)
        #expect(stored.forest == "NAMPR01" && stored.region == "north-america" && stored.tenant == "contoso")
        #expect(stored.clientAddress == "192.0.2.7" && stored.reply == event.reply, "\(stored)")
        await committer.shutdownGracefully()
        await q.stop()
    }
}
