import Cluster
import Foundation
import MailQueue
import SMTPCore
import Testing

/// Trace retention (`trace.retention`) against both stores (`QueueStoreKind`): what goes and what
/// stays must not depend on where the queue is kept.
struct BothStoresRetentionTests {
    static let stores = QueueStoreKind.allCases

    /// Trace events older than the cutoff go, and finished messages received before it with their
    /// recipients; a message still queued stays whatever its age, and so does everything newer.
    @Test(arguments: stores)
    func retentionRemovesOldEventsAndFinishedMessagesOnly(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let oldDone = bothStoresMessage(1, age: 7200)
        let oldQueued = bothStoresMessage(2, age: 7200)
        let newDone = bothStoresMessage(3)
        try await q.accept([oldDone, oldQueued, newDone])
        #expect(try await q.claimIDs() == [oldDone.id, oldQueued.id, newDone.id])
        #expect(try await q.record(oldDone.id, [0: .delivered(detail: "250 ok")]) == .recorded(finished: true))
        _ = try await q.record(oldQueued.id, [0: .deferred(reason: "451 later")], next: Date().addingTimeInterval(600))
        #expect(try await q.record(newDone.id, [0: .delivered(detail: "250 ok")]) == .recorded(finished: true))

        let pruned = try await q.prune(Date().addingTimeInterval(-3600))
        #expect(pruned.messages == 1, "the old finished message only")
        #expect(pruned.traceEvents == 2, "the two old messages' received events")
        #expect(try await q.control.message(oldDone.id) == nil)
        #expect(try await q.control.traceEvents(queueID: oldDone.id).map(\.kind) == [.delivered], "a new event stays")
        let queued = try await q.stored(oldQueued.id)
        #expect(queued.state == .queued && queued.recipients.count == 1 && queued.body == oldQueued.body)
        #expect(try await q.control.traceEvents(queueID: oldQueued.id).map(\.kind) == [.deferred])
        #expect(try await q.stored(newDone.id).state == .done)
        #expect(try await q.control.traceEvents(queueID: newDone.id).map(\.kind) == [.received, .delivered])
        #expect(
            try await q.control.list(tenant: nil, includeDone: true, limit: 10).map(\.id) == [oldQueued.id, newDone.id])

        let again = try await q.prune(Date().addingTimeInterval(-3600))
        #expect(again.messages == 0 && again.traceEvents == 0, "nothing left to prune")
        await q.stop()
    }
}
