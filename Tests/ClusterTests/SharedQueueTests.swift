import Cluster
import Foundation
import Logging
import MailQueue
import NIOPosix
import PostgresNIO
import SMTPCore
import Testing

/// The shared queue's leases against a real PostgreSQL (`ThrowawayPostgres`), each test in a
/// database of its own. Lease times are on the database's clock, so the expiry tests wait real
/// (short) time.
struct SharedQueueTests {
    static let logger = Logger(label: "shared-queue-test")

    /// A queue on a fresh database, migrated.
    static func queue(timeout: TimeAmount = .seconds(10)) async throws -> SharedQueue {
        let database = try await ThrowawayPostgres.freshDatabase()
        // Made with a generous timeout: `timeout` is for what the test times, not for the set-up
        // (many tests make their tables at once).
        let setUp = SharedQueue(database: database, timeout: .seconds(30), logger: logger)
        let c = try await setUp.connect(on: MultiThreadedEventLoopGroup.singleton)
        try await setUp.migrate(c)
        try await setUp.migrate(c)  // idempotent
        try await c.close()
        return SharedQueue(database: database, timeout: timeout, logger: logger)
    }

    static func message(_ n: Int, recipients: Int = 1, body: String? = nil) -> NewMessage {
        NewMessage(
            id: String(format: "M%05d", n) + UUID().uuidString.prefix(6), receivedAt: Date(), sender: "a@example.org",
            recipients: (0..<recipients).map {
                EnvelopeRecipient(
                    address: "r\($0)@example.net", route: .relay(domain: "example.net"),
                    notify: DSNNotify(failure: true), originalRecipient: nil)
            }, size: 20, clientAddress: "127.0.0.1", helo: "client.test", protocolName: "ESMTP",
            body: .inline(Data((body ?? "Subject: \(n)\r\n\r\nbody \(n)\r\n").utf8)))
    }

    static func delivered(_ recipients: Int) -> [Int: RecipientOutcome] {
        Dictionary(uniqueKeysWithValues: (0..<recipients).map { ($0, .delivered(detail: "250 2.0.0 ok")) })
    }

    static func attempt(_ id: String, _ outcomes: [Int: RecipientOutcome], next: Date? = nil)
        -> SQLiteQueueStore.Attempt
    {
        SQLiteQueueStore.Attempt(messageID: id, outcomes: outcomes, nextAttempt: next, now: Date())
    }

    func connect(_ q: SharedQueue) async throws -> PostgresConnection {
        try await q.connect(on: MultiThreadedEventLoopGroup.singleton)
    }

    /// Four nodes claim 200 due messages at the same time, a few at a time: every message is
    /// claimed exactly once (`FOR UPDATE SKIP LOCKED`), and by the node that then records it.
    @Test(arguments: [(4, 200, 5), (4, 200, 1), (2, 60, 50)])
    func concurrentClaimersNeverShareAMessage(claimers: Int, messages: Int, batch: Int) async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let batchOfMessages = (0..<messages).map { Self.message($0) }
        try await q.insert(c, batchOfMessages)
        var connections: [PostgresConnection] = []
        for _ in 0..<claimers { connections.append(try await connect(q)) }
        let started = ContinuousClock.now
        let perNode = try await withThrowingTaskGroup(of: (String, [String]).self) { group in
            for (n, mine) in connections.enumerated() {
                group.addTask {
                    let node = "node-\(n)"
                    var ids: [String] = []
                    while true {
                        let claimed = try await q.claimDue(mine, node: node, limit: batch, lease: .seconds(30))
                        if claimed.isEmpty { break }
                        for m in claimed {
                            #expect(m.lease.epoch == 1)
                            ids.append(m.id)
                        }
                    }
                    try await mine.close()
                    return (node, ids)
                }
            }
            var out: [String: [String]] = [:]
            for try await (node, ids) in group { out[node] = ids }
            return out
        }
        let elapsed = ContinuousClock.now - started
        let all = perNode.values.flatMap { $0 }
        #expect(all.count == messages, "every message claimed, none twice")
        #expect(Set(all) == Set(batchOfMessages.map(\.id)))
        if messages >= batch * claimers * 4 {  // enough rounds that one node cannot take it all first
            #expect(
                perNode.values.filter { !$0.isEmpty }.count >= 2, "the work was shared: \(perNode.mapValues(\.count))")
        }
        print(
            "shared queue: \(claimers) claimers, batch \(batch): \(messages) messages claimed in \(elapsed) "
                + "(\(Int(Double(messages) / (Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds)))) claims/s)"
        )
        // Each node holds what it claimed: its records are accepted, another node's are not.
        let first = try #require(perNode.first { !$0.value.isEmpty })
        let id = first.value[0]
        let other = first.key == "node-0" ? "node-1" : "node-0"
        #expect(
            try await q.recordAttempt(
                c, node: other, lease: SharedLease(queueID: id, epoch: 1), attempt: Self.attempt(id, Self.delivered(1)))
                == .leaseLost)
        #expect(
            try await q.recordAttempt(
                c, node: first.key, lease: SharedLease(queueID: id, epoch: 1),
                attempt: Self.attempt(id, Self.delivered(1))) == .recorded(finished: true))
        try await c.close()
    }

    /// The whole cycle on four nodes: 200 messages inserted in one batch, claimed five at a time
    /// and each recorded as delivered by the node that claimed it: every message done, with
    /// exactly one `delivered` event, and no record refused.
    @Test func fourNodesDeliverEveryMessageOnce() async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let messages = (0..<200).map { Self.message($0) }
        let inserting = ContinuousClock.now
        try await q.insert(c, messages)
        let inserted = ContinuousClock.now - inserting
        let started = ContinuousClock.now
        let recorded = try await withThrowingTaskGroup(of: Int.self) { group in
            for n in 0..<4 {
                group.addTask {
                    let mine = try await self.connect(q)
                    var count = 0
                    while true {
                        let claimed = try await q.claimDue(mine, node: "node-\(n)", limit: 5, lease: .seconds(30))
                        if claimed.isEmpty { break }
                        for m in claimed {
                            let r = try await q.recordAttempt(
                                mine, node: "node-\(n)", lease: m.lease, attempt: Self.attempt(m.id, Self.delivered(1)))
                            #expect(r == .recorded(finished: true))
                            count += 1
                        }
                    }
                    try await mine.close()
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - started
        #expect(recorded == 200)
        let rows = try await c.query(
            """
            SELECT (SELECT count(*) FROM mailflow_message WHERE state = 'done' AND lease_owner IS NULL),
                   (SELECT count(DISTINCT queue_id) FROM mailflow_trace_event WHERE kind = 'delivered'),
                   (SELECT count(*) FROM mailflow_trace_event WHERE kind = 'delivered')
            """, logger: Self.logger)
        for try await (done, distinct, events) in rows.decode((Int, Int, Int).self) {
            #expect(done == 200)
            #expect(distinct == 200)
            #expect(events == 200)
        }
        print(
            "shared queue: 200 messages inserted in one batch in \(inserted); claimed and recorded by 4 nodes in \(elapsed)"
        )
        try await c.close()
    }

    /// A lease that runs out is taken by the next node that claims; the first node's renewal and
    /// record are then refused, and only the second node's delivery is in the trace.
    @Test func anExpiredLeaseIsClaimedByAnotherNode() async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let m = Self.message(1)
        try await q.insert(c, [m])
        // Leases long enough that a loaded machine (700 tests in parallel on two cores) does not
        // let one run out between two calls that expect it held.
        let a = try await q.claimDue(c, node: "node-a", limit: 10, lease: .seconds(2))
        #expect(a.map(\.id) == [m.id])
        #expect(try await q.claimDue(c, node: "node-b", limit: 10, lease: .seconds(30)).isEmpty, "leased to node-a")
        try await Task.sleep(for: .milliseconds(2500))
        let b = try await q.claimDue(c, node: "node-b", limit: 10, lease: .seconds(30))
        #expect(b.map(\.id) == [m.id])
        #expect(b.first?.lease.epoch == 2)
        let check = try await q.renew(c, node: "node-a", leases: [a[0].lease], lease: .seconds(30))
        #expect(check.lost == [m.id])
        #expect(
            try await q.recordAttempt(
                c, node: "node-a", lease: a[0].lease, attempt: Self.attempt(m.id, Self.delivered(1)))
                == .leaseLost)
        #expect(
            try await q.recordAttempt(
                c, node: "node-b", lease: b[0].lease, attempt: Self.attempt(m.id, Self.delivered(1)))
                == .recorded(finished: true))
        let status = try #require(try await q.status(c, m.id))
        #expect(status.state == .done)
        #expect(status.leaseOwner == nil)
        #expect(status.recipients == [.delivered])
        let kinds = try await q.traceEvents(c, queueID: m.id).map(\.kind)
        #expect(kinds == [.received, .leaseExpired, .delivered], "the takeover is in the trace")
        try await c.close()
    }

    /// Renewing every lease/3 keeps a message past its first expiry: no other node gets it.
    @Test func renewKeepsALeasePastItsOriginalExpiry() async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let m = Self.message(1)
        try await q.insert(c, [m])
        // Long enough that a renewal on a loaded machine is not late (700 tests in parallel on two
        // cores); renewed every third of it, as the protocol says.
        let lease = Duration.seconds(3)
        let a = try await q.claimDue(c, node: "node-a", limit: 1, lease: lease)
        try #require(a.count == 1)
        for _ in 0..<4 {  // 4 x 1 s: past the first 3 s
            try await Task.sleep(for: .seconds(1))
            let check = try await q.renew(c, node: "node-a", leases: [a[0].lease], lease: lease)
            #expect(check == LeaseCheck())
            #expect(try await q.claimDue(c, node: "node-b", limit: 1, lease: lease).isEmpty)
        }
        #expect(
            try await q.recordAttempt(
                c, node: "node-a", lease: a[0].lease,
                attempt: Self.attempt(m.id, [0: .deferred(reason: "451 4.7.1 later")], next: Date()))
                == .recorded(finished: false))
        // Deferred and the lease freed: due again at once, for anyone.
        let again = try await q.claimDue(c, node: "node-b", limit: 1, lease: lease)
        #expect(again.map(\.id) == [m.id])
        #expect(again.first?.message.attempts == 1)
        #expect(again.first?.message.recipients.first?.lastReply == "451 4.7.1 later")
        try await c.close()
    }

    /// A record under a lease that is no longer this claim's writes nothing and says so, whether
    /// another node or the same node (a later claim) took the message since.
    @Test(arguments: ["node-b", "node-a"])
    func recordAttemptAfterLosingTheLeaseIsRefused(retaker: String) async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let m = Self.message(1, recipients: 2)
        try await q.insert(c, [m])
        let first = try await q.claimDue(c, node: "node-a", limit: 1, lease: .milliseconds(200))
        try #require(first.count == 1)
        try await Task.sleep(for: .milliseconds(400))
        let second = try await q.claimDue(c, node: retaker, limit: 1, lease: .seconds(30))
        try #require(second.count == 1)
        let stale = try await q.recordAttempt(
            c, node: "node-a", lease: first[0].lease, attempt: Self.attempt(m.id, Self.delivered(2)))
        #expect(stale == .leaseLost)
        let status = try #require(try await q.status(c, m.id))
        #expect(status.recipients == [.pending, .pending], "nothing written")
        #expect(status.attempts == 0)
        #expect(status.leaseOwner == retaker)
        #expect(
            try await q.traceEvents(c, queueID: m.id).map(\.kind) == [.received, .leaseExpired],
            "nothing written by the stale record; the takeover traced")
        let fresh = try await q.recordAttempt(
            c, node: retaker, lease: second[0].lease,
            attempt: Self.attempt(m.id, [0: .delivered(detail: "250 ok"), 1: .failed(reason: "550 5.1.1 no")]))
        #expect(fresh == .recorded(finished: true))
        #expect(try await q.status(c, m.id)?.recipients == [.delivered, .failed])
        try await c.close()
    }

    /// A held message is not claimable; a message held while leased is reported to its holder at
    /// renewal, its in-flight outcome is recorded, and it stays held until released.
    @Test func aHeldMessageIsNotClaimable() async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let m1 = Self.message(1)
        let m2 = Self.message(2)
        try await q.insert(c, [m1, m2])
        try await q.hold(c, m1.id, actor: "ops on node-b")
        #expect(try await q.claimDue(c, node: "node-a", limit: 10, lease: .seconds(30)).map(\.id) == [m2.id])
        #expect(try await q.claimDue(c, node: "node-a", limit: 10, lease: .seconds(30)).isEmpty)
        try await q.release(c, m1.id, actor: "ops")
        let claimed = try await q.claimDue(c, node: "node-a", limit: 10, lease: .seconds(30))
        #expect(claimed.map(\.id) == [m1.id])

        // Held while node-a has it.
        try await q.hold(c, m1.id, actor: "ops on node-b")
        let check = try await q.renew(c, node: "node-a", leases: [claimed[0].lease], lease: .seconds(30))
        #expect(check.held == [m1.id])
        #expect(check.lost.isEmpty)
        #expect(
            try await q.recordAttempt(
                c, node: "node-a", lease: claimed[0].lease,
                attempt: Self.attempt(m1.id, [0: .deferred(reason: "421 busy")], next: Date()))
                == .recorded(finished: false))
        let held = try #require(try await q.status(c, m1.id))
        #expect(held.state == .held)
        #expect(held.nextAttempt == nil)
        #expect(try await q.claimDue(c, node: "node-b", limit: 10, lease: .seconds(30)).isEmpty)
        await #expect(throws: SharedQueueError.self) { try await q.hold(c, m1.id, actor: "ops") }
        await #expect(throws: SharedQueueError.notFound("nope")) { try await q.release(c, "nope", actor: "ops") }
        try await q.release(c, m1.id, actor: "ops")
        #expect(try await q.claimDue(c, node: "node-b", limit: 10, lease: .seconds(30)).map(\.id) == [m1.id])
        let admin = try await q.traceEvents(c, queueID: m1.id).filter { $0.kind == .admin }.compactMap(\.detail)
        #expect(admin == ["hold by ops on node-b", "release by ops", "hold by ops on node-b", "release by ops"])
        try await c.close()
    }

    /// A bounce asked for on another node: the holder hears of it at renewal; after its record the
    /// message is due at once and the next claim carries the request.
    @Test func aBounceRequestReachesTheNextClaim() async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let m = Self.message(1)
        try await q.insert(c, [m])
        let a = try await q.claimDue(c, node: "node-a", limit: 1, lease: .seconds(30))
        #expect(a.first?.message.bounceRequested == false)
        try await q.requestBounce(c, m.id, actor: "ops")
        #expect(
            try await q.renew(c, node: "node-a", leases: [a[0].lease], lease: .seconds(30)).bounceRequested == [m.id])
        let later = Date().addingTimeInterval(3600)
        #expect(
            try await q.recordAttempt(
                c, node: "node-a", lease: a[0].lease,
                attempt: Self.attempt(m.id, [0: .deferred(reason: "x")], next: later))
                == .recorded(finished: false))
        let b = try await q.claimDue(c, node: "node-b", limit: 1, lease: .seconds(30))
        #expect(b.map(\.id) == [m.id], "due at once, not in an hour")
        #expect(b.first?.message.bounceRequested == true)
        try await c.close()
    }

    /// A failed attempt's DSN is queued, and its `dsn` event written, in the attempt's own
    /// transaction; the retry time, abrupt close and delay notice are kept.
    @Test func anAttemptStoresItsDSNInTheSameTransaction() async throws {
        let q = try await Self.queue()
        let c = try await connect(q)
        let m = Self.message(1, recipients: 2)
        try await q.insert(c, [m])
        let a = try await q.claimDue(c, node: "node-a", limit: 1, lease: .seconds(30))
        try #require(a.count == 1)
        var dsn = Self.message(99)
        dsn.sender = ""
        dsn.subject = "Undelivered Mail Returned to Sender"
        let attempt = SQLiteQueueStore.Attempt(
            messageID: m.id,
            outcomes: [0: .failed(reason: "550 5.1.1 no such user"), 1: .deferred(reason: "451 later")],
            nextAttempt: Date().addingTimeInterval(60), now: Date(), notifications: [dsn], abruptClose: true,
            delayNoticeSent: true)
        #expect(
            try await q.recordAttempt(c, node: "node-a", lease: a[0].lease, attempt: attempt)
                == .recorded(finished: false))
        let events = try await q.traceEvents(c, queueID: m.id)
        #expect(events.map(\.kind) == [.received, .dsn, .failed, .deferred])
        #expect(events[1].detail?.contains(dsn.id) == true)
        #expect(events[2].recipient == "r0@example.net")
        #expect(try await q.status(c, dsn.id)?.state == .queued)
        let b = try await q.claimDue(c, node: "node-b", limit: 10, lease: .seconds(30))
        #expect(b.map(\.id) == [dsn.id], "the DSN is due now, the message in a minute")
        let rows = try await c.query(
            "SELECT abrupt_closes, delay_notice_at IS NOT NULL FROM mailflow_message WHERE id = \(m.id)",
            logger: Self.logger)
        var kept: [(Int, Bool)] = []
        for try await row in rows.decode((Int, Bool).self) { kept.append(row) }
        #expect(kept.count == 1 && kept[0] == (1, true))
        try await c.close()
    }

    /// What `insert` returned for is committed: a new connection after the first is gone reads the
    /// envelope, recipients, body and `received` event back. A batch is all or nothing.
    @Test func durableInsertSurvivesAConnectionDrop() async throws {
        let q = try await Self.queue(timeout: .seconds(2))
        let c1 = try await connect(q)
        var m = Self.message(1, recipients: 3, body: "Subject: bytes\r\n\r\n\u{00E9}\0\u{FF}\r\n.\r\n")
        m.tls = "TLSv1.3"
        m.subject = "bytes"
        m.authentication = SenderAuthentication(
            field: "Authentication-Results: mx; spf=pass\r\n", spf: "pass", dkim: "none", dmarc: "none")
        m.recipients[1] = EnvelopeRecipient(
            address: "box@example.org", route: .local(domain: "example.org", mailbox: "box"),
            originalRecipient: OriginalRecipient(addressType: "rfc822", address: "Box@example.org"))
        try await q.insert(c1, [m])
        // Dropped from the server's side, as a crashed node's connection would be.
        let c2 = try await connect(q)
        try await c2.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            logger: Self.logger)
        await #expect {
            _ = try await q.status(c1, m.id)
        } throws: { error in
            guard case .unavailable = error as? SharedQueueError else { return false }
            return true
        }
        try? await c1.close()
        let claimed = try await q.claimDue(c2, node: "node-b", limit: 10, lease: .seconds(30))
        let got = try #require(claimed.first)
        guard case .inline(let body) = m.body else {
            Issue.record("inline body expected")
            return
        }
        #expect(got.message.body == .inline(body))
        #expect(got.message.recipients.map(\.recipient) == m.recipients)
        #expect(got.message.recipients.map(\.status) == [.pending, .pending, .pending])
        #expect(got.message.sender == m.sender)
        #expect(got.message.tls == "TLSv1.3")
        #expect(got.message.authentication == m.authentication)
        #expect(abs(got.message.receivedAt.timeIntervalSince(m.receivedAt)) < 0.001)
        let events = try await q.traceEvents(c2, queueID: m.id)
        #expect(events.map(\.kind) == [.received])
        #expect(events.first?.detail?.contains("rcpts=3") == true)

        // A batch holding a queue ID already stored fails whole, with the database's reason.
        let fresh = Self.message(2)
        await #expect {
            try await q.insert(c2, [fresh, m])
        } throws: { error in
            guard case .refused(let state, _) = error as? SharedQueueError else { return false }
            return state == "23505"
        }
        #expect(try await q.status(c2, fresh.id) == nil, "nothing of a failed batch is kept")
        try await c2.close()
    }

    /// A database that is not there, or that does not answer within the timeout, is
    /// `.unavailable`, which a session answers with `451 4.3.0`.
    @Test func aLostDatabaseIsUnavailableAndA451() async throws {
        let closed = try PostgresAddress(url: "postgres://postgres@127.0.0.1:\(try ThrowawayPostgres.freePort())/x")
        let nowhere = SharedQueue(database: closed, timeout: .seconds(2), logger: Self.logger)
        await #expect {
            _ = try await nowhere.connect(on: MultiThreadedEventLoopGroup.singleton)
        } throws: { error in
            guard case .unavailable = error as? SharedQueueError else { return false }
            return (error as? SharedQueueError)?.reply.description
                == "451 4.3.0 Local error in processing (queue database unavailable), try again later"
        }

        // A row locked by another transaction: the hold waits for it, and gives up at the timeout.
        // Only the hold has the short timeout: setting up with it failed a fresh-clone CI run (700
        // tests in parallel on two cores can hold a connect or a migration past 0.4 s).
        let q = try await Self.queue()
        let short = SharedQueue(database: q.database, timeout: .milliseconds(400), logger: Self.logger)
        let c = try await connect(q)
        let m = Self.message(1)
        try await q.insert(c, [m])
        let locker = try await connect(q)
        try await locker.query("BEGIN", logger: Self.logger)
        try await locker.query("SELECT 1 FROM mailflow_message WHERE id = \(m.id) FOR UPDATE", logger: Self.logger)
        let started = ContinuousClock.now
        await #expect {
            try await short.hold(c, m.id, actor: "ops")
        } throws: { error in
            guard case .unavailable(let why) = error as? SharedQueueError else { return false }
            return why.contains("did not answer")
        }
        #expect(ContinuousClock.now - started < .seconds(3))
        try await locker.query("ROLLBACK", logger: Self.logger)
        try await locker.close()
        try? await c.close()
    }
}
