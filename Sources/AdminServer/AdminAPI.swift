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
    /// The data directory's free space and whether new mail is refused for storage (docs/queue.md).
    var storage: StorageStatus
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

/// A queue action's answer. `result` is the outcome's code (`SQLiteQueueStore.ControlResult.Outcome`:
/// `held`, `released`, `due_now`, `bounce_requested`, `deleted`), never free text or a file path.
struct ActionResponse: ResponseCodable {
    var id: String
    var action: String
    var actor: String
    var result: String

    init(_ r: SQLiteQueueStore.ControlResult, actor: String) {
        id = r.queueID
        action = r.action.rawValue
        self.actor = actor
        result = r.outcome.rawValue
    }
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
        api.get("overview") { _, _ in try await Self.overview(backend) }
        api.get("queue") { request, context in
            let q = Self.form(request.uri.query ?? "")
            for key in ["state", "limit"] where q[key] == "" {
                throw HTTPError(.badRequest, message: "\(key) must not be empty")
            }
            let limit = try Self.limit(q["limit"], default: 1000, max: 10000)
            return QueueListResponse(
                messages: try await Self.listQueue(
                    backend, state: q["state"], contains: q["q"], limit: limit, tenant: context.tenant))
        }
        api.get("queue/shape") { _, _ in
            ShapeResponse(
                bucketMinutes: SQLiteQueueStore.QueueShape.bucketMinutes,
                destinations: try await Self.queueCall(backend) { try await backend.queue.shape() })
        }
        api.get("queue/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let detail = try await Self.detail(backend, id: id, tenant: context.tenant) else {
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
            let actor = context.actor ?? "api"
            return ActionResponse(
                try await Self.control(backend, action, id: id, actor: actor, tenant: context.tenant), actor: actor)
        }
        api.delete("queue/:id") { _, context in
            let actor = context.actor ?? "api"
            return ActionResponse(
                try await Self.control(
                    backend, .delete, id: try context.parameters.require("id"), actor: actor, tenant: context.tenant),
                actor: actor)
        }
        api.get("destinations") { _, _ in DestinationsResponse(destinations: await backend.destinations()) }
        api.get("trace") { request, context in
            let query = try Self.traceQuery(Self.form(request.uri.query ?? ""), tenant: context.tenant)
            return TraceResponse(rows: try await Self.queueCall(backend) { try await backend.queue.trace(query) })
        }
        api.get("limits") { _, _ -> AdmissionUsage in
            guard let usage = backend.usage() else { throw HTTPError(.serviceUnavailable, message: "no SMTP listener") }
            return usage
        }
        api.get("tenants") { _, _ in TenantsResponse(tenants: try await Self.tenantUsage(backend)) }
    }

    // MARK: shared by the API and the pages

    /// Runs a read or an action on `backend.queue`. The queue's store being away (the shared queue's
    /// PostgreSQL down or not answering within its timeout, which bounds every call; a SQLite file
    /// that fails) is a `503` with `Retry-After` whose text names the store (never a password) and
    /// the failure, not a `500`: the request was fine and will work again once the store is back.
    /// `HTTPError` and `ControlError` pass through for the caller to answer.
    static func queueCall<T>(_ backend: AdminBackend, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as HTTPError {
            throw e
        } catch let e as SQLiteQueueStore.ControlError {
            throw e
        } catch let e as CancellationError {
            throw e
        } catch {
            throw HTTPError(
                .serviceUnavailable, headers: [.retryAfter: "5"],
                message: "\(backend.queueName) cannot be read right now: \(error)")
        }
    }

    /// The overview. Its queue counts, activity chart and top errors are `backend.queue`'s (in
    /// cluster mode the shared queue's: every node's trace); the queue chart's samples are this
    /// node's (each node samples the counts it sees).
    static func overview(_ backend: AdminBackend, now: Date = Date()) async throws -> OverviewResponse {
        let usage = backend.usage()
        // Buckets on clock boundaries (…:00, :15, :30, :45); the last one is the current quarter hour.
        let width = TimeInterval(bucketSeconds)
        let end = Date(timeIntervalSince1970: (floor(now.timeIntervalSince1970 / width) + 1) * width)
        let activity = try await queueCall(backend) {
            try await backend.queue.activity(now: end, width: width, count: buckets)
        }
        let topErrors = try await queueCall(backend) { try await backend.queue.topErrors(since: now - 3600, limit: 10) }
        var samples = try backend.store.samples(since: end - width * Double(buckets))
        let counts = try await queueCall(backend) { try await backend.queue.queueCounts() }
        samples.append(
            .init(
                time: now, queuedMessages: counts.queuedMessages, pendingRecipients: counts.pendingRecipients,
                heldMessages: counts.heldMessages))
        return OverviewResponse(
            hostname: backend.hostname, version: backend.version, time: now, queue: counts,
            connections: usage?.connections, maxConnections: usage?.maxConnections, bucketSeconds: bucketSeconds,
            activity: activity, queueSamples: samples, topErrors: topErrors,
            storage: backend.store.storage.status())
    }

    /// The queue as listed; with `tenant`, that tenant's messages only.
    static func listQueue(
        _ backend: AdminBackend, state: String?, contains: String?, limit: Int, tenant: String? = nil
    ) async throws
        -> [SQLiteQueueStore.QueueListing]
    {
        let state = (state ?? "").isEmpty ? "active" : state!.lowercased()
        guard ["active", "queued", "held", "done", "all"].contains(state) else {
            throw HTTPError(.badRequest, message: "state must be one of active, queued, held, done, all")
        }
        let needle = (contains ?? "").lowercased()
        let includeDone = state == "done" || state == "all"
        let fetched = needle.isEmpty ? limit : 100_000
        return try await queueCall(backend) {
            try await backend.queue.list(tenant: tenant, includeDone: includeDone, limit: fetched)
        }
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
    /// did not exist). The queue's `control` does the action (in cluster mode in the shared queue,
    /// obeyed by every node) and removes a released spool file; a message made due wakes this
    /// node's delivery scheduler (the other nodes look at the shared queue within seconds).
    static func control(
        _ backend: AdminBackend, _ action: SQLiteQueueStore.ControlAction, id: String, actor: String,
        tenant: String? = nil
    )
        async throws -> SQLiteQueueStore.ControlResult
    {
        do {
            let result = try await queueCall(backend) {
                if let tenant, try await backend.queue.message(id)?.tenant != tenant {
                    throw SQLiteQueueStore.ControlError.notFound(id)
                }
                return try await backend.queue.control(action, id: id, actor: actor)
            }
            if result.makesDue { backend.wakeDelivery() }
            return result
        } catch let e as SQLiteQueueStore.ControlError {
            switch e {
            case .notFound: throw HTTPError(.notFound, message: e.description)
            case .notApplicable: throw HTTPError(.conflict, message: e.description)
            }
        }
    }

    /// A message with its events; with `tenant`, nil for another tenant's message.
    static func detail(_ backend: AdminBackend, id: String, tenant: String? = nil) async throws -> MessageDetail? {
        let found = try await queueCall(backend) { () -> (StoredMessage, [TraceEvent])? in
            guard let m = try await backend.queue.message(id), tenant == nil || m.tenant == tenant else { return nil }
            return (m, try await backend.queue.traceEvents(queueID: id))
        }
        guard let (m, events) = found else { return nil }
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
            // The header view is best effort and not an error: a spool file can go between the
            // queue read and this one (the message was delivered or deleted meanwhile), and a body
            // that cannot be read is the delivery attempt's to report, in the trace. Either way the
            // page shows the envelope and the events without headers.
            if let h = FileHandle(forReadingAtPath: path) {
                data = (try? h.read(upToCount: 65536)) ?? Data()
                // Closing a file opened for reading cannot lose anything.
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

    /// A trace query from request parameters (`SQLiteQueueStore.TraceQuery(parameters:)`, the CLI's
    /// rules); a bad value is a `400` naming it. With `tenant` (a tenant admin's token), the query is
    /// that tenant's: a `tenant` parameter naming another is `403`.
    static func traceQuery(_ p: [String: String], tenant: String? = nil) throws -> SQLiteQueueStore.TraceQuery {
        var q: SQLiteQueueStore.TraceQuery
        do {
            q = try SQLiteQueueStore.TraceQuery(parameters: p)
        } catch {
            throw HTTPError(.badRequest, message: error.description)
        }
        if let tenant {
            guard q.tenant == nil || q.tenant == tenant else {
                throw HTTPError(.forbidden, message: "this admin token can trace its own tenant's mail only")
            }
            q.tenant = tenant
        }
        return q
    }

    /// ISO 8601 (`2026-11-29T10:00:00Z`, or a date) or a duration back from now (`30m`, `24h`, `7d`):
    /// the message trace's times (`SQLiteQueueStore.TraceQuery.time`), also for the health API.
    static func parseTime(_ s: String, now: Date = Date()) -> Date? {
        SQLiteQueueStore.TraceQuery.time(s, now: now)
    }

    /// Per tenant: messages received in the last hour and recipients pending, from the queue
    /// (in cluster mode the shared one: the whole cluster's).
    static func tenantUsage(_ backend: AdminBackend, now: Date = Date()) async throws -> [TenantUsage] {
        let activity = Dictionary(
            uniqueKeysWithValues: try await queueCall(backend) {
                try await backend.queue.tenantActivity(since: now - 3600)
            }.map { ($0.tenant, $0) })
        return backend.tenants().map { t in
            TenantUsage(
                name: t.name, domains: t.domains, forest: t.forest, maxMessageSize: t.maxMessageSize,
                receivedLastHour: activity[t.name]?.received ?? 0, pendingRecipients: activity[t.name]?.pending ?? 0)
        }
    }
}
