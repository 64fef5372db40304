import Foundation
import HTTPTypes
import Hummingbird
import MailQueue
import ServiceHealth

/// What a tenant admin's token may reach, checked for every request after `AdminAuth`: a short list
/// of methods and paths (the message trace, the queue and its actions, service health and problem
/// reports, and the matching pages); anything else is `403` with a message that says only that the
/// token is tenant-scoped. The handlers then narrow what they read to the tenant
/// (`AdminRequestContext.tenant`): another tenant's message or issue is `404`, as if it did not exist.
/// An operator token (no tenant) passes untouched.
struct TenantScope: RouterMiddleware {
    typealias Context = AdminRequestContext

    /// The `403` of the API (JSON) and of the pages (HTML): the same words, nothing about the path.
    static let message = "this admin token is scoped to one tenant: this needs an operator token"

    /// The web admin center's `403` page, rendered by the server.
    let forbiddenPage: @Sendable (AdminRequestContext) -> Response

    /// What a tenant admin may call, by path segments (`:` matches one segment but the literals of
    /// other routes at the same place, as `shape` in `/api/v1/queue/shape`).
    static let allowed: [(pattern: [Substring], methods: [HTTPRequest.Method])] = [
        ("/api/v1/trace", [.get]), ("/api/v1/queue", [.get]), ("/api/v1/queue/:id", [.get, .delete]),
        ("/api/v1/queue/:id/:action", [.post]), ("/api/v1/health/overview", [.get]),
        ("/api/v1/health/issues", [.get]), ("/api/v1/health/issues/:id", [.get]),
        ("/api/v1/health/reports", [.post]), ("/", [.get]), ("/queue", [.get]), ("/queue/:id", [.get]),
        ("/queue/:id/:action", [.post]), ("/trace", [.get]), ("/health", [.get]), ("/health/issues/:id", [.get]),
        ("/health/report", [.get, .post]), ("/logout", [.post]), ("/api/v1/users", [.get, .post]),
        ("/api/v1/users/:username", [.delete]), ("/api/v1/users/:username/password", [.put]),
    ].map { ($0.0.split(separator: "/"), $0.1) }

    /// Literal segments of operator routes a `:id` must not stand for.
    static let reserved: [[Substring]: Set<Substring>] = [["api", "v1", "queue", ":id"]: ["shape"]]

    static func allows(_ method: HTTPRequest.Method, path: String) -> Bool {
        let segments = path.split(separator: "/")
        let m: HTTPRequest.Method = method == .head ? .get : method
        return allowed.contains { r in
            r.methods.contains(m) && r.pattern.count == segments.count
                && zip(r.pattern, segments).allSatisfy { $0.hasPrefix(":") || $0 == $1 }
                && !(reserved[r.pattern].map { $0.contains(segments[segments.count - 1]) } ?? false)
        }
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard context.tenant != nil else { return try await next(request, context) }
        let path = request.uri.path
        guard Self.allows(request.method, path: path) else {
            if AdminAuth.area(path: path) == .session { return forbiddenPage(context) }
            throw HTTPError(.forbidden, message: Self.message)
        }
        // A tenant admin has no overview page: its home is the message trace.
        if path.split(separator: "/").isEmpty {
            return Response(status: .seeOther, headers: [.location: "/trace"])
        }
        return try await next(request, context)
    }
}

extension AdminHTTPServer {
    func tenantForbiddenPage(_ context: AdminRequestContext, message: String = TenantScope.message) -> Response {
        html(
            render("error", base(context, title: "Not available", tab: "").merging(["message": message]) { $1 }),
            status: .forbidden)
    }

    /// The issues a caller sees: every one for an operator, those whose scope names its tenant for a
    /// tenant admin.
    static func visibleIssues(_ backend: AdminBackend, tenant: String?) -> [HealthIssue] {
        let all = backend.healthIssues()
        guard let tenant else { return all }
        return all.filter { $0.scope.tenants.contains(tenant) }
    }

    /// A tenant admin's problem report is for its tenant: an omitted (or empty) tenant is filled in,
    /// another one is `403`. An operator's body is taken as it is.
    static func scopedReport(_ object: [String: Any], tenant: String?) throws -> [String: Any] {
        guard let tenant else { return object }
        var object = object
        switch object["tenant"] {
        case nil, is NSNull: object["tenant"] = tenant
        case let t as String where t.isEmpty: object["tenant"] = tenant
        case let t as String where t.trimmingCharacters(in: .whitespacesAndNewlines) == tenant:
            object["tenant"] = tenant
        case is String:
            throw HTTPError(.forbidden, message: "this admin token can report problems for its own tenant only")
        default: break  // not a string: 400 from the field's check
        }
        return object
    }
}

/// What a `read-only` token may do, checked for every request after `AdminAuth`: read (`GET` and
/// `HEAD`) and sign out of the web admin center; every other method is `403` before any handler
/// runs, in the API (JSON) and the pages (HTML) alike. An `operator` token passes untouched.
/// Independent of the tenant scope: a tenant admin's read-only token is held by both.
struct ReadOnlyScope: RouterMiddleware {
    typealias Context = AdminRequestContext

    static let message = "this admin token is read-only: this needs an operator token"

    /// The web admin center's `403` page, rendered by the server.
    let forbiddenPage: @Sendable (AdminRequestContext, String) -> Response

    static func allows(_ method: HTTPRequest.Method, path: String) -> Bool {
        method == .get || method == .head || (method == .post && path.split(separator: "/") == ["logout"])
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard context.scope == .readOnly, !Self.allows(request.method, path: request.uri.path) else {
            return try await next(request, context)
        }
        if AdminAuth.area(path: request.uri.path) == .session { return forbiddenPage(context, Self.message) }
        throw HTTPError(.forbidden, message: Self.message)
    }
}
