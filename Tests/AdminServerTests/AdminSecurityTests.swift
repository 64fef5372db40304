import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import MailQueue
import NIOCore
import Testing

@testable import AdminServer

/// Issue 15's admin security: constant-time comparison, sign-in throttling on a moved clock,
/// read-only tokens, and the audit trail, through the router in process.
struct ConstantTimeTests {
    @Test(arguments: [
        ("", "", true), ("a", "a", true), ("abc", "abd", false), ("abc", "ab", false), ("ab", "abc", false),
        ("xbc", "abc", false), ("mf_0123456789", "mf_0123456789", true), ("é", "e", false),
    ])
    func equalOnlyForTheSameOctets(a: String, b: String, equal: Bool) {
        #expect(ConstantTime.equal(a, b) == equal)
        #expect(ConstantTime.equal(Array(a.utf8), Array(b.utf8)) == equal)
    }

    @Test func hashesCompareAsData() {
        let h = AdminTokens.hash("mf_x")
        #expect(ConstantTime.equal(h, AdminTokens.hash("mf_x")))
        #expect(!ConstantTime.equal(h, AdminTokens.hash("mf_y")))
        var flipped = h
        flipped[31] ^= 1
        #expect(!ConstantTime.equal(h, flipped))
    }
}

struct SignInThrottleTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aGrowingDelayThenRefusalUntilTheOldestFailureLeavesTheWindow() {
        let throttle = SignInThrottle(limit: 5, window: 300)
        var delays: [Duration] = []
        for i in 0..<5 {
            #expect(throttle.check("192.0.2.1", now: t0 + Double(i)) == .proceed)
            let (delay, closed) = throttle.fail("192.0.2.1", now: t0 + Double(i))
            delays.append(delay)
            #expect(closed == (i == 4))
        }
        #expect(delays == [.zero, .zero, .milliseconds(250), .milliseconds(500), .milliseconds(1000)])
        // Closed: 300 s after the first failure (at t0) it opens again.
        #expect(throttle.check("192.0.2.1", now: t0 + 10) == .refuse(retryAfter: 290))
        #expect(throttle.check("192.0.2.1", now: t0 + 299.5) == .refuse(retryAfter: 1))
        #expect(throttle.check("192.0.2.1", now: t0 + 300) == .proceed)
        // Another source was never touched.
        #expect(throttle.check("192.0.2.2", now: t0 + 10) == .proceed)
    }

    @Test func theDelayStartsHalfWayToTheLimitAndDoublesToFourSeconds() {
        let ten = (1...10).map { SignInThrottle.delay(afterFailures: $0, limit: 10) }
        #expect(ten == [.zero, .zero, .zero, .zero, .zero] + [250, 500, 1000, 2000, 4000].map { .milliseconds($0) })
        #expect(SignInThrottle.delay(afterFailures: 500, limit: 10) == .milliseconds(4000))
        // A limit raised out of the way (as the e2e suite's default config does) never delays.
        #expect(SignInThrottle.delay(afterFailures: 10_000, limit: 1_000_000) == .zero)
    }

    @Test func ipv6CountsPerSlash64AndMappedIPv4AsIPv4() throws {
        let a = try SocketAddress(ipAddress: "2001:db8:1:2:aaaa::1", port: 1)
        let b = try SocketAddress(ipAddress: "2001:db8:1:2:bbbb::9", port: 2)
        let c = try SocketAddress(ipAddress: "2001:db8:1:3::1", port: 3)
        #expect(SignInThrottle.sourceKey(a) == "2001:db8:1:2::/64")
        #expect(SignInThrottle.sourceKey(a) == SignInThrottle.sourceKey(b))
        #expect(SignInThrottle.sourceKey(a) != SignInThrottle.sourceKey(c))
        #expect(SignInThrottle.sourceKey(try SocketAddress(ipAddress: "::ffff:192.0.2.7", port: 1)) == "192.0.2.7")
        #expect(SignInThrottle.sourceKey(try SocketAddress(ipAddress: "192.0.2.7", port: 1)) == "192.0.2.7")
        #expect(SignInThrottle.sourceKey(nil) == "unknown")
    }
}

/// The router fixture with a second, read-only token (`viewer`) and a session signed in with it.
struct ReadOnlyFixture {
    let f: AdminRouterFixture
    let token: String
    let cookie: String
    let csrf: String

    init() throws {
        f = try AdminRouterFixture()
        token = AdminTokens.generate()
        try f.server.backend.store.addAdminToken(name: "viewer", hash: AdminTokens.hash(token), scope: .readOnly)
        let (id, session) = f.server.sessions.create(tokenName: "viewer")
        cookie = "\(AdminAuth.cookie)=\(id)"
        csrf = session.csrf
    }

    var bearer: HTTPFields { [.authorization: "Bearer \(token)"] }
    var session: HTTPFields { [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"] }
}

struct ReadOnlyScopeTests {
    @Test func readsPassAndEveryChangeIs403InTheAPIAndThePages() async throws {
        let r = try ReadOnlyFixture()
        let id = AdminRouterFixture.messageID
        try await r.f.test { client in
            for uri in ["/api/v1/overview", "/api/v1/queue", "/api/v1/queue/\(id)", "/api/v1/audit", "/metrics"] {
                let res = try await client.execute(uri: uri, method: .get, headers: r.bearer)
                #expect(res.status == .ok, "\(uri)")
            }
            let changes: [(HTTPRequest.Method, String)] = [
                (.post, "/api/v1/queue/\(id)/hold"), (.post, "/api/v1/queue/\(id)/retry"),
                (.delete, "/api/v1/queue/\(id)"), (.post, "/api/v1/users"), (.delete, "/api/v1/users/x@contoso.test"),
                (.put, "/api/v1/users/x@contoso.test/password"), (.post, "/api/v1/health/reports"),
                (.post, "/api/v1/health/issues/MF1/status"),
            ]
            for (method, uri) in changes {
                let res = try await client.execute(uri: uri, method: method, headers: r.bearer)
                #expect(res.status == .forbidden, "\(method) \(uri)")
                #expect(errorMessage(res) == ReadOnlyScope.message, "\(method) \(uri)")
            }
            // The message was not touched.
            let detail = try await client.execute(uri: "/api/v1/queue/\(id)", method: .get, headers: r.bearer)
            #expect(try json(detail)["state"] as? String == "queued")
            // The pages: readable, a form post is the 403 page, signing out works.
            #expect(try await client.execute(uri: "/queue", method: .get, headers: r.session).status == .ok)
            let hold = try await client.execute(
                uri: "/queue/\(id)/hold", method: .post, headers: r.session,
                body: ByteBuffer(string: "csrf=\(r.csrf)"))
            #expect(hold.status == .forbidden)
            #expect(String(buffer: hold.body).contains(ReadOnlyScope.message))
            let out = try await client.execute(
                uri: "/logout", method: .post, headers: r.session, body: ByteBuffer(string: "csrf=\(r.csrf)"))
            #expect(out.status == .seeOther)
            // The operator token still acts.
            let held = try await client.execute(uri: "/api/v1/queue/\(id)/hold", method: .post, headers: r.f.bearer)
            #expect(held.status == .ok)
        }
    }
}

struct AdminAuditTests {
    @Test func stateChangingRequestsAreInTheTrailAllowedAndRefused() async throws {
        let r = try ReadOnlyFixture()
        let id = AdminRouterFixture.messageID
        try await r.f.test { client in
            _ = try await client.execute(uri: "/api/v1/queue/\(id)/hold", method: .post, headers: r.f.bearer)
            _ = try await client.execute(uri: "/api/v1/queue/\(id)/release", method: .post, headers: r.bearer)
            _ = try await client.execute(uri: "/api/v1/overview", method: .get, headers: r.f.bearer)
            let res = try await client.execute(uri: "/api/v1/audit", method: .get, headers: r.f.bearer)
            #expect(res.status == .ok)
            let events = try #require(try json(res)["events"] as? [[String: Any]])
            // Newest first; reads are not recorded.
            #expect(events.count == 2)
            #expect(events[0]["actor"] as? String == "api:viewer")
            #expect(events[0]["status"] as? Int == 403 && events[0]["result"] as? String == "refused")
            #expect(events[0]["path"] as? String == "/api/v1/queue/\(id)/release")
            #expect(events[1]["actor"] as? String == "api:ops")
            #expect(events[1]["method"] as? String == "POST" && events[1]["target"] as? String == id)
            #expect(events[1]["status"] as? Int == 200 && events[1]["result"] as? String == "ok")
            let limited = try await client.execute(
                uri: "/api/v1/audit?limit=1&actor=api:ops", method: .get, headers: r.f.bearer)
            #expect((try json(limited)["events"] as? [Any])?.count == 1)
            let bad = try await client.execute(uri: "/api/v1/audit?limit=0", method: .get, headers: r.f.bearer)
            #expect(bad.status == .badRequest)
        }
    }

    @Test func targetsComeFromTheRoutesParameters() {
        #expect(AdminAuditTrail.target(path: "/api/v1/queue/ABC/hold") == "ABC")
        #expect(AdminAuditTrail.target(path: "/api/v1/users/a@b.test/password") == "a@b.test")
        #expect(AdminAuditTrail.target(path: "/queue/ABC/delete") == "ABC")
        #expect(AdminAuditTrail.target(path: "/logout") == nil)
        #expect(AdminAuditTrail.target(path: "/nowhere/at/all/x/y") == nil)
    }

    @Test func failedBearerTokensAreThrottledAndAudited() async throws {
        let f = try AdminRouterFixture(throttle: SignInThrottle(limit: 3, window: 300))
        try await f.test { client in
            let bad: HTTPFields = [.authorization: "Bearer mf_guess"]
            for _ in 0..<3 {
                let res = try await client.execute(uri: "/api/v1/overview", method: .get, headers: bad)
                #expect(res.status == .unauthorized)
            }
            // Closed for this source: a further guess is 429 (not counted, not audited again); a
            // valid token still gets in (a shared source must not lock the operator out).
            let guess = try await client.execute(uri: "/api/v1/overview", method: .get, headers: bad)
            #expect(guess.status == .tooManyRequests)
            #expect(Int(guess.headers[.retryAfter] ?? "") ?? 0 > 0)
            let valid = try await client.execute(uri: "/api/v1/overview", method: .get, headers: f.bearer)
            #expect(valid.status == .ok)
            let webGuess = try await client.execute(
                uri: "/login", method: .post, body: ByteBuffer(string: "token=mf_guess"))
            #expect(webGuess.status == .tooManyRequests)
            let login = try await client.execute(
                uri: "/login", method: .post, body: ByteBuffer(string: "token=\(f.token)"))
            #expect(login.status == .seeOther)
            let events = try f.server.backend.store.adminAudit().filter { $0.actor == "-" }
            #expect(events.map(\.result) == ["throttled", "refused", "refused"])
            #expect(events.allSatisfy { $0.actor == "-" && $0.status == 401 })
        }
    }
}
