import Foundation
import GRDB

/// Service health's storage in the queue database: issues (each one JSON document, written by the
/// running server's health monitor only), user problem reports, and admin actions on issues
/// waiting for the monitor to apply them (from the CLI, which does not run the monitor). The
/// monitor reads SMTP outcomes straight from the trace stream (`healthTrace`), so nothing keeps a
/// second record of what happened.
extension SQLiteQueueStore: HealthStore {
    static func registerHealthMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("v5-health") { db in
            try db.execute(
                sql: """
                    CREATE TABLE health_issue (
                      id TEXT PRIMARY KEY NOT NULL,
                      number INTEGER NOT NULL,
                      resolved INTEGER NOT NULL,
                      last_modified REAL NOT NULL,
                      document TEXT NOT NULL
                    );
                    CREATE TABLE health_report (
                      id INTEGER PRIMARY KEY AUTOINCREMENT,
                      time REAL NOT NULL,
                      tenant TEXT NOT NULL,
                      region TEXT NOT NULL,
                      text TEXT NOT NULL,
                      error TEXT,
                      reporter TEXT NOT NULL
                    );
                    CREATE INDEX health_report_time ON health_report(time);
                    CREATE TABLE health_action (
                      id INTEGER PRIMARY KEY AUTOINCREMENT,
                      time REAL NOT NULL,
                      issue TEXT NOT NULL,
                      kind TEXT NOT NULL,
                      value TEXT NOT NULL,
                      actor TEXT NOT NULL,
                      applied INTEGER NOT NULL DEFAULT 0
                    );
                    """)
        }
    }

    /// One trace event as service health reads it, with the message's own tenant, client and
    /// acceptance time where the event has a message behind it.
    public struct HealthTraceRow: Sendable, Equatable {
        public var id: Int64
        public var time: Date
        public var kind: TraceEventKind
        public var recipient: String?
        public var detail: String?
        public var forest: String?
        public var region: String?
        public var tenant: String?
        public var clientAddress: String?
        public var reply: String?
        public var messageTenant: String?
        public var messageClient: String?
        public var messageReceivedAt: Date?

        public init(
            id: Int64, time: Date, kind: TraceEventKind, recipient: String?, detail: String?, forest: String?,
            region: String?, tenant: String?, clientAddress: String?, reply: String?, messageTenant: String?,
            messageClient: String?, messageReceivedAt: Date?
        ) {
            self.id = id
            self.time = time
            self.kind = kind
            self.recipient = recipient
            self.detail = detail
            self.forest = forest
            self.region = region
            self.tenant = tenant
            self.clientAddress = clientAddress
            self.reply = reply
            self.messageTenant = messageTenant
            self.messageClient = messageClient
            self.messageReceivedAt = messageReceivedAt
        }
    }

    /// Trace events after `afterID` (outcomes and refusals only), oldest first.
    public func healthTrace(after afterID: Int64, limit: Int = 50_000) throws -> [HealthTraceRow] {
        try pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT e.id, e.time, e.kind, e.recipient, e.detail, e.forest, e.region, e.tenant,
                           e.client_address, e.reply, m.tenant AS m_tenant, m.client_address AS m_client,
                           m.received_at AS m_received
                    FROM trace_event e LEFT JOIN message m ON m.id = e.queue_id AND e.queue_id != ''
                    WHERE e.id > ? AND e.kind IN ('received', 'delivered', 'deferred', 'failed', 'throttled')
                    ORDER BY e.id LIMIT ?
                    """, arguments: [afterID, limit]
            ).map { r in
                HealthTraceRow(
                    id: r["id"], time: Date(timeIntervalSince1970: r["time"]),
                    kind: TraceEventKind(rawValue: r["kind"]) ?? .received, recipient: r["recipient"],
                    detail: r["detail"], forest: r["forest"], region: r["region"], tenant: r["tenant"],
                    clientAddress: r["client_address"], reply: r["reply"], messageTenant: r["m_tenant"],
                    messageClient: r["m_client"],
                    messageReceivedAt: (r["m_received"] as Double?).map { Date(timeIntervalSince1970: $0) })
            }
        }
    }

    /// A position here is a trace event ID: the stream is read after it (one writer, so IDs are in
    /// commit order).
    public func healthTrace(from position: Int64, limit: Int) throws -> HealthTraceBatch {
        let rows = try healthTrace(after: position, limit: limit)
        return HealthTraceBatch(rows: rows, next: rows.last?.id ?? position, more: rows.count == limit)
    }

    public func healthTraceStart(atOrAfter time: Date) throws -> Int64 { try traceID(atOrAfter: time) }

    /// The newest trace event ID, and the first ID at or after `time` (where a warm-up starts).
    public func traceID(atOrAfter time: Date) throws -> Int64 {
        try pool.read { db in
            try Int64.fetchOne(
                db, sql: "SELECT id - 1 FROM trace_event WHERE time >= ? ORDER BY time LIMIT 1",
                arguments: [time.timeIntervalSince1970])
                ?? Int64.fetchOne(db, sql: "SELECT coalesce(max(id), 0) FROM trace_event") ?? 0
        }
    }

    // MARK: issues

    public func saveHealthIssue(id: String, number: Int, resolved: Bool, lastModified: Date, document: String) throws {
        try pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO health_issue (id, number, resolved, last_modified, document) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET resolved = excluded.resolved,
                      last_modified = excluded.last_modified, document = excluded.document
                    """, arguments: [id, number, resolved, lastModified.timeIntervalSince1970, document])
        }
    }

    /// Every stored issue document, newest first.
    public func healthIssueDocuments() throws -> [String] {
        try pool.read { db in
            try String.fetchAll(db, sql: "SELECT document FROM health_issue ORDER BY number DESC")
        }
    }

    public func healthIssueDocument(id: String) throws -> String? {
        try pool.read { db in
            try String.fetchOne(db, sql: "SELECT document FROM health_issue WHERE id = ?", arguments: [id])
        }
    }

    // MARK: reports

    /// A tenant admin's problem report, as stored.
    public struct StoredProblemReport: Sendable, Equatable {
        public var id: Int64
        public var time: Date
        public var tenant: String
        public var region: String
        public var text: String
        public var error: String?
        public var reporter: String

        public init(
            id: Int64, time: Date, tenant: String, region: String, text: String, error: String?, reporter: String
        ) {
            self.id = id
            self.time = time
            self.tenant = tenant
            self.region = region
            self.text = text
            self.error = error
            self.reporter = reporter
        }
    }

    @discardableResult
    public func addProblemReport(
        time: Date, tenant: String, region: String, text: String, error: String?, reporter: String
    ) throws -> Int64 {
        try pool.write { db in
            try db.execute(
                sql:
                    "INSERT INTO health_report (time, tenant, region, text, error, reporter) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [time.timeIntervalSince1970, tenant, region, text, error, reporter])
            return db.lastInsertedRowID
        }
    }

    public func problemReports(after afterID: Int64, limit: Int = 10_000) throws -> [StoredProblemReport] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM health_report WHERE id > ? ORDER BY id LIMIT ?", arguments: [afterID, limit]
            ).map { r in
                StoredProblemReport(
                    id: r["id"], time: Date(timeIntervalSince1970: r["time"]), tenant: r["tenant"], region: r["region"],
                    text: r["text"], error: r["error"], reporter: r["reporter"])
            }
        }
    }

    public func lastProblemReportID() throws -> Int64 {
        try pool.read { db in try Int64.fetchOne(db, sql: "SELECT coalesce(max(id), 0) FROM health_report") ?? 0 }
    }

    public func problemReports(from position: Int64, limit: Int) throws -> ProblemReportBatch {
        let reports = try problemReports(after: position, limit: limit)
        return ProblemReportBatch(reports: reports, next: reports.last?.id ?? position)
    }

    public func problemReportsEnd() throws -> Int64 { try lastProblemReportID() }

    // MARK: actions

    /// An admin's action on an issue: a post, a status change.
    public struct HealthAction: Sendable, Equatable {
        public var id: Int64
        public var time: Date
        public var issue: String
        public var kind: String
        public var value: String
        public var actor: String

        public init(id: Int64, time: Date, issue: String, kind: String, value: String, actor: String) {
            self.id = id
            self.time = time
            self.issue = issue
            self.kind = kind
            self.value = value
            self.actor = actor
        }
    }

    @discardableResult
    public func addHealthAction(issue: String, kind: String, value: String, actor: String, time: Date)
        throws -> Int64
    {
        try pool.write { db in
            try db.execute(
                sql: "INSERT INTO health_action (time, issue, kind, value, actor) VALUES (?, ?, ?, ?, ?)",
                arguments: [time.timeIntervalSince1970, issue, kind, value, actor])
            return db.lastInsertedRowID
        }
    }

    public func pendingHealthActions() throws -> [HealthAction] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM health_action WHERE applied = 0 ORDER BY id").map { r in
                HealthAction(
                    id: r["id"], time: Date(timeIntervalSince1970: r["time"]), issue: r["issue"], kind: r["kind"],
                    value: r["value"], actor: r["actor"])
            }
        }
    }

    /// Marks an action done (`applied` 1) or refused (2).
    public func finishHealthAction(_ id: Int64, applied: Bool) throws {
        try pool.write { db in
            try db.execute(
                sql: "UPDATE health_action SET applied = ? WHERE id = ?", arguments: [applied ? 1 : 2, id])
        }
    }

    public func withdrawHealthAction(_ id: Int64) throws -> Bool {
        try pool.write { db in
            try db.execute(sql: "UPDATE health_action SET applied = 3 WHERE id = ? AND applied = 0", arguments: [id])
            return db.changesCount == 1
        }
    }

    public func healthActionState(_ id: Int64) throws -> Int? {
        try pool.read { db in
            try Int.fetchOne(db, sql: "SELECT applied FROM health_action WHERE id = ?", arguments: [id])
        }
    }
}
