import Foundation
import GRDB
import SMTPCore

/// Queue control (hold, release, retry now, bounce, delete) and the message trace query: what an
/// administrator does and asks when mail is stuck. Every action is a trace event naming who did it,
/// written in the same transaction as the change.
extension SQLiteQueueStore {
    /// What an administrator can do to a queued message.
    public enum ControlAction: String, Sendable, CaseIterable {
        case hold
        case release
        case retry
        case bounce
        case delete

        /// Why the action does not apply to a message in `state` (`queued`, `held`, `done`), nil
        /// when it does: one rule and one wording for every queue store.
        public func refusal(state: String) -> String? {
            switch self {
            case .hold: state == "queued" ? nil : "only a queued message can be held (it is \(state))"
            case .release: state == "held" ? nil : "only a held message can be released (it is \(state))"
            case .retry: state == "queued" ? nil : "only a queued message can be retried (it is \(state))"
            case .bounce: state == "queued" || state == "held" ? nil : "the message is already \(state)"
            case .delete: state != "done" ? nil : "the message is already done"
            }
        }
    }

    /// Why an action could not be taken, fit for one CLI line.
    public enum ControlError: Error, CustomStringConvertible, Equatable {
        case notFound(String)
        case notApplicable(String, String)

        public var description: String {
            switch self {
            case .notFound(let id): return "no message with queue ID \(id)"
            case .notApplicable(let id, let why): return "\(id): \(why)"
            }
        }
    }

    /// What a control action did: the typed answer the API, the web pages and the CLI render (none of
    /// them parses text).
    ///
    /// ```swift
    /// let r = try store.control(.delete, id: id, actor: "api:ops")
    /// r.outcome            // .deleted
    /// r.releasedSpoolPath  // "/var/lib/mailflow/spool/<id>" for a large body, already removed
    /// ```
    public struct ControlResult: Sendable, Equatable {
        /// The state the action left the message in, as a stable code (`rawValue`) for the API.
        public enum Outcome: String, Sendable, Equatable, CaseIterable {
            /// No delivery attempts until released.
            case held
            /// Queued again and due at once.
            case released
            /// Due at once (a retry).
            case dueNow = "due_now"
            /// The delivery scheduler fails the pending recipients with `5.3.0` and sends the DSN.
            case bounceRequested = "bounce_requested"
            /// Done, without a report to the sender; its body is gone.
            case deleted

            /// One line for a person: what happened and what happens next.
            public var summary: String {
                switch self {
                case .held: return "held: no delivery attempts until released"
                case .released: return "released: due now"
                case .dueNow: return "due now"
                case .bounceRequested: return "bounce requested: the sender gets a DSN shortly"
                case .deleted: return "deleted: no report to the sender"
                }
            }
        }

        public var queueID: String
        public var action: ControlAction
        public var outcome: Outcome
        /// The spool file the message no longer refers to (a deleted message's large body, see
        /// `Spool.inlineLimit`). `control` removes it once the transaction has committed, so a crash
        /// in between leaves at worst an orphan that the start-up sweep (`Spool.removeOrphans`) takes.
        public var releasedSpoolPath: String?

        /// Whether the message became due, so the delivery scheduler should look at it now.
        public var makesDue: Bool {
            switch outcome {
            case .released, .dueNow, .bounceRequested: return true
            case .held, .deleted: return false
            }
        }

        public init(queueID: String, action: ControlAction, outcome: Outcome, releasedSpoolPath: String? = nil) {
            self.queueID = queueID
            self.action = action
            self.outcome = outcome
            self.releasedSpoolPath = releasedSpoolPath
        }
    }

    /// Applies `action` to message `id` on behalf of `actor`, the one entry point for every caller
    /// (admin API, web pages, CLI): the change and its trace event in one transaction, then, once that
    /// has committed, the removal of any spool file the message let go of. Throws `ControlError`.
    @discardableResult
    public func control(_ action: ControlAction, id: String, actor: String, now: Date = Date()) throws
        -> ControlResult
    {
        let result = try pool.write { db in try Self.applyControl(db, action, id: id, actor: actor, now: now) }
        // After the commit, never before: a rollback must not find its body gone.
        if let path = result.releasedSpoolPath { Spool.removeBody(at: path) }
        return result
    }

    /// The transaction of `control`: the state change and its admin trace event. The spool file it
    /// releases is left for the caller to remove after commit.
    static func applyControl(
        _ db: Database, _ action: ControlAction, id: String, actor: String, now: Date
    ) throws -> ControlResult {
        guard let row = try Row.fetchOne(db, sql: "SELECT state, body_path FROM message WHERE id = ?", arguments: [id])
        else { throw ControlError.notFound(id) }
        let state: String = row["state"]
        let bodyPath: String? = row["body_path"]
        func event(_ detail: String) throws {
            try Self.appendTrace(
                db,
                TraceEvent(
                    time: now, queueID: id, recipient: nil, kind: .admin,
                    detail: "\(action.rawValue) by \(actor)\(detail)"))
        }
        func result(_ outcome: ControlResult.Outcome, released: String? = nil) -> ControlResult {
            ControlResult(queueID: id, action: action, outcome: outcome, releasedSpoolPath: released)
        }
        if let why = action.refusal(state: state) { throw ControlError.notApplicable(id, why) }
        switch action {
        case .hold:
            try db.execute(sql: "UPDATE message SET state = 'held', next_attempt = NULL WHERE id = ?", arguments: [id])
            try event("")
            return result(.held)
        case .release:
            try db.execute(
                sql: "UPDATE message SET state = 'queued', next_attempt = ? WHERE id = ?",
                arguments: [now.timeIntervalSince1970, id])
            try event("")
            return result(.released)
        case .retry:
            try db.execute(
                sql: "UPDATE message SET next_attempt = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, id])
            try event("")
            return result(.dueNow)
        case .bounce:
            // The delivery scheduler fails the pending recipients at once and sends the DSN, so
            // the sender hears exactly as for any other failure; it also drops the body then.
            try db.execute(
                sql: "UPDATE message SET state = 'queued', bounce_requested = 1, next_attempt = ? WHERE id = ?",
                arguments: [now.timeIntervalSince1970, id])
            try event("")
            return result(.bounceRequested)
        case .delete:
            try db.execute(
                sql: "UPDATE recipient SET status = 'failed', last_reply = ? WHERE message = ? AND status = 'pending'",
                arguments: ["deleted by an administrator (\(actor)), no report sent", id])
            try db.execute(
                sql:
                    "UPDATE message SET state = 'done', next_attempt = NULL, body = NULL, body_path = NULL WHERE id = ?",
                arguments: [id])
            try event(" (no report to the sender)")
            return result(.deleted, released: bodyPath)
        }
    }

    /// A message trace query (Exchange's message trace): every filter is optional.
    public struct TraceQuery: Sendable, Equatable {
        public var sender: String?
        public var recipient: String?
        public var messageID: String?
        public var queueID: String?
        public var status: String?
        public var clientAddress: String?
        public var tenant: String?
        /// `inbound` (delivered to a local mailbox) or `outbound` (relayed).
        public var direction: String?
        public var since: Date?
        public var until: Date?
        /// Sender authentication results at receipt (`pass`, `fail`, ...): only messages checked.
        public var spf: String?
        public var dkim: String?
        public var dmarc: String?
        public var limit = 100

        public init() {}
    }

    /// One recipient of one message, as message trace shows it.
    public struct TraceRow: Sendable, Codable, Equatable {
        public var queueID: String
        public var received: Date
        public var sender: String
        public var recipient: String
        public var status: String
        public var direction: String
        public var subject: String?
        public var messageID: String?
        public var size: Int
        public var clientAddress: String
        public var tenant: String?
        public var lastReply: String?
        /// What sender authentication found at receipt; nil when the message was not checked.
        public var spf: String?
        public var dkim: String?
        public var dmarc: String?
        public var events: [TraceEvent]

        public init(
            queueID: String, received: Date, sender: String, recipient: String, status: String, direction: String,
            subject: String?, messageID: String?, size: Int, clientAddress: String, tenant: String?,
            lastReply: String?, spf: String?, dkim: String?, dmarc: String?, events: [TraceEvent]
        ) {
            self.queueID = queueID
            self.received = received
            self.sender = sender
            self.recipient = recipient
            self.status = status
            self.direction = direction
            self.subject = subject
            self.messageID = messageID
            self.size = size
            self.clientAddress = clientAddress
            self.tenant = tenant
            self.lastReply = lastReply
            self.spf = spf
            self.dkim = dkim
            self.dmarc = dmarc
            self.events = events
        }
    }

    /// Per-recipient rows matching `q`, newest first, each with its event timeline.
    public func trace(_ q: TraceQuery) throws -> [TraceRow] {
        try pool.read { db in
            var conditions: [String] = []
            var args: [any DatabaseValueConvertible] = []
            func like(_ column: String, _ value: String?) {
                guard let value else { return }
                conditions.append("\(column) LIKE ? ESCAPE '\\'")
                args.append(
                    "%"
                        + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                        .replacingOccurrences(of: "_", with: "\\_") + "%")
            }
            func equal(_ column: String, _ value: String?) {
                guard let value else { return }
                conditions.append("\(column) = ?")
                args.append(value)
            }
            like("m.sender", q.sender)
            like("r.address", q.recipient)
            like("m.message_id", q.messageID)
            equal("m.id", q.queueID)
            equal("m.client_address", q.clientAddress)
            equal("m.tenant", q.tenant)
            equal("m.spf", q.spf)
            equal("m.dkim", q.dkim)
            equal("m.dmarc", q.dmarc)
            if let s = q.status?.lowercased() {
                if s == "held" {
                    conditions.append("m.state = 'held' AND r.status = 'pending'")
                } else {
                    equal("r.status", s)
                }
            }
            if let d = q.direction?.lowercased() {
                conditions.append(d == "outbound" ? "r.route LIKE 'relay:%'" : "r.route LIKE 'local:%'")
            }
            if let t = q.since {
                conditions.append("m.received_at >= ?")
                args.append(t.timeIntervalSince1970)
            }
            if let t = q.until {
                conditions.append("m.received_at <= ?")
                args.append(t.timeIntervalSince1970)
            }
            args.append(q.limit)
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT m.id, m.received_at, m.sender, m.subject, m.message_id, m.size, m.client_address, m.tenant,
                      m.state, m.spf, m.dkim, m.dmarc, r.address, r.status, r.route, r.last_reply
                    FROM recipient r JOIN message m ON m.id = r.message
                    \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "))
                    ORDER BY m.received_at DESC, r.idx LIMIT ?
                    """, arguments: StatementArguments(args))
            return try rows.map { r in
                let id: String = r["id"]
                let address: String = r["address"]
                let events = try Row.fetchAll(
                    db,
                    sql:
                        "SELECT * FROM trace_event WHERE queue_id = ? AND (recipient IS NULL OR recipient = ?) ORDER BY id",
                    arguments: [id, address]
                ).map(Self.traceEvent)
                let status: String = r["status"]
                let state: String = r["state"]
                let route: String = r["route"]
                return TraceRow(
                    queueID: id, received: Date(timeIntervalSince1970: r["received_at"]), sender: r["sender"],
                    recipient: address,
                    status: state == "held" && status == "pending" ? "Held" : status.capitalized,
                    direction: Route(stored: route)?.relayDomain != nil ? "Outbound" : "Inbound", subject: r["subject"],
                    messageID: r["message_id"], size: r["size"], clientAddress: r["client_address"],
                    tenant: r["tenant"],
                    lastReply: r["last_reply"], spf: r["spf"], dkim: r["dkim"], dmarc: r["dmarc"], events: events)
            }
        }
    }

    /// Pending recipients per destination domain by age, like Postfix's qshape.
    public struct QueueShape: Sendable, Codable, Equatable {
        /// Upper bounds of the age buckets, in minutes; the last bucket is everything older.
        public static let bucketMinutes = [5, 10, 20, 40, 80, 160, 320, 640, 1280]
        public var domain: String
        public var total: Int
        public var buckets: [Int]

        public init(domain: String, total: Int, buckets: [Int]) {
            self.domain = domain
            self.total = total
            self.buckets = buckets
        }
    }

    public func shape(now: Date = Date()) throws -> [QueueShape] {
        try pool.read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT r.address, m.received_at FROM recipient r JOIN message m ON m.id = r.message
                    WHERE r.status = 'pending' AND m.state IN ('queued', 'held')
                    """)
            var byDomain: [String: [Int]] = [:]
            let bounds = QueueShape.bucketMinutes
            for r in rows {
                let address: String = r["address"]
                let domain = address.split(separator: "@").last.map { String($0).lowercased() } ?? address
                let age = now.timeIntervalSince(Date(timeIntervalSince1970: r["received_at"])) / 60
                let bucket = bounds.firstIndex { age < Double($0) } ?? bounds.count
                byDomain[domain, default: Array(repeating: 0, count: bounds.count + 1)][bucket] += 1
            }
            return byDomain.map { QueueShape(domain: $0.key, total: $0.value.reduce(0, +), buckets: $0.value) }
                .sorted { $0.total > $1.total || ($0.total == $1.total && $0.domain < $1.domain) }
        }
    }
}
