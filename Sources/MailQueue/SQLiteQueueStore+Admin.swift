import Foundation
import GRDB

/// What the admin API and the web admin center read besides trace and queue control: admin tokens
/// (stored as hashes only), activity over time from the trace stream, queue-size samples, and
/// retention pruning.
extension SQLiteQueueStore {
    // MARK: admin tokens

    /// An admin token as listed: its name, scope and use, never the token or its hash.
    public struct AdminToken: Sendable, Codable, Equatable {
        public var name: String
        public var createdAt: Date
        public var lastUsedAt: Date?
        /// The tenant a tenant admin's token is scoped to; nil for an operator token (sees everything).
        public var tenant: String?
        /// What the token may do: read only, or also change the queue (chosen when it is made).
        public var scope: AdminTokenScope = .operator
    }

    /// Why a token could not be added.
    public enum AdminTokenError: Error, CustomStringConvertible, Equatable {
        case exists(String)
        case badName(String)
        case badTenant(String)

        public var description: String {
            switch self {
            case .exists(let n): return "a token named \(n) exists already (remove it first)"
            case .badName(let n):
                return "bad token name \(n.debugDescription): use 1-64 letters, digits, '.', '_', '-' or '@'"
            case .badTenant(let t): return "bad tenant name \(t.debugDescription)"
            }
        }
    }

    public static func isValidTokenName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.unicodeScalars.allSatisfy {
                ($0.isASCII && CharacterSet.alphanumerics.contains($0)) || "._-@".unicodeScalars.contains($0)
            }
    }

    /// Stores a token's hash under `name`; the token itself is never stored. With `tenant`, the token
    /// is a tenant admin's and sees only that tenant's mail and issues (the caller checks that the
    /// tenant exists in the configuration).
    public func addAdminToken(
        name: String, hash: Data, tenant: String? = nil, scope: AdminTokenScope = .operator, now: Date = Date()
    ) throws {
        guard Self.isValidTokenName(name) else { throw AdminTokenError.badName(name) }
        if let tenant, tenant.isEmpty || tenant.utf8.count > 200 { throw AdminTokenError.badTenant(tenant) }
        try pool.write { db in
            if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM admin_token WHERE name = ?", arguments: [name]) ?? 0
                > 0
            {
                throw AdminTokenError.exists(name)
            }
            try db.execute(
                sql: "INSERT INTO admin_token (name, hash, created_at, tenant, scope) VALUES (?, ?, ?, ?, ?)",
                arguments: [name, hash, now.timeIntervalSince1970, tenant, scope.rawValue])
        }
    }

    public func adminTokens() throws -> [AdminToken] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT name, created_at, last_used_at, tenant, scope FROM admin_token ORDER BY name"
            )
            .map(Self.adminToken)
        }
    }

    static func adminToken(_ r: Row) -> AdminToken {
        AdminToken(
            name: r["name"], createdAt: Date(timeIntervalSince1970: r["created_at"]),
            lastUsedAt: (r["last_used_at"] as Double?).map { Date(timeIntervalSince1970: $0) }, tenant: r["tenant"],
            // An unknown value (a newer version's scope) is read as the narrowest one.
            scope: AdminTokenScope(rawValue: r["scope"] ?? "") ?? .readOnly)
    }

    /// The token with this hash (its name and scope), if any.
    public func adminToken(hash: Data) throws -> AdminToken? {
        try adminTokenRecord(hash: hash)?.token
    }

    /// The token with this hash and the hash as stored, so the caller can compare the two in
    /// constant time after the index lookup.
    public func adminTokenRecord(hash: Data) throws -> (token: AdminToken, storedHash: Data)? {
        try pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT name, created_at, last_used_at, tenant, scope, hash FROM admin_token WHERE hash = ?",
                arguments: [hash]
            ).map { r -> (token: AdminToken, storedHash: Data) in (Self.adminToken(r), r["hash"]) }
        }
    }

    /// The token named `name`, if any.
    public func adminToken(name: String) throws -> AdminToken? {
        try pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT name, created_at, last_used_at, tenant, scope FROM admin_token WHERE name = ?",
                arguments: [name]
            ).map(Self.adminToken)
        }
    }

    /// Removes a token; false when there was none by that name.
    public func removeAdminToken(name: String) throws -> Bool {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM admin_token WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    /// The name of the token with this hash, if any.
    public func adminTokenName(hash: Data) throws -> String? {
        try pool.read { db in
            try String.fetchOne(db, sql: "SELECT name FROM admin_token WHERE hash = ?", arguments: [hash])
        }
    }

    public func markAdminTokenUsed(name: String, now: Date = Date()) throws {
        try pool.write { db in
            try db.execute(
                sql: "UPDATE admin_token SET last_used_at = ? WHERE name = ?",
                arguments: [now.timeIntervalSince1970, name])
        }
    }

    /// The tenant of message `id` (nil when it has none or there is no such message).
    public func messageTenant(_ id: String) throws -> String? {
        try pool.read { db in
            try String.fetchOne(db, sql: "SELECT tenant FROM message WHERE id = ?", arguments: [id])
        }
    }

    // MARK: queue size and activity

    /// The queue right now.
    public struct QueueCounts: Sendable, Codable, Equatable {
        public var queuedMessages: Int
        public var heldMessages: Int
        public var pendingRecipients: Int
        /// Queued messages that have had at least one failed attempt.
        public var deferredMessages: Int

        public init(queuedMessages: Int, heldMessages: Int, pendingRecipients: Int, deferredMessages: Int) {
            self.queuedMessages = queuedMessages
            self.heldMessages = heldMessages
            self.pendingRecipients = pendingRecipients
            self.deferredMessages = deferredMessages
        }
    }

    /// Index-only counts (message_due, message_held, recipient_pending): cheap however many
    /// finished messages the retention keeps.
    public func queueCounts() throws -> QueueCounts {
        try pool.read { db in
            let queued = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message WHERE next_attempt IS NOT NULL") ?? 0
            let deferred =
                try Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM message WHERE next_attempt IS NOT NULL AND attempts > 0") ?? 0
            let held = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message WHERE state = 'held'") ?? 0
            let pending = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM recipient WHERE status = 'pending'") ?? 0
            return QueueCounts(
                queuedMessages: queued, heldMessages: held, pendingRecipients: pending, deferredMessages: deferred)
        }
    }

    /// The queue's size at one moment (`stats_sample`), for the overview's queue chart.
    public struct QueueSample: Sendable, Codable, Equatable {
        public var time: Date
        public var queuedMessages: Int
        public var pendingRecipients: Int
        public var heldMessages: Int

        public init(time: Date, queuedMessages: Int, pendingRecipients: Int, heldMessages: Int) {
            self.time = time
            self.queuedMessages = queuedMessages
            self.pendingRecipients = pendingRecipients
            self.heldMessages = heldMessages
        }
    }

    /// Records the queue size now (the overview's queue chart reads these).
    @discardableResult
    public func recordSample(now: Date = Date()) throws -> QueueSample {
        try recordSample(try queueCounts(), now: now)
    }

    /// A sample of counts read elsewhere (cluster mode: the shared queue's), kept here for the chart.
    @discardableResult
    public func recordSample(_ c: QueueCounts, now: Date = Date()) throws -> QueueSample {
        let sample = QueueSample(
            time: now, queuedMessages: c.queuedMessages, pendingRecipients: c.pendingRecipients,
            heldMessages: c.heldMessages)
        try pool.write { db in
            try db.execute(
                sql:
                    "INSERT OR REPLACE INTO stats_sample (time, queued_messages, pending_recipients, held_messages) VALUES (?, ?, ?, ?)",
                arguments: [
                    now.timeIntervalSince1970, sample.queuedMessages, sample.pendingRecipients, sample.heldMessages,
                ])
        }
        return sample
    }

    public func samples(since: Date) throws -> [QueueSample] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM stats_sample WHERE time >= ? ORDER BY time",
                arguments: [since.timeIntervalSince1970]
            ).map {
                QueueSample(
                    time: Date(timeIntervalSince1970: $0["time"]), queuedMessages: $0["queued_messages"],
                    pendingRecipients: $0["pending_recipients"], heldMessages: $0["held_messages"])
            }
        }
    }

    /// Trace events of one kind-group counted in one time bucket.
    public struct ActivityBucket: Sendable, Codable, Equatable {
        public var start: Date
        /// Messages accepted.
        public var received: Int
        /// Recipients delivered (locally or to a remote server).
        public var delivered: Int
        /// Delivery attempts deferred (a temporary failure; the recipient stays queued).
        public var deferred: Int
        /// Recipients failed for good.
        public var failed: Int
        /// Sessions, messages or recipients refused or deferred by admission control.
        public var throttled: Int

        /// Deferred attempts as a share of all attempts, 0 when there were none.
        public var deferralRate: Double {
            let attempts = delivered + deferred + failed
            return attempts == 0 ? 0 : Double(deferred) / Double(attempts)
        }
    }

    /// `count` buckets of `width` seconds ending at `now`, oldest first, counted from the trace
    /// stream through the (kind, time) index.
    public func activity(now: Date = Date(), width: TimeInterval, count: Int) throws -> [ActivityBucket] {
        let start = now.timeIntervalSince1970 - width * Double(count)
        var buckets = (0..<count).map {
            ActivityBucket(
                start: Date(timeIntervalSince1970: start + width * Double($0)), received: 0, delivered: 0,
                deferred: 0, failed: 0, throttled: 0)
        }
        let rows = try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT CAST((time - ?) / ? AS INTEGER) AS b, kind, COUNT(*) AS n FROM trace_event
                    WHERE kind IN ('received', 'delivered', 'deferred', 'failed', 'throttled') AND time >= ? AND time < ?
                    GROUP BY b, kind
                    """, arguments: [start, width, start, now.timeIntervalSince1970])
        }
        for r in rows {
            let b: Int = r["b"]
            let n: Int = r["n"]
            guard b >= 0, b < count else { continue }
            switch r["kind"] as String {
            case "received": buckets[b].received += n
            case "delivered": buckets[b].delivered += n
            case "deferred": buckets[b].deferred += n
            case "failed": buckets[b].failed += n
            default: buckets[b].throttled += n
            }
        }
        return buckets
    }

    /// Per tenant: messages accepted since `since` and recipients still pending.
    public struct TenantActivity: Sendable, Codable, Equatable {
        public var tenant: String
        public var received: Int
        public var pending: Int

        public init(tenant: String, received: Int, pending: Int) {
            self.tenant = tenant
            self.received = received
            self.pending = pending
        }
    }

    public func tenantActivity(since: Date) throws -> [TenantActivity] {
        try pool.read { db in
            let received = try Row.fetchAll(
                db,
                sql:
                    "SELECT tenant, COUNT(*) AS n FROM message WHERE tenant IS NOT NULL AND received_at >= ? GROUP BY tenant",
                arguments: [since.timeIntervalSince1970])
            let pending = try Row.fetchAll(
                db,
                sql: """
                    SELECT m.tenant, COUNT(*) AS n FROM recipient r JOIN message m ON m.id = r.message
                    WHERE m.tenant IS NOT NULL AND r.status = 'pending' GROUP BY m.tenant
                    """)
            var byTenant: [String: TenantActivity] = [:]
            for r in received {
                let t: String = r["tenant"]
                byTenant[t, default: TenantActivity(tenant: t, received: 0, pending: 0)].received = r["n"]
            }
            for r in pending {
                let t: String = r["tenant"]
                byTenant[t, default: TenantActivity(tenant: t, received: 0, pending: 0)].pending = r["n"]
            }
            return byTenant.values.sorted { $0.tenant < $1.tenant }
        }
    }

    /// One error text and how often it was seen: what an admin reads first when mail stops flowing
    /// ("421 4.3.2 The maximum number of concurrent connections per resource forest...", 3,812 times
    /// since 09:14).
    public struct ErrorSummary: Sendable, Codable, Equatable {
        /// `deferred` (a temporary delivery failure), `failed` (a permanent one) or `throttled` (a
        /// refusal by admission control).
        public var kind: String
        public var text: String
        public var count: Int
        public var firstSeen: Date
        public var lastSeen: Date
    }

    /// The most frequent delivery errors and admission refusals since `since`, by exact text, most
    /// frequent first, through the (kind, time) index.
    public func topErrors(since: Date, limit: Int = 10) throws -> [ErrorSummary] {
        try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT kind, COALESCE(reply, detail, '') AS text, COUNT(*) AS n, MIN(time) AS first, MAX(time) AS last
                    FROM trace_event WHERE kind IN ('deferred', 'failed', 'throttled') AND time >= ?
                    GROUP BY kind, text ORDER BY n DESC, last DESC LIMIT ?
                    """, arguments: [since.timeIntervalSince1970, limit]
            ).map {
                ErrorSummary(
                    kind: $0["kind"], text: $0["text"], count: $0["n"],
                    firstSeen: Date(timeIntervalSince1970: $0["first"]),
                    lastSeen: Date(timeIntervalSince1970: $0["last"]))
            }
        }
    }

    // MARK: retention

    /// Rows removed by one pruning batch (or a whole pass).
    public struct PruneResult: Sendable, Equatable {
        public var traceEvents = 0
        public var messages = 0
        public var samples = 0
        /// Admin audit events (`admin_audit`), kept as long as the trace.
        public var auditEvents = 0
        public init() {}
        public var total: Int { traceEvents + messages + samples + auditEvents }
    }

    /// Deletes at most `batch` trace events, finished messages (with their recipients), samples and
    /// admin audit events older than `cutoff`, in one short transaction. Messages still queued or held are never
    /// pruned, whatever their age. Call repeatedly (with a pause) until it returns zero, so the
    /// acceptance writer never waits long behind it.
    public func prune(before cutoff: Date, batch: Int = 2000) throws -> PruneResult {
        let t = cutoff.timeIntervalSince1970
        return try pool.write { db in
            var r = PruneResult()
            try db.execute(
                sql: "DELETE FROM trace_event WHERE id IN (SELECT id FROM trace_event WHERE time < ? LIMIT ?)",
                arguments: [t, batch])
            r.traceEvents = db.changesCount
            try db.execute(
                sql: """
                    DELETE FROM message WHERE id IN
                      (SELECT id FROM message WHERE state = 'done' AND received_at < ? LIMIT ?)
                    """, arguments: [t, batch])
            r.messages = db.changesCount
            try db.execute(
                sql: "DELETE FROM stats_sample WHERE time IN (SELECT time FROM stats_sample WHERE time < ? LIMIT ?)",
                arguments: [t, batch])
            r.samples = db.changesCount
            try db.execute(
                sql: "DELETE FROM admin_audit WHERE id IN (SELECT id FROM admin_audit WHERE time < ? LIMIT ?)",
                arguments: [t, batch])
            r.auditEvents = db.changesCount
            return r
        }
    }
}
