import Foundation
import GRDB
import SMTPCore

/// The durable queue on SQLite in WAL mode with `synchronous=FULL`: a commit returns only once it is
/// on disk. Holds the envelope, small bodies, delivery progress and the trace stream in one file, so
/// every state change and its trace event share a transaction.
///
/// Due work is found through the partial index on `next_attempt`, never by scanning the queue.
public final class SQLiteQueueStore: Sendable {
    public let pool: DatabasePool
    public let path: String
    /// Free space and write faults of the filesystem holding the queue: the queue's writers record
    /// their failures here, ingress asks it before a new message starts (see `StorageGuard`).
    public let storage: StorageGuard

    public init(path: String, readOnly: Bool = false) throws {
        var config = Configuration()
        config.readonly = readOnly
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        self.path = path
        self.storage = StorageGuard(path: URL(fileURLWithPath: path).deletingLastPathComponent().path)
        self.pool = try DatabasePool(path: path, configuration: config)
        if !readOnly { try Self.migrator.migrate(pool) }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE message (
                      id TEXT PRIMARY KEY NOT NULL,
                      received_at REAL NOT NULL,
                      sender TEXT NOT NULL,
                      size INTEGER NOT NULL,
                      body_type TEXT,
                      smtputf8 INTEGER NOT NULL,
                      ret TEXT,
                      envid TEXT,
                      client_address TEXT NOT NULL,
                      helo TEXT NOT NULL,
                      protocol TEXT NOT NULL,
                      tls TEXT,
                      tenant TEXT,
                      message_id TEXT,
                      add_message_id INTEGER NOT NULL,
                      subject TEXT,
                      stamp_length INTEGER NOT NULL,
                      body BLOB,
                      body_path TEXT,
                      state TEXT NOT NULL,
                      next_attempt REAL,
                      attempts INTEGER NOT NULL DEFAULT 0
                    );
                    CREATE INDEX message_due ON message(next_attempt) WHERE next_attempt IS NOT NULL;
                    CREATE TABLE recipient (
                      message TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
                      idx INTEGER NOT NULL,
                      address TEXT NOT NULL,
                      route TEXT NOT NULL,
                      notify TEXT,
                      orcpt TEXT,
                      status TEXT NOT NULL,
                      attempts INTEGER NOT NULL DEFAULT 0,
                      last_reply TEXT,
                      PRIMARY KEY (message, idx)
                    );
                    CREATE TABLE trace_event (
                      id INTEGER PRIMARY KEY AUTOINCREMENT,
                      time REAL NOT NULL,
                      queue_id TEXT NOT NULL,
                      recipient TEXT,
                      kind TEXT NOT NULL,
                      detail TEXT
                    );
                    CREATE INDEX trace_event_queue ON trace_event(queue_id);
                    CREATE INDEX trace_event_time ON trace_event(time);
                    """)
        }
        m.registerMigration("v2-throttle") { db in
            try db.execute(
                sql: """
                    ALTER TABLE trace_event ADD COLUMN forest TEXT;
                    ALTER TABLE trace_event ADD COLUMN region TEXT;
                    ALTER TABLE trace_event ADD COLUMN tenant TEXT;
                    ALTER TABLE trace_event ADD COLUMN client_address TEXT;
                    ALTER TABLE trace_event ADD COLUMN reply TEXT;
                    CREATE INDEX trace_event_kind_time ON trace_event(kind, time);
                    """)
        }
        m.registerMigration("v3-admin-bounce") { db in
            try db.execute(sql: "ALTER TABLE message ADD COLUMN bounce_requested INTEGER NOT NULL DEFAULT 0")
        }
        m.registerMigration("v4-admin") { db in
            try db.execute(
                sql: """
                    CREATE TABLE admin_token (
                      name TEXT PRIMARY KEY NOT NULL,
                      hash BLOB NOT NULL UNIQUE,
                      created_at REAL NOT NULL,
                      last_used_at REAL
                    );
                    CREATE TABLE stats_sample (
                      time REAL PRIMARY KEY NOT NULL,
                      queued_messages INTEGER NOT NULL,
                      pending_recipients INTEGER NOT NULL,
                      held_messages INTEGER NOT NULL
                    );
                    -- The admin reads must not scan 90 days of finished messages: held messages,
                    -- pending recipients and time ranges each have an index (queued ones are
                    -- already in message_due).
                    CREATE INDEX message_held ON message(id) WHERE state = 'held';
                    CREATE INDEX message_received ON message(received_at);
                    CREATE INDEX recipient_pending ON recipient(message) WHERE status = 'pending';
                    """)
        }
        registerHealthMigration(&m)
        m.registerMigration("v6-tenant-tokens") { db in
            // NULL: an operator token (every token made before); a name: a tenant admin's token.
            try db.execute(sql: "ALTER TABLE admin_token ADD COLUMN tenant TEXT")
        }
        m.registerMigration("v7-delivery-state") { db in
            // Delivery state that was read back out of trace text (LIKE over `detail`) gets columns;
            // the waiting messages' values come from their trace once, here.
            try db.execute(
                sql: """
                    ALTER TABLE message ADD COLUMN abrupt_closes INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE message ADD COLUMN delay_notice_at REAL;
                    UPDATE message SET abrupt_closes = (
                      SELECT COUNT(*) FROM trace_event t WHERE t.queue_id = message.id AND t.kind = 'deferred'
                        AND t.detail LIKE '%SuspiciousRemoteServerError%')
                    WHERE state != 'done';
                    UPDATE message SET delay_notice_at = (
                      SELECT MIN(t.time) FROM trace_event t WHERE t.queue_id = message.id AND t.kind = 'dsn'
                        AND t.detail LIKE '%(Delayed Mail%')
                    WHERE state != 'done';
                    """)
        }
        registerUserMigration(&m)
        m.registerMigration("v9-sender-auth") { db in
            // Sender authentication at receipt: the Authentication-Results field added at delivery,
            // and each method's result for the trace.
            try db.execute(
                sql: """
                    ALTER TABLE message ADD COLUMN auth_results TEXT;
                    ALTER TABLE message ADD COLUMN spf TEXT;
                    ALTER TABLE message ADD COLUMN dkim TEXT;
                    ALTER TABLE message ADD COLUMN dmarc TEXT;
                    """)
        }
        m.registerMigration("v10-add-date") { db in
            try db.execute(sql: "ALTER TABLE message ADD COLUMN add_date INTEGER NOT NULL DEFAULT 0")
        }
        registerAdminSecurityMigration(&m)
        return m
    }

    // MARK: acceptance

    /// Makes a batch of messages durable in one transaction (one WAL sync for the whole batch), each
    /// with its `received` trace event. Messages are due for delivery at once.
    public func insert(_ batch: [NewMessage], events: [TraceEvent] = []) throws {
        try pool.write { db in
            for e in events { try Self.appendTrace(db, e) }
            try Self.insertMessages(db, batch)
        }
    }

    static func insertMessages(_ db: Database, _ batch: [NewMessage]) throws {
        do {
            for m in batch {
                let (blob, path): (Data?, String?) = {
                    switch m.body {
                    case .inline(let d): return (d, nil)
                    case .spooled(let p): return (nil, p)
                    }
                }()
                try db.cachedStatement(
                    sql: """
                        INSERT INTO message (id, received_at, sender, size, body_type, smtputf8, ret, envid,
                          client_address, helo, protocol, tls, tenant, message_id, add_message_id, subject,
                          stamp_length, body, body_path, state, next_attempt, attempts, auth_results, spf, dkim, dmarc,
                          add_date)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?)
                        """
                ).execute(
                    arguments: [
                        m.id, m.receivedAt.timeIntervalSince1970, m.sender, m.size, m.bodyType?.rawValue, m.smtpUTF8,
                        m.ret?.rawValue,
                        m.envelopeID, m.clientAddress, m.helo, m.protocolName, m.tls, m.tenant, m.messageID,
                        m.addMessageID, m.subject, m.stampLength, blob, path, m.receivedAt.timeIntervalSince1970,
                        m.authentication?.field, m.authentication?.spf, m.authentication?.dkim, m.authentication?.dmarc,
                        m.addDate,
                    ])
                for (i, r) in m.recipients.enumerated() {
                    try db.cachedStatement(
                        sql: """
                            INSERT INTO recipient (message, idx, address, route, notify, orcpt, status, attempts)
                            VALUES (?, ?, ?, ?, ?, ?, 'pending', 0)
                            """
                    ).execute(
                        arguments: [
                            m.id, i, r.address, r.route.stored, r.notify?.description, r.originalRecipient?.stored,
                        ])
                }
                try Self.appendTrace(db, m.receivedEvent)
            }
        }
    }

    static func appendTrace(_ db: Database, _ e: TraceEvent) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO trace_event (time, queue_id, recipient, kind, detail, forest, region, tenant, client_address, reply)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                e.time.timeIntervalSince1970, e.queueID, e.recipient, e.kind.rawValue, e.detail, e.forest, e.region,
                e.tenant, e.clientAddress, e.reply,
            ])
    }

    // MARK: scheduling

    /// IDs of messages due at `now`, earliest first, through the `next_attempt` index.
    public func dueMessageIDs(now: Date, limit: Int) throws -> [String] {
        try pool.read { db in
            try String.fetchAll(
                db,
                sql:
                    "SELECT id FROM message WHERE next_attempt IS NOT NULL AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
                arguments: [now.timeIntervalSince1970, limit])
        }
    }

    /// The earliest pending attempt time of a message not in `busy`, if any work is waiting.
    ///
    /// `busy` is what the delivery scheduler has in flight: those still carry the next attempt they
    /// were taken at (now past) until their attempt is recorded, and counting them would make every
    /// later message look due at once, so the scheduler would sleep until a delivery finishes instead
    /// of until the next message falls due. The index is walked from its earliest end and stops at
    /// the first message not in `busy` (at most `busy.count + 1` rows).
    public func nextDueTime(excluding busy: Set<String> = []) throws -> Date? {
        try pool.read { db in
            let rows = try Row.fetchCursor(
                db, sql: "SELECT id, next_attempt FROM message WHERE next_attempt IS NOT NULL ORDER BY next_attempt")
            while let row = try rows.next() {
                let id: String = row[0]
                if !busy.contains(id) { return Date(timeIntervalSince1970: row[1]) }
            }
            return nil
        }
    }

    /// The latest next attempt of any queued message (the same index, from the other end): how the
    /// delivery scheduler notices that the wall clock was stepped back.
    public func latestDueTime() throws -> Date? {
        try pool.read { db in
            try Double.fetchOne(db, sql: "SELECT MAX(next_attempt) FROM message WHERE next_attempt IS NOT NULL")
                .map { Date(timeIntervalSince1970: $0) }
        }
    }

    /// Brings every next attempt later than `bound` back to `time`, returning how many moved.
    /// Held messages (no next attempt) are not touched. For a wall clock stepped back: see
    /// `DeliveryPlanner.clampedNextAttempt`.
    @discardableResult
    public func pullIn(nextAttemptsAfter bound: Date, to time: Date) throws -> Int {
        try pool.write { db in
            try db.execute(
                sql: "UPDATE message SET next_attempt = ? WHERE next_attempt > ?",
                arguments: [time.timeIntervalSince1970, bound.timeIntervalSince1970])
            return db.changesCount
        }
    }

    /// Makes every message with a pending local (mailbox) delivery due at `now` if it was due later:
    /// for mailbox deliveries deferred by a full filesystem, once space is back. Returns how many.
    @discardableResult
    public func retryLocalDeliveries(now: Date) throws -> Int {
        try pool.write { db in
            try db.execute(
                sql: """
                    UPDATE message SET next_attempt = ?1 WHERE next_attempt > ?1 AND id IN (
                      SELECT message FROM recipient WHERE status = 'pending' AND route LIKE 'local:%')
                    """, arguments: [now.timeIntervalSince1970])
            return db.changesCount
        }
    }

    /// One delivery attempt's results for a message, as `recordAttempt` writes them.
    public struct Attempt: Sendable {
        public var messageID: String
        public var outcomes: [Int: RecipientOutcome]
        public var nextAttempt: Date?
        public var now: Date
        public var notifications: [NewMessage]
        /// A remote closed the connection abruptly during this attempt (adds one to `abruptCloses`).
        public var abruptClose: Bool
        /// One of `notifications` is the sender's delay notice (sets `delayNoticeSentAt`).
        public var delayNoticeSent: Bool

        public init(
            messageID: String, outcomes: [Int: RecipientOutcome], nextAttempt: Date?, now: Date,
            notifications: [NewMessage] = [], abruptClose: Bool = false, delayNoticeSent: Bool = false
        ) {
            self.messageID = messageID
            self.outcomes = outcomes
            self.nextAttempt = nextAttempt
            self.now = now
            self.notifications = notifications
            self.abruptClose = abruptClose
            self.delayNoticeSent = delayNoticeSent
        }
    }

    /// Records one attempt's outcomes for a message: recipient states, a trace event each, the next
    /// attempt time (nil when nothing is pending), all in one transaction. When every recipient is
    /// final the body is dropped; returns the spool path to remove, if any.
    @discardableResult
    public func recordAttempt(
        messageID: String, outcomes: [Int: RecipientOutcome], nextAttempt: Date?, now: Date,
        notifications: [NewMessage] = []
    ) throws -> String? {
        try recordAttempts([
            Attempt(
                messageID: messageID, outcomes: outcomes, nextAttempt: nextAttempt, now: now,
                notifications: notifications)
        ])[0]
    }

    /// Several attempts (of different messages) in one transaction: one WAL sync for all of them.
    /// Returns, for each, the spool path to remove.
    public func recordAttempts(_ attempts: [Attempt]) throws -> [String?] {
        try pool.write { db in try attempts.map { try Self.record(db, $0) } }
    }

    static func record(_ db: Database, _ a: Attempt) throws -> String? {
        let messageID = a.messageID
        let now = a.now
        if !a.notifications.isEmpty {
            try insertMessages(db, a.notifications)
            for n in a.notifications {
                try appendTrace(
                    db,
                    TraceEvent(
                        time: now, queueID: messageID, recipient: nil, kind: .dsn,
                        detail: "DSN \(n.id) (\(n.subject ?? "report")) to <\(n.recipients.first?.address ?? "")>"))
            }
        }
        if a.abruptClose || a.delayNoticeSent {
            try db.cachedStatement(
                sql: """
                    UPDATE message SET abrupt_closes = abrupt_closes + ?,
                      delay_notice_at = CASE WHEN ? THEN ? ELSE delay_notice_at END
                    WHERE id = ?
                    """
            ).execute(arguments: [a.abruptClose ? 1 : 0, a.delayNoticeSent, now.timeIntervalSince1970, messageID])
        }
        for (idx, outcome) in a.outcomes.sorted(by: { $0.key < $1.key }) {
            let address =
                try String.fetchOne(
                    db.cachedStatement(sql: "SELECT address FROM recipient WHERE message = ? AND idx = ?"),
                    arguments: [messageID, idx]) ?? ""
            let (status, kind, detail) = outcome.recorded
            try db.cachedStatement(
                sql:
                    // A recipient already final stays so: one an administrator deleted while this
                    // attempt ran is not made pending again by its deferral.
                    """
                    UPDATE recipient SET status = CASE WHEN status = 'pending' THEN ? ELSE status END,
                      attempts = attempts + 1, last_reply = ? WHERE message = ? AND idx = ?
                    """
            ).execute(arguments: [status.rawValue, detail, messageID, idx])
            try appendTrace(
                db, TraceEvent(time: now, queueID: messageID, recipient: address, kind: kind, detail: detail))
        }
        let pending =
            try Int.fetchOne(
                db.cachedStatement(sql: "SELECT COUNT(*) FROM recipient WHERE message = ? AND status = 'pending'"),
                arguments: [messageID]) ?? 0
        if pending == 0 {
            let path = try String.fetchOne(
                db.cachedStatement(sql: "SELECT body_path FROM message WHERE id = ?"), arguments: [messageID])
            try db.cachedStatement(
                sql:
                    "UPDATE message SET state = 'done', next_attempt = NULL, attempts = attempts + 1, body = NULL, body_path = NULL WHERE id = ?"
            ).execute(arguments: [messageID])
            return path
        }
        // A message an administrator held meanwhile stays held, one deleted stays done (a next
        // attempt on it would have the loop take it again and again), one whose bounce was asked
        // for meanwhile is due at once (as in the shared queue), not after this attempt's deferral.
        try db.cachedStatement(
            sql: """
                UPDATE message SET next_attempt = CASE WHEN state IN ('held', 'done') THEN NULL
                  WHEN bounce_requested = 1 THEN ? ELSE ? END, attempts = attempts + 1 WHERE id = ?
                """
        ).execute(arguments: [
            now.timeIntervalSince1970, a.nextAttempt?.timeIntervalSince1970 ?? now.timeIntervalSince1970, messageID,
        ])
        return nil
    }

    // MARK: reading

    public func message(_ id: String) throws -> StoredMessage? {
        try pool.read { db in try Self.fetchMessage(db, id) }
    }

    static func fetchMessage(_ db: Database, _ id: String) throws -> StoredMessage? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM message WHERE id = ?"), arguments: [id])
        else {
            return nil
        }
        let recipients = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT * FROM recipient WHERE message = ? ORDER BY idx"), arguments: [id]
        ).map { r in
            let stored: String = r["route"]
            guard let route = Route(stored: stored) else {
                throw UnreadableValue(messageID: id, column: "recipient.route", value: stored)
            }
            return StoredRecipient(
                index: r["idx"],
                recipient: EnvelopeRecipient(
                    address: r["address"], route: route,
                    notify: (r["notify"] as String?).flatMap(DSNNotify.init(parsing:)),
                    originalRecipient: (r["orcpt"] as String?).flatMap(OriginalRecipient.init(stored:))),
                status: RecipientStatus(rawValue: r["status"]) ?? .pending, attempts: r["attempts"],
                lastReply: r["last_reply"])
        }
        var body: MessageBody? = nil
        if let d: Data = row["body"] {
            body = .inline(d)
        } else if let p: String = row["body_path"] {
            body = .spooled(path: p)
        }
        return StoredMessage(
            id: row["id"], receivedAt: Date(timeIntervalSince1970: row["received_at"]), sender: row["sender"],
            size: row["size"], bodyType: (row["body_type"] as String?).flatMap(BodyType.init(rawValue:)),
            smtpUTF8: row["smtputf8"], ret: (row["ret"] as String?).flatMap(DSNReturn.init(rawValue:)),
            envelopeID: row["envid"], clientAddress: row["client_address"], helo: row["helo"],
            protocolName: row["protocol"], tls: row["tls"], tenant: row["tenant"], messageID: row["message_id"],
            addMessageID: row["add_message_id"], subject: row["subject"], stampLength: row["stamp_length"],
            state: MessageState(rawValue: row["state"]) ?? .queued,
            nextAttempt: (row["next_attempt"] as Double?).map { Date(timeIntervalSince1970: $0) },
            attempts: row["attempts"], recipients: recipients, body: body,
            bounceRequested: (row["bounce_requested"] as Int?) == 1, abruptCloses: row["abrupt_closes"],
            delayNoticeSentAt: (row["delay_notice_at"] as Double?).map { Date(timeIntervalSince1970: $0) },
            authentication: (row["auth_results"] as String?).map { field in
                SenderAuthentication(
                    field: field, spf: row["spf"] ?? "none", dkim: row["dkim"] ?? "none", dmarc: row["dmarc"] ?? "none")
            }, addDate: row["add_date"] ?? false)
    }

    /// A row of `mailflow queue list`.
    public struct QueueListing: Sendable, Hashable, Codable {
        public var id: String
        public var receivedAt: Date
        public var sender: String
        public var recipients: [String]
        public var size: Int
        public var state: String
        public var attempts: Int
        public var nextAttempt: Date?

        public init(
            id: String, receivedAt: Date, sender: String, recipients: [String], size: Int, state: String,
            attempts: Int, nextAttempt: Date?
        ) {
            self.id = id
            self.receivedAt = receivedAt
            self.sender = sender
            self.recipients = recipients
            self.size = size
            self.state = state
            self.attempts = attempts
            self.nextAttempt = nextAttempt
        }
    }

    /// Messages in the queue, oldest first; `includeDone` adds finished ones; `tenant` keeps one
    /// tenant's (a tenant-scoped admin token's view).
    public func list(tenant: String? = nil, includeDone: Bool = false, limit: Int = 1000) throws -> [QueueListing] {
        try pool.read { db in
            // Without finished messages, through the indexes of queued and held ones, so a queue
            // database holding months of finished messages is not scanned.
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT m.id, m.received_at, m.sender, m.size, m.state, m.attempts, m.next_attempt,
                      (SELECT json_group_array(address) FROM
                        (SELECT address FROM recipient r WHERE r.message = m.id ORDER BY r.idx)) AS rcpts
                    FROM message m WHERE \(tenant == nil ? "1" : "m.tenant = ?") \(includeDone ? "" : """
                    AND m.id IN (SELECT id FROM message WHERE next_attempt IS NOT NULL
                                 UNION ALL SELECT id FROM message WHERE state = 'held')
                    """)
                    ORDER BY m.id LIMIT ?
                    """, arguments: tenant.map { [$0, limit] as StatementArguments } ?? [limit])
            return rows.map { r in
                QueueListing(
                    id: r["id"], receivedAt: Date(timeIntervalSince1970: r["received_at"]), sender: r["sender"],
                    recipients: Self.stringArray(json: r["rcpts"]), size: r["size"],
                    state: r["state"], attempts: r["attempts"],
                    nextAttempt: (r["next_attempt"] as Double?).map { Date(timeIntervalSince1970: $0) })
            }
        }
    }

    /// A JSON array of strings from SQLite's `json_group_array`: addresses may hold spaces (a quoted
    /// local part), so no separator character is safe.
    static func stringArray(json: String?) -> [String] {
        guard let json, let data = json.data(using: .utf8) else { return [] }
        return (try? JSONDecoder().decode([String].self, from: data)) ?? []
    }

    public func traceEvents(queueID: String) throws -> [TraceEvent] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM trace_event WHERE queue_id = ? ORDER BY id", arguments: [queueID]
            ).map { r in
                Self.traceEvent(r)
            }
        }
    }

    static func traceEvent(_ r: Row) -> TraceEvent {
        TraceEvent(
            time: Date(timeIntervalSince1970: r["time"]), queueID: r["queue_id"], recipient: r["recipient"],
            kind: TraceEventKind(rawValue: r["kind"]) ?? .received, detail: r["detail"], forest: r["forest"],
            region: r["region"], tenant: r["tenant"], clientAddress: r["client_address"], reply: r["reply"])
    }

    /// Throttle events since `since`, newest last (service health reads these).
    public func throttleEvents(since: Date, limit: Int = 1000) throws -> [TraceEvent] {
        try pool.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM trace_event WHERE kind = 'throttled' AND time >= ? ORDER BY id LIMIT ?",
                arguments: [since.timeIntervalSince1970, limit]
            ).map(Self.traceEvent)
        }
    }

    /// Spool paths the queue still refers to (start-up cleanup keeps these).
    public func referencedSpoolPaths() throws -> Set<String> {
        try pool.read { db in
            Set(try String.fetchAll(db, sql: "SELECT body_path FROM message WHERE body_path IS NOT NULL"))
        }
    }

    /// Counts by state, for logs and tests.
    public func counts() throws -> (queued: Int, done: Int) {
        try pool.read { db in
            let q = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message WHERE state = 'queued'") ?? 0
            let d = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message WHERE state = 'done'") ?? 0
            return (q, d)
        }
    }
}
