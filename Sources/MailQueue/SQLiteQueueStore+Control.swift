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

    /// Applies `action` to message `id` on behalf of `actor`. Returns the spool path to remove, if any.
    @discardableResult
    public func control(_ action: ControlAction, id: String, actor: String, now: Date = Date()) throws -> String? {
        try pool.write { db -> String? in
            guard let state = try String.fetchOne(db, sql: "SELECT state FROM message WHERE id = ?", arguments: [id])
            else { throw ControlError.notFound(id) }
            let bodyPath = try String.fetchOne(db, sql: "SELECT body_path FROM message WHERE id = ?", arguments: [id])
            func event(_ detail: String) throws {
                try Self.appendTrace(
                    db,
                    TraceEvent(
                        time: now, queueID: id, recipient: nil, kind: .admin,
                        detail: "\(action.rawValue) by \(actor)\(detail)"))
            }
            switch action {
            case .hold:
                guard state == "queued" else {
                    throw ControlError.notApplicable(id, "only a queued message can be held (it is \(state))")
                }
                try db.execute(
                    sql: "UPDATE message SET state = 'held', next_attempt = NULL WHERE id = ?", arguments: [id])
                try event("")
                return nil
            case .release:
                guard state == "held" else {
                    throw ControlError.notApplicable(id, "only a held message can be released (it is \(state))")
                }
                try db.execute(
                    sql: "UPDATE message SET state = 'queued', next_attempt = ? WHERE id = ?",
                    arguments: [now.timeIntervalSince1970, id])
                try event("")
                return nil
            case .retry:
                guard state == "queued" else {
                    throw ControlError.notApplicable(id, "only a queued message can be retried (it is \(state))")
                }
                try db.execute(
                    sql: "UPDATE message SET next_attempt = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, id])
                try event("")
                return nil
            case .bounce:
                guard state == "queued" || state == "held" else {
                    throw ControlError.notApplicable(id, "the message is already \(state)")
                }
                // The delivery scheduler fails the pending recipients at once and sends the DSN, so
                // the sender hears exactly as for any other failure.
                try db.execute(
                    sql: "UPDATE message SET state = 'queued', bounce_requested = 1, next_attempt = ? WHERE id = ?",
                    arguments: [now.timeIntervalSince1970, id])
                try event("")
                return nil
            case .delete:
                guard state != "done" else { throw ControlError.notApplicable(id, "the message is already done") }
                try db.execute(
                    sql:
                        "UPDATE recipient SET status = 'failed', last_reply = ? WHERE message = ? AND status = 'pending'",
                    arguments: ["deleted by an administrator (\(actor)), no report sent", id])
                try db.execute(
                    sql:
                        "UPDATE message SET state = 'done', next_attempt = NULL, body = NULL, body_path = NULL WHERE id = ?",
                    arguments: [id])
                try event(" (no report to the sender)")
                return bodyPath
            }
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
        public var events: [TraceEvent]
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
                      m.state, r.address, r.status, r.route, r.last_reply
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
                    lastReply: r["last_reply"], events: events)
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
