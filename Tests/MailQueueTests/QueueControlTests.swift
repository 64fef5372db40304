import Delivery
import Foundation
import Logging
import MailQueue
import SMTPCore
import Testing

struct QueueControlTests {
    func setup() throws -> (String, SQLiteQueueStore, Spool, MaildirDelivery) {
        let dir = try temporaryDirectory()
        return (
            dir, try SQLiteQueueStore(path: "\(dir)/q.sqlite"), try Spool(directory: "\(dir)/spool"),
            MaildirDelivery(root: "\(dir)/mailboxes", hostname: "mx.test")
        )
    }

    @Test func holdStopsDeliveryUntilRelease() async throws {
        let (dir, store, spool, maildir) = try setup()
        try store.insert([newMessage("A")])
        try store.control(.hold, id: "A", actor: "ops")
        #expect(try store.message("A")?.state == .held)
        #expect(try store.dueMessageIDs(now: Date().addingTimeInterval(3600), limit: 10).isEmpty)
        let sched = DeliveryScheduler(store: store, spool: spool, maildir: maildir, logger: Logger(label: "t"))
        await sched.attempt("A")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/mailboxes/contoso.test/alice/new/A.R0.mx.test"))
        try store.control(.release, id: "A", actor: "ops")
        #expect(try store.dueMessageIDs(now: Date().addingTimeInterval(1), limit: 10) == ["A"])
        await sched.attempt("A")
        #expect(FileManager.default.fileExists(atPath: "\(dir)/mailboxes/contoso.test/alice/new/A.R0.mx.test"))
        let admin = try store.traceEvents(queueID: "A").filter { $0.kind == .admin }.compactMap(\.detail)
        #expect(admin == ["hold by ops", "release by ops"])
    }

    @Test func actionsThatDoNotApplyAreRefused() throws {
        let (_, store, _, _) = try setup()
        try store.insert([newMessage("A")])
        #expect(
            throws: SQLiteQueueStore.ControlError.notApplicable(
                "A", "only a held message can be released (it is queued)")
        ) {
            try store.control(.release, id: "A", actor: "ops")
        }
        #expect(throws: SQLiteQueueStore.ControlError.notFound("NOPE")) {
            try store.control(.hold, id: "NOPE", actor: "ops")
        }
    }

    @Test func bounceFailsPendingRecipientsWithADSN() async throws {
        let (dir, store, spool, maildir) = try setup()
        try FileManager.default.createDirectory(
            atPath: "\(dir)/mailboxes/contoso.test", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: "\(dir)/mailboxes/contoso.test/alice", contents: Data())
        try store.insert([newMessage("A")])
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: maildir, logger: Logger(label: "t"),
            dsnRoute: { _ in .local(domain: "x.test", mailbox: "s") })
        await sched.attempt("A")  // deferred: the mailbox is broken
        try store.control(.bounce, id: "A", actor: "ops")
        await sched.attempt("A")
        let m = try #require(try store.message("A"))
        #expect(m.state == .done)
        #expect(m.recipients[0].status == .failed)
        #expect(m.recipients[0].lastReply?.contains("5.3.0") == true)
        #expect(try store.list().contains { $0.sender.isEmpty }, "the sender gets a DSN")
    }

    @Test func deleteEndsTheMessageWithoutAReport() throws {
        let (_, store, _, _) = try setup()
        try store.insert([newMessage("A")])
        try store.control(.delete, id: "A", actor: "ops")
        #expect(try store.message("A")?.state == .done)
        #expect(try store.list().isEmpty)
        #expect(try store.traceEvents(queueID: "A").last?.detail == "delete by ops (no report to the sender)")
    }

    /// A delete while a delivery is in flight: the attempt's deferral, recorded after it, neither
    /// makes the deleted recipient pending again nor gives the done message a next attempt (which
    /// had the scheduler take it again and again: a CPU spin found by helper-30).
    @Test func anAttemptRecordedAfterADeleteLeavesTheMessageDone() throws {
        let (_, store, _, _) = try setup()
        try store.insert([newMessage("A", rcpts: ["local:contoso.test/alice", "local:contoso.test/bob"])])
        try store.control(.delete, id: "A", actor: "ops")
        try store.recordAttempt(
            messageID: "A", outcomes: [0: .delivered(detail: "250 ok"), 1: .deferred(reason: "451 4.3.0 later")],
            nextAttempt: Date().addingTimeInterval(60), now: Date())
        let m = try #require(try store.message("A"))
        #expect(m.state == .done)
        #expect(m.nextAttempt == nil)
        #expect(m.recipients.map(\.status) == [.failed, .failed])
        #expect(try store.dueMessageIDs(now: Date().addingTimeInterval(3600), limit: 10).isEmpty)
        #expect(try store.traceEvents(queueID: "A").map(\.kind).suffix(2) == [.delivered, .deferred], "traced")
    }

    @Test func traceFiltersAndTimeline() throws {
        let (_, store, _, _) = try setup()
        var a = newMessage("A", rcpts: ["local:contoso.test/alice", "local:contoso.test/bob"])
        a.sender = "boss@x.test"
        a.tenant = "contoso"
        var b = newMessage("B")
        b.sender = "other@y.test"
        b.recipients = [EnvelopeRecipient(address: "far@remote.test", route: .relay(domain: "remote.test"))]
        try store.insert([a, b])
        try store.recordAttempt(
            messageID: "A", outcomes: [0: .delivered(detail: "250 ok")], nextAttempt: Date().addingTimeInterval(60),
            now: Date())
        var q = SQLiteQueueStore.TraceQuery()
        q.sender = "boss@"
        let rows = try store.trace(q)
        #expect(rows.map(\.recipient).sorted() == ["alice@contoso.test", "bob@contoso.test"])
        let alice = try #require(rows.first { $0.recipient == "alice@contoso.test" })
        #expect(alice.status == "Delivered")
        #expect(alice.events.map(\.kind) == [.received, .delivered])
        q = SQLiteQueueStore.TraceQuery()
        q.direction = "outbound"
        #expect(try store.trace(q).map(\.queueID) == ["B"])
        q = SQLiteQueueStore.TraceQuery()
        q.status = "pending"
        q.tenant = "contoso"
        #expect(try store.trace(q).map(\.recipient) == ["bob@contoso.test"])
        q = SQLiteQueueStore.TraceQuery()
        q.sender = "%"  // a literal percent matches nothing: wildcards are escaped
        #expect(try store.trace(q).isEmpty)
    }

    @Test func shapeCountsPendingByDomainAndAge() throws {
        let (_, store, _, _) = try setup()
        var old = newMessage("OLD")
        old.receivedAt = Date().addingTimeInterval(-3 * 3600)
        old.recipients = [EnvelopeRecipient(address: "x@remote.test", route: .relay(domain: "remote.test"))]
        try store.insert([newMessage("NEW"), old])
        let shape = try store.shape()
        let remote = try #require(shape.first { $0.domain == "remote.test" })
        #expect(remote.total == 1)
        #expect(remote.buckets[6] == 1)  // between 160 and 320 minutes
        #expect(shape.first { $0.domain == "contoso.test" }?.buckets[0] == 1)
    }
}

/// Queue control's typed results and its spool clean-up: whoever calls `control` (the admin API,
/// the web pages, the CLI), a released spool file is gone when it returns.
struct QueueControlResultTests {
    /// A store and spool with one message whose body is in a spool file.
    func spooledMessage(_ id: String) throws -> (SQLiteQueueStore, Spool, String) {
        let dir = try temporaryDirectory()
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        let spool = try Spool(directory: "\(dir)/spool")
        let path = spool.path(for: id)
        let body = "Subject: big\r\n\r\n" + String(repeating: "x", count: Spool.inlineLimit + 1) + "\r\n"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(body.utf8)))
        var m = newMessage(id)
        m.size = body.utf8.count
        m.body = .spooled(path: path)
        try store.insert([m])
        return (store, spool, path)
    }

    @Test func deleteRemovesTheSpoolFileBeforeItReturns() throws {
        let (store, _, path) = try spooledMessage("A")
        #expect(try store.referencedSpoolPaths() == [path])
        let result = try store.control(.delete, id: "A", actor: "ops")
        #expect(
            result
                == SQLiteQueueStore.ControlResult(
                    queueID: "A", action: .delete, outcome: .deleted, releasedSpoolPath: path)
        )
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(try store.referencedSpoolPaths().isEmpty)
        #expect(try store.message("A")?.body == nil)
    }

    @Test func anInlineBodyReleasesNoSpoolFile() throws {
        let dir = try temporaryDirectory()
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        try store.insert([newMessage("A")])
        #expect(try store.control(.delete, id: "A", actor: "ops").releasedSpoolPath == nil)
    }

    @Test func aRefusedDeleteKeepsTheSpoolFile() throws {
        let (store, _, path) = try spooledMessage("A")
        try store.pool.write { try $0.execute(sql: "UPDATE message SET state = 'done' WHERE id = 'A'") }
        #expect(throws: SQLiteQueueStore.ControlError.notApplicable("A", "the message is already done")) {
            try store.control(.delete, id: "A", actor: "ops")
        }
        #expect(FileManager.default.fileExists(atPath: path))
    }

    /// Each action from the state it applies to: its outcome, whether the scheduler should look at
    /// the message now, and the spool file, which only `delete` lets go of.
    @Test(arguments: [
        (SQLiteQueueStore.ControlAction.hold, "queued", SQLiteQueueStore.ControlResult.Outcome.held, false),
        (.release, "held", .released, true),
        (.retry, "queued", .dueNow, true),
        (.bounce, "queued", .bounceRequested, true),
        (.bounce, "held", .bounceRequested, true),
        (.delete, "held", .deleted, false),
    ])
    func everyActionHasATypedOutcome(
        action: SQLiteQueueStore.ControlAction, from state: String, outcome: SQLiteQueueStore.ControlResult.Outcome,
        makesDue: Bool
    ) throws {
        let (store, _, path) = try spooledMessage("A")
        if state == "held" { try store.control(.hold, id: "A", actor: "ops") }
        let result = try store.control(action, id: "A", actor: "ops")
        #expect(result.queueID == "A" && result.action == action)
        #expect(result.outcome == outcome)
        #expect(result.makesDue == makesDue)
        #expect(result.releasedSpoolPath == (action == .delete ? path : nil))
        #expect(FileManager.default.fileExists(atPath: path) == (action != .delete))
    }

    @Test func outcomesHaveStableCodesAndAOneLineSummary() {
        #expect(
            SQLiteQueueStore.ControlResult.Outcome.allCases.map(\.rawValue) == [
                "held", "released", "due_now", "bounce_requested", "deleted",
            ])
        for o in SQLiteQueueStore.ControlResult.Outcome.allCases {
            #expect(!o.summary.isEmpty && !o.summary.contains("\n"), "\(o)")
        }
    }

    /// The other ways a message ends (delivered, bounced) drop the body in the delivery scheduler's
    /// transaction, which removes the file too.
    @Test func aBouncedMessagesSpoolFileIsRemovedWhenItIsDone() async throws {
        let (store, spool, path) = try spooledMessage("A")
        let dir = (spool.directory as NSString).deletingLastPathComponent
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: MaildirDelivery(root: "\(dir)/mailboxes", hostname: "mx.test"),
            logger: Logger(label: "t"), dsnRoute: { _ in .local(domain: "x.test", mailbox: "s") })
        try store.control(.bounce, id: "A", actor: "ops")
        #expect(FileManager.default.fileExists(atPath: path))
        await sched.attempt("A")
        #expect(try store.message("A")?.state == .done)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func aDeliveredMessagesSpoolFileIsRemoved() async throws {
        let (store, spool, path) = try spooledMessage("A")
        let dir = (spool.directory as NSString).deletingLastPathComponent
        let sched = DeliveryScheduler(
            store: store, spool: spool, maildir: MaildirDelivery(root: "\(dir)/mailboxes", hostname: "mx.test"),
            logger: Logger(label: "t"))
        await sched.attempt("A")
        #expect(try store.message("A")?.recipients.first?.status == .delivered)
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
