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
