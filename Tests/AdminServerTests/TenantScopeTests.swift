import Accounts
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MailQueue
import NIOCore
import SMTPCore
import Testing

@testable import AdminServer

/// The admin fixture with a tenant admin's token (`contoso-admin`, scoped to contoso), a browser
/// session made with it, and one queued message each for contoso and fabrikam (the fixture's own
/// message has no tenant). Of the sample issues, only MF1 names contoso.
struct TenantFixture {
    static let contosoID = "CONTOSO000000001"
    static let fabrikamID = "FABRIKAM00000001"
    let f: AdminRouterFixture
    let token: String
    let cookie: String
    let csrf: String

    init() throws {
        f = try AdminRouterFixture()
        let store = f.server.backend.store
        token = AdminTokens.generate()
        try store.addAdminToken(name: "contoso-admin", hash: AdminTokens.hash(token), tenant: "contoso")
        for (id, tenant) in [(Self.contosoID, "contoso"), (Self.fabrikamID, "fabrikam")] {
            let body = "Subject: for \(tenant)\r\n\r\nhi\r\n"
            try store.insert([
                NewMessage(
                    id: id, receivedAt: Date(), sender: "anne@\(tenant).test",
                    recipients: [
                        EnvelopeRecipient(address: "bob@remote.test", route: .relay(domain: "remote.test"))
                    ], size: body.utf8.count, clientAddress: "127.0.0.1", helo: "client.test", protocolName: "ESMTP",
                    tenant: tenant, subject: "for \(tenant)", body: .inline(Data(body.utf8)))
            ])
        }
        try store.addUser(
            username: "anne@contoso.test", tenant: "contoso",
            credential: try SCRAMCredential.derive(password: "anne's password", iterations: 4096).stored)
        let (id, session) = f.server.sessions.create(tokenName: "contoso-admin")
        cookie = "\(AdminAuth.cookie)=\(id)"
        csrf = session.csrf
    }

    var bearer: HTTPFields { [.authorization: "Bearer \(token)"] }
    var jsonBearer: HTTPFields { [.authorization: "Bearer \(token)", .contentType: "application/json"] }
    var session: HTTPFields { [.cookie: cookie] }
    var formSession: HTTPFields { [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"] }

    func form(_ fields: [(String, String)]) -> ByteBuffer {
        ByteBuffer(
            string: ([("csrf", csrf)] + fields).map {
                "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")"
            }.joined(separator: "&"))
    }

    func test(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await f.test(body)
    }
}

func text(_ r: TestResponse) -> String { String(buffer: r.body) }

struct TenantScopeAPITests {
    @Test func theTraceIsForcedToTheTenantAndAnotherTenantIsForbidden() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let r = try await client.execute(uri: "/api/v1/trace", method: .get, headers: t.bearer)
            #expect(r.status == .ok)
            let rows = try #require(try json(r)["rows"] as? [[String: Any]])
            #expect(rows.map { $0["queueID"] as? String } == [TenantFixture.contosoID])
            let same = try await client.execute(uri: "/api/v1/trace?tenant=contoso", method: .get, headers: t.bearer)
            #expect(try same.status == .ok && (json(same)["rows"] as? [Any])?.count == 1)
            let other = try await client.execute(
                uri: "/api/v1/trace?tenant=fabrikam", method: .get, headers: t.bearer)
            #expect(other.status == .forbidden)
            #expect(!text(other).contains("fabrikam"))
            // Another tenant's message by its queue ID: not there.
            let byID = try await client.execute(
                uri: "/api/v1/trace?queue_id=\(TenantFixture.fabrikamID)", method: .get, headers: t.bearer)
            #expect(try byID.status == .ok && (json(byID)["rows"] as? [Any])?.isEmpty == true)
            // The operator still sees all three.
            let all = try await client.execute(uri: "/api/v1/trace", method: .get, headers: t.f.bearer)
            #expect((try json(all)["rows"] as? [Any])?.count == 3)
        }
    }

    @Test func theQueueShowsTheTenantsMessagesAndAnothersIsNotFound() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            for state in ["active", "all", "queued"] {
                let r = try await client.execute(uri: "/api/v1/queue?state=\(state)", method: .get, headers: t.bearer)
                #expect(r.status == .ok)
                let ids = try #require(try json(r)["messages"] as? [[String: Any]]).map { $0["id"] as? String }
                #expect(ids == [TenantFixture.contosoID], "\(state)")
            }
            let search = try await client.execute(uri: "/api/v1/queue?q=anne", method: .get, headers: t.bearer)
            #expect((try json(search)["messages"] as? [Any])?.count == 1)
            let mine = try await client.execute(
                uri: "/api/v1/queue/\(TenantFixture.contosoID)", method: .get, headers: t.bearer)
            #expect(try mine.status == .ok && (json(mine)["tenant"] as? String) == "contoso")
            // Another tenant's message and one without a tenant answer exactly as one that does not exist.
            for id in [TenantFixture.fabrikamID, AdminRouterFixture.messageID, "NOSUCHMESSAGE001"] {
                let r = try await client.execute(uri: "/api/v1/queue/\(id)", method: .get, headers: t.bearer)
                #expect(r.status == .notFound, "\(id)")
                #expect(errorMessage(r) == "no message with queue ID \(id)", "\(id)")
                for action in ["hold", "retry", "bounce"] {
                    let a = try await client.execute(
                        uri: "/api/v1/queue/\(id)/\(action)", method: .post, headers: t.bearer)
                    #expect(a.status == .notFound && errorMessage(a) == "no message with queue ID \(id)", "\(id)")
                }
                let d = try await client.execute(uri: "/api/v1/queue/\(id)", method: .delete, headers: t.bearer)
                #expect(d.status == .notFound && errorMessage(d) == "no message with queue ID \(id)", "\(id)")
            }
            #expect(try t.f.server.backend.store.message(TenantFixture.fabrikamID)?.state == .queued)
            // Its own: actions are allowed and traced under its name.
            let hold = try await client.execute(
                uri: "/api/v1/queue/\(TenantFixture.contosoID)/hold", method: .post, headers: t.bearer)
            #expect(try hold.status == .ok && (json(hold)["actor"] as? String) == "api:contoso-admin")
            let release = try await client.execute(
                uri: "/api/v1/queue/\(TenantFixture.contosoID)/release", method: .post, headers: t.bearer)
            #expect(release.status == .ok)
            let del = try await client.execute(
                uri: "/api/v1/queue/\(TenantFixture.contosoID)", method: .delete, headers: t.bearer)
            #expect(del.status == .ok)
        }
    }

    @Test func healthShowsOnlyTheTenantsIssues() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let list = try await client.execute(uri: "/api/v1/health/issues", method: .get, headers: t.bearer)
            #expect(list.status == .ok)
            let ids = try #require(try json(list)["issues"] as? [[String: Any]]).map { $0["id"] as? String }
            #expect(ids == ["MF1"])
            let filtered = try await client.execute(
                uri: "/api/v1/health/issues?classification=advisory", method: .get, headers: t.bearer)
            #expect((try json(filtered)["issues"] as? [Any])?.isEmpty == true)
            let one = try await client.execute(uri: "/api/v1/health/issues/MF1", method: .get, headers: t.bearer)
            #expect(one.status == .ok)
            for id in ["MF2", "MF3", "MF99"] {
                let r = try await client.execute(uri: "/api/v1/health/issues/\(id)", method: .get, headers: t.bearer)
                #expect(r.status == .notFound && errorMessage(r) == "no issue \(id)", "\(id)")
            }
            // The overview from its issues only: MF3 (outbound, another tenant) is not counted.
            let o = try await client.execute(uri: "/api/v1/health/overview", method: .get, headers: t.bearer)
            let services = try #require(try json(o)["services"] as? [[String: Any]])
            #expect(services[0]["issues"] as? [String] == ["MF1"])
            #expect(services[1]["status"] as? String == "serviceOperational")
            #expect(services[1]["issues"] as? [String] == [])
        }
    }

    @Test func reportsAreForTheTenantOnly() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let omitted = try await client.execute(
                uri: "/api/v1/health/reports", method: .post, headers: t.jsonBearer,
                body: ByteBuffer(string: #"{"region": "nam", "text": "mail is late"}"#))
            #expect(omitted.status == .accepted)
            #expect(try json(omitted)["tenant"] as? String == "contoso")
            let same = try await client.execute(
                uri: "/api/v1/health/reports", method: .post, headers: t.jsonBearer,
                body: ByteBuffer(string: #"{"tenant": "contoso", "region": "nam", "text": "mail is late"}"#))
            #expect(same.status == .accepted)
            let other = try await client.execute(
                uri: "/api/v1/health/reports", method: .post, headers: t.jsonBearer,
                body: ByteBuffer(string: #"{"tenant": "fabrikam", "region": "nam", "text": "mail is late"}"#))
            #expect(other.status == .forbidden)
            let bad = try await client.execute(
                uri: "/api/v1/health/reports", method: .post, headers: t.jsonBearer,
                body: ByteBuffer(string: #"{"tenant": 5, "region": "nam", "text": "x"}"#))
            #expect(bad.status == .badRequest)
            let reports = t.f.health.reports.withLock { $0 }
            #expect(reports.map(\.report.tenant) == ["contoso", "contoso"])
            #expect(reports.map(\.reporter) == ["api:contoso-admin", "api:contoso-admin"])
        }
    }

    @Test func operatorOnlyEndpointsAreForbiddenWithoutLeaking() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let cases: [(HTTPRequest.Method, String)] = [
                (.get, "/api/v1/overview"), (.get, "/api/v1/limits"), (.get, "/api/v1/destinations"),
                (.get, "/api/v1/tenants"), (.get, "/api/v1/queue/shape"), (.get, "/metrics"),
                (.post, "/api/v1/health/issues/MF1/posts"), (.post, "/api/v1/health/issues/MF1/status"),
                (.post, "/api/v1/health/issues/MF1/review"), (.post, "/api/v1/health/issues/MF2/posts"),
                (.get, "/api/v1/no-such-thing"), (.put, "/api/v1/trace"), (.head, "/api/v1/overview"),
            ]
            for (method, uri) in cases {
                let r = try await client.execute(
                    uri: uri, method: method, headers: t.jsonBearer, body: ByteBuffer(string: #"{"text": "x"}"#))
                #expect(r.status == .forbidden, "\(method) \(uri)")
                expectSecurityHeaders(r, "\(method) \(uri)")
                if method != .head {
                    #expect(r.headers[.contentType]?.hasPrefix("application/json") == true, "\(method) \(uri)")
                    #expect(errorMessage(r) == TenantScope.message, "\(method) \(uri)")
                    #expect(!text(r).contains("contoso"), "\(method) \(uri)")
                }
            }
            // Nothing was posted to MF1.
            #expect(t.f.health.issues[0].posts.count == 1)
            // The operator is not scoped.
            let o = try await client.execute(uri: "/api/v1/overview", method: .get, headers: t.f.bearer)
            #expect(o.status == .ok)
        }
    }

    @Test func theScopeGateAllowsTheTenantsRoutesOnly() {
        let yes: [(HTTPRequest.Method, String)] = [
            (.get, "/api/v1/trace"), (.head, "/api/v1/queue"), (.get, "/api/v1/queue/ABC"),
            (.delete, "/api/v1/queue/ABC"), (.post, "/api/v1/queue/ABC/hold"), (.get, "/api/v1/health/issues/MF1"),
            (.post, "/api/v1/health/reports"), (.get, "/api/v1/trace/"), (.get, "/"), (.get, "/queue/ABC"),
            (.post, "/health/report"), (.post, "/logout"),
        ]
        let no: [(HTTPRequest.Method, String)] = [
            (.get, "/api/v1/queue/shape"), (.head, "/api/v1/queue/shape"), (.post, "/api/v1/trace"),
            (.get, "/api/v1/health/reports"), (.post, "/api/v1/health/issues/MF1/posts"), (.get, "/forests"),
            (.post, "/health/issues/MF1/status"), (.get, "/metrics"), (.get, "/api/v1/queue/ABC/hold"),
        ]
        for (m, p) in yes { #expect(TenantScope.allows(m, path: p), "\(m) \(p)") }
        for (m, p) in no { #expect(!TenantScope.allows(m, path: p), "\(m) \(p)") }
    }
}

struct TenantScopePageTests {
    @Test func theNavigationShowsOnlyTheTenantsPagesAndOthersAreForbidden() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let home = try await client.execute(uri: "/", method: .get, headers: t.session)
            #expect(home.status == .seeOther && home.headers[.location] == "/trace")
            let trace = try await client.execute(uri: "/trace", method: .get, headers: t.session)
            #expect(trace.status == .ok)
            let page = text(trace)
            #expect(!page.contains(#"href="/""#) && !page.contains(#"href="/forests""#))
            #expect(page.contains(#"href="/queue""#) && page.contains(#"href="/health""#))
            #expect(page.contains(#"id="scope-tenant">tenant contoso"#))
            #expect(page.contains(#"name="tenant" value="contoso" placeholder="" readonly"#))
            #expect(page.contains(TenantFixture.contosoID) && !page.contains(TenantFixture.fabrikamID))
            let other = try await client.execute(uri: "/trace?tenant=fabrikam", method: .get, headers: t.session)
            #expect(!text(other).contains(TenantFixture.fabrikamID))
            for (method, uri) in [
                (HTTPRequest.Method.get, "/forests"), (.post, "/health/issues/MF1/posts"),
                (.post, "/health/issues/MF1/status"), (.post, "/health/issues/MF1/review"), (.get, "/no-such-page"),
            ] {
                let r = try await client.execute(
                    uri: uri, method: method, headers: t.formSession, body: t.form([("text", "x")]))
                #expect(r.status == .forbidden, "\(method) \(uri)")
                #expect(r.headers[.contentType]?.hasPrefix("text/html") == true, "\(method) \(uri)")
                #expect(text(r).contains(TenantScope.message), "\(method) \(uri)")
            }
            #expect(t.f.health.issues[0].posts.count == 1)
            // The operator's navigation is whole.
            let op = try await client.execute(uri: "/trace", method: .get, headers: t.f.session)
            #expect(text(op).contains(#"href="/forests""#) && !text(op).contains("scope-tenant"))
        }
    }

    @Test func queuePagesShowTheTenantsMessagesOnly() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let q = try await client.execute(uri: "/queue?state=all", method: .get, headers: t.session)
            #expect(q.status == .ok)
            #expect(text(q).contains(TenantFixture.contosoID) && !text(q).contains(TenantFixture.fabrikamID))
            #expect(!text(q).contains("shape-table") && !text(q).contains("destinations-table"))
            let mine = try await client.execute(
                uri: "/queue/\(TenantFixture.contosoID)", method: .get, headers: t.session)
            #expect(mine.status == .ok && text(mine).contains("action-hold"))
            let other = try await client.execute(
                uri: "/queue/\(TenantFixture.fabrikamID)", method: .get, headers: t.session)
            #expect(other.status == .notFound && !text(other).contains("fabrikam.test"))
            let act = try await client.execute(
                uri: "/queue/\(TenantFixture.fabrikamID)/hold", method: .post, headers: t.formSession, body: t.form([]))
            #expect(act.status == .notFound)
            #expect(try t.f.server.backend.store.message(TenantFixture.fabrikamID)?.state == .queued)
            let hold = try await client.execute(
                uri: "/queue/\(TenantFixture.contosoID)/hold", method: .post, headers: t.formSession, body: t.form([]))
            #expect(hold.status == .seeOther)
            #expect(try t.f.server.backend.store.message(TenantFixture.contosoID)?.state == .held)
        }
    }

    @Test func healthPagesShowTheTenantsIssuesWithoutAdminForms() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let h = try await client.execute(uri: "/health", method: .get, headers: t.session)
            #expect(h.status == .ok)
            #expect(text(h).contains(#"data-issue="MF1""#))
            #expect(!text(h).contains(#"data-issue="MF2""#) && !text(h).contains(#"data-issue="MF3""#))
            let mf1 = try await client.execute(uri: "/health/issues/MF1", method: .get, headers: t.session)
            #expect(mf1.status == .ok)
            #expect(!text(mf1).contains("post-form") && !text(mf1).contains("status-form"))
            let mf3 = try await client.execute(uri: "/health/issues/MF3", method: .get, headers: t.session)
            #expect(mf3.status == .notFound && !text(mf3).contains("alert"))
            let form = try await client.execute(uri: "/health/report", method: .get, headers: t.session)
            #expect(text(form).contains(#"value="contoso" list="tenant-names" maxlength="200" required readonly"#))
            let other = try await client.execute(
                uri: "/health/report", method: .post, headers: t.formSession,
                body: t.form([("tenant", "fabrikam"), ("region", "nam"), ("text", "late")]))
            #expect(other.status == .forbidden)
            let mine = try await client.execute(
                uri: "/health/report", method: .post, headers: t.formSession,
                body: t.form([("tenant", ""), ("region", "nam"), ("text", "late")]))
            #expect(mine.status == .seeOther)
            let reports = t.f.health.reports.withLock { $0 }
            #expect(reports.map(\.report.tenant) == ["contoso"] && reports[0].reporter == "web:contoso-admin")
        }
    }

    @Test func signingInWithATenantTokenLandsOnTheTraceAndTheScopeIsReadAtEveryRequest() async throws {
        let t = try TenantFixture()
        try await t.test { client in
            let login = try await client.execute(
                uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "token=\(t.token)"))
            #expect(login.status == .seeOther && login.headers[.location] == "/trace")
            let op = try await client.execute(
                uri: "/login", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                body: ByteBuffer(string: "token=\(t.f.token)"))
            #expect(op.headers[.location] == "/")
            // The operator's token "ops" removed and added again for a tenant: its old session is scoped now.
            let store = t.f.server.backend.store
            #expect(try store.removeAdminToken(name: "ops"))
            try store.addAdminToken(name: "ops", hash: AdminTokens.hash(AdminTokens.generate()), tenant: "contoso")
            let forests = try await client.execute(uri: "/forests", method: .get, headers: t.f.session)
            #expect(forests.status == .forbidden)
        }
    }
}
