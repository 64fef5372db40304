import Foundation
import GRDB
import Testing

@testable import MailQueue

/// v11: token scopes (existing tokens stay operators) and the admin audit trail.
struct AdminAuditStoreTests {
    func store() throws -> SQLiteQueueStore {
        try SQLiteQueueStore(path: "\(try temporaryDirectory())/q.sqlite")
    }

    @Test func tokensKeepTheirScopeAndOlderTokensAreOperators() throws {
        let dir = try temporaryDirectory()
        let path = "\(dir)/q.sqlite"
        // A database as v10 left it, with one token from before scopes.
        do {
            let pool = try DatabasePool(path: path)
            try SQLiteQueueStore.migrator.migrate(pool, upTo: "v10-add-date")
            try pool.write { db in
                try db.execute(
                    sql: "INSERT INTO admin_token (name, hash, created_at) VALUES ('old', ?, 0)",
                    arguments: [Data(repeating: 1, count: 32)])
            }
        }
        let s = try SQLiteQueueStore(path: path)
        #expect(try s.adminToken(name: "old")?.scope == .operator)
        try s.addAdminToken(name: "viewer", hash: Data(repeating: 2, count: 32), scope: .readOnly)
        let record = try #require(try s.adminTokenRecord(hash: Data(repeating: 2, count: 32)))
        #expect(record.token.scope == .readOnly && record.storedHash == Data(repeating: 2, count: 32))
        #expect(try s.adminTokens().map(\.scope) == [.operator, .readOnly])
    }

    @Test func auditEventsAreReadNewestFirstByActorAndTime() throws {
        let s = try store()
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        for (i, actor) in ["api:ops", "web:ops", "api:ops"].enumerated() {
            try s.appendAdminAudit(
                AdminAuditEvent(
                    time: t0 + Double(i), actor: actor, source: "127.0.0.1", method: "POST",
                    path: "/api/v1/queue/X\(i)/hold", target: "X\(i)", status: 200, result: "ok"))
        }
        #expect(try s.adminAudit().map(\.target) == ["X2", "X1", "X0"])
        #expect(try s.adminAudit(actor: "api:ops").map(\.target) == ["X2", "X0"])
        #expect(try s.adminAudit(since: t0 + 1).map(\.target) == ["X2", "X1"])
        #expect(try s.adminAudit(limit: 1).map(\.target) == ["X2"])
        #expect(try s.adminAudit(limit: 1).first?.source == "127.0.0.1")
    }

    @Test func auditEventsArePrunedWithTheTrace() throws {
        let s = try store()
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        for (i, age) in [100.0, 10.0].enumerated() {
            try s.appendAdminAudit(
                AdminAuditEvent(
                    time: t0 - age * 86400, actor: "api:ops", source: nil, method: "DELETE",
                    path: "/api/v1/queue/X\(i)",
                    target: "X\(i)", status: 200, result: "ok"))
        }
        let r = try s.prune(before: t0 - 90 * 86400)
        #expect(r.auditEvents == 1 && r.total >= 1)
        #expect(try s.adminAudit().map(\.target) == ["X1"])
    }
}
