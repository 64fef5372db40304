import Foundation
import GRDB

/// What an admin token may do besides its tenant scoping: `read-only` reads (GET and HEAD only),
/// `operator` also changes the queue, issues and users (every token made before scopes existed).
public enum AdminTokenScope: String, Sendable, Codable, CaseIterable {
    case readOnly = "read-only"
    case `operator`
}

/// One state-changing admin request as the audit trail keeps it: who (the token, as `api:NAME` or
/// `web:NAME`; `-` for a sign-in that named no valid token), from where, what (method, path, the
/// message, user or issue it named) and how it ended (the HTTP status and a word for it).
public struct AdminAuditEvent: Sendable, Codable, Equatable {
    public var id: Int64?
    public var time: Date
    public var actor: String
    public var source: String?
    public var method: String
    public var path: String
    public var target: String?
    public var status: Int
    /// `ok`, `refused`, `failed`, `throttled` or `signed-in`.
    public var result: String

    public init(
        id: Int64? = nil, time: Date, actor: String, source: String?, method: String, path: String, target: String?,
        status: Int, result: String
    ) {
        self.id = id
        self.time = time
        self.actor = actor
        self.source = source
        self.method = method
        self.path = path
        self.target = target
        self.status = status
        self.result = result
    }
}

extension SQLiteQueueStore {
    /// v11: token scopes and the admin audit trail (issue 15). Existing tokens keep what they could
    /// do (`operator`).
    static func registerAdminSecurityMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v11-admin-security") { db in
            try db.execute(
                sql: """
                    ALTER TABLE admin_token ADD COLUMN scope TEXT NOT NULL DEFAULT 'operator';
                    CREATE TABLE admin_audit (
                      id INTEGER PRIMARY KEY AUTOINCREMENT,
                      time REAL NOT NULL,
                      actor TEXT NOT NULL,
                      source TEXT,
                      method TEXT NOT NULL,
                      path TEXT NOT NULL,
                      target TEXT,
                      status INTEGER NOT NULL,
                      result TEXT NOT NULL
                    );
                    CREATE INDEX admin_audit_time ON admin_audit(time);
                    """)
        }
    }

    /// Appends one audit event (its own small transaction: the request it records has finished).
    public func appendAdminAudit(_ e: AdminAuditEvent) throws {
        try pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO admin_audit (time, actor, source, method, path, target, status, result)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    e.time.timeIntervalSince1970, e.actor, e.source, e.method, e.path, e.target, e.status, e.result,
                ])
        }
    }

    /// The newest audit events first, at most `limit`, optionally since a time and by one actor.
    public func adminAudit(limit: Int = 100, since: Date? = nil, actor: String? = nil) throws -> [AdminAuditEvent] {
        var sql = "SELECT * FROM admin_audit WHERE 1 = 1"
        var args: [any DatabaseValueConvertible] = []
        if let since {
            sql += " AND time >= ?"
            args.append(since.timeIntervalSince1970)
        }
        if let actor {
            sql += " AND actor = ?"
            args.append(actor)
        }
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(0, limit))
        return try pool.read { db in
            try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).map { r in
                AdminAuditEvent(
                    id: r["id"], time: Date(timeIntervalSince1970: r["time"]), actor: r["actor"], source: r["source"],
                    method: r["method"], path: r["path"], target: r["target"], status: r["status"],
                    result: r["result"])
            }
        }
    }
}
