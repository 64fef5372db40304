import Cluster
import Foundation
import MailQueue
import SMTPCore
import Testing

/// The queue's behaviour through its two seams, `LeasedQueue` (what delivery does: accept, claim,
/// record, release) and `QueueControl` (what an administrator does and reads), run against both
/// stores: SQLite (`LocalQueueControl`, and the store's scheduling calls as the single-node
/// scheduler makes them, `SQLiteLeasedQueue`) and the shared queue in a real PostgreSQL
/// (`SharedQueueNode`, `SharedQueueControl`). Each test states one behaviour once; a store that
/// answers differently fails its case.
struct BothStoresQueueTests {
    static let stores = QueueStoreKind.allCases

    /// Acceptance: queued, due at once, each recipient pending, one `received` event, counted.
    @Test(arguments: stores)
    func acceptedMessagesAreQueuedDueAndTraced(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let one = bothStoresMessage(1, to: ["r0@example.net", "r1@example.net"])
        try await q.accept([one, bothStoresMessage(2)])
        #expect(
            try await q.control.queueCounts()
                == .init(queuedMessages: 2, heldMessages: 0, pendingRecipients: 3, deferredMessages: 0))
        let m = try await q.stored(one.id)
        #expect(m.state == .queued)
        #expect(m.attempts == 0)
        #expect(m.recipients.map(\.status) == [.pending, .pending])
        #expect(m.recipients.map(\.recipient.address) == ["r0@example.net", "r1@example.net"])
        #expect(m.body == one.body)
        #expect(m.sender == one.sender && m.subject == one.subject && m.clientAddress == one.clientAddress)
        let events = try await q.control.traceEvents(queueID: one.id)
        #expect(events.map(\.kind) == [.received])
        #expect(events.first?.detail == one.receivedEvent.detail)
        #expect(try await q.leased.secondsUntilNextClaimable() == 0)
        #expect(
            try await q.control.list(tenant: nil, includeDone: false, limit: 10).map(\.id) == [
                one.id, "B000000000000002",
            ])
        await q.stop()
    }

    /// Every envelope fact survives the store: what a claim hands to delivery and what queue
    /// control shows are the message as accepted (times to the millisecond: PostgreSQL keeps
    /// microseconds, SQLite a double).
    @Test(arguments: stores)
    func aMessageReadsBackWholeThroughClaimAndControl(store: QueueStoreKind) async throws {
        let q = try await store.make()
        var m = bothStoresMessage(1, to: ["r0@example.net", "local:contoso.test/alice"], tenant: "contoso")
        m.recipients[0].notify = DSNNotify(success: true, failure: true, delay: true)
        m.recipients[0].originalRecipient = OriginalRecipient(addressType: "rfc822", address: "Orig@Example.net")
        m.bodyType = .eightBitMIME
        m.smtpUTF8 = true
        m.ret = .headers
        m.envelopeID = "env-1+2B"
        m.tls = "TLSv1.3 TLS_AES_128_GCM_SHA256"
        m.addMessageID = true
        m.stampLength = 42
        m.addDate = true
        m.authentication = SenderAuthentication(
            field: "Authentication-Results: mx.test; spf=pass\r\n", spf: "pass", dkim: "fail", dmarc: "none")
        try await q.accept([m])
        let claimed = try #require(try await q.leased.claim(limit: 1).first)
        let shown = try await q.stored(m.id)
        for read in [claimed, shown] {
            #expect(read.id == m.id && read.sender == m.sender && read.size == m.size)
            #expect(abs(read.receivedAt.timeIntervalSince(m.receivedAt)) < 0.001)
            #expect(read.bodyType == .eightBitMIME && read.smtpUTF8 && read.ret == .headers)
            #expect(read.envelopeID == "env-1+2B" && read.tls == m.tls && read.tenant == "contoso")
            #expect(read.clientAddress == m.clientAddress && read.helo == m.helo && read.protocolName == "ESMTP")
            #expect(read.messageID == m.messageID && read.addMessageID && read.subject == m.subject)
            #expect(read.stampLength == 42 && read.addDate)
            #expect(read.authentication == m.authentication)
            #expect(read.recipients.map(\.recipient) == m.recipients)
            #expect(read.recipients.map(\.index) == [0, 1])
            #expect(read.body == m.body)
            #expect(read.state == .queued && !read.bounceRequested && read.abruptCloses == 0)
            #expect(read.delayNoticeSentAt == nil)
        }
        await q.stop()
    }

    /// Claims take due messages earliest first, each once while it is in flight; a release gives
    /// one back to be claimed again.
    @Test(arguments: stores)
    func claimsTakeEarliestFirstOnceAndAReleaseGivesBack(store: QueueStoreKind) async throws {
        let q = try await store.make()
        try await q.accept([
            bothStoresMessage(1, age: 10), bothStoresMessage(2, age: 30), bothStoresMessage(3, age: 20),
        ])
        #expect(try await q.claimIDs(limit: 2) == ["B000000000000002", "B000000000000003"])
        let last = try await q.leased.claim(limit: 10)
        #expect(last.map(\.id) == ["B000000000000001"])
        #expect(last.first?.body == .inline(Data("Subject: both 1\r\n\r\nbody 1\r\n".utf8)), "the body comes with it")
        #expect(try await q.claimIDs().isEmpty, "all three in flight")
        #expect(try await q.leased.secondsUntilNextClaimable() == nil)
        await q.leased.release("B000000000000003")
        #expect(try await q.claimIDs() == ["B000000000000003"])
        #expect(try await q.stored("B000000000000003").attempts == 0, "a release is no attempt")
        await q.stop()
    }

    /// A delivered message is done: its body gone, out of the open listing, nothing left to claim.
    @Test(arguments: stores)
    func aDeliveredMessageIsDoneAndDropsItsBody(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1, to: ["r0@example.net", "r1@example.net"])
        try await q.accept([m])
        _ = try await q.claimIDs()
        let record = try await q.record(
            m.id, [0: .delivered(detail: "250 2.0.0 ok"), 1: .delivered(detail: "250 2.0.0 fine")])
        #expect(record == .recorded(finished: true))
        let done = try await q.stored(m.id)
        #expect(done.state == .done)
        #expect(done.body == nil)
        #expect(done.nextAttempt == nil)
        #expect(done.attempts == 1)
        #expect(done.recipients.map(\.status) == [.delivered, .delivered])
        #expect(done.recipients.map(\.lastReply) == ["250 2.0.0 ok", "250 2.0.0 fine"])
        #expect(try await q.control.traceEvents(queueID: m.id).map(\.kind) == [.received, .delivered, .delivered])
        #expect(try await q.control.list(tenant: nil, includeDone: false, limit: 10).isEmpty)
        #expect(try await q.control.list(tenant: nil, includeDone: true, limit: 10).map(\.state) == ["done"])
        #expect(
            try await q.control.queueCounts()
                == .init(queuedMessages: 0, heldMessages: 0, pendingRecipients: 0, deferredMessages: 0))
        #expect(try await q.leased.secondsUntilNextClaimable() == nil)
        #expect(try await q.claimIDs().isEmpty)
        await q.stop()
    }

    /// A partial delivery: the deferred recipient stays pending until the next attempt, which is
    /// when the message can be claimed again; the message counts as deferred.
    @Test(arguments: stores)
    func aDeferralWaitsForItsNextAttempt(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1, to: ["r0@example.net", "r1@example.net"])
        try await q.accept([m])
        _ = try await q.claimIDs()
        let next = Date().addingTimeInterval(300)
        let record = try await q.record(
            m.id, [0: .delivered(detail: "250 ok"), 1: .deferred(reason: "451 4.7.1 greylisted")], next: next)
        #expect(record == .recorded(finished: false))
        let stored = try await q.stored(m.id)
        #expect(stored.state == .queued)
        #expect(stored.attempts == 1)
        // PostgreSQL puts the wait on its own clock (now() + 300 s, SharedQueueClockTests): the
        // same instant give or take the time the record took to reach the database.
        #expect(abs(try #require(stored.nextAttempt).timeIntervalSince(next)) < 2)
        #expect(stored.recipients.map(\.status) == [.delivered, .pending])
        #expect(stored.recipients[1].lastReply == "451 4.7.1 greylisted")
        #expect(stored.recipients.map(\.attempts) == [1, 1])
        #expect(stored.body == m.body, "kept for the next attempt")
        #expect(
            try await q.control.queueCounts()
                == .init(queuedMessages: 1, heldMessages: 0, pendingRecipients: 1, deferredMessages: 1))
        #expect(try await q.claimIDs().isEmpty, "not due for five minutes")
        let wait = try #require(try await q.leased.secondsUntilNextClaimable())
        #expect(wait > 240 && wait <= 300, "about five minutes (less the time this test took since)")
        let listed = try #require(try await q.control.list(tenant: nil, includeDone: false, limit: 10).first)
        #expect(listed.attempts == 1 && listed.state == "queued")
        await q.stop()
    }

    /// Abrupt closes and the delay notice are counted on the message; DSNs queued with an attempt
    /// are new messages from the null sender, each traced on the original.
    @Test(arguments: stores)
    func anAttemptCarriesItsCountersAndReports(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1)
        try await q.accept([m])
        _ = try await q.claimIDs()
        let dsn = bothStoresMessage(9, to: ["local:example.org/a"], sender: "")
        let record = try await q.record(
            m.id, [0: .deferred(reason: "421 4.4.2 closed")], next: Date().addingTimeInterval(60),
            notifications: [dsn], abruptClose: true, delayNoticeSent: true)
        #expect(record == .recorded(finished: false))
        let stored = try await q.stored(m.id)
        #expect(stored.abruptCloses == 1)
        #expect(abs(try #require(stored.delayNoticeSentAt).timeIntervalSinceNow) < 120)
        let report = try await q.stored(dsn.id)
        #expect(report.sender == "" && report.state == .queued)
        #expect(report.recipients.map(\.recipient.route) == [.local(domain: "example.org", mailbox: "a")])
        let events = try await q.control.traceEvents(queueID: m.id)
        #expect(events.map(\.kind) == [.received, .dsn, .deferred])
        #expect(events[1].detail == "DSN \(dsn.id) (both 9) to <a@example.org>")
        #expect(try await q.claimIDs() == [dsn.id], "the report is due at once, the original in a minute")
        await q.stop()
    }

    /// A failed recipient ends the message like a delivered one, with the failure's reply.
    @Test(arguments: stores)
    func aFailureIsFinal(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1)
        try await q.accept([m])
        _ = try await q.claimIDs()
        #expect(try await q.record(m.id, [0: .failed(reason: "550 5.1.1 no such user")]) == .recorded(finished: true))
        let stored = try await q.stored(m.id)
        #expect(stored.state == .done && stored.body == nil)
        #expect(stored.recipients.first?.status == .failed)
        #expect(stored.recipients.first?.lastReply == "550 5.1.1 no such user")
        let trace = try await q.control.trace(try SQLiteQueueStore.TraceQuery(parameters: ["queue_id": m.id]))
        #expect(trace.map(\.status) == ["Failed"])
        #expect(trace.first?.lastReply == "550 5.1.1 no such user")
        await q.stop()
    }
}
