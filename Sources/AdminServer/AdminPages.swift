import Foundation
import Hummingbird
import MailQueue

/// The web admin center: server-rendered pages over the same reads as the API.
extension AdminHTTPServer {
    func addPageRoutes(_ pages: RouterGroup<AdminRequestContext>) {
        pages.get("/") { [self] _, context in
            try await unlessUnavailable(context, tab: "overview") {
                html(render("overview", try await overviewPage(context)))
            }
        }
        pages.get("queue") { [self] request, context in
            try await unlessUnavailable(context, tab: "queue") {
                html(render("queue", try await queuePage(Self.form(request.uri.query ?? ""), context)))
            }
        }
        pages.get("queue/:id") { [self] request, context in
            let id = try context.parameters.require("id")
            let done = Self.form(request.uri.query ?? "")["done"]
            guard
                let page = try await unlessUnavailable(
                    context, tab: "queue", { try await messagePage(id: id, done: done, context) })
            else {
                return html(
                    render(
                        "error",
                        base(context, title: "Not found", tab: "queue").merging(
                            ["message": "No message with queue ID \(id)."]) { $1 }), status: .notFound)
            }
            return html(render("message", page))
        }
        pages.post("queue/:id/:action") { [self] request, context -> Response in
            let id = try context.parameters.require("id")
            let name = try context.parameters.require("action")
            try await checkCSRF(request, context)
            guard let action = SQLiteQueueStore.ControlAction(rawValue: name) else {
                throw HTTPError(.notFound, message: "no action \(name)")
            }
            let result: SQLiteQueueStore.ControlResult
            do {
                result = try await Self.control(
                    backend, action, id: id, actor: context.actor ?? "web", tenant: context.tenant)
            } catch let e as HTTPError {
                return html(
                    render(
                        "error",
                        base(context, title: "Not done", tab: "queue").merging(["message": e.body ?? "\(e)"]) { $1 }),
                    status: e.status)
            }
            // A code from `queueNotices`, never text: the page a link opens cannot be made to say anything else.
            let target =
                result.outcome == .deleted
                ? "/queue?done=\(result.action.rawValue)" : "/queue/\(id)?done=\(result.action.rawValue)"
            return Response(status: .seeOther, headers: [.location: target])
        }
        pages.get("trace") { [self] request, context in
            html(render("trace", try await tracePage(Self.form(request.uri.query ?? ""), context)))
        }
        pages.get("forests") { [self] _, context in
            html(
                render(
                    "forests", try await unlessUnavailable(context, tab: "forests") { try await forestsPage(context) }))
        }
        pages.post("logout") { [self] request, context -> Response in
            try await checkCSRF(request, context)
            if let id = request.cookies[AdminAuth.cookie]?.value { sessions.remove(id) }
            var r = Response(status: .seeOther, headers: [.location: "/login"])
            r.headers[.setCookie] = "\(AdminAuth.cookie)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return r
        }
    }

    /// `body`'s answer, or for a queue that cannot be read (`queueCall`'s `503`) the error page with
    /// the same words and `Retry-After`, not the API's JSON.
    func unlessUnavailable<T>(_ context: AdminRequestContext, tab: String, _ body: () async throws -> T)
        async throws -> T
    {
        do {
            return try await body()
        } catch let e as HTTPError where e.status == .serviceUnavailable {
            var r = html(
                render(
                    "error",
                    base(context, title: "Unavailable", tab: tab).merging(["message": e.body ?? "\(e)"]) { $1 }),
                status: e.status)
            r.headers[.retryAfter] = e.headers[.retryAfter]
            throw PageResponse(response: r)
        }
    }

    /// What `?done=CODE` may say on the queue and message pages: a fixed message per queue action;
    /// an unknown code says nothing. Like `/login?error`, the text of the URL is never shown: anyone
    /// can link an administrator to `/queue?done=...`.
    static let queueNotices: [String: String] = Dictionary(
        uniqueKeysWithValues: SQLiteQueueStore.ControlAction.allCases.map { action in
            (action.rawValue, action == .delete ? "Done: the message was deleted." : "Done: \(action.rawValue).")
        })

    func checkCSRF(_ request: Request, _ context: AdminRequestContext) async throws {
        _ = try await csrfForm(request, context, limit: 4096)
    }

    /// A posted form (at most `limit` bytes) whose CSRF token is the session's; `403` otherwise.
    func csrfForm(_ request: Request, _ context: AdminRequestContext, limit: Int) async throws -> [String: String] {
        let body = try await request.body.collect(upTo: limit)
        let form = Self.form(String(buffer: body))
        guard let expected = context.csrf, let got = form["csrf"], ConstantTime.equal(got, expected) else {
            throw HTTPError(.forbidden, message: "the form is stale or did not come from this admin center; reload it")
        }
        return form
    }

    /// What every page has; `operator` is false for a tenant admin's session, whose navigation shows
    /// only its pages (trace, queue, service health) and its scope.
    func base(_ context: AdminRequestContext, title: String, tab: String) -> [String: Any] {
        [
            "title": title, "hostname": backend.hostname, "actor": context.actor ?? "", "csrf": context.csrf ?? "",
            "nav": [tab: true], "operator": context.tenant == nil, "scopeTenant": context.tenant as Any,
        ]
    }

    static func time(_ d: Date?) -> String {
        guard let d else { return "" }
        return d.formatted(.iso8601).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
            + " UTC"
    }

    static func bytes(_ n: Int) -> String {
        n >= 1 << 20 ? String(format: "%.1f MB", Double(n) / 1_048_576) : n >= 1024 ? "\(n / 1024) KB" : "\(n) B"
    }

    func overviewPage(_ context: AdminRequestContext) async throws -> [String: Any] {
        let o = try await Self.overview(backend)
        let last4 = o.activity.suffix(4)
        let attempts = last4.reduce(0) { $0 + $1.delivered + $1.deferred + $1.failed }
        let deferredLastHour = last4.reduce(0) { $0 + $1.deferred }
        let cards: [(String, String, String)] = [
            ("queued", "\(o.queue.queuedMessages)", "Messages queued"),
            ("pending", "\(o.queue.pendingRecipients)", "Recipients pending"),
            ("held", "\(o.queue.heldMessages)", "Messages held"),
            ("deferred", "\(o.queue.deferredMessages)", "Queued after a failed attempt"),
            ("received", "\(last4.reduce(0) { $0 + $1.received })", "Received, last hour"),
            ("delivered", "\(last4.reduce(0) { $0 + $1.delivered })", "Delivered, last hour"),
            (
                "deferral",
                attempts == 0 ? "0%" : "\(Int((Double(deferredLastHour) / Double(attempts) * 100).rounded()))%",
                "Deferral rate, last hour"
            ),
            ("throttled", "\(last4.reduce(0) { $0 + $1.throttled })", "Throttled, last hour"),
            ("sessions", "\(o.connections ?? 0) / \(o.maxConnections ?? 0)", "SMTP sessions now"),
        ]
        let labels = o.activity.map { b in
            let c = Calendar(identifier: .gregorian)
            var utc = c
            utc.timeZone = TimeZone(identifier: "UTC")!
            let p = utc.dateComponents([.hour, .minute], from: b.start)
            return String(format: "%02d:%02d", p.hour ?? 0, p.minute ?? 0)
        }
        // Queue size: one point per bucket (the last sample in it, or the one before), then now.
        var queuePoints: [Double] = []
        var sampleIndex = 0
        var lastValue = Double(o.queueSamples.first?.pendingRecipients ?? 0)
        for b in o.activity {
            let end = b.start + TimeInterval(o.bucketSeconds)
            while sampleIndex < o.queueSamples.count, o.queueSamples[sampleIndex].time < end {
                lastValue = Double(o.queueSamples[sampleIndex].pendingRecipients)
                sampleIndex += 1
            }
            queuePoints.append(lastValue)
        }
        queuePoints.append(Double(o.queue.pendingRecipients))
        var page = base(context, title: "Overview", tab: "overview")
        page["refresh"] = 60
        page["errors"] = o.topErrors.map { e -> [String: Any] in
            [
                "kind": e.kind.capitalized, "text": e.text, "count": e.count, "first": Self.time(e.firstSeen),
                "last": Self.time(e.lastSeen),
            ]
        }
        page["cards"] = cards.map { ["key": $0.0, "value": $0.1, "label": $0.2] }
        page["hours"] = o.bucketSeconds * o.activity.count / 3600
        page["bucketMinutes"] = o.bucketSeconds / 60
        page["chartMessages"] = Charts.bars(
            id: "chart-messages",
            series: [
                .init(name: "Received", color: "#3b7dd8", values: o.activity.map { Double($0.received) }),
                .init(name: "Delivered", color: "#2e9d4e", values: o.activity.map { Double($0.delivered) }),
                .init(name: "Failed", color: "#d9534f", values: o.activity.map { Double($0.failed) }),
            ], labels: labels)
        page["chartDeferral"] = Charts.bars(
            id: "chart-deferral",
            series: [.init(name: "Deferred share", color: "#e08e0b", values: o.activity.map(\.deferralRate))],
            labels: labels, percent: true)
        page["chartQueue"] = Charts.line(
            id: "chart-queue", series: .init(name: "Pending", color: "#6f42c1", values: queuePoints),
            labels: labels + [""])
        return page
    }

    func queuePage(_ q: [String: String], _ context: AdminRequestContext) async throws -> [String: Any] {
        let state = q["state"].flatMap { $0.isEmpty ? nil : $0 } ?? "active"
        let messages = try await Self.listQueue(
            backend, state: state, contains: q["q"], limit: 500, tenant: context.tenant)
        var page = base(context, title: "Queue", tab: "queue")
        if let code = q["done"], let notice = Self.queueNotices[code] { page["notice"] = notice }
        page["states"] = [
            ("active", "Queued and held"), ("queued", "Queued"), ("held", "Held"), ("done", "Finished"), ("all", "All"),
        ].map { ["value": $0.0, "label": $0.1, "selected": $0.0 == state] }
        page["q"] = q["q"] ?? ""
        page["count"] = messages.count
        page["messages"] = messages.map { m -> [String: Any] in
            [
                "id": m.id, "received": Self.time(m.receivedAt), "sender": m.sender.isEmpty ? "<>" : m.sender,
                "recipients": m.recipients.joined(separator: ", "), "size": Self.bytes(m.size), "state": m.state,
                "attempts": m.attempts, "nextAttempt": Self.time(m.nextAttempt),
            ]
        }
        // The shape (in cluster mode the whole cluster's) and the destinations (this node's): for
        // operators only.
        guard context.tenant == nil else { return page }
        let bounds = SQLiteQueueStore.QueueShape.bucketMinutes
        page["bucketHeaders"] = bounds.map { "<\($0)m" } + ["older"]
        page["shape"] = try await Self.queueCall(backend) { try await backend.queue.shape() }.map {
            s -> [String: Any] in
            ["domain": s.domain, "total": s.total, "buckets": s.buckets]
        }
        page["destinations"] = await backend.destinations().map { d -> [String: Any] in
            [
                "key": d.key, "window": d.window, "sessions": d.sessions, "waiting": d.waiting,
                "delivered": d.delivered, "deferred": d.deferred, "throttles": d.throttles,
                "parkedUntil": Self.time(d.parkedUntil), "lastError": d.lastError ?? "",
            ]
        }
        return page
    }

    func messagePage(id: String, done: String?, _ context: AdminRequestContext) async throws -> [String: Any]? {
        guard let d = try await Self.detail(backend, id: id, tenant: context.tenant) else { return nil }
        var page = base(context, title: "Message \(id)", tab: "queue")
        page["id"] = d.id
        if let done, let notice = Self.queueNotices[done] { page["notice"] = notice }
        var actions: [[String: Any]] = []
        func add(_ a: String, _ label: String, danger: Bool = false) {
            actions.append(["id": d.id, "action": a, "label": label, "danger": danger, "csrf": context.csrf ?? ""])
        }
        switch d.state {
        case "queued":
            add("hold", "Hold")
            add("retry", "Retry now")
            add("bounce", "Bounce to sender", danger: true)
            add("delete", "Delete", danger: true)
        case "held":
            add("release", "Release")
            add("bounce", "Bounce to sender", danger: true)
            add("delete", "Delete", danger: true)
        default: break
        }
        page["actions"] = actions
        let envelope: [(String, String?)] = [
            ("State", d.state), ("Received", Self.time(d.receivedAt)), ("Sender", d.sender.isEmpty ? "<>" : d.sender),
            ("Size", Self.bytes(d.size)), ("Attempts", "\(d.attempts)"), ("Next attempt", Self.time(d.nextAttempt)),
            ("Client", "\(d.clientAddress) (HELO \(d.helo))"), ("Protocol", d.protocolName), ("TLS", d.tls),
            ("Tenant", d.tenant), ("Message-ID", d.messageID), ("Subject", d.subject), ("ENVID", d.envelopeID),
            ("RET", d.ret),
        ]
        page["envelope"] = envelope.compactMap { e -> [String: Any]? in
            guard let v = e.1, !v.isEmpty else { return nil }
            return ["name": e.0, "value": v]
        }
        page["recipients"] = d.recipients.map { r -> [String: Any] in
            [
                "address": r.address, "route": r.route,
                "status": d.state == "held" && r.status == "pending" ? "Held" : r.status.capitalized,
                "attempts": r.attempts, "lastReply": r.lastReply ?? "",
            ]
        }
        page["events"] = d.events.map(Self.eventRow)
        page["headers"] = d.headers.map { "\($0.name): \($0.value)" }.joined(separator: "\n")
        return page
    }

    static func eventRow(_ e: TraceEvent) -> [String: Any] {
        [
            "time": time(e.time), "kind": e.kind.rawValue.capitalized, "recipient": e.recipient ?? "",
            "detail": [e.detail, e.reply].compactMap { $0 }.joined(separator: " "),
        ]
    }

    func tracePage(_ p: [String: String], _ context: AdminRequestContext) async throws -> [String: Any] {
        var page = base(context, title: "Message trace", tab: "trace")
        let fields: [(String, String, String)] = [
            ("sender", "Sender", "anne@example.com"), ("recipient", "Recipient", ""), ("message_id", "Message-ID", ""),
            ("queue_id", "Queue ID", ""), ("client_ip", "Client IP", ""), ("tenant", "Tenant", ""),
            ("since", "Since", "24h or 2026-11-29T10:00:00Z"), ("until", "Until", ""),
        ]
        page["fields"] = fields.map { f -> [String: Any] in
            // A tenant admin's trace is its tenant's: the field shows it and cannot be changed.
            if f.0 == "tenant", let tenant = context.tenant {
                return ["name": f.0, "label": f.1, "placeholder": "", "value": tenant, "readonly": true]
            }
            return ["name": f.0, "label": f.1, "placeholder": f.2, "value": p[f.0] ?? ""]
        }
        let status = p["status"] ?? ""
        page["statuses"] = [
            ("", "Any"), ("pending", "Pending"), ("held", "Held"), ("delivered", "Delivered"),
            ("failed", "Failed"),
        ].map { ["value": $0.0, "label": $0.1, "selected": $0.0 == status] }
        let direction = p["direction"] ?? ""
        page["directions"] = [("", "Any"), ("inbound", "Inbound"), ("outbound", "Outbound")].map {
            ["value": $0.0, "label": $0.1, "selected": $0.0 == direction]
        }
        do {
            // A form sends every field; an empty one means "any".
            var query = p.filter { !$0.value.isEmpty }
            if query["since"] == nil { query["since"] = "48h" }
            let traceQuery = try Self.traceQuery(query, tenant: context.tenant)
            let rows = try await Self.queueCall(backend) { try await backend.queue.trace(traceQuery) }
            page["count"] = rows.count
            page["rows"] = rows.map { r -> [String: Any] in
                [
                    "received": Self.time(r.received), "sender": r.sender.isEmpty ? "<>" : r.sender,
                    "recipient": r.recipient, "subject": r.subject ?? "", "status": r.status,
                    "direction": r.direction, "queueID": r.queueID, "eventCount": r.events.count,
                    "lastReply": r.lastReply ?? "", "events": r.events.map(Self.eventRow),
                ]
            }
        } catch let e as HTTPError {
            page["error"] = e.body ?? "\(e)"
            page["count"] = 0
        }
        return page
    }

    func forestsPage(_ context: AdminRequestContext) async throws -> [String: Any] {
        var page = base(context, title: "Forests & tenants", tab: "forests")
        page["refresh"] = 60
        let usage = backend.usage()
        page["connections"] = usage?.connections ?? 0
        page["maxConnections"] = usage?.maxConnections ?? 0
        page["forests"] = (usage?.forests ?? []).map { f -> [String: Any] in
            let pct = f.maxConnections == 0 ? 0 : min(100, f.sessions * 100 / f.maxConnections)
            return [
                "name": f.name, "region": f.region, "sessions": f.sessions, "maxConnections": f.maxConnections,
                "rate": f.maxMessagesPerMinute == 0 ? "no limit" : "\(f.maxMessagesPerMinute)", "refused": f.refused,
                "percent": pct, "hot": pct >= 80,
            ]
        }
        page["tenants"] = try await Self.tenantUsage(backend).map { t -> [String: Any] in
            [
                "name": t.name, "domains": t.domains.joined(separator: ", "), "forest": t.forest,
                "received": t.receivedLastHour, "pending": t.pendingRecipients, "maxSize": Self.bytes(t.maxMessageSize),
            ]
        }
        page["sources"] = (usage?.busiestSources ?? []).map {
            ["source": $0.source, "sessions": $0.sessions, "maxConnections": $0.maxConnections] as [String: Any]
        }
        page["refusals"] = (usage?.refusals ?? [:]).sorted { $0.key < $1.key }.map {
            ["kind": $0.key, "count": $0.value] as [String: Any]
        }
        return page
    }
}

/// A page already rendered, thrown through the middleware (which adds the security headers and
/// audits its status) when a page cannot be built: the queue's `503` as an HTML page.
struct PageResponse: HTTPResponseError {
    var response: Response
    var status: HTTPResponse.Status { response.status }

    func response(from request: Request, context: some RequestContext) throws -> Response { response }
}
