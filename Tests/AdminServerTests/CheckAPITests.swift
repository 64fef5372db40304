import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

@testable import AdminServer

/// A check that contacts nothing: a report in the shape of docs/check.schema.json whose findings
/// echo the request, one of them a warning with markup in its summary.
enum FakeCheck {
    static let seen = Mutex<[AdminCheckRequest]>([])

    @Sendable static func run(_ request: AdminCheckRequest) async throws -> AdminCheckResult {
        seen.withLock { $0.append(request) }
        let subject = request.port.map { "\(request.target):\($0)" } ?? request.target
        let report: [String: Any] = [
            "kind": request.kind.rawValue, "target": subject, "startedAt": "2026-12-01T10:00:00Z",
            "durationSeconds": 0.25, "verdict": "warning", "exitCode": 1,
            "findings": [
                [
                    "category": "smtp", "subject": subject, "check": "smtp.banner", "severity": "ok",
                    "summary": "220 mx.test ESMTP",
                ],
                [
                    "category": "tls", "subject": subject, "check": "tls.version.tls1_0", "severity": "warning",
                    "summary": "TLS 1.0 accepted <b>bold</b>", "detail": "phase it out", "ncsc": "phase-out",
                ],
            ],
        ]
        return AdminCheckResult(
            report: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), verdict: "warning")
    }
}

/// `GET /api/v1/check/...` and `/diagnostics`: the target validated before anything runs, at most
/// `maxConcurrentChecks` at once, each bounded.
struct CheckAPITests {
    @Test func theReportIsTheClosuresJSONForAValidatedRequest() async throws {
        let got = Mutex<[AdminCheckRequest]>([])
        let f = try AdminRouterFixture(runCheck: { r in
            got.withLock { $0.append(r) }
            return try await FakeCheck.run(r)
        })
        try await f.test { client in
            for uri in [
                "/api/v1/check/domain/Example.ORG", "/api/v1/check/host/127.0.0.1?port=2525",
                "/api/v1/check/host/mx1.example.org", "/api/v1/check/ip/2001:db8::1", "/api/v1/check/host/%5B::1%5D",
            ] {
                let r = try await client.execute(uri: uri, method: .get, headers: f.bearer)
                #expect(r.status == .ok, "\(uri): \(text(r))")
                #expect(try json(r)["verdict"] as? String == "warning")
            }
        }
        #expect(
            got.withLock { $0 } == [
                AdminCheckRequest(kind: .domain, target: "example.org", port: 25),
                AdminCheckRequest(kind: .host, target: "127.0.0.1", port: 2525),
                AdminCheckRequest(kind: .host, target: "mx1.example.org", port: 25),
                AdminCheckRequest(kind: .ip, target: "2001:db8::1", port: nil),
                AdminCheckRequest(kind: .host, target: "::1", port: 25),
            ])
    }

    @Test(arguments: [
        ("/api/v1/check/domain/exa_mple.org", "a domain check needs a hostname"),
        ("/api/v1/check/domain/-bad.org", "a domain check needs a hostname"),
        ("/api/v1/check/domain/a..b", "a domain check needs a hostname"),
        ("/api/v1/check/domain/" + String(repeating: "a.", count: 127) + "ab", "a domain check needs a hostname"),
        ("/api/v1/check/domain/" + String(repeating: "a", count: 64) + ".org", "a domain check needs a hostname"),
        ("/api/v1/check/domain/192.0.2.1%3Cscript%3E", "a domain check needs a hostname"),
        ("/api/v1/check/host/mx.example.org?port=0", "port must be a number from 1 to 65535"),
        ("/api/v1/check/host/mx.example.org?port=65536", "port must be a number from 1 to 65535"),
        ("/api/v1/check/host/mx.example.org?port=25x", "port must be a number from 1 to 65535"),
        ("/api/v1/check/host/mx.example.org?port=", "port must be a number from 1 to 65535"),
        ("/api/v1/check/host/mx%20example.org", "a host check needs a hostname"),
        ("/api/v1/check/ip/mx.example.org", "an ip check needs an IPv4 or IPv6 address"),
        ("/api/v1/check/domain/127.0.0.1", "a domain check needs a hostname"),
        ("/api/v1/check/ip/192.0.2.300", "an ip check needs an IPv4 or IPv6 address"),
        ("/api/v1/check/ip/192.0.2.1?port=25", "an ip check takes no port"),
    ])
    func anInvalidTargetIsABadRequestAndRunsNothing(uri: String, message: String) async throws {
        let ran = Mutex(0)
        let f = try AdminRouterFixture(runCheck: { r in
            ran.withLock { $0 += 1 }
            return try await FakeCheck.run(r)
        })
        try await f.test { client in
            let r = try await client.execute(uri: uri, method: .get, headers: f.bearer)
            #expect(r.status == .badRequest)
            #expect(errorMessage(r).hasPrefix(message), "\(errorMessage(r))")
            #expect(!text(r).contains("<script>"))
        }
        #expect(ran.withLock { $0 } == 0)
    }

    @Test func whenTheChecksAreBusyItIsTooManyRequestsWithRetryAfter() async throws {
        let f = try AdminRouterFixture(maxConcurrentChecks: 2)
        #expect(f.server.checkGate.tryEnter() && f.server.checkGate.tryEnter())
        try await f.test { client in
            let r = try await client.execute(uri: "/api/v1/check/ip/192.0.2.1", method: .get, headers: f.bearer)
            #expect(r.status == .tooManyRequests)
            #expect(r.headers[.retryAfter] == "10")
            #expect(errorMessage(r).contains("running already"))
            let page = try await client.execute(
                uri: "/diagnostics?kind=ip&target=192.0.2.1", method: .get, headers: f.session)
            #expect(page.status == .tooManyRequests)
            #expect(page.headers[.retryAfter] == "10")
            #expect(text(page).contains("id=\"check-error\""))
            f.server.checkGate.leave()
            let again = try await client.execute(uri: "/api/v1/check/ip/192.0.2.1", method: .get, headers: f.bearer)
            #expect(again.status == .ok)
        }
        // The slot of the finished check is free again; the one taken by hand is still held.
        #expect(f.server.checkGate.running.withLock { $0 } == 1)
    }

    @Test func aCheckPastItsDeadlineIsAGatewayTimeoutAndKeepsItsSlotUntilItStops() async throws {
        let stuck = StuckCheck()
        let f = try AdminRouterFixture(
            runCheck: { _ in
                // Ignores cancellation until the test lets it go, as a probe stuck in a connect might.
                // (A sleep that cancellation does not cut short: `try? await Task.sleep` would spin
                // on a cooperative thread once the check is cancelled.)
                while !stuck.released.withLock({ $0 }) {
                    await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
                        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) { k.resume() }
                    }
                }
                throw CancellationError()
            }, maxConcurrentChecks: 1, checkTimeout: .milliseconds(100))
        try await f.test { client in
            let r = try await client.execute(uri: "/api/v1/check/ip/192.0.2.1", method: .get, headers: f.bearer)
            #expect(r.status == .gatewayTimeout)
            let busy = try await client.execute(uri: "/api/v1/check/ip/192.0.2.1", method: .get, headers: f.bearer)
            #expect(busy.status == .tooManyRequests)
        }
        #expect(f.server.checkGate.running.withLock { $0 } == 1, "the stuck check still holds its slot")
        stuck.released.withLock { $0 = true }
        let deadline = ContinuousClock.now + .seconds(10)
        while f.server.checkGate.running.withLock({ $0 }) != 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(f.server.checkGate.running.withLock { $0 } == 0)
    }

    @Test func withoutAChecker503() async throws {
        let f = try AdminRouterFixture(runCheck: nil)
        try await f.test { client in
            let r = try await client.execute(uri: "/api/v1/check/ip/192.0.2.1", method: .get, headers: f.bearer)
            #expect(r.status == .serviceUnavailable)
        }
    }

    @Test func thePageGroupsTheFindingsAndEscapesTheTarget() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let form = try await client.execute(uri: "/diagnostics", method: .get, headers: f.session)
            #expect(form.status == .ok)
            #expect(text(form).contains("id=\"check-form\"") && !text(form).contains("id=\"verdict\""))
            #expect(text(form).contains("href=\"/diagnostics\" class=\"active\""))

            let r = try await client.execute(
                uri: "/diagnostics?kind=host&target=127.0.0.1&port=2525", method: .get, headers: f.session)
            let html = text(r)
            #expect(r.status == .ok)
            #expect(html.contains("data-verdict=\"warning\""))
            #expect(html.contains("<section class=\"check-group\" data-category=\"smtp\"><h2>SMTP"))
            #expect(html.contains("<section class=\"check-group\" data-category=\"tls\"><h2>TLS"))
            #expect(html.contains("<span class=\"badge badge-warning\">warning</span>"))
            #expect(html.contains("TLS 1.0 accepted &lt;b&gt;bold&lt;/b&gt;"))
            #expect(html.contains("phase-out") && html.contains("0.25 s"))

            let hostile = try await client.execute(
                uri: "/diagnostics?kind=domain&target=%22%3E%3Cscript%3Ealert(1)%3C/script%3E", method: .get,
                headers: f.session)
            #expect(hostile.status == .badRequest)
            #expect(!text(hostile).contains("<script>alert(1)"))
            #expect(text(hostile).contains("&quot;&gt;&lt;script&gt;"))
        }
    }
}

/// A check that stays stuck until the test releases it.
final class StuckCheck: Sendable {
    let released = Mutex(false)
}
