import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTLS
import Logging
import MailQueue
import Mustache
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The request context: who is calling (the admin token's name), and JSON with ISO 8601 dates.
public struct AdminRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// `api:NAME` or `web:NAME`, recorded on queue actions.
    public var actor: String?
    /// The web session's CSRF token, when signed in through the browser.
    var csrf: String?
    /// The tenant of a tenant admin's token: it sees only this tenant's mail and issues. Nil for an
    /// operator token, which sees everything.
    public var tenant: String?
    /// What the caller's token may do (`read-only` or `operator`), read at every request.
    public var scope: AdminTokenScope = .operator
    /// The peer's address (nil in in-process tests): sign-in throttling and the audit trail.
    public var remoteAddress: SocketAddress?
    /// The peer's IP address as text, for the audit trail.
    var source: String? { remoteAddress?.ipAddress }

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    public var responseEncoder: JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys]
        return e
    }

    public var maxUploadSize: Int { 64 * 1024 }
}

/// The admin listener: JSON API under `/api/v1`, `/metrics`, and the web admin center. Loopback by
/// default; every route but `/healthz` and the sign-in page needs an admin token (a bearer token for
/// the API and `/metrics`, a session cookie obtained with one for the pages).
public final class AdminHTTPServer: Sendable {
    let backend: AdminBackend
    let logger: Logger
    let group: any EventLoopGroup
    let sessions: AdminSessions
    let lastUse = AdminTokens.LastUse()
    let templates: MustacheLibrary
    let running = Mutex<(Task<Void, Never>, ServiceGroup)?>(nil)
    /// The checks (`/api/v1/check/...`, `/diagnostics`) running at once, and each one's bound.
    let checkGate: CheckGate
    let checkTimeout: Duration
    /// Failed sign-ins (web and bearer) per source.
    let throttle: SignInThrottle
    let audit: AdminAuditTrail
    /// The TLS configuration of the listener; nil serves plain HTTP.
    let tls: TLSConfiguration?
    /// How long a web admin center sign-in lasts (a working day and then some).
    public static let defaultSessionLifetime: TimeInterval = 12 * 3600

    public init(
        backend: AdminBackend, sessionLifetime: TimeInterval = defaultSessionLifetime, maxConcurrentChecks: Int = 2,
        checkTimeout: Duration = .seconds(60), throttle: SignInThrottle = SignInThrottle(),
        tls: TLSConfiguration? = nil, group: any EventLoopGroup, logger: Logger
    ) throws {
        self.backend = backend
        self.throttle = throttle
        self.tls = tls
        self.audit = AdminAuditTrail(store: backend.store, logger: logger)
        self.checkGate = CheckGate(limit: maxConcurrentChecks)
        self.checkTimeout = checkTimeout
        self.logger = logger
        self.group = group
        self.sessions = AdminSessions(lifetime: sessionLifetime)
        self.templates = try Templates.library()
    }

    /// Binds and serves; returns the bound address (port 0 picks a free one).
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let router = makeRouter()
        let bound = BoundOnce()
        let app = Application(
            router: router,
            server: try tls.map {
                try .tls(.http1(configuration: .init(idleTimeout: .seconds(60))), tlsConfiguration: $0)
            }
                ?? .http1(configuration: .init(idleTimeout: .seconds(60))),
            configuration: .init(address: .hostname(host, port: port)),
            onServerRunning: { channel in bound.resolve(.success(channel.localAddress)) },
            eventLoopGroupProvider: .shared(group), logger: logger)
        // In a service group of its own (no signal handling: `serve` owns the signals), so stopping
        // is a graceful shutdown rather than a cancellation.
        let services = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger))
        let t = Task {
            do {
                try await services.run()
            } catch {
                bound.resolve(.failure(error))
            }
            bound.resolve(.failure(AdminServerError("admin listener stopped before it started")))
        }
        running.withLock { $0 = (t, services) }
        let address = try await bound.wait()
        guard let address else { throw AdminServerError("admin listener has no local address") }
        return address
    }

    /// Every route, behind three middlewares that run for every request, whether a route matched
    /// or not, outermost first: `SecurityHeaders` (headers on every response, errors included, and
    /// no body for `HEAD`), `AdminAuth` (the token or session the path needs, before anything about
    /// the path is told), `MethodNotAllowed` (a known path's other methods are `405` with `Allow`).
    /// `HEAD` is answered on every `GET` route: the router runs the `GET` handler.
    func makeRouter() -> Router<AdminRequestContext> {
        let router = Router(context: AdminRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: SecurityHeaders())
        router.add(
            middleware: AdminAuth(
                store: backend.store, lastUse: lastUse, sessions: sessions, throttle: throttle, audit: audit))
        router.add(middleware: AdminAuditRecorder(trail: audit))
        router.add(middleware: TenantScope(forbiddenPage: { [self] context in tenantForbiddenPage(context) }))
        router.add(
            middleware: ReadOnlyScope(forbiddenPage: { [self] context, message in
                tenantForbiddenPage(context, message: message)
            }))
        router.add(middleware: MethodNotAllowed())
        addPublicRoutes(router)
        let api = router.group("api/v1")
        addAPIRoutes(api)
        addHealthAPIRoutes(api)
        addCheckAPIRoutes(api)
        addUsersAPIRoutes(api)
        addAuditAPIRoutes(api)
        router.get("metrics") { [backend] _, _ -> Response in
            let text = backend.metrics()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        let pages = router.group()
        addPageRoutes(pages)
        addHealthPageRoutes(pages)
        addCheckPageRoutes(pages)
        return router
    }

    /// Stops the listener: requests in progress finish, open connections are closed; anything
    /// still running after three seconds is cancelled.
    public func shutdown() async {
        guard let (t, services) = running.withLock({ $0 }) else { return }
        await services.triggerGracefulShutdown()
        let deadline = Task {
            // Cancelled when the listener stops in time: the normal way out, nothing to report.
            try? await Task.sleep(for: .seconds(3))
            t.cancel()
        }
        await t.value
        deadline.cancel()
    }

    // MARK: routes without a token

    func addPublicRoutes(_ router: Router<AdminRequestContext>) {
        router.get("healthz") { _, _ in "ok\n" }
        router.get("login") { [self] request, _ in
            var page: [String: Any] = ["title": "Sign in"]
            // A fixed message for a known code; the text of the URL itself is never shown.
            if let code = Self.form(request.uri.query ?? "")["error"], let message = Self.loginErrors[code] {
                page["error"] = message
            }
            return html(render("login", page))
        }
        router.post("login") { [self] request, context -> Response in
            let body = try await request.body.collect(upTo: 4096)
            let form = Self.form(String(buffer: body))
            let token = (form["token"] ?? "").trimmingCharacters(in: .whitespaces)
            let sourceKey = SignInThrottle.sourceKey(context.remoteAddress)
            let verified: SQLiteQueueStore.AdminToken?
            do {
                verified = try AdminTokens.verify(token, store: backend.store, lastUse: lastUse)
            } catch {
                logger.error("admin sign-in failed: \(error)")
                return html(
                    render("login", ["title": "Sign in", "error": AdminTokens.StoreUnavailable.message]),
                    status: .serviceUnavailable)
            }
            guard let found = verified else {
                if case .refuse(let retryAfter) = throttle.check(sourceKey) {
                    var r = html(
                        render("login", ["title": "Sign in", "error": Self.throttledMessage]),
                        status: .tooManyRequests)
                    r.headers[.retryAfter] = "\(retryAfter)"
                    return r
                }
                logger.notice("admin sign-in refused: not a valid token", metadata: ["source": "\(sourceKey)"])
                await AdminAuth.failed(request, context, sourceKey: sourceKey, throttle: throttle, audit: audit)
                return html(
                    render("login", ["title": "Sign in", "error": Self.loginErrors["invalid_token"]!]),
                    status: .unauthorized)
            }
            let name = found.name
            let (id, _) = sessions.create(tokenName: name)
            logger.notice("admin signed in", metadata: ["token": "\(name)"])
            audit.record(
                audit.event(
                    request, actor: "web:\(name)", source: context.source, status: .seeOther, result: "signed-in"))
            // A tenant admin has no overview: its first page is the message trace.
            var r = Response(status: .seeOther, headers: [.location: found.tenant == nil ? "/" : "/trace"])
            r.headers[.setCookie] =
                "\(AdminAuth.cookie)=\(id); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(Int(sessions.lifetime))"
                + (tls == nil ? "" : "; Secure")
            return r
        }
    }

    /// What `/login?error=CODE` may say: a fixed message per code; an unknown code says nothing (the
    /// sign-in page never shows text from its URL, which anyone can link to).
    static let loginErrors: [String: String] = [
        "invalid_token": "That token is not valid.",
        "session_expired": "Your session has ended; sign in again.",
    ]

    static let throttledMessage = "Too many failed sign-ins from your address; wait a few minutes and try again."

    // MARK: rendering

    /// A page from its template. Optionals are taken out of the context first (`Templates.context`):
    /// swift-mustache would print a nil as `nil` and open a section for it.
    func render(_ template: String, _ object: [String: Any]) -> String {
        templates.render(Templates.context(object) ?? [:], withTemplate: template) ?? "template \(template) failed"
    }

    func html(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// `application/x-www-form-urlencoded` (a query string or a form body): `+` is a space, then
    /// percent-decoding; the first value of a repeated key wins.
    static func form(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                let spaced = s.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            let key = decode(kv[0])
            if out[key] == nil { out[key] = kv.count > 1 ? decode(kv[1]) : "" }
        }
        return out
    }
}

/// Why the admin listener could not start.
public struct AdminServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// The bound address, handed from the server's start callback to `start`.
final class BoundOnce: Sendable {
    let state = Mutex<(Result<SocketAddress?, any Error>?, CheckedContinuation<SocketAddress?, any Error>?)>((nil, nil))

    func resolve(_ r: Result<SocketAddress?, any Error>) {
        let c = state.withLock { s -> CheckedContinuation<SocketAddress?, any Error>? in
            guard s.0 == nil else { return nil }
            s.0 = r
            defer { s.1 = nil }
            return s.1
        }
        c?.resume(with: r)
    }

    func wait() async throws -> SocketAddress? {
        try await withCheckedThrowingContinuation { c in
            let done = state.withLock { s -> Result<SocketAddress?, any Error>? in
                if let r = s.0 { return r }
                s.1 = c
                return nil
            }
            if let done { c.resume(with: done) }
        }
    }
}

/// Headers on every response: no framing, no sniffing, no referrer, a strict content policy (the
/// pages use no scripts at all). The outermost middleware: an error thrown below it (a handler's
/// `HTTPError`, the `401` of `AdminAuth`, the `405` of `MethodNotAllowed`, the router's own `404`)
/// becomes its response here and gets the headers too; left to the router, it would be answered
/// after every middleware had returned, without them. A response to `HEAD` keeps its status and
/// headers (`Content-Length` included) and loses its body.
struct SecurityHeaders: RouterMiddleware {
    typealias Context = AdminRequestContext

    static let fields: HTTPFields = [
        .contentSecurityPolicy:
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
    ]

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var r: Response
        do {
            r = try await next(request, context)
        } catch let e as any HTTPResponseError {
            r = try e.response(from: request, context: context)
        } catch let e as CancellationError {
            throw e
        } catch {
            // What the server itself would answer (an empty 500), with the headers.
            context.logger.error("admin request failed", metadata: ["error": "\(String(reflecting: error))"])
            r = Response(status: .internalServerError)
        }
        if request.method == .head { r = r.createHeadResponse() }
        for field in Self.fields { r.headers[field.name] = field.value }
        return r
    }
}

/// Authentication first, for every request, whether a route matches or not and whatever its
/// method, so a caller without a token learns nothing about the routes (no `405` with `Allow`, no
/// `404`). By path: `/healthz` and `/login` are open; `/api/...` and `/metrics` need
/// `Authorization: Bearer mf_...` (`401` with `WWW-Authenticate` otherwise); every other path is
/// the web admin center's and needs its session cookie: a `GET` or `HEAD` without one is sent to
/// `/login`, anything else is `401`. A removed token ends its browser sessions at once.
struct AdminAuth: RouterMiddleware {
    typealias Context = AdminRequestContext
    static let cookie = "mailflow_session"
    let store: SQLiteQueueStore
    let lastUse: AdminTokens.LastUse
    let sessions: AdminSessions
    let throttle: SignInThrottle
    let audit: AdminAuditTrail

    enum Area: Equatable {
        case open, bearer, session
    }

    /// Which credential a path needs, by its segments as the router splits them (`/login/` is
    /// `/login`; `/healthz/x` is not `/healthz`).
    static func area(path: String) -> Area {
        let segments = path.split(separator: "/")
        if segments == ["healthz"] || segments == ["login"] { return .open }
        if segments.first == "api" || segments.first == "metrics" { return .bearer }
        return .session
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        var context = context
        switch Self.area(path: request.uri.path) {
        case .open:
            break
        case .bearer:
            let header = request.headers[.authorization] ?? ""
            guard header.lowercased().hasPrefix("bearer ") else {
                throw HTTPError(
                    .unauthorized, headers: [.wwwAuthenticate: "Bearer realm=\"mailflow\""],
                    message: "an admin token is required: Authorization: Bearer <token>")
            }
            let token = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
            let verified: SQLiteQueueStore.AdminToken?
            do {
                verified = try AdminTokens.verify(token, store: store, lastUse: lastUse)
            } catch {
                throw AdminTokens.StoreUnavailable.response(error, logger: context.logger)
            }
            guard let found = verified else {
                let sourceKey = SignInThrottle.sourceKey(context.remoteAddress)
                if case .refuse(let retryAfter) = throttle.check(sourceKey) {
                    throw HTTPError(
                        .tooManyRequests, headers: [.retryAfter: "\(retryAfter)"],
                        message: "too many failed sign-ins from this address; try again in \(retryAfter) s")
                }
                await Self.failed(request, context, sourceKey: sourceKey, throttle: throttle, audit: audit)
                throw HTTPError(
                    .unauthorized, headers: [.wwwAuthenticate: "Bearer realm=\"mailflow\", error=\"invalid_token\""],
                    message: "the admin token is not valid")
            }
            context.actor = "api:\(found.name)"
            context.tenant = found.tenant
            context.scope = found.scope
        case .session:
            // The token's scope is read at every request: a token removed and added again under
            // the same name with another scope does not keep the old one in its sessions.
            let session = request.cookies[Self.cookie].flatMap { sessions.lookup($0.value) }
            var token: SQLiteQueueStore.AdminToken?
            if let session {
                do {
                    token = try store.adminToken(name: session.tokenName)
                } catch {
                    throw AdminTokens.StoreUnavailable.response(
                        AdminTokens.StoreUnavailable(underlying: error), logger: context.logger)
                }
            }
            guard let s = session, let token else {
                if request.method == .get || request.method == .head {
                    return Response(status: .seeOther, headers: [.location: "/login"])
                }
                throw HTTPError(.unauthorized, message: "sign in first")
            }
            context.actor = s.actor
            context.csrf = s.csrf
            context.tenant = token.tenant
            context.scope = token.scope
        }
        return try await next(request, context)
    }

    /// A failed sign-in (web) or bearer token: counted for its source, in the audit trail, and
    /// answered after the source's growing delay. The failure that closes the door is a
    /// `throttled` event, logged as a warning.
    static func failed(
        _ request: Request, _ context: Context, sourceKey: String, throttle: SignInThrottle, audit: AdminAuditTrail
    ) async {
        let (delay, closed) = throttle.fail(sourceKey)
        audit.record(
            audit.event(
                request, actor: "-", source: context.source, status: .unauthorized,
                result: closed ? "throttled" : "refused"))
        if closed {
            context.logger.warning(
                "admin sign-ins throttled: \(throttle.limit) failures within \(Int(throttle.window)) s",
                metadata: ["source": "\(sourceKey)"])
        }
        // Cancelled only when the connection goes: nothing is left to answer then.
        if delay > .zero { try? await Task.sleep(for: delay) }
    }
}

/// A method a known path does not have is `405` with `Allow` (the router itself answers `404` for
/// any unmatched method and path). Runs after `AdminAuth`: only a caller who may use the path
/// learns which methods it has.
struct MethodNotAllowed: RouterMiddleware {
    typealias Context = AdminRequestContext

    /// Every route and its methods (`HEAD` goes with `GET`: the router answers it on every `GET` route).
    static let routes: [(pattern: [Substring], methods: [HTTPRequest.Method])] = [
        ("/healthz", [.get]), ("/login", [.get, .post]), ("/logout", [.post]), ("/", [.get]), ("/queue", [.get]),
        ("/queue/:id", [.get]), ("/queue/:id/:action", [.post]), ("/trace", [.get]), ("/forests", [.get]),
        ("/metrics", [.get]), ("/api/v1/overview", [.get]), ("/api/v1/queue", [.get]),
        ("/api/v1/queue/shape", [.get]), ("/api/v1/queue/:id", [.get, .delete]),
        ("/api/v1/queue/:id/:action", [.post]), ("/api/v1/destinations", [.get]), ("/api/v1/trace", [.get]),
        ("/api/v1/limits", [.get]), ("/api/v1/tenants", [.get]), ("/health", [.get]),
        ("/health/report", [.get, .post]), ("/health/issues/:id", [.get]), ("/health/issues/:id/posts", [.post]),
        ("/health/issues/:id/status", [.post]), ("/health/issues/:id/review", [.post]),
        ("/api/v1/health/overview", [.get]), ("/api/v1/health/issues", [.get]), ("/api/v1/health/issues/:id", [.get]),
        ("/api/v1/health/issues/:id/posts", [.post]), ("/api/v1/health/issues/:id/status", [.post]),
        ("/api/v1/health/issues/:id/review", [.post]), ("/api/v1/health/reports", [.post]),
        ("/diagnostics", [.get]), ("/api/v1/check/domain/:target", [.get]), ("/api/v1/check/host/:target", [.get]),
        ("/api/v1/check/ip/:target", [.get]), ("/api/v1/users", [.get, .post]), ("/api/v1/users/:username", [.delete]),
        ("/api/v1/users/:username/password", [.put]), ("/api/v1/audit", [.get]),
    ].map { ($0.0.split(separator: "/"), $0.1) }

    static func allowedMethods(path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "?", maxSplits: 1).first.map { $0.split(separator: "/") } ?? []
        // The most specific route wins, as in the router: `/api/v1/queue/shape` is not `/api/v1/queue/:id`.
        let matches = routes.filter { r in
            r.pattern.count == segments.count && zip(r.pattern, segments).allSatisfy { $0.hasPrefix(":") || $0 == $1 }
        }
        let wildcards = { (r: (pattern: [Substring], methods: [HTTPRequest.Method])) in
            r.pattern.filter { $0.hasPrefix(":") }.count
        }
        guard let fewest = matches.map(wildcards).min() else { return [] }
        return matches.filter { wildcards($0) == fewest }.flatMap(\.methods).flatMap {
            $0 == .get ? [.get, .head] : [$0]
        }
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound && e.body == nil {
            // No route: a known path with another method is 405, anything else stays 404.
            let allowed = Self.allowedMethods(path: request.uri.path)
            guard !allowed.isEmpty else { throw e }
            throw HTTPError(
                .methodNotAllowed, headers: [.allow: allowed.map(\.rawValue).joined(separator: ", ")],
                message:
                    "\(request.method.rawValue) is not allowed here; use \(allowed.map(\.rawValue).joined(separator: " or "))"
            )
        }
    }
}
