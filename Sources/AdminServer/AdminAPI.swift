import Delivery
import Foundation
import Hummingbird
import Ingress
import MailQueue

/// JSON shapes of the API (described in docs/openapi.yaml).
struct OverviewResponse: ResponseCodable {
    var hostname: String
    var version: String
    var time: Date
    var queue: SQLiteQueueStore.QueueCounts
    var connections: Int?
    var maxConnections: Int?
    var bucketSeconds: Int
    var activity: [SQLiteQueueStore.ActivityBucket]
    var queueSamples: [SQLiteQueueStore.QueueSample]
    /// The most frequent delivery errors and refusals in the last hour.
    var topErrors: [SQLiteQueueStore.ErrorSummary]
}

struct QueueListResponse: ResponseCodable {
    var messages: [SQLiteQueueStore.QueueListing]
}

/// One header field of a stored message, unfolded (RFC 5322 §2.2.3).
public struct HeaderField: Codable, Equatable, Sendable {
    public var name: String
    public var value: String
}

struct MessageDetail: ResponseCodable {
    struct Recipient: Codable {
        var address: String
        var route: String
        var status: String
        var attempts: Int
        var lastReply: String?
        var notify: String?
        var originalRecipient: String?
    }
    var id: String
    var receivedAt: Date
    var sender: String
    var size: Int
    var state: String
    var attempts: Int
    var nextAttempt: Date?
    var clientAddress: String
    var helo: String
    var protocolName: String
    var tls: String?
    var tenant: String?
    var messageID: String?
    var subject: String?
    var envelopeID: String?
    var ret: String?
    var bodyType: String?
    var smtpUTF8: Bool
    var recipients: [Recipient]
    var headers: [HeaderField]
    var events: [TraceEvent]
}

struct ActionResponse: ResponseCodable {
    var id: String
    var action: String
    var actor: String
    var result: String
}

struct ShapeResponse: ResponseCodable {
    var bucketMinutes: [Int]
    var destinations: [SQLiteQueueStore.QueueShape]
}

struct DestinationsResponse: ResponseCodable {
    var destinations: [DestinationStatus]
}

struct TraceResponse: ResponseCodable {
    var rows: [SQLiteQueueStore.TraceRow]
}

struct TenantUsage: Codable {
    var name: String
    var domains: [String]
    var forest: String
    var maxMessageSize: Int
    var receivedLastHour: Int
    var pendingRecipients: Int
}

struct TenantsResponse: ResponseCodable {
    var tenants: [TenantUsage]
}

extension AdmissionUsage: ResponseEncodable {}

extension AdminHTTPServer {
    static let bucketSeconds = 900
    static let buckets = 24

    func addAPIRoutes(_ api: RouterGroup<AdminRequestContext>) {
        let backend = self.backend
        api.get("overview") { _, _ in try Self.overview(backend) }
        api.get("queue") { request, context in
            let q = Self.form(request.uri.query ?? "")
            for key in ["state", "limit"] where q[key] == "" {
                throw HTTPError(.badRequest, message: "\(key) must not be empty")
            }
            let limit = try Self.limit(q["limit"], default: 1000, max: 10000)
            return QueueListResponse(
                messages: try Self.listQueue(
                    backend.store, state: q["state"], contains: q["q"], limit: limit, tenant: context.tenant))
        }
        api.get("queue/shape") { _, _ in
            ShapeResponse(
                bucketMinutes: SQLiteQueueStore.QueueShape.bucketMinutes, destinations: try backend.store.shape())
        }
        api.get("queue/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let detail = try Self.detail(backend.store, id: id, tenant: context.tenant) else {
                throw HTTPError(.notFound, message: "no message with queue ID \(id)")
            }
            return detail
        }
        api.post("queue/:id/:action") { _, context in
            let id = try context.parameters.require("id")
            let name = try context.parameters.require("action")
            guard let action = SQLiteQueueStore.ControlAction(rawValue: name), action != .delete else {
                throw HTTPError(
                    .notFound, message: "no action \(name): use hold, release, retry or bounce (DELETE to delete)")
            }
            return try Self.control(backend, action, id: id, actor: context.actor ?? "api", tenant: context.tenant)
        }
        api.delete("queue/:id") { _, context in
            try Self.control(
                backend, .delete, id: try context.parameters.require("id"), actor: context.actor ?? "api",
                tenant: context.tenant)
        }
        api.get("destinations") { _, _ in DestinationsResponse(destinations: await backend.destinations()) }
        api.get("trace") { request, context in
            TraceResponse(
                rows: try backend.store.trace(
                    try Self.traceQuery(Self.form(request.uri.query ?? ""), tenant: context.tenant)))
        }
        api.get("limits") { _, _ -> AdmissionUsage in
            guard let usage = backend.usage() else { throw HTTPError(.serviceUnavailable, message: "no SMTP listener") }
            return usage
        }
        api.get("tenants") { _, _ in TenantsResponse(tenants: try Self.tenantUsage(backend)) }
    }

    // MARK: shared by the API and the pages

    static func overview(_ backend: AdminBackend, now: Date = Date()) throws -> OverviewResponse {
        let usage = backend.usage()
        // Buckets on clock boundaries (…:00, :15, :30, :45); the last one is the current quarter hour.
        let width = TimeInterval(bucketSeconds)
        let end = Date(timeIntervalSince1970: (floor(now.timeIntervalSince1970 / width) + 1) * width)
        let activity = try backend.store.activity(now: end, width: width, count: buckets)
        var samples = try backend.store.samples(since: end - width * Double(buckets))
        let counts = try backend.store.queueCounts()
        samples.append(
            .init(
                time: now, queuedMessages: counts.queuedMessages, pendingRecipients: counts.pendingRecipients,
                heldMessages: counts.heldMessages))
        return OverviewResponse(
            hostname: backend.hostname, version: backend.version, time: now, queue: counts,
            connections: usage?.connections, maxConnections: usage?.maxConnections, bucketSeconds: bucketSeconds,
            activity: activity, queueSamples: samples, topErrors: try backend.store.topErrors(since: now - 3600))
    }

    /// The queue as listed; with `tenant`, that tenant's messages only.
    static func listQueue(
        _ store: SQLiteQueueStore, state: String?, contains: String?, limit: Int, tenant: String? = nil
    ) throws
        -> [SQLiteQueueStore.QueueListing]
    {
        let state = (state ?? "").isEmpty ? "active" : state!.lowercased()
        guard ["active", "queued", "held", "done", "all"].contains(state) else {
            throw HTTPError(.badRequest, message: "state must be one of active, queued, held, done, all")
        }
        let needle = (contains ?? "").lowercased()
        let includeDone = state == "done" || state == "all"
        let fetched = needle.isEmpty ? limit : 100_000
        return try store.list(tenant: tenant, includeDone: includeDone, limit: fetched)
            .filter { m in
                (state == "active" || state == "all" || m.state == state)
                    && (needle.isEmpty || m.sender.lowercased().contains(needle)
                        || m.recipients.contains { $0.lowercased().contains(needle) })
            }.prefix(limit).map { $0 }
    }

    static func limit(_ text: String?, default d: Int, max: Int) throws -> Int {
        guard let text, !text.isEmpty else { return d }
        guard let n = Int(text), (1...max).contains(n) else {
            throw HTTPError(.badRequest, message: "limit must be a whole number from 1 to \(max)")
        }
        return n
    }

    /// A queue action; with `tenant`, on that tenant's messages only (another's is `404`, as if it
    /// did not exist).
    static func control(
        _ backend: AdminBackend, _ action: SQLiteQueueStore.ControlAction, id: String, actor: String,
        tenant: String? = nil
    )
        throws -> ActionResponse
    {
        do {
            if let tenant, try backend.store.messageTenant(id) != tenant {
                throw SQLiteQueueStore.ControlError.notFound(id)
            }
            let result = try backend.store.control(action, id: id, actor: actor)
            if action != .hold && action != .delete { backend.wakeDelivery() }
            return ActionResponse(id: id, action: action.rawValue, actor: actor, result: result ?? "done")
        } catch let e as SQLiteQueueStore.ControlError {
            switch e {
            case .notFound: throw HTTPError(.notFound, message: e.description)
            case .notApplicable: throw HTTPError(.conflict, message: e.description)
            }
        }
    }

    /// A message with its events; with `tenant`, nil for another tenant's message.
    static func detail(_ store: SQLiteQueueStore, id: String, tenant: String? = nil) throws -> MessageDetail? {
        guard let m = try store.message(id), tenant == nil || m.tenant == tenant else { return nil }
        let events = try store.traceEvents(queueID: id)
        return MessageDetail(
            id: m.id, receivedAt: m.receivedAt, sender: m.sender, size: m.size,
            state: m.state == .held ? "held" : m.state.rawValue, attempts: m.attempts, nextAttempt: m.nextAttempt,
            clientAddress: m.clientAddress, helo: m.helo, protocolName: m.protocolName, tls: m.tls, tenant: m.tenant,
            messageID: m.messageID, subject: m.subject, envelopeID: m.envelopeID, ret: m.ret?.rawValue,
            bodyType: m.bodyType?.rawValue,
            smtpUTF8: m.smtpUTF8,
            recipients: m.recipients.map {
                .init(
                    address: $0.recipient.address, route: $0.recipient.route.stored, status: $0.status.rawValue,
                    attempts: $0.attempts, lastReply: $0.lastReply, notify: $0.recipient.notify?.description,
                    originalRecipient: $0.recipient.originalRecipient?.stored)
            },
            headers: headerFields(m.body), events: events)
    }

    /// The header section of a stored body (at most its first 64 KiB), unfolded.
    public static func headerFields(_ body: MessageBody?) -> [HeaderField] {
        var data = Data()
        switch body {
        case .inline(let d): data = d.prefix(65536)
        case .spooled(let path):
            if let h = FileHandle(forReadingAtPath: path) {
                data = (try? h.read(upToCount: 65536)) ?? Data()
                try? h.close()
            }
        case nil: return []
        }
        let text = String(decoding: data, as: UTF8.self)
        let section = text.components(separatedBy: "\r\n\r\n").first ?? ""
        var fields: [HeaderField] = []
        for line in section.components(separatedBy: "\r\n") {
            if line.first == " " || line.first == "\t", !fields.isEmpty {
                fields[fields.count - 1].value += " " + line.trimmingCharacters(in: .whitespaces)
            } else if let colon = line.firstIndex(of: ":") {
                fields.append(
                    HeaderField(
                        name: String(line[..<colon]),
                        value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
        }
        return fields
    }

    /// A trace query from request parameters; a bad value is a `400` naming it. With `tenant` (a
    /// tenant admin's token), the query is that tenant's: a `tenant` parameter naming another is `403`.
    static func traceQuery(_ p: [String: String], tenant: String? = nil) throws -> SQLiteQueueStore.TraceQuery {
        var q = SQLiteQueueStore.TraceQuery()
        for key in ["status", "direction", "since", "until", "limit"] where p[key]?.isEmpty == true {
            throw HTTPError(.badRequest, message: "\(key) must not be empty")
        }
        func text(_ key: String) -> String? {
            guard let v = p[key]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        q.sender = text("sender")
        q.recipient = text("recipient")
        q.messageID = text("message_id")
        q.queueID = text("queue_id")
        q.clientAddress = text("client_ip")
        q.tenant = text("tenant")
        if let tenant {
            guard q.tenant == nil || q.tenant == tenant else {
                throw HTTPError(.forbidden, message: "this admin token can trace its own tenant's mail only")
            }
            q.tenant = tenant
        }
        if let s = text("status") {
            guard ["pending", "held", "delivered", "failed"].contains(s.lowercased()) else {
                throw HTTPError(.badRequest, message: "status must be one of pending, held, delivered, failed")
            }
            q.status = s
        }
        if let d = text("direction") {
            guard ["inbound", "outbound"].contains(d.lowercased()) else {
                throw HTTPError(.badRequest, message: "direction must be inbound or outbound")
            }
            q.direction = d
        }
        if let s = text("since") {
            guard let t = parseTime(s) else {
                throw HTTPError(.badRequest, message: "since: '\(s)' is not an ISO 8601 time or a duration like 24h")
            }
            q.since = t
        }
        if let s = text("until") {
            guard let t = parseTime(s) else {
                throw HTTPError(.badRequest, message: "until: '\(s)' is not an ISO 8601 time or a duration like 24h")
            }
            q.until = t
        }
        q.limit = try limit(text("limit"), default: 100, max: 5000)
        return q
    }

    /// ISO 8601 (`2026-11-29T10:00:00Z`, or a date) or a duration back from now (`30m`, `24h`, `7d`).
    static func parseTime(_ s: String, now: Date = Date()) -> Date? {
        if let unit = s.last, let n = Double(s.dropLast()), n >= 0 {
            switch unit {
            case "m": return now - n * 60
            case "h": return now - n * 3600
            case "d": return now - n * 86400
            default: break
            }
        }
        return parseISO8601(s)
    }

    /// `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SS` with `Z` or `±HH:MM`; nil for anything
    /// else, including dates that do not exist (February 30).
    static func parseISO8601(_ s: String) -> Date? {
        func number(_ t: Substring, _ digits: Int) -> Int? {
            t.count == digits && t.allSatisfy(\.isASCII) && t.allSatisfy(\.isNumber) ? Int(t) : nil
        }
        let halves = s.split(separator: "T", maxSplits: 1, omittingEmptySubsequences: false)
        let ymd = halves[0].split(separator: "-", omittingEmptySubsequences: false)
        guard ymd.count == 3, let y = number(ymd[0], 4), let mo = number(ymd[1], 2), let d = number(ymd[2], 2) else {
            return nil
        }
        var c = DateComponents(year: y, month: mo, day: d, hour: 0, minute: 0, second: 0)
        var offset = 0
        if halves.count == 2 {
            var time = halves[1]
            if time.hasSuffix("Z") {
                time = time.dropLast()
            } else if time.count == 14, let sign = time.dropFirst(8).first, sign == "+" || sign == "-" {
                let hm = time.dropFirst(9).split(separator: ":", omittingEmptySubsequences: false)
                guard hm.count == 2, let oh = number(hm[0], 2), let om = number(hm[1], 2), oh < 24, om < 60 else {
                    return nil
                }
                offset = (oh * 3600 + om * 60) * (sign == "+" ? 1 : -1)
                time = time.prefix(8)
            } else {
                return nil
            }
            let hms = time.split(separator: ":", omittingEmptySubsequences: false)
            guard hms.count == 3, let h = number(hms[0], 2), let mi = number(hms[1], 2), let se = number(hms[2], 2),
                h < 24, mi < 60, se < 60
            else { return nil }
            (c.hour, c.minute, c.second) = (h, mi, se)
        }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        guard let date = cal.date(from: c), cal.component(.day, from: date) == d,
            cal.component(.month, from: date) == mo
        else { return nil }
        return date - TimeInterval(offset)
    }

    static func tenantUsage(_ backend: AdminBackend, now: Date = Date()) throws -> [TenantUsage] {
        let activity = Dictionary(
            uniqueKeysWithValues: try backend.store.tenantActivity(since: now - 3600).map { ($0.tenant, $0) })
        return backend.tenants().map { t in
            TenantUsage(
                name: t.name, domains: t.domains, forest: t.forest, maxMessageSize: t.maxMessageSize,
                receivedLastHour: activity[t.name]?.received ?? 0, pendingRecipients: activity[t.name]?.pending ?? 0)
        }
    }
}
