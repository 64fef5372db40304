import Delivery
import Foundation
import Logging
import MailQueue
import SMTPCore
import Testing

func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mailflow-test-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func newMessage(_ id: String, rcpts: [String] = ["local:contoso.test/alice"], body: String = "Subject: t\r\n\r\nhi\r\n")
    -> NewMessage
{
    NewMessage(
        id: id, receivedAt: Date(), sender: "s@x.test",
        recipients: rcpts.map {
            EnvelopeRecipient(address: "\($0.split(separator: "/").last!)@contoso.test", route: Route(stored: $0)!)
        },
        size: body.utf8.count, clientAddress: "127.0.0.1", helo: "c", protocolName: "ESMTP",
        messageID: "<\(id)@mx.test>", addMessageID: true, body: .inline(Data(body.utf8)))
}

struct QueueStoreTests {
    @Test func insertAppendsReceivedTraceInSameTransaction() throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        try store.insert([
            newMessage("A"), newMessage("B", rcpts: ["local:contoso.test/alice", "local:contoso.test/bob"]),
        ])
        #expect(try store.dueMessageIDs(now: Date().addingTimeInterval(1), limit: 10).sorted() == ["A", "B"])
        let b = try #require(try store.message("B"))
        #expect(b.recipients.count == 2)
        #expect(b.recipients.allSatisfy { $0.status == .pending })
        #expect(try store.traceEvents(queueID: "B").map(\.kind) == [.received])
    }

    @Test func attemptsUpdateRecipientsTraceAndSchedule() throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        try store.insert([newMessage("A", rcpts: ["local:contoso.test/alice", "local:contoso.test/bob"])])
        let now = Date()
        let later = now.addingTimeInterval(300)
        try store.recordAttempt(
            messageID: "A", outcomes: [0: .delivered(detail: "ok"), 1: .deferred(reason: "451 4.3.0 disk")],
            nextAttempt: later, now: now)
        #expect(try store.dueMessageIDs(now: now, limit: 10).isEmpty)
        #expect(try store.dueMessageIDs(now: later, limit: 10) == ["A"])
        #expect(abs(try #require(try store.nextDueTime()).timeIntervalSince(later)) < 0.001)
        try store.recordAttempt(messageID: "A", outcomes: [1: .failed(reason: "550")], nextAttempt: nil, now: later)
        let m = try #require(try store.message("A"))
        #expect(m.state == .done)
        #expect(m.body == nil)
        #expect(m.recipients.map(\.status) == [.delivered, .failed])
        #expect(try store.traceEvents(queueID: "A").map(\.kind) == [.received, .delivered, .deferred, .failed])
        #expect(try store.nextDueTime() == nil)
    }

    @Test func groupCommitSharesTransactions() async throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        let committer = GroupCommitter(store: store)
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<200 {
                g.addTask { try await committer.commit(newMessage(String(format: "M%05d", i))) }
            }
            try await g.waitForAll()
        }
        let stats = committer.statistics
        #expect(stats.messages == 200)
        // 200 concurrent acceptances must not cost 200 transactions.
        #expect(stats.batches < 200)
        #expect(try store.counts().queued == 200)
        committer.shutdown()
        // After shutdown, commits are refused, never silently dropped.
        await #expect(throws: GroupCommitter.CommitterStopped.self) { try await committer.commit(newMessage("LATE")) }
    }

    @Test func queueIDsSortByTimeAndAreValid() {
        var rng = SystemRandomNumberGenerator()
        let a = QueueID.generate(now: Date(timeIntervalSince1970: 1_000_000), using: &rng)
        let b = QueueID.generate(now: Date(timeIntervalSince1970: 1_000_001), using: &rng)
        #expect(a < b)
        #expect(QueueID.isValid(a))
        #expect(!QueueID.isValid("short"))
    }

    @Test func spoolOrphansAreRemoved() throws {
        let dir = try temporaryDirectory()
        let spool = try Spool(directory: "\(dir)/spool")
        _ = FileManager.default.createFile(atPath: spool.path(for: "KEEP"), contents: Data("x".utf8))
        _ = FileManager.default.createFile(atPath: spool.path(for: "ORPHAN"), contents: Data("x".utf8))
        #expect(spool.removeOrphans(keeping: [spool.path(for: "KEEP")]) == 1)
        #expect(FileManager.default.fileExists(atPath: spool.path(for: "KEEP")))
        #expect(!FileManager.default.fileExists(atPath: spool.path(for: "ORPHAN")))
    }
}

struct MaildirDeliveryTests {
    func setup() throws -> (String, SQLiteQueueStore, Spool, MaildirDelivery) {
        let dir = try temporaryDirectory()
        return (
            dir, try SQLiteQueueStore(path: "\(dir)/q.sqlite"), try Spool(directory: "\(dir)/spool"),
            MaildirDelivery(root: "\(dir)/mailboxes", hostname: "mx.test")
        )
    }

    func files(_ dir: String, _ sub: String = "new") -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: "\(dir)/mailboxes/contoso.test/alice/\(sub)")) ?? []
    }

    @Test func deliversOnceWithReturnPathAndMessageID() async throws {
        let (dir, store, spool, maildir) = try setup()
        try store.insert([newMessage("A")])
        let sched = DeliveryScheduler(store: store, spool: spool, maildir: maildir, logger: Logger(label: "t"))
        await sched.attempt("A")
        await sched.attempt("A")  // a second attempt of a done message does nothing
        let names = files(dir)
        #expect(names == ["A.R0.mx.test"])
        let text = try String(contentsOfFile: "\(dir)/mailboxes/contoso.test/alice/new/\(names[0])", encoding: .utf8)
        #expect(text == "Return-Path: <s@x.test>\r\nMessage-ID: <A@mx.test>\r\nSubject: t\r\n\r\nhi\r\n")
        #expect(try store.message("A")?.state == .done)
        #expect(files(dir, "tmp").isEmpty)
    }

    @Test func crashAfterRenameDoesNotDuplicate() async throws {
        let (dir, store, spool, maildir) = try setup()
        try store.insert([newMessage("A")])
        let m = try #require(try store.message("A"))
        // The file landed but the queue never heard: the state a crash between rename and commit leaves.
        _ = try maildir.deliver(
            message: m, recipientIndex: 0, domain: "contoso.test", localPart: "alice", bodyPrefix: Data(),
            body: MessageBodyReader(body: m.body!), scanCur: false)
        // A mail reader moved it to cur/ with flags meanwhile.
        try FileManager.default.moveItem(
            atPath: "\(dir)/mailboxes/contoso.test/alice/new/A.R0.mx.test",
            toPath: "\(dir)/mailboxes/contoso.test/alice/cur/A.R0.mx.test:2,S")
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: maildir, logger: Logger(label: "t"),
            now: { Date().addingTimeInterval(10) })
        await sched.attempt("A")
        #expect(files(dir).isEmpty)
        #expect(files(dir, "cur") == ["A.R0.mx.test:2,S"])
        #expect(try store.message("A")?.state == .done)
    }

    @Test func failedDeliveryIsDeferredAndRetriedNotLost() async throws {
        let (dir, store, spool, maildir) = try setup()
        try store.insert([newMessage("A")])
        // A file where the mailbox folder should be makes delivery fail.
        try FileManager.default.createDirectory(
            atPath: "\(dir)/mailboxes/contoso.test", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(dir)/mailboxes/contoso.test/alice", contents: Data())
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: maildir,
            retry: RetrySchedule(intervals: [60], expiry: 3600, jitter: 0),
            logger: Logger(label: "t"))
        await sched.attempt("A")
        let m = try #require(try store.message("A"))
        #expect(m.state == .queued)
        #expect(m.recipients[0].status == .pending)
        #expect(m.recipients[0].lastReply?.hasPrefix("451 4.3.0") == true)
        #expect(try store.traceEvents(queueID: "A").map(\.kind) == [.received, .deferred])
        // Fixed: the retry delivers.
        try FileManager.default.removeItem(atPath: "\(dir)/mailboxes/contoso.test/alice")
        await sched.attempt("A")
        #expect(files(dir) == ["A.R0.mx.test"])
    }

    @Test func expiryFailsWith447() async throws {
        let (dir, store, spool, maildir) = try setup()
        try store.insert([newMessage("A")])
        try FileManager.default.createDirectory(
            atPath: "\(dir)/mailboxes/contoso.test", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(dir)/mailboxes/contoso.test/alice", contents: Data())
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: maildir, retry: RetrySchedule(intervals: [60], expiry: 3600),
            logger: Logger(label: "t"), now: { Date().addingTimeInterval(7200) })
        await sched.attempt("A")
        let m = try #require(try store.message("A"))
        #expect(m.state == .done)
        #expect(m.recipients[0].status == .failed)
        #expect(m.recipients[0].lastReply?.contains("4.4.7") == true)
    }

    @Test func spooledBodiesAreDeliveredAndRemoved() async throws {
        let (dir, store, spool, maildir) = try setup()
        let body = String(repeating: "0123456789abcdef\r\n", count: 50_000)
        let path = spool.path(for: "BIG")
        _ = FileManager.default.createFile(atPath: path, contents: Data(body.utf8))
        var m = newMessage("BIG")
        m.body = .spooled(path: path)
        m.addMessageID = false
        try store.insert([m])
        let sched = DeliveryScheduler(store: store, spool: spool, maildir: maildir, logger: Logger(label: "t"))
        await sched.attempt("BIG")
        let text = try String(contentsOfFile: "\(dir)/mailboxes/contoso.test/alice/new/BIG.R0.mx.test", encoding: .utf8)
        #expect(text == "Return-Path: <s@x.test>\r\n" + body)
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}

struct NotificationTests {
    func setup() throws -> (String, SQLiteQueueStore, Spool, MaildirDelivery) {
        let dir = try temporaryDirectory()
        return (
            dir, try SQLiteQueueStore(path: "\(dir)/q.sqlite"), try Spool(directory: "\(dir)/spool"),
            MaildirDelivery(root: "\(dir)/mailboxes", hostname: "mx.test")
        )
    }

    func block(_ dir: String) throws {
        try FileManager.default.createDirectory(
            atPath: "\(dir)/mailboxes/contoso.test", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(dir)/mailboxes/contoso.test/alice", contents: Data())
    }

    @Test func oneDelayNoticeThenAFailureReport() async throws {
        let (dir, store, spool, maildir) = try setup()
        try block(dir)
        try store.insert([newMessage("A")])
        let clock = Date()
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: maildir, retry: RetrySchedule(intervals: [1], expiry: 3600, jitter: 0),
            logger: Logger(label: "t"), now: { clock.addingTimeInterval(60) },
            dsnRoute: { _ in .local(domain: "x.test", mailbox: "s") },
            delayNotice: 30)
        await sched.attempt("A")
        await sched.attempt("A")
        let dsns = try store.list().filter { $0.sender.isEmpty }
        #expect(dsns.count == 1, "one delay notice, not one per attempt")
        let id = try #require(dsns.first?.id)
        let dsn = try #require(try store.message(id))
        #expect(dsn.subject == "Delayed Mail (still being retried)")
        guard case .inline(let data) = dsn.body else {
            Issue.record("expected an inline DSN")
            return
        }
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("Action: delayed"))
        #expect(text.contains("Will-Retry-Until:"))
        #expect(try store.traceEvents(queueID: "A").contains { $0.kind == .dsn })
    }

    @Test func noReportForTheNullSenderOrNotifyNever() async throws {
        let (dir, store, spool, maildir) = try setup()
        try block(dir)
        var bounce = newMessage("B")
        bounce.sender = ""
        var never = newMessage("N")
        never.recipients[0].notify = DSNNotify(never: true)
        try store.insert([bounce, never])
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: maildir, retry: RetrySchedule(intervals: [1], expiry: 10, jitter: 0),
            logger: Logger(label: "t"), now: { Date().addingTimeInterval(100) },
            dsnRoute: { _ in .local(domain: "x.test", mailbox: "s") })
        await sched.attempt("B")
        await sched.attempt("N")
        #expect(try store.message("B")?.recipients[0].status == .failed)
        #expect(try store.message("N")?.recipients[0].status == .failed)
        #expect(try store.list().filter { $0.sender.isEmpty }.isEmpty, "a bounce is never bounced; NEVER means never")
    }

    @Test func expiryFailureReportCarriesStatus447() async throws {
        let (dir, store, spool, maildir) = try setup()
        try block(dir)
        var m = newMessage("E")
        m.envelopeID = "env-9"
        try store.insert([m])
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: maildir, retry: RetrySchedule(intervals: [1], expiry: 10, jitter: 0),
            logger: Logger(label: "t"), now: { Date().addingTimeInterval(100) },
            dsnRoute: { _ in .local(domain: "x.test", mailbox: "s") },
            delayNotice: nil)
        await sched.attempt("E")
        let dsn = try #require(try store.list().first { $0.sender.isEmpty })
        guard case .inline(let data)? = try store.message(dsn.id)?.body else {
            Issue.record("no DSN body")
            return
        }
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("Status: 4.4.7"))
        #expect(text.contains("Original-Envelope-Id: env-9"))
        #expect(text.contains("Action: failed"))
        #expect(dsn.recipients == ["s@x.test"])
    }
}

/// Delivery state that decides behaviour (abrupt closes, the one delay notice) lives in typed
/// columns, not in trace text.
struct DeliveryStateColumnTests {
    @Test func abruptClosesAndDelayNoticeAreCountedInColumns() throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        try store.insert([newMessage("A")])
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let deferred: [Int: RecipientOutcome] = [0: .deferred(reason: "451 4.4.0 whatever the text says")]
        try store.recordAttempt(messageID: "A", outcomes: deferred, nextAttempt: t0, now: t0)
        var m = try #require(try store.message("A"))
        #expect(m.abruptCloses == 0 && m.delayNoticeSentAt == nil)
        _ = try store.recordAttempts([
            .init(messageID: "A", outcomes: deferred, nextAttempt: t0, now: t0, abruptClose: true),
            .init(
                messageID: "A", outcomes: deferred, nextAttempt: t0, now: t0.addingTimeInterval(60), abruptClose: true,
                delayNoticeSent: true),
        ])
        m = try #require(try store.message("A"))
        #expect(m.abruptCloses == 2)
        #expect(m.delayNoticeSentAt == t0.addingTimeInterval(60))
    }

    @Test func typedEnvelopeValuesComeBackAsStored() throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        var n = newMessage("A")
        n.bodyType = .eightBitMIME
        n.ret = .headers
        n.recipients = [
            EnvelopeRecipient(
                address: "Bob@remote.test", route: .relay(domain: "remote.test"),
                notify: DSNNotify(failure: true, delay: true),
                originalRecipient: OriginalRecipient(addressType: "rfc822", address: "Bob;x@remote.test"))
        ]
        try store.insert([n])
        let m = try #require(try store.message("A"))
        #expect(m.bodyType == .eightBitMIME && m.ret == .headers)
        #expect(m.recipients.map(\.recipient) == n.recipients)
    }
}
