import Foundation
import GRDB

/// The users who may authenticate on the submission listeners, one row each: the login name (an
/// address, lower-cased), its tenant, and its credential in stored text form (the SCRAM-SHA-256
/// keys, never the password; the `Accounts` module reads and writes that form).
extension SQLiteQueueStore {
    public struct StoredUser: Sendable, Equatable {
        public var username: String
        public var tenant: String
        public var credential: String
        public var createdAt: Date
        public var updatedAt: Date

        public init(username: String, tenant: String, credential: String, createdAt: Date, updatedAt: Date) {
            self.username = username
            self.tenant = tenant
            self.credential = credential
            self.createdAt = createdAt
            self.updatedAt = updatedAt
        }
    }

    public enum UserError: Error, Equatable, CustomStringConvertible {
        case exists(String)
        case notFound(String)

        public var description: String {
            switch self {
            case .exists(let u): return "user \(u) already exists"
            case .notFound(let u): return "no user \(u)"
            }
        }
    }

    static func registerUserMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v8-users") { db in
            try db.execute(
                sql: """
                    CREATE TABLE user (
                      username TEXT PRIMARY KEY NOT NULL,
                      tenant TEXT NOT NULL,
                      credential TEXT NOT NULL,
                      created_at REAL NOT NULL,
                      updated_at REAL NOT NULL
                    );
                    CREATE INDEX user_tenant ON user(tenant);
                    """)
        }
    }

    public func addUser(username: String, tenant: String, credential: String, now: Date = Date()) throws {
        try pool.write { db in
            if try Row.fetchOne(db, sql: "SELECT 1 FROM user WHERE username = ?", arguments: [username]) != nil {
                throw UserError.exists(username)
            }
            try db.execute(
                sql: "INSERT INTO user (username, tenant, credential, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [username, tenant, credential, now.timeIntervalSince1970, now.timeIntervalSince1970])
        }
    }

    public func setCredential(username: String, credential: String, now: Date = Date()) throws {
        try pool.write { db in
            try db.execute(
                sql: "UPDATE user SET credential = ?, updated_at = ? WHERE username = ?",
                arguments: [credential, now.timeIntervalSince1970, username])
            guard db.changesCount == 1 else { throw UserError.notFound(username) }
        }
    }

    public func removeUser(username: String) throws {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM user WHERE username = ?", arguments: [username])
            guard db.changesCount == 1 else { throw UserError.notFound(username) }
        }
    }

    public func user(username: String) throws -> StoredUser? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM user WHERE username = ?", arguments: [username]).map(Self.user)
        }
    }

    /// Every user, or a tenant's, by name.
    public func users(tenant: String? = nil) throws -> [StoredUser] {
        try pool.read { db in
            let rows: [Row]
            if let tenant {
                rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM user WHERE tenant = ? ORDER BY username", arguments: [tenant])
            } else {
                rows = try Row.fetchAll(db, sql: "SELECT * FROM user ORDER BY tenant, username")
            }
            return rows.map(Self.user)
        }
    }

    static func user(_ r: Row) -> StoredUser {
        StoredUser(
            username: r["username"], tenant: r["tenant"], credential: r["credential"],
            createdAt: Date(timeIntervalSince1970: r["created_at"]),
            updatedAt: Date(timeIntervalSince1970: r["updated_at"]))
    }
}
