import Foundation
import GRDB
import Testing

@testable import MailQueue

struct AdminStoreTests {
    func store() throws -> SQLiteQueueStore {
        try SQLiteQueueStore(path: "\(try temporaryDirectory())/q.sqlite")
    }

    @Test func tokensAreStoredByHashNamedUniquelyAndRemovable() throws {
        let s = try store()
        let hash = Data(repeating: 7, count: 32)
        try s.addAdminToken(name: "alice", hash: hash)
        #expect(try s.adminTokenName(hash: hash) == "alice")
        #expect(try s.adminTokenName(hash: Data(repeating: 8, count: 32)) == nil)
        #expect(throws: SQLiteQueueStore.AdminTokenError.exists("alice")) {
            try s.addAdminToken(name: "alice", hash: Data(repeating: 9, count: 32))
        }
        for bad in ["", "has space", "semi;colon", String(repeating: "a", count: 65), "ünicode"] {
            #expect(throws: SQLiteQueueStore.AdminTokenError.badName(bad)) {
                try s.addAdminToken(name: bad, hash: Data(repeating: 1, count: 32))
            }
        }
        #expect(try s.adminTokens().map(\.name) == ["alice"])
        #expect(try s.adminTokens()[0].lastUsedAt == nil)
        try s.markAdminTokenUsed(name: "alice")
        #expect(try s.adminTokens()[0].lastUsedAt != nil)
        #expect(try s.removeAdminToken(name: "alice"))
        #expect(try !s.removeAdminToken(name: "alice"))
        #expect(try s.adminTokenName(hash: hash) == nil)
    }

    @Test func tokensCarryATenantScopeAndOperatorTokensHaveNone() throws {
        let s = try store()
        try s.addAdminToken(name: "ops", hash: Data(repeating: 1, count: 32))
        try s.addAdminToken(name: "contoso-admin", hash: Data(repeating: 2, count: 32), tenant: "contoso")
        #expect(try s.adminTokens().map(\.tenant) == ["contoso", nil])
        #expect(try s.adminToken(hash: Data(repeating: 2, count: 32))?.name == "contoso-admin")
        #expect(try s.adminToken(hash: Data(repeating: 2, count: 32))?.tenant == "contoso")
        #expect(try s.adminToken(hash: Data(repeating: 1, count: 32))?.tenant == nil)
        #expect(try s.adminToken(name: "contoso-admin")?.tenant == "contoso")
        #expect(try s.adminToken(name: "nobody") == nil)
        #expect(throws: SQLiteQueueStore.AdminTokenError.badTenant("")) {
            try s.addAdminToken(name: "x", hash: Data(repeating: 3, count: 32), tenant: "")
        }
    }

    @Test func theTenantTokenMigrationKeepsEarlierTokensAsOperatorTokens() throws {
        let path = "\(try temporaryDirectory())/q.sqlite"
        // A queue database as version 5 left it, with a token.
        let db = try DatabaseQueue(path: path)
        try SQLiteQueueStore.migrator.migrate(db, upTo: "v5-health")
        try db.write { d in
            #expect(try d.columns(in: "admin_token").map(\.name).contains("tenant") == false)
            try d.execute(
                sql: "INSERT INTO admin_token (name, hash, created_at) VALUES ('old', ?, 1)",
                arguments: [Data(repeating: 4, count: 32)])
        }
        try db.close()
        let s = try SQLiteQueueStore(path: path)
        #expect(try s.adminTokens().map(\.name) == ["old"])
        #expect(try s.adminTokens()[0].tenant == nil)
        try s.addAdminToken(name: "t", hash: Data(repeating: 5, count: 32), tenant: "contoso")
        #expect(try s.adminToken(hash: Data(repeating: 5, count: 32))?.tenant == "contoso")
    }

    @Test func aTenantsQueueListsItsMessagesOnly() throws {
        let s = try store()
        var a = newMessage("A")
        a.tenant = "contoso"
        var b = newMessage("B")
        b.tenant = "fabrikam"
        var c = newMessage("C")
        c.tenant = "contoso"
        try s.insert([a, b, c, newMessage("D")])
        try s.control(.hold, id: "C", actor: "t")
        #expect(try s.list(tenant: "contoso").map(\.id) == ["A", "C"])
        #expect(try s.list(tenant: "fabrikam").map(\.id) == ["B"])
        #expect(try s.list(tenant: "nobody").isEmpty)
        #expect(try s.list(tenant: "contoso", limit: 1).map(\.id) == ["A"])
        #expect(try s.list(tenant: "contoso") == s.list().filter { ["A", "C"].contains($0.id) })
        try s.control(.delete, id: "A", actor: "t")
        #expect(try s.list(tenant: "contoso").map(\.id) == ["C"])
        #expect(try s.list(tenant: "contoso", includeDone: true).map(\.id) == ["A", "C"])
        #expect(try s.messageTenant("B") == "fabrikam")
        #expect(try s.messageTenant("D") == nil)
        #expect(try s.messageTenant("nothing") == nil)
    }

    @Test func activityCountsTraceEventsIntoBuckets() throws {
        let s = try store()
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func e(_ ago: TimeInterval, _ kind: TraceEventKind) -> TraceEvent {
            TraceEvent(time: now - ago, queueID: "Q", recipient: nil, kind: kind, detail: nil)
        }
        try s.insert(
            [],
            events: [
                e(10, .received), e(20, .received), e(30, .delivered), e(40, .deferred), e(50, .deferred),
                e(950, .received), e(960, .failed), e(970, .throttled), e(980, .admin),
                e(4000, .received),  // outside four 15-minute buckets
            ])
        let b = try s.activity(now: now, width: 900, count: 4)
        #expect(b.count == 4)
        #expect(b[0].start == now - 3600)
        #expect(b[3].received == 2 && b[3].delivered == 1 && b[3].deferred == 2 && b[3].failed == 0)
        #expect(abs(b[3].deferralRate - 2.0 / 3.0) < 1e-9)
        #expect(b[2].received == 1 && b[2].failed == 1 && b[2].throttled == 1)
        #expect(b[0].received + b[1].received == 0)
        #expect(b[1].deferralRate == 0)
    }

    @Test func samplesRecordQueueSize() throws {
        let s = try store()
        try s.insert([newMessage("A", rcpts: ["local:contoso.test/alice", "local:contoso.test/bob"]), newMessage("B")])
        try s.control(.hold, id: "B", actor: "t")
        let t = Date()
        let sample = try s.recordSample(now: t)
        #expect(sample.queuedMessages == 1 && sample.heldMessages == 1 && sample.pendingRecipients == 3)
        let read = try s.samples(since: t - 1)
        #expect(read.count == 1 && read[0].pendingRecipients == 3 && read[0].heldMessages == 1)
        #expect(abs(read[0].time.timeIntervalSince(t)) < 0.001)
        let c = try s.queueCounts()
        #expect(c.queuedMessages == 1 && c.heldMessages == 1 && c.pendingRecipients == 3)
    }

    @Test func pruneRemovesOnlyOldEventsAndFinishedMessagesInBatches() throws {
        let s = try store()
        let now = Date()
        var old = newMessage("OLDDONE")
        old.receivedAt = now - 10 * 86400
        var oldQueued = newMessage("OLDQUEUED")
        oldQueued.receivedAt = now - 10 * 86400
        try s.insert([old, oldQueued, newMessage("NEW")])
        try s.control(.delete, id: "OLDDONE", actor: "t")  // done
        try s.insert(
            [],
            events: (0..<25).map { i in
                TraceEvent(time: now - 9 * 86400, queueID: "X\(i)", recipient: nil, kind: .throttled, detail: nil)
            })
        _ = try s.recordSample(now: now - 9 * 86400)
        let cutoff = now - 86400
        var passes = 0
        var total = SQLiteQueueStore.PruneResult()
        while true {
            let r = try s.prune(before: cutoff, batch: 10)
            passes += 1
            total.traceEvents += r.traceEvents
            total.messages += r.messages
            total.samples += r.samples
            if r.total == 0 { break }
            #expect(r.traceEvents <= 10)
        }
        #expect(passes >= 3)
        // 25 throttle events + the received events of the two old messages + the delete's admin
        // event, which is recent (the action happened now) and stays.
        #expect(total.traceEvents == 27)
        #expect(total.messages == 1 && total.samples == 1)
        #expect(try s.message("OLDDONE") == nil)
        #expect(try s.message("OLDQUEUED")?.state == .queued)  // never pruned while queued
        #expect(try s.message("NEW") != nil)
        let recipients = try s.pool.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM recipient WHERE message = 'OLDDONE'")
        }
        #expect(recipients == 0)
    }

    @Test func topErrorsGroupByTextMostFrequentFirst() throws {
        let s = try store()
        let now = Date()
        let busy = "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit"
        func e(_ ago: TimeInterval, _ kind: TraceEventKind, detail: String? = nil, reply: String? = nil) -> TraceEvent {
            TraceEvent(time: now - ago, queueID: "Q", recipient: nil, kind: kind, detail: detail, reply: reply)
        }
        try s.insert(
            [],
            events: [
                e(10, .deferred, detail: busy), e(20, .deferred, detail: busy), e(30, .deferred, detail: busy),
                e(40, .deferred, detail: "451 4.4.1 connection refused"),
                e(50, .throttled, detail: "forest", reply: "451 4.7.1 Too many messages"),
                e(60, .throttled, detail: "forest", reply: "451 4.7.1 Too many messages"),
                e(70, .failed, detail: "550 5.1.1 no such user"), e(80, .delivered, detail: "250 ok"),
                e(5000, .deferred, detail: busy),  // before `since`
            ])
        let top = try s.topErrors(since: now - 3600)
        #expect(
            top.map(\.text) == [
                busy, "451 4.7.1 Too many messages", "451 4.4.1 connection refused", "550 5.1.1 no such user",
            ])
        #expect(top.map(\.count) == [3, 2, 1, 1])
        #expect(top[0].kind == "deferred" && top[1].kind == "throttled" && top[3].kind == "failed")
        #expect(abs(top[0].firstSeen.timeIntervalSince(now - 30)) < 0.01)
        #expect(abs(top[0].lastSeen.timeIntervalSince(now - 10)) < 0.01)
        #expect(try s.topErrors(since: now - 3600, limit: 1).count == 1)
    }
}
