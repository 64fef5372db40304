import Foundation
import HTTPTypes
import Hummingbird
import Logging
import MailQueue

/// The admin audit trail: every state-changing request (any method but `GET` and `HEAD`) of a
/// signed-in caller, allowed or refused, and every failed or throttled sign-in, as one row in the
/// queue database's `admin_audit` table and one `notice` log line. Read by `GET /api/v1/audit` and
/// `mailflow admin audit`.
///
/// The row is written after the request has been answered by its handler: a queue action and its
/// audit row are not one transaction (the action's own trace event is). A row that cannot be written
/// is logged as an error with everything the row would have held, so the log still has it.
public final class AdminAuditTrail: Sendable {
    let store: SQLiteQueueStore
    let logger: Logger

    public init(store: SQLiteQueueStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// The word for how a request ended, by its status.
    static func result(_ status: HTTPResponse.Status) -> String {
        switch status.code {
        case 429: return "throttled"
        case 500...: return "failed"
        case 400...: return "refused"
        default: return "ok"
        }
    }

    func record(_ e: AdminAuditEvent) {
        let metadata: Logger.Metadata = [
            "actor": "\(e.actor)", "source": "\(e.source ?? "-")", "method": "\(e.method)", "path": "\(e.path)",
            "target": "\(e.target ?? "-")", "status": "\(e.status)", "result": "\(e.result)",
        ]
        do {
            try store.appendAdminAudit(e)
            logger.notice("admin audit", metadata: metadata)
        } catch {
            logger.error("admin audit event could not be stored: \(error)", metadata: metadata)
        }
    }

    /// The message, user or issue a path names: the values of its route's parameters other than
    /// the action (`/api/v1/queue/ID/hold` -> `ID`).
    static func target(path: String) -> String? {
        let segments = path.split(separator: "/")
        guard
            let route = MethodNotAllowed.routes.first(where: { r in
                r.pattern.count == segments.count
                    && zip(r.pattern, segments).allSatisfy { $0.hasPrefix(":") || $0 == $1 }
            })
        else { return nil }
        let values = zip(route.pattern, segments).filter { $0.0.hasPrefix(":") && $0.0 != ":action" }.map {
            String($0.1)
        }
        return values.isEmpty ? nil : String(values.joined(separator: "/").prefix(256))
    }

    func event(
        _ request: Request, actor: String, source: String?, status: HTTPResponse.Status, result: String? = nil
    ) -> AdminAuditEvent {
        AdminAuditEvent(
            time: Date(), actor: actor, source: source, method: request.method.rawValue,
            path: String(request.uri.path.prefix(512)), target: Self.target(path: request.uri.path),
            status: status.code, result: result ?? Self.result(status))
    }
}

/// Records every state-changing request of a caller `AdminAuth` let in, after the handler (or a
/// middleware below: tenant scope, read-only scope, `405`) has answered it. Runs right after
/// `AdminAuth`, so refusals for scope are in the trail too.
struct AdminAuditRecorder: RouterMiddleware {
    typealias Context = AdminRequestContext
    let trail: AdminAuditTrail

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard request.method != .get, request.method != .head, let actor = context.actor else {
            return try await next(request, context)
        }
        do {
            let r = try await next(request, context)
            trail.record(trail.event(request, actor: actor, source: context.source, status: r.status))
            return r
        } catch let e as any HTTPResponseError {
            trail.record(trail.event(request, actor: actor, source: context.source, status: e.status))
            throw e
        } catch {
            trail.record(trail.event(request, actor: actor, source: context.source, status: .internalServerError))
            throw error
        }
    }
}

extension AdminHTTPServer {
    /// `GET /api/v1/audit?limit=N&actor=api:NAME&since=ISO8601`: the newest audit events first
    /// (operator tokens only: a tenant admin's token gets `403` from `TenantScope`).
    func addAuditAPIRoutes(_ api: RouterGroup<AdminRequestContext>) {
        api.get("audit") { [backend, logger] request, _ -> AuditPage in
            let q = Self.form(request.uri.query ?? "")
            var limit = 100
            if let l = q["limit"] {
                guard let n = Int(l), (1...1000).contains(n) else {
                    throw HTTPError(.badRequest, message: "limit must be a number from 1 to 1000")
                }
                limit = n
            }
            var since: Date?
            if let s = q["since"] {
                guard let d = ISO8601DateFormatter().date(from: s) else {
                    throw HTTPError(.badRequest, message: "since must be an ISO 8601 time, e.g. 2026-12-01T21:00:00Z")
                }
                since = d
            }
            let actor = q["actor"].flatMap { $0.isEmpty ? nil : $0 }
            do {
                return AuditPage(events: try backend.store.adminAudit(limit: limit, since: since, actor: actor))
            } catch {
                logger.error("admin audit trail could not be read: \(error)")
                throw HTTPError(
                    .serviceUnavailable, headers: [.retryAfter: "5"],
                    message: "the audit trail cannot be read right now; try again shortly")
            }
        }
    }
}

/// The body of `GET /api/v1/audit`.
struct AuditPage: ResponseEncodable {
    var events: [AdminAuditEvent]
}
