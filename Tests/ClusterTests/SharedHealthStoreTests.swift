import Cluster
import Foundation
import MailQueue
import NIOPosix
import PostgresNIO
import Testing

/// Service health's store in the shared queue's database (`SharedHealthStore`) against a real
/// PostgreSQL: the trace stream read by transaction, the leadership and its hand-over, reports and
/// actions between nodes. Each test in a database of its own.
struct SharedHealthStoreTests {
    static func store(_ node: String, _ db: PostgresAddress, lease: TimeInterval = 30) -> SharedHealthStore {
        SharedHealthStore(
            settings: SharedQueueSettings(database: db, node: node, lease: lease, timeout: 5, pool: 3),
            group: MultiThreadedEventLoopGroup.singleton, logger: SharedQueueTests.logger, minimumLease: 0)
    }

    /// The store's calls block: run them on a thread pool of their own, as the health service
    /// does. Not on `DispatchQueue.global()`: on Linux its threads are the cooperative pool's, and a
    /// blocked one waits for a task that needs one of them.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive { try body() }
    }

    static func connect(_ db: PostgresAddress) async throws -> PostgresConnection {
        try await SharedQueue(database: db, timeout: .seconds(5), logger: SharedQueueTests.logger)
            .connect(on: MultiThreadedEventLoopGroup.singleton)
    }

    static func exec(_ c: PostgresConnection, _ sql: String) async throws {
        let rows = try await c.query(PostgresQuery(unsafeSQL: sql), logger: SharedQueueTests.logger)
        for try await _ in rows {}
    }

    /// Reads as the live monitor does, round after round, until `count` events have come (or 10 s):
    /// a read may stop short of a transaction it cannot place yet, and the next one goes on.
    static func read(_ store: SharedHealthStore, from position: Int64, count: Int, limit: Int = 100) async throws
        -> (batches: [[String?]], next: Int64)
    {
        var position = position
        var batches: [[String?]] = []
        let deadline = Date().addingTimeInterval(10)
        while batches.joined().count < count && Date() < deadline {
            let from = position
            let b = try await blocking { try store.healthTrace(from: from, limit: limit) }
            if !b.rows.isEmpty { batches.append(b.rows.map(\.detail)) }
            position = b.next
            if !b.more { try await Task.sleep(for: .milliseconds(50)) }
        }
        return (batches, position)
    }

    static func throttled(_ detail: String) -> String {
        """
        INSERT INTO mailflow_trace_event (time, queue_id, kind, detail, tenant, client_address, reply)
        VALUES (now(), '', 'throttled', '\(detail)', 'contoso', '192.0.2.1', '421 4.3.2 busy')
        """
    }

    /// An event whose transaction began first but committed last (its ID lower than one already
    /// committed) is read, once: a reader going by ID would have passed it for good. A transaction
    /// left open in another database of the server holds nothing back.
    @Test func theStreamMissesNoEventCommittedOutOfOrder() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let store = Self.store("node-a", db)
        let start = try await Self.blocking { try store.healthTraceStart(atOrAfter: .distantPast) }
        let other = try await Self.connect(try await ThrowawayPostgres.freshDatabase())
        try await Self.exec(other, "BEGIN")
        try await Self.exec(other, "CREATE TABLE t (x int)")  // an xid, held open until the end
        let early = try await Self.connect(db)
        let late = try await Self.connect(db)
        try await Self.exec(early, "BEGIN")
        try await Self.exec(early, Self.throttled("early"))
        try await Self.exec(late, Self.throttled("late"))  // its own transaction, committed at once
        let during = try await Self.blocking { try store.healthTrace(from: start, limit: 100) }
        // A start taken now (a warm-up, a check) is not past the transaction still running.
        let startDuring = try await Self.blocking { try store.healthTraceStart(atOrAfter: Date() - 3600) }
        #expect(during.rows.isEmpty, "nothing past a transaction still running")
        #expect(during.more == false)
        try await Self.exec(early, "COMMIT")
        let after = try await Self.read(store, from: during.next, count: 2)
        #expect(after.batches.joined().map { $0 } == ["early", "late"])
        let rows = try await Self.blocking { try store.healthTrace(from: during.next, limit: 100) }.rows
        #expect(rows.allSatisfy { $0.kind == .throttled && $0.tenant == "contoso" && $0.reply == "421 4.3.2 busy" })
        let again = try await Self.blocking { try store.healthTrace(from: after.next, limit: 100) }
        #expect(again.rows.isEmpty, "nothing read twice")
        let fromStart = try await Self.read(store, from: startDuring, count: 2)
        #expect(fromStart.batches.joined().map { $0 } == ["early", "late"])
        try await Self.exec(other, "ROLLBACK")
        try await other.close()
        try await early.close()
        try await late.close()
        await store.close()
    }

    /// Throttle refusals ride along with a node's acceptances into the shared trace, with their
    /// forest, tenant, client and reply; a message's outcome reads with the message's tenant.
    @Test func throttleEventsAndAcceptancesReachTheSharedStream() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let node = SharedQueueNodeTests.node("node-a", database: db)
        let store = Self.store("node-a", db)
        let start = try await Self.blocking { try store.healthTraceStart(atOrAfter: .distantPast) }
        let refusal = TraceEvent(
            time: Date(), queueID: "", recipient: nil, kind: .throttled, detail: nil, forest: "NAMPR01",
            region: "north-america", tenant: "contoso", clientAddress: "192.0.2.7", reply: "421 4.3.2 full")
        try await node.accept([SharedQueueTests.message(1)], events: [refusal])
        try await node.accept([], events: [refusal])
        let read = try await Self.blocking { try store.healthTrace(from: start, limit: 100) }
        #expect(read.rows.map(\.kind) == [.received, .throttled, .throttled])
        let throttled = try #require(read.rows.last)
        #expect(throttled.forest == "NAMPR01" && throttled.region == "north-america")
        #expect(throttled.tenant == "contoso" && throttled.clientAddress == "192.0.2.7")
        #expect(throttled.reply == "421 4.3.2 full")
        #expect(read.rows.first?.messageReceivedAt != nil, "a message's event reads with its message")
        await node.stop()
        await store.close()
    }

    /// A batch cut by its limit ends at a transaction's border: every event is read exactly once.
    @Test func aBatchCutByItsLimitEndsAtATransaction() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let store = Self.store("node-a", db)
        let position = try await Self.blocking { try store.healthTraceStart(atOrAfter: .distantPast) }
        let c = try await Self.connect(db)
        for t in 1...3 {
            try await Self.exec(c, "BEGIN")
            try await Self.exec(c, Self.throttled("t\(t)a"))
            try await Self.exec(c, Self.throttled("t\(t)b"))
            try await Self.exec(c, "COMMIT")
        }
        let batches = try await Self.read(store, from: position, count: 6, limit: 3).batches
        #expect(batches.flatMap { $0 } == ["t1a", "t1b", "t2a", "t2b", "t3a", "t3b"])
        #expect(batches.first == ["t1a", "t1b"], "cut before the transaction the limit split")
        try await c.close()
        await store.close()
    }

    /// One node leads; the other gets nothing and may not write issues; once the leader's lease ran
    /// out the other takes over, in a new term, with the positions the first saved, and the first
    /// may no longer write. A clean resignation hands over at once.
    @Test func oneNodeLeadsAndTheNextGoesOnWhereItStopped() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let a = Self.store("node-a", db, lease: 4)
        let b = Self.store("node-b", db, lease: 4)
        func save(_ s: SharedHealthStore) async throws {
            try await Self.blocking {
                try s.saveHealthIssue(id: "MF1", number: 1, resolved: false, lastModified: Date(), document: "{}")
            }
        }
        #expect(try await Self.blocking { try a.lead() } == HealthLead(trace: nil, reports: nil, term: 1))
        #expect(try await Self.blocking { try a.lead() }?.term == 1, "renewed: the same term")
        #expect(try await Self.blocking { try b.lead() } == nil, "node-a leads")
        try await Self.blocking { try a.saveProgress(trace: 42, reports: 7) }
        try await save(a)
        await #expect(throws: SharedHealthError.self) { try await save(b) }
        #expect(try await Self.blocking { try b.leader() }?.node == "node-a")
        try await Task.sleep(for: .milliseconds(4500))
        #expect(try await Self.blocking { try b.lead() } == HealthLead(trace: 42, reports: 7, term: 2))
        await #expect(throws: SharedHealthError.self) { try await save(a) }
        await #expect(throws: SharedHealthError.self) {
            try await Self.blocking { try a.saveProgress(trace: 1, reports: 1) }
        }
        #expect(try await Self.blocking { try a.lead() } == nil)
        try await Self.blocking { b.resign() }
        #expect(try await Self.blocking { try a.lead() }?.term == 3, "a resignation hands over at once")
        #expect(try await Self.blocking { try b.healthIssueDocuments() } == ["{}"])
        await a.close()
        await b.close()
    }

    /// A report from one node is read by another from its position on, once; an action queued on
    /// one node is pending for the leader (only a leader may finish it), and its answer is seen
    /// where it was queued; one withdrawn is pending for nobody.
    @Test func reportsAndActionsCrossNodes() async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let a = Self.store("node-a", db)
        let b = Self.store("node-b", db)
        let from = try await Self.blocking { try a.problemReportsEnd() }
        _ = try await Self.blocking {
            try b.addProblemReport(
                time: Date(), tenant: "contoso", region: "eu", text: "mail is late", error: "421 4.3.2",
                reporter: "alice")
        }
        let read = try await Self.blocking { try a.problemReports(from: from, limit: 100) }
        #expect(read.reports.map(\.text) == ["mail is late"])
        #expect(read.reports.first?.error == "421 4.3.2")
        #expect(read.reports.first?.reporter == "alice")
        #expect(try await Self.blocking { try a.problemReports(from: read.next, limit: 100) }.reports.isEmpty)
        let id = try await Self.blocking {
            try b.addHealthAction(issue: "MF3", kind: "status", value: "serviceRestored", actor: "bob", time: Date())
        }
        #expect(try await Self.blocking { try b.healthActionState(id) } == 0)
        let pending = try await Self.blocking { try a.pendingHealthActions() }
        #expect(pending.map(\.issue) == ["MF3"])
        #expect(pending.first?.value == "serviceRestored")
        await #expect(throws: SharedHealthError.self) {
            try await Self.blocking { try a.finishHealthAction(id, applied: true) }
        }
        #expect(try await Self.blocking { try a.lead() } != nil)
        try await Self.blocking { try a.finishHealthAction(id, applied: true) }
        #expect(try await Self.blocking { try b.healthActionState(id) } == 1)
        #expect(try await Self.blocking { try b.withdrawHealthAction(id) } == false, "applied already")
        #expect(try await Self.blocking { try a.pendingHealthActions() }.isEmpty)
        // One nobody applied in time is withdrawn: no leader applies it later.
        let late = try await Self.blocking {
            try b.addHealthAction(issue: "MF3", kind: "post", value: "late", actor: "bob", time: Date())
        }
        #expect(try await Self.blocking { try b.withdrawHealthAction(late) })
        #expect(try await Self.blocking { try a.pendingHealthActions() }.isEmpty)
        #expect(try await Self.blocking { try b.healthActionState(late) } == 3)
        await a.close()
        await b.close()
    }
}
