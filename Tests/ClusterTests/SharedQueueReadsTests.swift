import Cluster
import Foundation
import Logging
import MailQueue
import NIOPosix
import PostgresNIO
import SMTPCore
import Testing

/// What `mailflow queue`, `mailflow trace` and `cluster status` read from the shared queue, against
/// a real PostgreSQL (`ThrowawayPostgres`): the same messages go into the shared queue and into a
/// real `SQLiteQueueStore`, go through the same changes, and every trace filter, the listing and
/// the message view must answer alike, with the counts each query should find.
struct SharedQueueReadsTests {
    static let logger = Logger(label: "shared-queue-reads-test")

    static func queue() async throws -> SharedQueue {
        let q = SharedQueue(
            database: try await ThrowawayPostgres.freshDatabase(), timeout: .seconds(10), logger: logger)
        try await q.withConnection { c in try await q.migrate(c) }
        return q
    }

    static func sqlite() throws -> SQLiteQueueStore {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sq-reads-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return try SQLiteQueueStore(path: dir.appendingPathComponent("queue.sqlite").path)
    }

    static func relay(_ address: String) -> EnvelopeRecipient {
        EnvelopeRecipient(
            address: address, route: .relay(domain: String(address.split(separator: "@")[1])),
            notify: DSNNotify(failure: true), originalRecipient: nil)
    }

    static func local(_ address: String) -> EnvelopeRecipient {
        let parts = address.split(separator: "@")
        return EnvelopeRecipient(
            address: address, route: .local(domain: String(parts[1]), mailbox: String(parts[0])))
    }

    static func message(
        _ id: String, at received: Date, from sender: String, to recipients: [EnvelopeRecipient],
        tenant: String? = nil, client: String = "127.0.0.1", messageID: String? = nil, subject: String? = nil,
        auth: (String, String, String)? = nil
    ) -> NewMessage {
        var m = NewMessage(
            id: id, receivedAt: received, sender: sender, recipients: recipients, size: 100 + id.count,
            clientAddress: client, helo: "client.test", protocolName: "ESMTP", tenant: tenant, messageID: messageID,
            subject: subject, body: .inline(Data("Subject: \(subject ?? "-")\r\n\r\nbody of \(id)\r\n".utf8)))
        if let (spf, dkim, dmarc) = auth {
            m.authentication = SenderAuthentication(
                field: "Authentication-Results: mx.test; spf=\(spf)\r\n", spf: spf, dkim: dkim, dmarc: dmarc)
        }
        return m
    }

    /// Six messages covering every filter: case, literal `_` and `%`, local and relayed
    /// recipients, tenants, clients, authentication results, and received times spread over two
    /// hours before `base`.
    static func corpus(base: Date) -> [NewMessage] {
        [
            message(
                "MSG0000000000001", at: base - 600, from: "Alice@Example.org",
                to: [relay("bob@example.net"), local("carol@corp.test")], tenant: "acme", client: "192.0.2.10",
                messageID: "<one@example.org>", subject: "Invoice 50%_off", auth: ("pass", "pass", "pass")),
            message(
                "MSG0000000000002", at: base - 300, from: "mallory@evil.test", to: [relay("dave@example.net")],
                client: "198.51.100.7", messageID: "<two@evil.test>", subject: "two", auth: ("fail", "none", "fail")),
            message(
                "MSG0000000000003", at: base - 60, from: "", to: [local("erin@corp.test")], tenant: "acme",
                messageID: "<three@corp.test>", subject: "Delivery report"),
            message(
                "MSG0000000000004", at: base - 7200, from: "a_b@example.org", to: [relay("frank@example.net")],
                subject: "old"),
            message("MSG0000000000005", at: base - 7100, from: "axb@example.org", to: [relay("gus@example.net")]),
            message("MSG0000000000006", at: base - 120, from: "gina@example.org", to: [relay("hank@example.net")]),
        ]
    }

    static let later = Date() + 3600

    /// The same story in both stores: 2 held, 4 deleted, 3 delivered, 6 deferred to `later`; 1 and
    /// 5 untouched (in PostgreSQL they stay leased to node-a, which a reader must not mind).
    static func sameStory(_ base: Date) async throws -> (SharedQueue, SQLiteQueueStore) {
        let q = try await queue()
        let s = try sqlite()
        let messages = corpus(base: base)
        try s.insert(messages)
        try s.control(.hold, id: "MSG0000000000002", actor: "ops")
        try s.control(.delete, id: "MSG0000000000004", actor: "ops")
        try s.recordAttempt(
            messageID: "MSG0000000000003", outcomes: [0: .delivered(detail: "250 2.0.0 ok")], nextAttempt: nil,
            now: Date())
        try s.recordAttempt(
            messageID: "MSG0000000000006", outcomes: [0: .deferred(reason: "451 4.7.1 try later")],
            nextAttempt: later, now: Date())
        try await q.withConnection { c in
            try await q.insert(c, messages)
            try await q.control(c, .hold, id: "MSG0000000000002", actor: "ops")
            try await q.control(c, .delete, id: "MSG0000000000004", actor: "ops")
            let claimed = try await q.claimDue(c, node: "node-a", limit: 10, lease: .seconds(60))
            #expect(
                Set(claimed.map(\.id)) == [
                    "MSG0000000000001", "MSG0000000000003", "MSG0000000000005", "MSG0000000000006",
                ])
            for m in claimed where m.id == "MSG0000000000003" {
                _ = try await q.recordAttempt(
                    c, node: "node-a", lease: m.lease,
                    attempt: SQLiteQueueStore.Attempt(
                        messageID: m.id, outcomes: [0: .delivered(detail: "250 2.0.0 ok")], nextAttempt: nil,
                        now: Date()))
            }
            for m in claimed where m.id == "MSG0000000000006" {
                _ = try await q.recordAttempt(
                    c, node: "node-a", lease: m.lease,
                    attempt: SQLiteQueueStore.Attempt(
                        messageID: m.id, outcomes: [0: .deferred(reason: "451 4.7.1 try later")], nextAttempt: later,
                        now: Date()))
            }
        }
        return (q, s)
    }

    /// A trace row as text, its times to the millisecond (PostgreSQL keeps microseconds, SQLite a
    /// double) and its events by kind, recipient and detail.
    static func text(_ r: SQLiteQueueStore.TraceRow) -> String {
        let events = r.events.map { "\($0.kind.rawValue)|\($0.recipient ?? "-")|\($0.detail ?? "-")" }
        return [
            r.queueID, String(Int((r.received.timeIntervalSince1970 * 1000).rounded())), r.sender, r.recipient,
            r.status, r.direction, r.subject ?? "-", r.messageID ?? "-", String(r.size), r.clientAddress,
            r.tenant ?? "-", r.lastReply ?? "-", r.spf ?? "-", r.dkim ?? "-", r.dmarc ?? "-",
        ].joined(separator: " ") + " [" + events.joined(separator: "; ") + "]"
    }

    /// Every filter of the trace, and what it must find: (query parameters, rows expected).
    static let traceCases: [([String: String], Int)] = [
        ([:], 7),
        (["sender": "ALICE"], 2),  // substring, without regard to case (SQLite's LIKE)
        (["sender": "a_b"], 1),  // `_` is literal: not axb@
        (["message_id": "two@"], 1),
        (["recipient": "EXAMPLE.NET"], 5),
        (["queue_id": "MSG0000000000003"], 1),
        (["queue_id": "MSG000000000000"], 0),  // exact, not a substring
        (["status": "held"], 1),
        (["status": "delivered"], 1),
        (["status": "failed"], 1),
        (["status": "pending"], 5),  // a held message's pending recipient too, as in SQLite
        (["client_ip": "192.0.2.10"], 2),
        (["tenant": "acme"], 3),
        (["direction": "inbound"], 2),
        (["direction": "outbound"], 5),
        (["since": "30m"], 5),
        (["until": "90m"], 2),
        (["since": "8m", "until": "3m"], 1),
        (["spf": "pass"], 2),
        (["dkim": "none"], 1),
        (["dmarc": "fail"], 1),
        (["tenant": "acme", "direction": "inbound"], 2),
        (["limit": "3"], 3),
    ]

    @Test func everyTraceFilterAnswersAsSQLiteDoes() async throws {
        let base = Date()
        let (q, s) = try await Self.sameStory(base)
        for (parameters, expected) in Self.traceCases {
            let query = try SQLiteQueueStore.TraceQuery(parameters: parameters, now: base)
            let shared = try await q.withConnection { c in try await q.trace(c, query) }
            let local = try s.trace(query)
            #expect(shared.count == expected, "\(parameters): \(shared.map(Self.text))")
            #expect(shared.map(Self.text) == local.map(Self.text), "\(parameters)")
        }
    }

    @Test func traceRowsCarryStatusDirectionReplyAndEvents() async throws {
        let base = Date()
        let (q, _) = try await Self.sameStory(base)
        let rows = try await q.withConnection { c in try await q.trace(c, SQLiteQueueStore.TraceQuery()) }
        // Newest first, a message's recipients in their order.
        #expect(
            rows.map(\.queueID) == [
                "MSG0000000000003", "MSG0000000000006", "MSG0000000000002", "MSG0000000000001", "MSG0000000000001",
                "MSG0000000000005", "MSG0000000000004",
            ])
        let held = try #require(rows.first { $0.queueID == "MSG0000000000002" })
        #expect(held.status == "Held")
        #expect(held.events.map(\.kind) == [.received, .admin])
        #expect(held.events.last?.detail == "hold by ops")
        let deferred = try #require(rows.first { $0.queueID == "MSG0000000000006" })
        #expect(deferred.status == "Pending")
        #expect(deferred.lastReply == "451 4.7.1 try later")
        #expect(deferred.events.map(\.kind) == [.received, .deferred])
        let one = rows.filter { $0.queueID == "MSG0000000000001" }
        #expect(one.map(\.direction) == ["Outbound", "Inbound"])
        #expect(one.map(\.recipient) == ["bob@example.net", "carol@corp.test"])
        #expect(one.allSatisfy { $0.spf == "pass" && $0.tenant == "acme" && $0.subject == "Invoice 50%_off" })
        let deleted = try #require(rows.first { $0.queueID == "MSG0000000000004" })
        #expect(deleted.status == "Failed")
        #expect(deleted.lastReply == "deleted by an administrator (ops), no report sent")
    }

    @Test func listingMatchesSQLiteWithAndWithoutFinishedMessages() async throws {
        let (q, s) = try await Self.sameStory(Date())
        func text(_ l: SQLiteQueueStore.QueueListing) -> String {
            "\(l.id) \(l.sender) \(l.recipients) \(l.size) \(l.state) \(l.attempts) \(l.nextAttempt != nil)"
        }
        // The next attempts within a second: the shared queue reckons a deferral's wait from the
        // database's clock when it records (SharedQueueClockTests), SQLite from the attempt's time.
        func sameTimes(_ a: [SQLiteQueueStore.QueueListing], _ b: [SQLiteQueueStore.QueueListing]) -> Bool {
            zip(a, b).allSatisfy { x, y in
                switch (x.nextAttempt, y.nextAttempt) {
                case (nil, nil): true
                case (let t?, let u?): abs(t.timeIntervalSince(u)) < 1
                default: false
                }
            }
        }
        try await q.withConnection { c in
            let open = try await q.list(c)
            #expect(
                open.map(\.id) == ["MSG0000000000001", "MSG0000000000002", "MSG0000000000005", "MSG0000000000006"])
            #expect(open.map(text) == (try s.list()).map(text))
            #expect(sameTimes(open, try s.list()))
            let all = try await q.list(c, includeDone: true)
            #expect(all.count == 6)
            #expect(all.map(text) == (try s.list(includeDone: true)).map(text))
            #expect(sameTimes(all, try s.list(includeDone: true)))
            #expect(
                try await q.list(c, tenant: "acme", includeDone: true).map(\.id) == [
                    "MSG0000000000001", "MSG0000000000003",
                ])
            #expect(
                try await q.list(c, includeDone: true, limit: 2).map(\.id) == ["MSG0000000000001", "MSG0000000000002"])
            let one = try #require(open.first)
            #expect(one.recipients == ["bob@example.net", "carol@corp.test"])
            #expect(open.first { $0.id == "MSG0000000000002" }?.nextAttempt == nil)  // held
        }
    }

    @Test func aMessageReadsBackAsSQLiteStoresIt() async throws {
        let (q, s) = try await Self.sameStory(Date())
        func rounded(_ m: StoredMessage?) -> StoredMessage? {
            guard var m else { return nil }
            func ms(_ d: Date) -> Date {
                Date(timeIntervalSince1970: (d.timeIntervalSince1970 * 1000).rounded() / 1000)
            }
            m.receivedAt = ms(m.receivedAt)
            m.nextAttempt = m.nextAttempt.map(ms)
            m.delayNoticeSentAt = m.delayNoticeSentAt.map(ms)
            return m
        }
        try await q.withConnection { c in
            for id in (1...6).map({ String(format: "MSG%013d", $0) }) {
                var shared = try await q.message(c, id)
                let local = try s.message(id)
                #expect(shared != nil, "\(id)")
                // A deferral's next attempt is reckoned on the database's clock in the shared queue
                // (SharedQueueClockTests): the same within a second, then compared as equal.
                if let t = shared?.nextAttempt, let u = local?.nextAttempt {
                    #expect(abs(t.timeIntervalSince(u)) < 1, "\(id)")
                    shared?.nextAttempt = u
                }
                #expect(rounded(shared) == rounded(local), "\(id)")
            }
            let one = try #require(try await q.message(c, "MSG0000000000001"))
            #expect(
                one.recipients.map(\.recipient.route) == [
                    .relay(domain: "example.net"), .local(domain: "corp.test", mailbox: "carol"),
                ])
            #expect(one.authentication?.dmarc == "pass")
            #expect(one.body == .inline(Data("Subject: Invoice 50%_off\r\n\r\nbody of MSG0000000000001\r\n".utf8)))
            #expect(try await q.message(c, "MSG0000000000004")?.body == nil)  // deleted: body dropped
            #expect(try await q.message(c, "MSGXXXXXXXXXXXXX") == nil)
            // Message 1 is leased to node-a (claimed, not recorded); 3 was recorded, which frees it.
            #expect(try await q.leaseHolder(c, "MSG0000000000001")?.node == "node-a")
            #expect(try await q.leaseHolder(c, "MSG0000000000003") == nil)
        }
    }

    @Test func qshapeMatchesSQLite() async throws {
        let base = Date()
        let (q, s) = try await Self.sameStory(base)
        // 30 s past `base`: the corpus's times sit on bucket bounds (5 and 10 minutes), where
        // PostgreSQL's microseconds and SQLite's double could fall either side.
        let now = base + 30
        let shape = try await q.withConnection { c in try await q.shape(c, now: now) }
        let local = try s.shape(now: now)
        #expect(shape == local, "\(shape) vs \(local)")
        // Pending recipients of queued and held messages: example.net 4 (bob, dave, gus, hank), corp.test 1.
        #expect(shape.map(\.domain) == ["example.net", "corp.test"])
        #expect(shape.map(\.total) == [4, 1])
        // By age: hank 2.5 min, dave 5.5, bob 10.5, gus 118.8 (buckets <5, <10, <20, <160 minutes).
        #expect(shape.first?.buckets == [1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    }

    /// Retry and delete from one node, with SQLite's outcomes, errors and admin events; a retry
    /// makes a deferred message claimable by another node at once.
    @Test func retryAndDeleteWorkFromAnyNode() async throws {
        let q = try await Self.queue()
        let base = Date()
        try await q.withConnection { c in
            try await q.insert(c, Self.corpus(base: base))
            // node-a defers message 6 by an hour.
            let claimed = try await q.claimDue(c, node: "node-a", limit: 10, lease: .seconds(60))
            for m in claimed {
                _ = try await q.recordAttempt(
                    c, node: "node-a", lease: m.lease,
                    attempt: SQLiteQueueStore.Attempt(
                        messageID: m.id, outcomes: [0: .deferred(reason: "451 later")], nextAttempt: Self.later,
                        now: Date()))
            }
            #expect(try await q.claimDue(c, node: "node-b", limit: 10, lease: .seconds(60)).isEmpty)

            // An operator on node-b retries it: due now, and node-b claims it.
            let retried = try await q.control(c, .retry, id: "MSG0000000000006", actor: "ops")
            #expect(
                retried == SQLiteQueueStore.ControlResult(queueID: "MSG0000000000006", action: .retry, outcome: .dueNow)
            )
            #expect(retried.outcome.summary == "due now")
            let now = try #require(try await q.status(c, "MSG0000000000006")?.nextAttempt)
            #expect(now < Date() + 5)
            #expect(
                try await q.claimDue(c, node: "node-b", limit: 10, lease: .seconds(60)).map(\.id) == [
                    "MSG0000000000006"
                ])
            #expect(try await q.traceEvents(c, queueID: "MSG0000000000006").last?.detail == "retry by ops")

            // Retry applies to queued messages only.
            try await q.control(c, .hold, id: "MSG0000000000002", actor: "ops")
            await #expect(
                throws: SharedQueueError.notApplicable(
                    "MSG0000000000002", "only a queued message can be retried (it is held)")
            ) {
                try await q.control(c, .retry, id: "MSG0000000000002", actor: "ops")
            }
            await #expect(throws: SharedQueueError.notFound("MSGXXXXXXXXXXXXX")) {
                try await q.control(c, .retry, id: "MSGXXXXXXXXXXXXX", actor: "ops")
            }

            // Delete works on a held message too.
            let deleted = try await q.control(c, .delete, id: "MSG0000000000002", actor: "alice")
            #expect(deleted.outcome == .deleted)
            #expect(deleted.outcome.summary == "deleted: no report to the sender")
            #expect(deleted.releasedSpoolPath == nil)
            let status = try #require(try await q.status(c, "MSG0000000000002"))
            #expect(status.state == .done)
            #expect(status.nextAttempt == nil)
            #expect(status.recipients == [.failed])
            #expect(try await q.message(c, "MSG0000000000002")?.body == nil)
            #expect(
                try await q.message(c, "MSG0000000000002")?.recipients.first?.lastReply
                    == "deleted by an administrator (alice), no report sent")
            let events = try await q.traceEvents(c, queueID: "MSG0000000000002")
            #expect(events.map(\.kind) == [.received, .deferred, .admin, .admin])
            #expect(events.last?.detail == "delete by alice (no report to the sender)")
            await #expect(throws: SharedQueueError.notApplicable("MSG0000000000002", "the message is already done")) {
                try await q.control(c, .delete, id: "MSG0000000000002", actor: "alice")
            }
            // A deleted message is never claimed again, and release does not revive it.
            await #expect(throws: SharedQueueError.self) {
                try await q.control(c, .release, id: "MSG0000000000002", actor: "alice")
            }
            try await q.control(c, .retry, id: "MSG0000000000005", actor: "ops")
            #expect(
                try await q.claimDue(c, node: "node-c", limit: 10, lease: .seconds(60)).map(\.id) == [
                    "MSG0000000000005"
                ])
        }
    }

    /// Deleting a message with a delivered recipient fails only the pending ones.
    @Test func deleteFailsOnlyPendingRecipients() async throws {
        let q = try await Self.queue()
        try await q.withConnection { c in
            try await q.insert(c, [Self.corpus(base: Date())[0]])
            let m = try #require(try await q.claimDue(c, node: "node-a", limit: 1, lease: .seconds(60)).first)
            _ = try await q.recordAttempt(
                c, node: "node-a", lease: m.lease,
                attempt: SQLiteQueueStore.Attempt(
                    messageID: m.id, outcomes: [0: .delivered(detail: "250 ok"), 1: .deferred(reason: "451 later")],
                    nextAttempt: Self.later, now: Date()))
            try await q.control(c, .delete, id: m.id, actor: "ops")
            #expect(try await q.status(c, m.id)?.recipients == [.delivered, .failed])
        }
    }

    /// Leases running now, per node, on the database's clock; a database without the queue's tables
    /// answers nil, not an error.
    @Test func leasesHeldPerNode() async throws {
        let address = try await ThrowawayPostgres.freshDatabase()
        let q = SharedQueue(database: address, timeout: .seconds(10), logger: Self.logger)
        try await q.withConnection { c in
            #expect(try await q.leasesHeld(c) == nil)
            try await q.migrate(c)
            #expect(try await q.leasesHeld(c) == [:])
            try await q.insert(
                c,
                (1...6).map {
                    Self.message(
                        String(format: "L%015d", $0), at: Date(), from: "a@b.test", to: [Self.relay("x@y.test")])
                })
            let a = try await q.claimDue(c, node: "node-a", limit: 3, lease: .seconds(60))
            _ = try await q.claimDue(c, node: "node-b", limit: 1, lease: .seconds(60))
            _ = try await q.claimDue(c, node: "node-c", limit: 1, lease: .seconds(3))
            #expect(try await q.leasesHeld(c) == ["node-a": 3, "node-b": 1, "node-c": 1])
            // A recorded attempt frees its lease; a lease run out no longer counts.
            _ = try await q.recordAttempt(
                c, node: "node-a", lease: a[0].lease,
                attempt: SQLiteQueueStore.Attempt(
                    messageID: a[0].id, outcomes: [0: .delivered(detail: "250 ok")], nextAttempt: nil, now: Date()))
            try await Task.sleep(for: .milliseconds(3500))
            #expect(try await q.leasesHeld(c) == ["node-a": 2, "node-b": 1])
        }
    }
}
