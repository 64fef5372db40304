import Cluster
import Foundation
import MailQueue
import Testing

/// `QueueControl` answers alike over SQLite (`LocalQueueControl`) and over the shared queue
/// (`SharedQueueControl`, a real PostgreSQL): counts, and `ControlError`s for what does not apply.
struct SharedQueueControlTests {
    @Test func countsAndControlErrorsMatchSQLite() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let node = SharedQueueNodeTests.node("node-a", database: db)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mailflow-qc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteQueueStore(path: dir.appendingPathComponent("queue.sqlite").path)
        var messages = [SharedQueueTests.message(1, recipients: 2), SharedQueueTests.message(2)]
        messages[0].tenant = "contoso"
        try await node.accept(messages)
        try store.insert(messages)
        let shared: any QueueControl = SharedQueueControl(
            queue: SharedQueue(database: db, timeout: .seconds(5), logger: SharedQueueTests.logger))
        let local: any QueueControl = LocalQueueControl(store)
        for queue in [shared, local] {
            #expect(
                try await queue.queueCounts()
                    == .init(queuedMessages: 2, heldMessages: 0, pendingRecipients: 3, deferredMessages: 0))
            let held = try await queue.control(.hold, id: messages[1].id, actor: "test")
            #expect(held.outcome == .held)
            #expect(
                try await queue.queueCounts()
                    == .init(queuedMessages: 1, heldMessages: 1, pendingRecipients: 3, deferredMessages: 0))
            await #expect(throws: SQLiteQueueStore.ControlError.self) {
                try await queue.control(.hold, id: messages[1].id, actor: "test")
            }
            await #expect(throws: SQLiteQueueStore.ControlError.notFound("0000000000000000")) {
                try await queue.control(.retry, id: "0000000000000000", actor: "test")
            }
            #expect(try await queue.list(tenant: nil, includeDone: false, limit: 10).count == 2)
            #expect(
                try await queue.tenantActivity(since: Date().addingTimeInterval(-60))
                    == [.init(tenant: "contoso", received: 1, pending: 2)])
            #expect(try await queue.tenantActivity(since: Date().addingTimeInterval(60)).map(\.received) == [0])
            #expect(try await queue.traceEvents(queueID: messages[1].id).map(\.kind) == [.received, .admin])
        }
        await node.stop()
    }
}
