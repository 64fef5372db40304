import Cluster
import Foundation
import Ingress
import Logging
import MailQueue
import NIOPosix
import PostgresNIO
import SMTPCore
import Testing

/// A node's side of the shared queue (`SharedQueueNode`: its connections, leases, renewals and
/// retention) against a real PostgreSQL, each test in a database of its own.
struct SharedQueueNodeTests {
    static func node(_ name: String, database: PostgresAddress, lease: TimeInterval = 30) -> SharedQueueNode {
        SharedQueueNode(
            settings: SharedQueueSettings(database: database, node: name, lease: lease, timeout: 5, pool: 3),
            group: MultiThreadedEventLoopGroup.singleton, logger: SharedQueueTests.logger)
    }

    /// The tables are made at the first connection (no migration step at start); a message
    /// accepted on one node is claimed, recorded and then pruned through another.
    @Test func acceptClaimRecordAndPruneAcrossTwoNodes() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let a = Self.node("node-a", database: db)
        let b = Self.node("node-b", database: db)
        let m = SharedQueueTests.message(1)
        try await a.accept([m])
        #expect(try await a.secondsUntilNextClaimable() == 0)
        let claimed = try await b.claim(limit: 10)
        #expect(claimed.map(\.id) == [m.id])
        #expect(b.leasesHeld == 1)
        #expect(try await a.claim(limit: 10).isEmpty, "leased to node-b")
        #expect(try await a.secondsUntilNextClaimable() ?? 0 > 20, "node-b's lease ends in about 30 s")
        let record = try await b.record(SharedQueueTests.attempt(m.id, SharedQueueTests.delivered(1)))
        #expect(record == .recorded(finished: true))
        #expect(b.leasesHeld == 0)
        #expect(try await a.secondsUntilNextClaimable() == nil, "nothing waits")
        var pruned = await a.prune(before: Date().addingTimeInterval(-3600))
        #expect(pruned.messages == 0, "not older than the cutoff")
        pruned = await a.prune(before: Date().addingTimeInterval(60))
        #expect(pruned.messages == 1)
        #expect(pruned.traceEvents == 2, "received and delivered")
        await a.stop()
        await b.stop()
    }

    /// Renewals keep a lease past its first end while the delivery runs; a node that stops renewing
    /// (it died) loses the message to another node after the lease, and its late record is refused,
    /// traced as a possible duplicate.
    @Test func renewalsKeepALeaseAndALateRecordIsRefusedAndTraced() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let a = Self.node("node-a", database: db, lease: 3)
        let b = Self.node("node-b", database: db, lease: 3)
        let m1 = SharedQueueTests.message(1)
        let m2 = SharedQueueTests.message(2)
        try await a.accept([m1])
        a.start()
        #expect(try await a.claim(limit: 1).map(\.id) == [m1.id])
        try await Task.sleep(for: .seconds(4))
        #expect(try await b.claim(limit: 1).isEmpty, "renewed past its first end")
        #expect(
            try await a.record(SharedQueueTests.attempt(m1.id, SharedQueueTests.delivered(1)))
                == .recorded(finished: true))
        await a.stop()

        // node-a claims m2 and "dies" (no renewals): node-b takes it after the lease.
        try await a.accept([m2])
        #expect(try await a.claim(limit: 1).map(\.id) == [m2.id])
        let wait = try #require(try await b.secondsUntilNextClaimable())
        #expect(wait > 1 && wait <= 3)
        try await Task.sleep(for: .seconds(wait + 0.2))
        #expect(try await b.claim(limit: 1).map(\.id) == [m2.id])
        let late = try await a.record(SharedQueueTests.attempt(m2.id, SharedQueueTests.delivered(1)))
        #expect(late == .leaseLost)
        #expect(a.leasesLost == 1)
        let q = SharedQueue(database: db, timeout: .seconds(5), logger: SharedQueueTests.logger)
        let c = try await q.connect(on: MultiThreadedEventLoopGroup.singleton)
        let events = try await q.traceEvents(c, queueID: m2.id)
        #expect(events.map(\.kind) == [.received, .leaseExpired, .delivered])
        #expect(
            events[1].detail
                == "the lease of node node-a (claim 1) ran out before it recorded an attempt; node node-b took the message over: node-a may have delivered it before it stopped (possible duplicate)"
        )
        #expect(events.last?.detail?.contains("lease lost by node node-a") == true)
        #expect(events.last?.detail?.contains("possible duplicate") == true)
        try await c.close()
        await a.stop()
        await b.stop()
    }

    /// A delete from another node while a delivery is in flight: the attempt recorded after it
    /// leaves the message done, without a next attempt, its recipients failed.
    @Test func anAttemptRecordedAfterADeleteLeavesTheMessageDone() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let a = Self.node("node-a", database: db)
        let m = SharedQueueTests.message(1, recipients: 2)
        try await a.accept([m])
        #expect(try await a.claim(limit: 1).map(\.id) == [m.id])
        let control = SharedQueueControl(
            queue: SharedQueue(database: db, timeout: .seconds(5), logger: SharedQueueTests.logger))
        _ = try await control.control(.delete, id: m.id, actor: "ops")
        let record = try await a.record(
            SharedQueueTests.attempt(
                m.id, [0: .delivered(detail: "250 ok"), 1: .deferred(reason: "451 4.3.0 later")],
                next: Date().addingTimeInterval(60)))
        #expect(record == .recorded(finished: true))
        let stored = try #require(try await control.message(m.id))
        #expect(stored.state == .done)
        #expect(stored.nextAttempt == nil)
        #expect(stored.recipients.map(\.status) == [.failed, .failed])
        #expect(try await a.secondsUntilNextClaimable() == nil)
        await a.stop()
    }

    /// An unreachable database fails an acceptance batch whole (`failsEveryItem`: the group
    /// committer does not halve it into more timeouts) and the node keeps no lease.
    @Test func anUnreachableDatabaseFailsTheWholeBatch() async throws {
        let port = try ThrowawayPostgres.freePort()
        let db = try PostgresAddress(url: "postgres://mailflow@127.0.0.1:\(port)/none")
        let a = Self.node("node-a", database: db)
        do {
            try await a.accept([SharedQueueTests.message(1)])
            Issue.record("accepted without a database")
        } catch let e as SharedQueueError {
            #expect(e.failsEveryItem)
            // The session answers with the shared queue's words, not its generic 451.
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mf-sqn-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let store = try SQLiteQueueStore(path: dir.appendingPathComponent("q.sqlite").path)
            let committer = GroupCommitter(storage: store.storage) { _, _ in }
            #expect(committer.storageReply(for: e) == e.reply)
            #expect(e.reply.code == 451)
            await committer.shutdownGracefully()
        }
        await #expect(throws: SharedQueueError.self) { try await a.claim(limit: 4) }
        #expect(a.leasesHeld == 0)
        #expect(SharedQueueError.refused(sqlState: "23505", message: "duplicate").failsEveryItem == false)
        await a.stop()
    }
}
