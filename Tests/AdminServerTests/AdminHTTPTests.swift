import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Ingress
import Logging
import MailQueue
import Mustache
import NIOCore
import NIOPosix
import SMTPCore
import ServiceHealth
import Testing

@testable import AdminServer

/// The admin listener's router in process (HummingbirdTesting, no socket): a store with one admin
/// token and one queued message, a signed-in browser session, and a fake service-health monitor with
/// three issues (`FakeHealth.sample`).
struct AdminRouterFixture {
    static let messageID = "5XQKPVG483DHYM44"
    let server: AdminHTTPServer
    let token: String
    let cookie: String
    /// The session's CSRF token, which the pages' forms carry.
    let csrf: String
    let health: FakeHealth

    init(
        issues: [HealthIssue] = FakeHealth.sample(), wakeDelivery: @escaping @Sendable () -> Void = {},
        runCheck: (@Sendable (AdminCheckRequest) async throws -> AdminCheckResult)? = FakeCheck.run,
        maxConcurrentChecks: Int = 2, checkTimeout: Duration = .seconds(60),
        throttle: SignInThrottle = SignInThrottle()
    ) throws {
        let dir = NSTemporaryDirectory() + "mf-admin-http-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        token = AdminTokens.generate()
        try store.addAdminToken(name: "ops", hash: AdminTokens.hash(token))
        let body = "Subject: hello\r\nMessage-ID: <m@x.test>\r\n\r\nhi\r\n"
        try store.insert([
            NewMessage(
                id: Self.messageID, receivedAt: Date(), sender: "anne@x.test",
                recipients: [
                    EnvelopeRecipient(
                        address: "alice@contoso.test", route: .local(domain: "contoso.test", mailbox: "alice"))
                ],
                size: body.utf8.count, clientAddress: "127.0.0.1", helo: "client.test", protocolName: "ESMTP",
                messageID: "<m@x.test>", subject: "hello", body: .inline(Data(body.utf8)))
        ])
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .iso8601
        let usage = try dec.decode(
            AdmissionUsage.self,
            from: Data(
                #"{"time": "2026-11-29T10:00:00Z", "connections": 0, "maxConnections": 100, "busiestSources": [], "refusals": {}, "forests": []}"#
                    .utf8))
        let health = FakeHealth(issues: issues)
        self.health = health
        server = try AdminHTTPServer(
            backend: AdminBackend(
                store: store, hostname: "mx.test", version: "test", usage: { usage },
                tenants: {
                    [TenantInfo(name: "contoso", domains: ["contoso.test"], forest: "NAMPR01", maxMessageSize: 1)]
                },
                wakeDelivery: wakeDelivery, metrics: { "m_total 1\n" }, healthIssues: { health.issues },
                healthAct: health.act,
                healthReport: health.report, runCheck: runCheck),
            maxConcurrentChecks: maxConcurrentChecks, checkTimeout: checkTimeout, throttle: throttle,
            group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "admin-test"))
        let (id, session) = server.sessions.create(tokenName: "ops")
        cookie = "\(AdminAuth.cookie)=\(id)"
        csrf = session.csrf
    }

    var bearer: HTTPFields { [.authorization: "Bearer \(token)"] }
    var session: HTTPFields { [.cookie: cookie] }

    /// Runs `body` with a client of the router `AdminHTTPServer.start` serves.
    func test(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await Application(router: server.makeRouter()).test(.router, body)
    }
}

/// The four headers docs/admin.md promises on every response.
func expectSecurityHeaders(_ r: TestResponse, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(
        r.headers[.contentSecurityPolicy]?.hasPrefix("default-src 'none';") == true, "\(what): CSP",
        sourceLocation: sourceLocation)
    #expect(
        r.headers[HTTPField.Name("X-Frame-Options")!] == "DENY", "\(what): X-Frame-Options",
        sourceLocation: sourceLocation)
    #expect(
        r.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff", "\(what): X-Content-Type-Options",
        sourceLocation: sourceLocation)
    #expect(
        r.headers[HTTPField.Name("Referrer-Policy")!] == "no-referrer", "\(what): Referrer-Policy",
        sourceLocation: sourceLocation)
}

struct AdminHTTPTests {
    @Test func everyResponseCarriesTheSecurityHeadersErrorsIncluded() async throws {
        let f = try AdminRouterFixture()
        let none: HTTPFields = [:]
        let cases: [(HTTPRequest.Method, String, HTTPFields, HTTPResponse.Status)] = [
            (.get, "/healthz", none, .ok),
            (.get, "/login", none, .ok),
            (.get, "/api/v1/overview", f.bearer, .ok),
            (.get, "/queue", f.session, .ok),
            // The router's own 404 (no route), with and without a token.
            (.get, "/api/v1/nothing-here", f.bearer, .notFound),
            (.get, "/nothing-here", f.session, .notFound),
            // HTTPError thrown by a handler: a bad parameter, an unknown message.
            (.get, "/api/v1/trace?status=bogus", f.bearer, .badRequest),
            (.get, "/api/v1/queue/0000000000000000", f.bearer, .notFound),
            (.get, "/queue/0000000000000000", f.session, .notFound),
            // 401 from authentication, 405 for a method a path does not have.
            (.get, "/api/v1/overview", none, .unauthorized),
            (.get, "/metrics", [.authorization: "Bearer mf_not-a-token"], .unauthorized),
            (.post, "/queue", none, .unauthorized),
            (.post, "/api/v1/overview", f.bearer, .methodNotAllowed),
            (.delete, "/healthz", none, .methodNotAllowed),
            // 403 (a form without its CSRF token) and a redirect to sign in.
            (.post, "/queue/\(AdminRouterFixture.messageID)/hold", f.session, .forbidden),
            (.get, "/forests", none, .seeOther),
        ]
        try await f.test { client in
            for (method, uri, headers, status) in cases {
                let r = try await client.execute(uri: uri, method: method, headers: headers)
                let what = "\(method) \(uri)"
                #expect(r.status == status, "\(what)")
                expectSecurityHeaders(r, what)
            }
        }
    }

    @Test func headIsAnsweredOnEveryGetRouteLikeGetWithoutABody() async throws {
        let f = try AdminRouterFixture()
        // Every GET route of the table the 405s are built from, with the credential it needs.
        let paths = MethodNotAllowed.routes.filter { $0.methods.contains(.get) }.map { r in
            let id = r.pattern.contains("health") ? "MF1" : AdminRouterFixture.messageID
            let target = r.pattern.contains("domain") ? "example.org" : "192.0.2.1"
            return "/"
                + r.pattern.map { $0 == ":id" ? id : $0 == ":target" ? target : String($0) }.joined(
                    separator: "/")
        }
        #expect(paths.count == 28)
        try await f.test { client in
            for path in paths {
                let headers: HTTPFields =
                    switch AdminAuth.area(path: path) {
                    case .open: [:]
                    case .bearer: f.bearer
                    case .session: f.session
                    }
                let get = try await client.execute(uri: path, method: .get, headers: headers)
                let head = try await client.execute(uri: path, method: .head, headers: headers)
                #expect(get.status == .ok, "GET \(path)")
                #expect(head.status == .ok, "HEAD \(path)")
                #expect(head.body.readableBytes == 0, "HEAD \(path) has a body")
                #expect(get.body.readableBytes > 0, "GET \(path)")
                #expect(head.headers[.contentType] == get.headers[.contentType], "HEAD \(path)")
                #expect(head.headers[.contentLength] != nil, "HEAD \(path): Content-Length")
                expectSecurityHeaders(head, "HEAD \(path)")
            }
            let health = try await client.execute(uri: "/healthz", method: .head)
            #expect(health.headers[.contentLength] == "3")
            // HEAD where a token or session is missing is answered as GET would be, without a body.
            let refused = try await client.execute(uri: "/api/v1/overview", method: .head)
            #expect(refused.status == .unauthorized && refused.body.readableBytes == 0)
            #expect(refused.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true)
            let page = try await client.execute(uri: "/queue", method: .head)
            #expect(page.status == .seeOther && page.headers[.location] == "/login")
            // HEAD on a POST-only path is a 405 like any other method.
            let post = try await client.execute(uri: "/logout", method: .head, headers: f.session)
            #expect(post.status == .methodNotAllowed && post.headers[.allow] == "POST" && post.body.readableBytes == 0)
        }
    }

    @Test func authenticationComesBeforeMethodsAndPaths() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            // API and metrics without a valid token: 401, whatever the method, whether the path exists.
            for (method, uri) in [
                (HTTPRequest.Method.post, "/api/v1/overview"), (.delete, "/metrics"), (.put, "/api/v1/queue"),
                (.get, "/api/v1/no-such-thing"), (.patch, "/api/v2/overview"), (.options, "/api/v1/tenants"),
                (.post, "/api/v1/queue/\(AdminRouterFixture.messageID)"), (.get, "/metrics/x"),
            ] {
                for headers: HTTPFields in [[:], [.authorization: "Bearer mf_not-a-token"]] {
                    let r = try await client.execute(uri: uri, method: method, headers: headers)
                    #expect(r.status == .unauthorized, "\(method) \(uri) \(headers)")
                    #expect(r.headers[.wwwAuthenticate]?.hasPrefix("Bearer") == true, "\(method) \(uri)")
                    #expect(r.headers[.allow] == nil, "\(method) \(uri)")
                }
            }
            // With one: the method and the path are told.
            let post = try await client.execute(uri: "/api/v1/overview", method: .post, headers: f.bearer)
            #expect(post.status == .methodNotAllowed && post.headers[.allow] == "GET, HEAD")
            let put = try await client.execute(
                uri: "/api/v1/queue/\(AdminRouterFixture.messageID)", method: .put, headers: f.bearer)
            #expect(put.status == .methodNotAllowed && put.headers[.allow] == "GET, HEAD, DELETE")
            let missing = try await client.execute(uri: "/api/v1/no-such-thing", method: .get, headers: f.bearer)
            #expect(missing.status == .notFound)

            // Pages without a session: GET and HEAD go to the sign-in page, anything else is 401; no 405, no 404.
            for (method, uri) in [
                (HTTPRequest.Method.post, "/queue"), (.delete, "/"), (.put, "/queue/\(AdminRouterFixture.messageID)"),
                (.get, "/no-such-page"), (.post, "/no-such-page"),
                (.get, "/queue/\(AdminRouterFixture.messageID)/hold"),
            ] {
                let r = try await client.execute(uri: uri, method: method)
                if method == .get {
                    #expect(r.status == .seeOther && r.headers[.location] == "/login", "\(method) \(uri)")
                } else {
                    #expect(r.status == .unauthorized, "\(method) \(uri)")
                }
                #expect(r.headers[.allow] == nil, "\(method) \(uri)")
            }
            // With a session: 405 and 404 as for the API.
            let page = try await client.execute(uri: "/queue", method: .post, headers: f.session)
            #expect(page.status == .methodNotAllowed && page.headers[.allow] == "GET, HEAD")
            let nothing = try await client.execute(uri: "/no-such-page", method: .get, headers: f.session)
            #expect(nothing.status == .notFound)

            // The open routes need nothing, for any method.
            let health = try await client.execute(uri: "/healthz", method: .post)
            #expect(health.status == .methodNotAllowed && health.headers[.allow] == "GET, HEAD")
            let login = try await client.execute(uri: "/login", method: .put)
            #expect(login.status == .methodNotAllowed && login.headers[.allow] == "GET, HEAD, POST")
        }
    }

    @Test func pathsAreSortedIntoOpenBearerAndSession() {
        let table: [(String, AdminAuth.Area)] = [
            ("/healthz", .open), ("/login", .open), ("/login/", .open), ("/healthz/x", .session),
            ("/api/v1/overview", .bearer), ("/api", .bearer), ("/api/v9/x", .bearer), ("/metrics", .bearer),
            ("/metrics/x", .bearer), ("/", .session), ("/queue", .session), ("/logout", .session),
            ("/apix", .session), ("/HEALTHZ", .session), ("/favicon.ico", .session),
        ]
        for (path, area) in table {
            #expect(AdminAuth.area(path: path) == area, "\(path)")
        }
    }

    @Test func noPageShowsNilOrAnEmptyNoticeBox() async throws {
        let f = try AdminRouterFixture()
        let id = AdminRouterFixture.messageID
        try await f.test { client in
            let pages: [(String, HTTPFields)] = [
                ("/login", [:]), ("/login?error=", [:]), ("/", f.session), ("/queue", f.session),
                ("/queue/\(id)", f.session), ("/trace", f.session), ("/forests", f.session),
                ("/queue/0000000000000000", f.session), ("/health", f.session), ("/health/issues/MF1", f.session),
                ("/health/issues/MF2", f.session), ("/health/issues/MF9", f.session), ("/health/report", f.session),
                ("/health?done=", f.session), ("/health/issues/MF1?done=nothing", f.session),
            ]
            for (uri, headers) in pages {
                let r = try await client.execute(uri: uri, method: .get, headers: headers)
                let html = String(buffer: r.body)
                #expect(r.status == .ok || r.status == .notFound, "\(uri)")
                #expect(!html.contains(">nil<") && !html.contains(" nil ") && !html.contains("nil</"), "\(uri)")
                #expect(!html.contains("class=\"notice\""), "\(uri): a notice box without a notice")
                #expect(!html.contains("id=\"login-error\""), "\(uri): an error box without an error")
            }
            // With something to say, the boxes are there.
            let done = try await client.execute(uri: "/queue/\(id)?done=hold", method: .get, headers: f.session)
            #expect(String(buffer: done.body).contains("<p class=\"notice\" id=\"notice\">Done: hold.</p>"))
            let listed = try await client.execute(uri: "/queue?done=delete", method: .get, headers: f.session)
            #expect(
                String(buffer: listed.body).contains(
                    "<p class=\"notice\" id=\"notice\">Done: the message was deleted.</p>"))
            let refused = try await client.execute(
                uri: "/login", method: .post, body: ByteBuffer(string: "token=mf_wrong"))
            #expect(refused.status == .unauthorized)
            #expect(String(buffer: refused.body).contains("id=\"login-error\">That token is not valid.</p>"))
        }
    }

    @Test func optionalsAreTakenOutOfTheRenderingContext() throws {
        // The cause: swift-mustache takes an Optional stored in `Any` for a value, opens its section
        // and prints it with String(describing:).
        let lib = try Templates.library()
        let absent: String? = nil
        let raw = lib.render(["title": "t", "notice": absent as Any], withTemplate: "message") ?? ""
        #expect(raw.contains("id=\"notice\">nil</p>"))

        let page: [String: Any] = [
            "title": "t", "notice": absent as Any, "id": Optional("X") as Any,
            "rows": [["a": Optional<Int>.none as Any, "b": Optional(Optional(3)) as Any]],
            "list": [Optional<String>.none as Any, "kept"],
        ]
        let clean = try #require(Templates.context(page) as? [String: Any])
        #expect(clean["notice"] == nil)
        #expect(clean["id"] as? String == "X")
        let rows = try #require(clean["rows"] as? [[String: Any]])
        #expect(rows[0]["a"] == nil && rows[0]["b"] as? Int == 3)
        #expect((clean["list"] as? [Any])?.count == 1)
        for (name, _) in Templates.all where name != "head" && name != "foot" {
            let html = lib.render(Templates.context(page) ?? [:], withTemplate: name) ?? ""
            #expect(!html.contains("nil"), "\(name)")
            #expect(!html.contains("class=\"notice\""), "\(name)")
        }
    }
}
