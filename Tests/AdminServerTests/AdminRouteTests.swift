import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MailQueue
import NIOCore
import SMTPCore
import Synchronization
import Testing

@testable import AdminServer

/// One route of the admin listener as a caller sees it: a request that succeeds for an operator, and
/// what the same request gets without a credential and with a tenant admin's (contoso's) credential.
/// Written out by hand, not derived from `AdminAuth.area`, `TenantScope.allowed` or the handlers, so
/// that a change in any of them shows up here.
struct RouteCase: Sendable, CustomTestStringConvertible {
    /// The credential the route is documented to need (docs/admin.md).
    enum Credential: Sendable { case open, bearer, session }

    /// The request body: none, a page form (the session's CSRF token is added), JSON, or the sign-in
    /// form with the caller's token.
    enum Body: Sendable {
        case none
        case form([(String, String)])
        case json(String)
        case signIn
    }

    /// What contoso's admin gets: `403` (an operator route), or the route's answer for its own mail.
    enum Tenant: Sendable {
        case forbidden
        case answers(HTTPResponse.Status, location: String? = nil)
    }

    var method: HTTPRequest.Method
    /// The route as `MethodNotAllowed.routes` spells it.
    var route: String
    /// `{id}` stands for the caller's own message (or issue, for `/health/issues/...`).
    var uri: String
    var credential: Credential
    var body: Body = .none
    var status: HTTPResponse.Status = .ok
    /// A prefix of `Content-Type`; nil for a redirect, which is checked by its `Location`.
    var contentType: String?
    var location: String?
    var tenant: Tenant

    var testDescription: String { "\(method) \(route)" }

    static let json = "application/json"
    static let html = "text/html; charset=utf-8"

    static let all: [RouteCase] = [
        // Open.
        .init(
            method: .get, route: "/healthz", uri: "/healthz", credential: .open, contentType: "text/plain",
            tenant: .answers(.ok)),
        .init(
            method: .get, route: "/login", uri: "/login", credential: .open, contentType: html,
            tenant: .answers(.ok)),
        .init(
            method: .post, route: "/login", uri: "/login", credential: .open, body: .signIn, status: .seeOther,
            location: "/", tenant: .answers(.seeOther, location: "/trace")),
        // The web admin center.
        .init(
            method: .post, route: "/logout", uri: "/logout", credential: .session, body: .form([]),
            status: .seeOther, location: "/login", tenant: .answers(.seeOther, location: "/login")),
        .init(
            method: .get, route: "/", uri: "/", credential: .session, contentType: html,
            tenant: .answers(.seeOther, location: "/trace")),
        .init(
            method: .get, route: "/queue", uri: "/queue", credential: .session, contentType: html,
            tenant: .answers(.ok)),
        .init(
            method: .get, route: "/queue/:id", uri: "/queue/{id}", credential: .session, contentType: html,
            tenant: .answers(.ok)),
        .init(
            method: .post, route: "/queue/:id/:action", uri: "/queue/{id}/hold", credential: .session,
            body: .form([]), status: .seeOther, location: "/queue/{id}?done=hold",
            tenant: .answers(.seeOther, location: "/queue/{id}?done=hold")),
        .init(
            method: .get, route: "/trace", uri: "/trace", credential: .session, contentType: html,
            tenant: .answers(.ok)),
        .init(
            method: .get, route: "/forests", uri: "/forests", credential: .session, contentType: html,
            tenant: .forbidden),
        .init(
            method: .get, route: "/health", uri: "/health", credential: .session, contentType: html,
            tenant: .answers(.ok)),
        .init(
            method: .get, route: "/health/report", uri: "/health/report", credential: .session,
            contentType: html, tenant: .answers(.ok)),
        .init(
            method: .post, route: "/health/report", uri: "/health/report", credential: .session,
            body: .form([("tenant", "contoso"), ("region", "nam"), ("text", "late")]), status: .seeOther,
            location: "/health?done=report", tenant: .answers(.seeOther, location: "/health?done=report")),
        .init(
            method: .get, route: "/health/issues/:id", uri: "/health/issues/{id}", credential: .session,
            contentType: html, tenant: .answers(.ok)),
        .init(
            method: .post, route: "/health/issues/:id/posts", uri: "/health/issues/{id}/posts",
            credential: .session, body: .form([("text", "update")]), status: .seeOther,
            location: "/health/issues/{id}?done=posts", tenant: .forbidden),
        .init(
            method: .post, route: "/health/issues/:id/status", uri: "/health/issues/{id}/status",
            credential: .session, body: .form([("status", "restoringService")]), status: .seeOther,
            location: "/health/issues/{id}?done=status", tenant: .forbidden),
        .init(
            method: .post, route: "/health/issues/:id/review", uri: "/health/issues/MF2/review",
            credential: .session, body: .form([("text", "Root cause.")]), status: .seeOther,
            location: "/health/issues/MF2?done=review", tenant: .forbidden),
        // Metrics and the JSON API.
        .init(
            method: .get, route: "/metrics", uri: "/metrics", credential: .bearer,
            contentType: "text/plain; version=0.0.4", tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/overview", uri: "/api/v1/overview", credential: .bearer,
            contentType: json, tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/queue", uri: "/api/v1/queue", credential: .bearer, contentType: json,
            tenant: .answers(.ok)),
        .init(
            method: .get, route: "/api/v1/queue/shape", uri: "/api/v1/queue/shape", credential: .bearer,
            contentType: json, tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/queue/:id", uri: "/api/v1/queue/{id}", credential: .bearer,
            contentType: json, tenant: .answers(.ok)),
        .init(
            method: .delete, route: "/api/v1/queue/:id", uri: "/api/v1/queue/{id}", credential: .bearer,
            contentType: json, tenant: .answers(.ok)),
        .init(
            method: .post, route: "/api/v1/queue/:id/:action", uri: "/api/v1/queue/{id}/hold",
            credential: .bearer, contentType: json, tenant: .answers(.ok)),
        .init(
            method: .get, route: "/api/v1/destinations", uri: "/api/v1/destinations", credential: .bearer,
            contentType: json, tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/trace", uri: "/api/v1/trace", credential: .bearer, contentType: json,
            tenant: .answers(.ok)),
        .init(
            method: .get, route: "/api/v1/limits", uri: "/api/v1/limits", credential: .bearer, contentType: json,
            tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/tenants", uri: "/api/v1/tenants", credential: .bearer,
            contentType: json, tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/health/overview", uri: "/api/v1/health/overview", credential: .bearer,
            contentType: json, tenant: .answers(.ok)),
        .init(
            method: .get, route: "/api/v1/health/issues", uri: "/api/v1/health/issues", credential: .bearer,
            contentType: json, tenant: .answers(.ok)),
        .init(
            method: .get, route: "/api/v1/health/issues/:id", uri: "/api/v1/health/issues/{id}",
            credential: .bearer, contentType: json, tenant: .answers(.ok)),
        .init(
            method: .post, route: "/api/v1/health/issues/:id/posts", uri: "/api/v1/health/issues/{id}/posts",
            credential: .bearer, body: .json(#"{"text": "update"}"#), contentType: json, tenant: .forbidden),
        .init(
            method: .post, route: "/api/v1/health/issues/:id/status", uri: "/api/v1/health/issues/{id}/status",
            credential: .bearer, body: .json(#"{"status": "restoringService"}"#), contentType: json,
            tenant: .forbidden),
        .init(
            method: .post, route: "/api/v1/health/issues/:id/review", uri: "/api/v1/health/issues/MF2/review",
            credential: .bearer, body: .json(#"{"text": "Root cause."}"#), contentType: json, tenant: .forbidden),
        .init(
            method: .post, route: "/api/v1/health/reports", uri: "/api/v1/health/reports", credential: .bearer,
            body: .json(#"{"tenant": "contoso", "region": "nam", "text": "late"}"#), status: .accepted,
            contentType: json, tenant: .answers(.accepted)),
        // Checks (`FakeCheck`): operators only, they contact other hosts.
        .init(
            method: .get, route: "/diagnostics", uri: "/diagnostics?kind=host&target=127.0.0.1&port=2525",
            credential: .session, contentType: html, tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/check/domain/:target", uri: "/api/v1/check/domain/example.org",
            credential: .bearer, contentType: json, tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/check/host/:target", uri: "/api/v1/check/host/127.0.0.1?port=2525",
            credential: .bearer, contentType: json, tenant: .forbidden),
        .init(
            method: .get, route: "/api/v1/check/ip/:target", uri: "/api/v1/check/ip/192.0.2.1",
            credential: .bearer, contentType: json, tenant: .forbidden),
        // Submission users: a tenant admin manages its own tenant's (anne@contoso.test is seeded).
        .init(
            method: .get, route: "/api/v1/users", uri: "/api/v1/users", credential: .bearer, contentType: json,
            tenant: .answers(.ok)),
        .init(
            method: .post, route: "/api/v1/users", uri: "/api/v1/users", credential: .bearer,
            body: .json(#"{"username": "new@contoso.test", "password": "a long password"}"#), status: .created,
            contentType: json, tenant: .answers(.created)),
        .init(
            method: .put, route: "/api/v1/users/:username/password", uri: "/api/v1/users/anne@contoso.test/password",
            credential: .bearer, body: .json(#"{"password": "another long one"}"#), contentType: json,
            tenant: .answers(.ok)),
        .init(
            method: .delete, route: "/api/v1/users/:username", uri: "/api/v1/users/anne@contoso.test",
            credential: .bearer, contentType: json, tenant: .answers(.ok)),
        // The admin audit trail: operators only.
        .init(
            method: .get, route: "/api/v1/audit", uri: "/api/v1/audit", credential: .bearer, contentType: json,
            tenant: .forbidden),
    ]
}

/// Who sends a `RouteCase`'s request.
enum RouteCaller: Sendable {
    case anonymous, operatorAdmin, tenantAdmin
}

extension TenantFixture {
    /// `c`'s request as `caller` sends it: the credential its route needs, the caller's own message
    /// and issue in the URI, its CSRF token in a form, its token in the sign-in form.
    func request(_ c: RouteCase, as caller: RouteCaller) -> (uri: String, headers: HTTPFields, body: ByteBuffer?) {
        let own = caller == .tenantAdmin ? TenantFixture.contosoID : AdminRouterFixture.messageID
        let issue = "MF1"  // the sample issue whose scope names contoso
        let uri = c.uri.replacingOccurrences(of: "{id}", with: c.uri.contains("/health/") ? issue : own)
        var headers: HTTPFields = [:]
        if caller != .anonymous {
            switch c.credential {
            case .open: break
            case .bearer: headers = caller == .tenantAdmin ? bearer : f.bearer
            case .session: headers = caller == .tenantAdmin ? session : f.session
            }
        }
        let body: ByteBuffer?
        switch c.body {
        case .none:
            body = nil
        case .form(let fields):
            headers[.contentType] = "application/x-www-form-urlencoded"
            body = caller == .tenantAdmin ? form(fields) : f.form(fields)
        case .json(let text):
            headers[.contentType] = "application/json"
            body = ByteBuffer(string: text)
        case .signIn:
            headers[.contentType] = "application/x-www-form-urlencoded"
            let token = caller == .tenantAdmin ? token : f.token
            body = ByteBuffer(string: "token=\(caller == .anonymous ? "mf_wrong" : token)")
        }
        return (uri, headers, body)
    }

    func location(_ template: String?, as caller: RouteCaller) -> String? {
        let own = caller == .tenantAdmin ? TenantFixture.contosoID : AdminRouterFixture.messageID
        return template?.replacingOccurrences(of: "{id}", with: template?.contains("/health/") == true ? "MF1" : own)
    }
}

/// Every route and page of the admin listener through the router `start` serves
/// (`AdminHTTPServer.makeRouter()`, HummingbirdTesting, no socket): status, content type, the
/// credential it needs, and what a tenant-scoped admin gets.
struct AdminRouteTests {
    /// A route added to the listener (and to `MethodNotAllowed.routes`) without a row in
    /// `RouteCase.all` fails here, so no route is tested only through a live server.
    @Test func everyRouteHasACase() {
        let known = Set(
            MethodNotAllowed.routes.flatMap { r in
                r.methods.map { "\($0) /" + r.pattern.joined(separator: "/") }
            })
        let tested = Set(RouteCase.all.map { "\($0.method) \($0.route)" })
        #expect(
            tested == known,
            "untested: \(known.subtracting(tested).sorted()); unknown: \(tested.subtracting(known).sorted())")
        #expect(RouteCase.all.count == tested.count, "a route is listed twice")
    }

    @Test(arguments: RouteCase.all)
    func anOperatorGetsTheRoutesAnswer(_ c: RouteCase) async throws {
        let t = try TenantFixture()
        let (uri, headers, body) = t.request(c, as: .operatorAdmin)
        try await t.test { client in
            let r = try await client.execute(uri: uri, method: c.method, headers: headers, body: body)
            #expect(r.status == c.status, "\(text(r).prefix(300))")
            if let type = c.contentType {
                #expect(r.headers[.contentType]?.hasPrefix(type) == true, "\(r.headers[.contentType] ?? "none")")
                #expect(r.body.readableBytes > 0)
            }
            #expect(r.headers[.location] == t.location(c.location, as: .operatorAdmin))
            expectSecurityHeaders(r, "\(c.method) \(uri)")
        }
    }

    @Test(arguments: RouteCase.all)
    func withoutACredentialOnlyTheOpenRoutesAnswer(_ c: RouteCase) async throws {
        let t = try TenantFixture()
        let (uri, headers, body) = t.request(c, as: .anonymous)
        try await t.test { client in
            let r = try await client.execute(uri: uri, method: c.method, headers: headers, body: body)
            switch c.credential {
            case .open:
                // Sign-in with a wrong token is refused on the page; the rest answer as for anyone.
                #expect(r.status == (c.method == .post ? .unauthorized : c.status))
            case .bearer:
                #expect(r.status == .unauthorized)
                #expect(r.headers[.wwwAuthenticate]?.hasPrefix("Bearer realm=\"mailflow\"") == true)
                #expect(r.headers[.contentType]?.hasPrefix(RouteCase.json) == true)
            case .session:
                if c.method == .get {
                    #expect(r.status == .seeOther && r.headers[.location] == "/login")
                } else {
                    #expect(r.status == .unauthorized)
                }
            }
        }
        // Nothing was done on the way: the message is still queued, MF1 has only its first post.
        #expect(try t.f.server.backend.store.message(AdminRouterFixture.messageID)?.state == .queued)
        #expect(t.f.health.issues[0].posts.count == 1)
        #expect(t.f.health.reports.withLock { $0.isEmpty })
    }

    @Test(arguments: RouteCase.all)
    func aTenantAdminReachesItsOwnRoutesOnly(_ c: RouteCase) async throws {
        let t = try TenantFixture()
        let (uri, headers, body) = t.request(c, as: .tenantAdmin)
        try await t.test { client in
            let r = try await client.execute(uri: uri, method: c.method, headers: headers, body: body)
            switch c.tenant {
            case .forbidden:
                #expect(r.status == .forbidden)
                let type = c.credential == .session ? RouteCase.html : RouteCase.json
                #expect(r.headers[.contentType]?.hasPrefix(type) == true)
                #expect(text(r).contains(TenantScope.message))
            case .answers(let status, let location):
                #expect(r.status == status, "\(text(r).prefix(300))")
                #expect(r.headers[.location] == t.location(location, as: .tenantAdmin))
            }
        }
        // Whatever a tenant admin did, it did not reach the operator's message or another tenant's.
        #expect(try t.f.server.backend.store.message(AdminRouterFixture.messageID)?.state == .queued)
        #expect(try t.f.server.backend.store.message(TenantFixture.fabrikamID)?.state == .queued)
    }
}

/// Queue actions through the router: the typed result the API renders, the scheduler woken only
/// when a message became due, the spool file of a deleted message gone before the answer.
struct AdminQueueActionTests {
    @Test(arguments: [
        ([("hold", HTTPRequest.Method.post)], "held", 0),
        ([("hold", .post), ("release", .post)], "released", 1),
        ([("retry", .post)], "due_now", 1),
        ([("bounce", .post)], "bounce_requested", 1),
        ([("delete", .delete)], "deleted", 0),
    ])
    func theAnswerIsTheOutcomesCode(steps: [(String, HTTPRequest.Method)], result: String, wakes: Int) async throws {
        let woken = Mutex(0)
        let f = try AdminRouterFixture(wakeDelivery: { woken.withLock { $0 += 1 } })
        let id = AdminRouterFixture.messageID
        try await f.test { client in
            var last: TestResponse?
            for (action, method) in steps {
                let uri = method == .delete ? "/api/v1/queue/\(id)" : "/api/v1/queue/\(id)/\(action)"
                last = try await client.execute(uri: uri, method: method, headers: f.bearer)
                #expect(last?.status == .ok, "\(action)")
            }
            let r = try #require(last)
            let body = try json(r)
            #expect(body["id"] as? String == id && body["actor"] as? String == "api:ops")
            #expect(body["action"] as? String == steps.last?.0)
            #expect(body["result"] as? String == result)
            #expect(body.count == 4, "\(body.keys.sorted())")
        }
        #expect(woken.withLock { $0 } == wakes)
    }

    @Test func anActionThatDoesNotApplyIsAConflictAndWakesNothing() async throws {
        let woken = Mutex(0)
        let f = try AdminRouterFixture(wakeDelivery: { woken.withLock { $0 += 1 } })
        try await f.test { client in
            let r = try await client.execute(
                uri: "/api/v1/queue/\(AdminRouterFixture.messageID)/release", method: .post, headers: f.bearer)
            #expect(r.status == .conflict)
            #expect(
                errorMessage(r) == "\(AdminRouterFixture.messageID): only a held message can be released (it is queued)"
            )
            let unknown = try await client.execute(
                uri: "/api/v1/queue/\(AdminRouterFixture.messageID)/explode", method: .post, headers: f.bearer)
            #expect(unknown.status == .notFound)
        }
        #expect(woken.withLock { $0 } == 0)
    }

    @Test func deletingASpooledMessageRemovesItsFileBeforeTheAnswer() async throws {
        let f = try AdminRouterFixture()
        let store = f.server.backend.store
        let spool = try Spool(directory: (store.path as NSString).deletingLastPathComponent + "/spool")
        let id = "SP00LED000000001"
        let path = spool.path(for: id)
        let body = "Subject: big\r\n\r\n" + String(repeating: "x", count: Spool.inlineLimit + 1) + "\r\n"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(body.utf8)))
        try store.insert([
            NewMessage(
                id: id, receivedAt: Date(), sender: "anne@x.test",
                recipients: [EnvelopeRecipient(address: "bob@remote.test", route: .relay(domain: "remote.test"))],
                size: body.utf8.count, clientAddress: "127.0.0.1", helo: "client.test", protocolName: "ESMTP",
                body: .spooled(path: path))
        ])
        try await f.test { client in
            let detail = try await client.execute(uri: "/api/v1/queue/\(id)", method: .get, headers: f.bearer)
            #expect(text(detail).contains("\"name\":\"Subject\""), "headers read from the spool file")
            let r = try await client.execute(uri: "/api/v1/queue/\(id)", method: .delete, headers: f.bearer)
            #expect(r.status == .ok)
            #expect(try json(r)["result"] as? String == "deleted")
            #expect(!text(r).contains(path), "the answer names no file")
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }

    @Test func theWebPagesDeleteThroughTheSameQueueLayer() async throws {
        let f = try AdminRouterFixture()
        let id = AdminRouterFixture.messageID
        try await f.test { client in
            let r = try await client.execute(
                uri: "/queue/\(id)/delete", method: .post, headers: f.formSession, body: f.form([]))
            #expect(r.status == .seeOther && r.headers[.location] == "/queue?done=delete")
            let events = try f.server.backend.store.traceEvents(queueID: id).compactMap(\.detail)
            #expect(events.last == "delete by web:ops (no report to the sender)")
        }
    }
}

/// `?done=` on the queue and message pages says one of a few fixed things, or nothing: never text
/// from the URL, which anyone can send an administrator a link to.
struct QueueNoticeTests {
    static let notice = #"<p class="notice" id="notice">"#

    @Test(
        arguments: [
            ("hold", "Done: hold."), ("release", "Done: release."), ("retry", "Done: retry."),
            ("bounce", "Done: bounce."), ("delete", "Done: the message was deleted."),
            ("deleted+X", nil), ("<script>alert(1)</script>", nil), ("Your+account+is+locked", nil), ("", nil),
            ("HOLD", nil), ("hold.", nil),
        ] as [(String, String?)])
    func onlyKnownCodesAreShown(code: String, shown: String?) async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            for page in ["/queue", "/queue/\(AdminRouterFixture.messageID)"] {
                let r = try await client.execute(uri: "\(page)?done=\(code)", method: .get, headers: f.session)
                #expect(r.status == .ok)
                let html = text(r)
                if let shown {
                    #expect(html.contains(Self.notice + shown + "</p>"), "\(page)")
                } else {
                    #expect(!html.contains(Self.notice), "\(page)")
                }
                let decoded = code.replacingOccurrences(of: "+", with: " ")
                if shown == nil && !decoded.isEmpty {
                    #expect(!html.contains(decoded), "\(page): the URL's text is on the page")
                }
            }
        }
    }

    @Test func everyActionHasANotice() {
        for action in SQLiteQueueStore.ControlAction.allCases {
            #expect(AdminHTTPServer.queueNotices[action.rawValue]?.hasPrefix("Done: ") == true, "\(action)")
        }
        #expect(AdminHTTPServer.queueNotices.count == SQLiteQueueStore.ControlAction.allCases.count)
    }
}

/// The admin tokens cannot be read (here: their table is gone): every credential check answers
/// `503` with `Retry-After`, not `401` or a sign-in page, which would tell a valid token's holder
/// that it is not valid.
struct TokenStoreFailureTests {
    @Test func aTokenStoreThatCannotBeReadIs503() async throws {
        let f = try AdminRouterFixture()
        try await f.server.backend.store.pool.write { try $0.execute(sql: "DROP TABLE admin_token") }
        try await f.test { client in
            let api = try await client.execute(uri: "/api/v1/overview", method: .get, headers: f.bearer)
            #expect(api.status == .serviceUnavailable && api.headers[.retryAfter] == "5")
            #expect(errorMessage(api) == AdminTokens.StoreUnavailable.message)
            #expect(!text(api).contains("admin_token"), "the database's words stay in the log")
            let page = try await client.execute(uri: "/queue", method: .get, headers: f.session)
            #expect(page.status == .serviceUnavailable && page.headers[.location] == nil)
            let signIn = try await client.execute(
                uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "token=\(f.token)"))
            #expect(signIn.status == .serviceUnavailable)
            #expect(text(signIn).contains(AdminTokens.StoreUnavailable.message))
            expectSecurityHeaders(signIn, "POST /login")
            // Open routes do not read the tokens.
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
        }
    }
}
