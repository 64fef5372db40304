import Foundation
import Logging
import MailQueue
import NIOCore
import NIOPosix
import PostgresNIO
import SMTPCore

/// What `mailflow queue`, `mailflow trace` and `mailflow cluster status` read from the shared queue:
/// the same answers, in the same types, as `SQLiteQueueStore`'s `trace`, `list`, `message` and
/// `shape`, so that printing and JSON do not depend on the store; and the leases each node holds.
///
/// Every read is one statement, bounded by `timeout` like every other call, and reads the state as
/// every node sees it (a hold from one node shows on all at once).
///
/// ```swift
/// let rows = try await q.withConnection { c in try await q.trace(c, query) }
/// ```
extension SharedQueue {
    /// Runs `body` on a connection of its own, opened for it and closed after it: one command's
    /// worth of calls (the CLI's).
    public func withConnection<T: Sendable>(
        on group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let c = try await connect(on: group)
        do {
            let value = try await body(c)
            try? await c.close()
            return value
        } catch {
            try? await c.close()
            throw error
        }
    }

    // MARK: message trace

    /// Per-recipient rows matching `q`, newest first, each with its event timeline: the query and
    /// the rows of `SQLiteQueueStore.trace`. Every filter of `TraceQuery` applies, with SQLite's
    /// meaning: `sender`, `recipient` and `messageID` are substrings matched without regard to case
    /// (SQLite's `LIKE`, here `ILIKE`; `%` and `_` in them are literal), the others exact.
    /// One statement: the rows and their events (`jsonb_agg`) in one round trip.
    public func trace(_ c: PostgresConnection, _ q: SQLiteQueueStore.TraceQuery) async throws(SharedQueueError)
        -> [SQLiteQueueStore.TraceRow]
    {
        func pattern(_ value: String?) -> String? {
            value.map {
                "%"
                    + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                    .replacingOccurrences(of: "_", with: "\\_") + "%"
            }
        }
        let sender = pattern(q.sender)
        let recipient = pattern(q.recipient)
        let messageID = pattern(q.messageID)
        let status = q.status?.lowercased()
        let route = q.direction.map { $0.lowercased() == "outbound" ? "relay:%" : "local:%" }
        let since = q.since?.timeIntervalSince1970
        let until = q.until?.timeIntervalSince1970
        let limit = q.limit
        let query: PostgresQuery = """
            SELECT m.id, extract(epoch FROM m.received_at)::float8, m.sender, m.subject, m.message_id, m.size,
              m.client_address, m.tenant, m.state, m.spf, m.dkim, m.dmarc, r.address, r.status, r.route, r.last_reply,
              (SELECT coalesce(jsonb_agg(jsonb_build_object('time', extract(epoch FROM e.time)::float8,
                  'queue_id', e.queue_id, 'recipient', e.recipient, 'kind', e.kind, 'detail', e.detail,
                  'forest', e.forest, 'region', e.region, 'tenant', e.tenant, 'client_address', e.client_address,
                  'reply', e.reply) ORDER BY e.id), '[]'::jsonb)
               FROM mailflow_trace_event e
               WHERE e.queue_id = m.id AND (e.recipient IS NULL OR e.recipient = r.address))::text
            FROM mailflow_recipient r JOIN mailflow_message m ON m.id = r.message
            WHERE (\(sender)::text IS NULL OR m.sender ILIKE \(sender) ESCAPE '\\')
              AND (\(recipient)::text IS NULL OR r.address ILIKE \(recipient) ESCAPE '\\')
              AND (\(messageID)::text IS NULL OR m.message_id ILIKE \(messageID) ESCAPE '\\')
              AND (\(q.queueID)::text IS NULL OR m.id = \(q.queueID))
              AND (\(q.clientAddress)::text IS NULL OR m.client_address = \(q.clientAddress))
              AND (\(q.tenant)::text IS NULL OR m.tenant = \(q.tenant))
              AND (\(q.spf)::text IS NULL OR m.spf = \(q.spf))
              AND (\(q.dkim)::text IS NULL OR m.dkim = \(q.dkim))
              AND (\(q.dmarc)::text IS NULL OR m.dmarc = \(q.dmarc))
              AND (\(status)::text IS NULL
                OR (\(status) = 'held' AND m.state = 'held' AND r.status = 'pending')
                OR (\(status) <> 'held' AND r.status = \(status)))
              AND (\(route)::text IS NULL OR r.route LIKE \(route))
              AND (\(since)::float8 IS NULL OR m.received_at >= to_timestamp(\(since)))
              AND (\(until)::float8 IS NULL OR m.received_at <= to_timestamp(\(until)))
            ORDER BY m.received_at DESC, m.id, r.idx LIMIT \(limit)
            """
        return try await bounded(c) { c, logger in
            let rows = try await c.query(query, logger: logger)
            var out: [SQLiteQueueStore.TraceRow] = []
            for try await row in rows.decode(
                (
                    String, Double, String, String?, String?, Int, String, String?, String, String?, String?, String?,
                    String, String, String, String?, String
                ).self)
            {
                let (id, received, sender, subject, messageID, size, client, tenant, state, spf, dkim, dmarc) =
                    (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9, row.10, row.11)
                let (address, status, route, lastReply, events) = (row.12, row.13, row.14, row.15, row.16)
                out.append(
                    SQLiteQueueStore.TraceRow(
                        queueID: id, received: Date(timeIntervalSince1970: received), sender: sender,
                        recipient: address,
                        // SQLiteQueueStore.trace's words: a held message's pending recipient is Held.
                        status: state == "held" && status == "pending" ? "Held" : status.capitalized,
                        direction: Route(stored: route)?.relayDomain != nil ? "Outbound" : "Inbound",
                        subject: subject, messageID: messageID, size: size, clientAddress: client, tenant: tenant,
                        lastReply: lastReply, spf: spf, dkim: dkim, dmarc: dmarc,
                        events: try Self.traceEvents(json: events)))
            }
            return out
        }
    }

    /// Trace events from the JSON array `trace` builds; an unknown kind reads as `received`, as in
    /// `SQLiteQueueStore.traceEvent`.
    static func traceEvents(json: String) throws -> [TraceEvent] {
        struct Event: Decodable {
            var time: Double
            var queueId: String
            var recipient, kind, detail, forest, region, tenant, clientAddress, reply: String?
        }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode([Event].self, from: Data(json.utf8)).map { e in
                TraceEvent(
                    time: Date(timeIntervalSince1970: e.time), queueID: e.queueId, recipient: e.recipient,
                    kind: e.kind.flatMap(TraceEventKind.init(rawValue:)) ?? .received, detail: e.detail,
                    forest: e.forest, region: e.region, tenant: e.tenant, clientAddress: e.clientAddress,
                    reply: e.reply)
            }
        } catch {
            throw SharedQueueError.unreadable("trace events: \(error)")
        }
    }

    // MARK: queue listing

    /// Messages in the queue, ordered by ID as `SQLiteQueueStore.list` orders them; `includeDone`
    /// adds finished ones; `tenant` keeps one tenant's. Without finished messages it reads through
    /// the due and held indexes.
    public func list(
        _ c: PostgresConnection, tenant: String? = nil, includeDone: Bool = false, limit: Int = 1000
    ) async throws(SharedQueueError) -> [SQLiteQueueStore.QueueListing] {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT m.id, extract(epoch FROM m.received_at)::float8, m.sender, m.size, m.state, m.attempts,
                  extract(epoch FROM m.next_attempt)::float8,
                  (SELECT coalesce(array_agg(r.address ORDER BY r.idx), '{}') FROM mailflow_recipient r
                   WHERE r.message = m.id)
                FROM mailflow_message m
                WHERE (\(tenant)::text IS NULL OR m.tenant = \(tenant))
                  AND (\(includeDone) OR m.id IN (SELECT id FROM mailflow_message WHERE next_attempt IS NOT NULL
                                                   UNION ALL SELECT id FROM mailflow_message WHERE state = 'held'))
                ORDER BY m.id LIMIT \(limit)
                """, logger: logger)
            var out: [SQLiteQueueStore.QueueListing] = []
            for try await (id, received, sender, size, state, attempts, next, recipients) in rows.decode(
                (String, Double, String, Int, String, Int, Double?, [String]).self)
            {
                out.append(
                    SQLiteQueueStore.QueueListing(
                        id: id, receivedAt: Date(timeIntervalSince1970: received), sender: sender,
                        recipients: recipients, size: size, state: state, attempts: attempts,
                        nextAttempt: next.map { Date(timeIntervalSince1970: $0) }))
            }
            return out
        }
    }

    // MARK: one message

    /// Message `id` as `SQLiteQueueStore.message` returns it (the body inline while it is kept), nil
    /// if the queue does not know it.
    public func message(_ c: PostgresConnection, _ id: String) async throws(SharedQueueError) -> StoredMessage? {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT m.body, \(unescaped: Self.envelopeJSON)::text FROM mailflow_message m WHERE m.id = \(id)
                """, logger: logger)
            var out: StoredMessage?
            for try await (body, json) in rows.decode((ByteBuffer?, String).self) {
                out = try Self.storedMessage(id: id, body: body, envelopeJSON: json)
            }
            return out
        }
    }

    static func storedMessage(id: String, body: ByteBuffer?, envelopeJSON json: String) throws -> StoredMessage {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let e: SharedQueueEnvelope
        do {
            e = try decoder.decode(SharedQueueEnvelope.self, from: Data(json.utf8))
        } catch {
            throw SharedQueueError.unreadable("message \(id): \(error)")
        }
        let recipients = try e.recipients.map { r in
            guard let route = Route(stored: r.route) else {
                throw SharedQueueError.unreadable("message \(id): mailflow_recipient.route holds \"\(r.route)\"")
            }
            return StoredRecipient(
                index: r.idx,
                recipient: EnvelopeRecipient(
                    address: r.address, route: route, notify: r.notify.flatMap(DSNNotify.init(parsing:)),
                    originalRecipient: r.orcpt.flatMap(OriginalRecipient.init(stored:))),
                status: RecipientStatus(rawValue: r.status) ?? .pending, attempts: r.attempts, lastReply: r.lastReply)
        }
        return StoredMessage(
            id: id, receivedAt: Date(timeIntervalSince1970: e.receivedAt), sender: e.sender, size: e.size,
            bodyType: e.bodyType.flatMap(BodyType.init(rawValue:)), smtpUTF8: e.smtputf8,
            ret: e.ret.flatMap(DSNReturn.init(rawValue:)), envelopeID: e.envid, clientAddress: e.clientAddress,
            helo: e.helo, protocolName: e.protocolName, tls: e.tls, tenant: e.tenant, messageID: e.messageId,
            addMessageID: e.addMessageId, subject: e.subject, stampLength: e.stampLength,
            state: MessageState(rawValue: e.state) ?? .queued,
            nextAttempt: e.nextAttempt.map { Date(timeIntervalSince1970: $0) }, attempts: e.attempts,
            recipients: recipients, body: body.map { .inline(Data($0.readableBytesView)) },
            bounceRequested: e.bounceRequested, abruptCloses: e.abruptCloses,
            delayNoticeSentAt: e.delayNoticeAt.map { Date(timeIntervalSince1970: $0) },
            authentication: e.authResults.map {
                SenderAuthentication(field: $0, spf: e.spf ?? "none", dkim: e.dkim ?? "none", dmarc: e.dmarc ?? "none")
            }, addDate: e.addDate)
    }

    /// Who holds a lease on message `id` and until when (the database's clock), nil when nobody
    /// does or the lease has run out.
    public func leaseHolder(_ c: PostgresConnection, _ id: String) async throws(SharedQueueError) -> SharedLeaseHolder?
    {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT lease_owner, extract(epoch FROM lease_until)::float8, lease_epoch FROM mailflow_message
                WHERE id = \(id) AND lease_owner IS NOT NULL AND lease_until > now()
                """, logger: logger)
            var out: SharedLeaseHolder?
            for try await (node, until, epoch) in rows.decode((String, Double, Int64).self) {
                out = SharedLeaseHolder(node: node, until: Date(timeIntervalSince1970: until), epoch: epoch)
            }
            return out
        }
    }

    // MARK: qshape

    /// Pending recipients per destination domain by age (`SQLiteQueueStore.shape`), ages from `now`.
    public func shape(_ c: PostgresConnection, now: Date = Date()) async throws(SharedQueueError)
        -> [SQLiteQueueStore.QueueShape]
    {
        let pending = try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT r.address, extract(epoch FROM m.received_at)::float8
                FROM mailflow_recipient r JOIN mailflow_message m ON m.id = r.message
                WHERE r.status = 'pending' AND m.state IN ('queued', 'held')
                """, logger: logger)
            var out: [(address: String, received: Double)] = []
            for try await (address, received) in rows.decode((String, Double).self) { out.append((address, received)) }
            return out
        }
        // SQLiteQueueStore.shape's buckets: domain lower-cased, age in minutes from `now`.
        let bounds = SQLiteQueueStore.QueueShape.bucketMinutes
        var byDomain: [String: [Int]] = [:]
        for p in pending {
            let domain = p.address.split(separator: "@").last.map { String($0).lowercased() } ?? p.address
            let age = (now.timeIntervalSince1970 - p.received) / 60
            let bucket = bounds.firstIndex { age < Double($0) } ?? bounds.count
            byDomain[domain, default: Array(repeating: 0, count: bounds.count + 1)][bucket] += 1
        }
        return byDomain.map {
            SQLiteQueueStore.QueueShape(domain: $0.key, total: $0.value.reduce(0, +), buckets: $0.value)
        }
        .sorted { $0.total > $1.total || ($0.total == $1.total && $0.domain < $1.domain) }
    }

    // MARK: the overview's charts

    /// The overview's activity chart from every node's trace: `SQLiteQueueStore.activity`'s buckets
    /// (`count` of `width` seconds ending at `now`, oldest first) of received, delivered, deferred,
    /// failed and throttled events, through the time index.
    public func activity(
        _ c: PostgresConnection, now: Date, width: TimeInterval, count: Int
    ) async throws(SharedQueueError) -> [SQLiteQueueStore.ActivityBucket] {
        let start = now.timeIntervalSince1970 - width * Double(count)
        let end = now.timeIntervalSince1970
        let counted = try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT floor((extract(epoch FROM time) - \(start)) / \(width))::int8 AS b, kind, count(*)::int8
                FROM mailflow_trace_event
                WHERE kind IN ('received', 'delivered', 'deferred', 'failed', 'throttled')
                  AND time >= to_timestamp(\(start)) AND time < to_timestamp(\(end))
                GROUP BY b, kind
                """, logger: logger)
            var out: [(bucket: Int, kind: String, n: Int)] = []
            for try await (b, kind, n) in rows.decode((Int64, String, Int64).self) {
                out.append((Int(b), kind, Int(n)))
            }
            return out
        }
        struct Bucket: Encodable {
            var start: Double
            var received = 0, delivered = 0, deferred = 0, failed = 0, throttled = 0
        }
        var buckets = (0..<count).map { Bucket(start: start + width * Double($0)) }
        for (b, kind, n) in counted where b >= 0 && b < count {
            switch kind {
            case "received": buckets[b].received += n
            case "delivered": buckets[b].delivered += n
            case "deferred": buckets[b].deferred += n
            case "failed": buckets[b].failed += n
            default: buckets[b].throttled += n
            }
        }
        return try Self.viaJSON(buckets, "activity")
    }

    /// The overview's most frequent delivery errors and admission refusals since `since`, from
    /// every node's trace, as `SQLiteQueueStore.topErrors` counts them: by kind and exact text (the
    /// reply, else the detail), most frequent first.
    public func topErrors(
        _ c: PostgresConnection, since: Date, limit: Int = 10
    ) async throws(SharedQueueError) -> [SQLiteQueueStore.ErrorSummary] {
        let t = since.timeIntervalSince1970
        let rows = try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT kind, coalesce(reply, detail, '') AS text, count(*)::int8 AS n,
                  extract(epoch FROM min(time))::float8, extract(epoch FROM max(time))::float8 AS last
                FROM mailflow_trace_event
                WHERE kind IN ('deferred', 'failed', 'throttled') AND time >= to_timestamp(\(t))
                GROUP BY kind, text ORDER BY n DESC, last DESC LIMIT \(limit)
                """, logger: logger)
            var out: [Summary] = []
            for try await (kind, text, n, first, last) in rows.decode((String, String, Int64, Double, Double).self) {
                out.append(Summary(kind: kind, text: text, count: Int(n), firstSeen: first, lastSeen: last))
            }
            return out
        }
        return try Self.viaJSON(rows, "top errors")
    }

    struct Summary: Encodable, Sendable {
        var kind, text: String
        var count: Int
        var firstSeen, lastSeen: Double
    }

    /// `SQLiteQueueStore`'s chart types have no public memberwise initialiser; they are `Codable`
    /// (the admin API's JSON), so they are built through their coding keys, times in seconds.
    static func viaJSON<Out: Decodable>(_ value: some Encodable, _ what: String) throws(SharedQueueError) -> Out {
        do {
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .secondsSince1970
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .secondsSince1970
            return try decoder.decode(Out.self, from: encoder.encode(value))
        } catch {
            throw SharedQueueError.unreadable("\(what): \(error)")
        }
    }

    // MARK: leases per node

    /// Leases running now (`lease_until > now()` on the database's clock), counted per node, for
    /// `mailflow cluster status`. Nil when the database has no shared queue tables (a cluster that
    /// shares only its forests' limits): that is not an error.
    public func leasesHeld(_ c: PostgresConnection) async throws(SharedQueueError) -> [String: Int]? {
        try await bounded(c) { c, logger in
            let exists = try await c.query(
                "SELECT to_regclass('mailflow_message') IS NOT NULL", logger: logger)
            var found = false
            for try await e in exists.decode(Bool.self) { found = e }
            guard found else { return nil }
            let rows = try await c.query(
                """
                SELECT lease_owner, count(*) FROM mailflow_message
                WHERE lease_owner IS NOT NULL AND lease_until > now() GROUP BY lease_owner
                """, logger: logger)
            var out: [String: Int] = [:]
            for try await (node, n) in rows.decode((String, Int).self) { out[node] = n }
            return out
        }
    }
}

/// A running lease on one message, as `mailflow queue show` reports it.
public struct SharedLeaseHolder: Sendable, Equatable, Codable {
    /// The node delivering the message.
    public var node: String
    /// When the lease runs out unless renewed, on the database's clock.
    public var until: Date
    /// Which claim of the message this is (`SharedLease.epoch`).
    public var epoch: Int64
}
