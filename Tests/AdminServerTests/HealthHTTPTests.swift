import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization
import Testing

@testable import AdminServer
@testable import ServiceHealth

/// A service-health backend for the admin listener's tests: a real `HealthMonitor` holding the
/// issues (so admin actions follow the monitor's own rules), and the reports it was given.
final class FakeHealth: Sendable {
    let monitor: Mutex<HealthMonitor>
    let reports = Mutex<[(report: ProblemReport, reporter: String)]>([])

    init(issues: [HealthIssue]) { monitor = Mutex(HealthMonitor(existing: issues)) }

    var issues: [HealthIssue] { monitor.withLock { $0.issues } }

    func act(_ id: String, _ action: HealthAdminAction, _ actor: String) throws -> HealthIssue {
        try monitor.withLock { m throws(HealthActionError) in try m.apply(action, to: id, by: actor, at: Date()) }
    }

    func report(_ r: ProblemReport, _ reporter: String) throws {
        reports.withLock { $0.append((r, reporter)) }
    }

    static let hostileTitle = "<script>alert('title')</script> & \"quoted\""
    static let hostilePost = "</pre><img src=x onerror=alert(1)>\nsecond line & more"

    /// MF1: an open inbound incident (interruption); MF2: an outbound advisory restored an hour ago;
    /// MF3: an open outbound degradation whose title, post, tenant and report region are hostile.
    static func sample(now: Date = Date()) -> [HealthIssue] {
        func issue(
            _ n: Int, title: String, _ c: IssueClassification, _ s: IssueStatus, _ o: IssueOrigin, service: String,
            start: TimeInterval, end: TimeInterval? = nil, scope: IssueScope
        ) -> HealthIssue {
            var ev = IssueEvidence(firstSeen: now - start)
            ev.failures = 40
            ev.total = 60
            ev.baselineShare = 0.01
            var i = HealthIssue(
                id: "MF\(n)", title: title, classification: c, status: s, origin: o, service: service,
                signature: "421 4.3.2 The maximum number of concurrent connections per resource forest <n>",
                impactDescription: "About 62% of SMTP sessions are refused.", startDateTime: now - start,
                detectedDateTime: now - start + 90, endDateTime: end.map { now - $0 },
                lastModifiedDateTime: now - (end ?? 60), scope: scope, evidence: ev)
            i.posts = [
                IssuePost(
                    createdDateTime: now - start + 90, kind: .automatic, author: "mailflow",
                    description: "Title: \(title)\nUser impact: refused.\nCurrent status: We're investigating.")
            ]
            return i
        }
        var mf1 = issue(
            1, title: "Senders can't deliver mail to some organisations in NAMPR01", .incident, .serviceInterruption,
            .mailflow, service: "Inbound mail flow", start: 1200,
            scope: IssueScope(
                direction: .inbound, forests: ["NAMPR01"], regions: ["nam"], tenants: ["contoso", "fabrikam"],
                peakFailureShare: 0.62))
        mf1.evidence.relatedSignatures = ["outbound: connection closed abruptly"]
        var mf2 = issue(
            2, title: "Mail to remote.test is deferred or refused by the remote provider", .advisory,
            .serviceRestored, .remoteProvider, service: "Outbound mail flow", start: 7200, end: 3600,
            scope: IssueScope(direction: .outbound, destinations: ["remote.test"], peakFailureShare: 0.3))
        mf2.posts.append(
            IssuePost(
                createdDateTime: now - 3600, kind: .automatic, author: "mailflow",
                description: "Current status: The service is restored."))
        var mf3 = issue(
            3, title: hostileTitle, .advisory, .serviceDegradation, .mailflow, service: "Outbound mail flow",
            start: 600,
            scope: IssueScope(
                direction: .outbound, tenants: ["<b>tenant</b>"], destinations: ["x.test"], peakFailureShare: 0.2))
        mf3.reportsByRegion = ["<i>eu</i>": 2, "nam": 1]
        mf3.posts.append(
            IssuePost(createdDateTime: now - 300, kind: .regular, author: "api:<ops>", description: hostilePost))
        return [mf1, mf2, mf3]
    }
}

/// The body of a response as JSON.
func json(_ r: TestResponse) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any])
}

func errorMessage(_ r: TestResponse) -> String {
    let o = try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any]
    return (o?["error"] as? [String: Any])?["message"] as? String ?? ""
}

extension AdminRouterFixture {
    var jsonBearer: HTTPFields { [.authorization: "Bearer \(token)", .contentType: "application/json"] }
    var formSession: HTTPFields { [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"] }

    /// A form body with the session's CSRF token.
    func form(_ fields: [(String, String)]) -> ByteBuffer {
        let pairs = [("csrf", csrf)] + fields
        return ByteBuffer(
            string: pairs.map {
                "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")"
            }.joined(separator: "&"))
    }
}

struct HealthAPITests {
    @Test func overviewListsEveryServiceWithItsWorstOpenIssue() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let r = try await client.execute(uri: "/api/v1/health/overview", method: .get, headers: f.bearer)
            #expect(r.status == .ok)
            expectSecurityHeaders(r, "overview")
            let services = try #require(try json(r)["services"] as? [[String: Any]])
            #expect(services.map { $0["service"] as? String } == ["Inbound mail flow", "Outbound mail flow", "Admin"])
            #expect(services[0]["status"] as? String == "serviceInterruption")
            #expect(services[0]["issues"] as? [String] == ["MF1"])
            // MF2 is restored: only MF3 counts for outbound.
            #expect(services[1]["status"] as? String == "serviceDegradation")
            #expect(services[1]["issues"] as? [String] == ["MF3"])
            #expect(services[2]["status"] as? String == "serviceOperational")
            #expect(services[2]["issues"] as? [String] == [])
        }
    }

    @Test func theWorstOpenStatusWinsAndOtherServicesAreListed() {
        var issues = FakeHealth.sample()
        issues[0].status = .restoringService
        issues[2].service = "Inbound mail flow"
        issues[2].status = .investigating
        var other = issues[1]
        other.id = "MF7"
        other.service = "Mailbox delivery"
        other.status = .extendedRecovery
        let o = AdminHTTPServer.healthOverview(issues + [other])
        #expect(o.map(\.service) == ["Inbound mail flow", "Outbound mail flow", "Admin", "Mailbox delivery"])
        #expect(o[0].status == "investigating" && o[0].issues == ["MF1", "MF3"])
        #expect(o[1].status == "serviceOperational" && o[1].issues.isEmpty)
        #expect(o[3].status == "extendedRecovery" && o[3].issues == ["MF7"])
        #expect(AdminHTTPServer.healthOverview([]).allSatisfy { $0.status == "serviceOperational" })
    }

    @Test func issuesAreListedNewestFirstAndFiltered() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            func ids(_ query: String) async throws -> [String] {
                let r = try await client.execute(uri: "/api/v1/health/issues\(query)", method: .get, headers: f.bearer)
                #expect(r.status == .ok, "\(query)")
                let issues = try #require(try json(r)["issues"] as? [[String: Any]])
                return issues.compactMap { $0["id"] as? String }
            }
            #expect(try await ids("") == ["MF3", "MF1", "MF2"])
            #expect(try await ids("?open=true") == ["MF3", "MF1"])
            #expect(try await ids("?open=false") == ["MF2"])
            #expect(try await ids("?status=serviceRestored") == ["MF2"])
            #expect(try await ids("?classification=incident") == ["MF1"])
            #expect(try await ids("?classification=advisory&open=true") == ["MF3"])
            #expect(try await ids("?service=outbound+mail+flow") == ["MF3", "MF2"])
            #expect(try await ids("?service=") == ["MF3", "MF1", "MF2"])
            // since: open at any time since then (MF2 ended an hour ago).
            #expect(try await ids("?since=30m") == ["MF3", "MF1"])
            #expect(try await ids("?since=2h") == ["MF3", "MF1", "MF2"])
            #expect(try await ids("?since=2099-01-01") == ["MF3", "MF1"])
            #expect(try await ids("?unknown=1") == ["MF3", "MF1", "MF2"])

            for (query, word) in [
                ("status=bogus", "status"), ("status=", "status"), ("classification=major", "classification"),
                ("open=yes", "open"), ("open=", "open"), ("since=soon", "since"), ("since=", "since"),
                ("status=ServiceRestored", "status"),
            ] {
                let r = try await client.execute(uri: "/api/v1/health/issues?\(query)", method: .get, headers: f.bearer)
                #expect(r.status == .badRequest, "\(query)")
                #expect(errorMessage(r).hasPrefix(word), "\(query): \(errorMessage(r))")
            }
        }
    }

    @Test func oneIssueIsItsDocumentWithANullEndWhileOpen() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let r = try await client.execute(uri: "/api/v1/health/issues/MF1", method: .get, headers: f.bearer)
            #expect(r.status == .ok)
            #expect(r.headers[.contentType]?.hasPrefix("application/json") == true)
            let text = String(buffer: r.body)
            #expect(text.contains("\"endDateTime\":null"))
            let doc = try JSONDecoder().decode(HealthIssueDocument.self, from: Data(r.body.readableBytesView))
            #expect(doc == HealthIssueDocument(f.health.issues[0]))
            #expect(doc.scope.forests == ["NAMPR01"] && doc.evidence.relatedSignatures.count == 1)
            let ended = try json(
                try await client.execute(uri: "/api/v1/health/issues/MF2", method: .get, headers: f.bearer))
            #expect(ended["endDateTime"] is String && ended["isResolved"] as? Bool == true)

            let missing = try await client.execute(uri: "/api/v1/health/issues/MF99", method: .get, headers: f.bearer)
            #expect(missing.status == .notFound && errorMessage(missing) == "no issue MF99")
            expectSecurityHeaders(missing, "404")
        }
    }

    @Test func postsAreAddedByTheTokenAndBadBodiesAreRefused() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let uri = "/api/v1/health/issues/MF1/posts"
            let r = try await client.execute(
                uri: uri, method: .post, headers: f.jsonBearer,
                body: ByteBuffer(
                    string: #"{"text": "We're rerouting NAMPR01's sessions.\nNext update in 30 minutes."}"#))
            #expect(r.status == .ok)
            let posts = try #require(try json(r)["posts"] as? [[String: Any]])
            #expect(posts.last?["author"] as? String == "api:ops" && posts.last?["postType"] as? String == "regular")
            #expect((posts.last?["description"] as? String)?.hasSuffix("Next update in 30 minutes.") == true)
            #expect(f.health.issues[0].posts.count == 2)

            for (body, word) in [
                ("", "the body"), ("not json", "the body"), ("[1, 2]", "the body"), ("\"text\"", "the body"),
                ("{}", "text is required"), (#"{"text": 5}"#, "text must be a string"),
                (#"{"text": null}"#, "text must be a string"), (#"{"text": ""}"#, "text must not be empty"),
                (#"{"text": " \n\t\u2003"}"#, "text must contain"),
                ("{\"text\": \"\(String(repeating: "x", count: 10_001))\"}", "text must be at most 10000"),
            ] {
                let bad = try await client.execute(
                    uri: uri, method: .post, headers: f.jsonBearer, body: ByteBuffer(string: body))
                #expect(bad.status == .badRequest, "\(body.prefix(40))")
                #expect(errorMessage(bad).hasPrefix(word), "\(body.prefix(40)): \(errorMessage(bad))")
            }
            #expect(f.health.issues[0].posts.count == 2)
            let unknown = try await client.execute(
                uri: "/api/v1/health/issues/MF42/posts", method: .post, headers: f.jsonBearer,
                body: ByteBuffer(string: #"{"text": "hello"}"#))
            #expect(unknown.status == .notFound && errorMessage(unknown) == "no issue MF42")
        }
    }

    @Test func statusChangesFollowTheMonitorsRules() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            func set(_ id: String, _ body: String) async throws -> TestResponse {
                try await client.execute(
                    uri: "/api/v1/health/issues/\(id)/status", method: .post, headers: f.jsonBearer,
                    body: ByteBuffer(string: body))
            }
            let r = try await set("MF1", #"{"status": "restoringService"}"#)
            #expect(r.status == .ok)
            #expect(try json(r)["status"] as? String == "restoringService")
            #expect(f.health.issues[0].posts.last?.description == "Current status: set to restoringService by api:ops.")
            // The same status again, or the review's status set by hand: 409.
            let again = try await set("MF1", #"{"status": "restoringService"}"#)
            #expect(again.status == .conflict && errorMessage(again) == "MF1 is already restoringService")
            let review = try await set("MF1", #"{"status": "postIncidentReviewPublished"}"#)
            #expect(review.status == .conflict)
            for (body, word) in [
                (#"{"status": "bogus"}"#, "status must be one of investigating, serviceDegradation"),
                (#"{"status": 3}"#, "status must be one of"), ("{}", "status is required"),
                (#"{"state": "serviceRestored"}"#, "status is required"), ("{", "the body"),
            ] {
                let bad = try await set("MF1", body)
                #expect(bad.status == .badRequest, "\(body)")
                #expect(errorMessage(bad).hasPrefix(word), "\(body): \(errorMessage(bad))")
            }
            #expect(try await set("MF404", #"{"status": "serviceRestored"}"#).status == .notFound)
            // serviceRestored ends the issue.
            let restored = try await set("MF1", #"{"status": "serviceRestored"}"#)
            #expect(try json(restored)["endDateTime"] is String)
        }
    }

    @Test func aReviewNeedsARestoredIssueAndBlankTextPublishesTheDraft() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            func review(_ id: String, _ body: String?) async throws -> TestResponse {
                try await client.execute(
                    uri: "/api/v1/health/issues/\(id)/review", method: .post, headers: f.jsonBearer,
                    body: body.map { ByteBuffer(string: $0) })
            }
            let open = try await review("MF1", #"{"text": "too early"}"#)
            #expect(open.status == .conflict)
            #expect(errorMessage(open) == "a post-incident review is published once the service is restored")
            #expect(try await review("MF77", "{}").status == .notFound)
            #expect(try await review("MF2", #"{"text": 12}"#).status == .badRequest)
            #expect(try await review("MF2", "[]").status == .badRequest)

            let draft = HealthMonitor.draftReview(f.health.issues[1])
            let r = try await review("MF2", #"{"text": "  "}"#)
            #expect(r.status == .ok)
            let doc = try json(r)
            #expect(doc["status"] as? String == "postIncidentReviewPublished")
            let last = try #require((doc["posts"] as? [[String: Any]])?.last)
            #expect(last["postType"] as? String == "postIncidentReview" && last["author"] as? String == "api:ops")
            #expect(last["description"] as? String == draft)
            #expect(draft.hasPrefix("Post-incident review for MF2"))
            // Once published, the status is final.
            #expect(try await review("MF2", "{}").status == .conflict)
            let status = try await client.execute(
                uri: "/api/v1/health/issues/MF2/status", method: .post, headers: f.jsonBearer,
                body: ByteBuffer(string: #"{"status": "investigating"}"#))
            #expect(status.status == .conflict)
        }
        // An empty body (no JSON at all) is the draft too; given text is published as it is.
        let g = try AdminRouterFixture()
        try await g.test { client in
            let r = try await client.execute(uri: "/api/v1/health/issues/MF2/review", method: .post, headers: g.bearer)
            #expect(r.status == .ok)
            #expect(g.health.issues[1].posts.last?.description.hasPrefix("Post-incident review for MF2") == true)
        }
        let h = try AdminRouterFixture()
        try await h.test { client in
            let r = try await client.execute(
                uri: "/api/v1/health/issues/MF2/review", method: .post, headers: h.jsonBearer,
                body: ByteBuffer(string: #"{"text": "Root cause: the remote's certificate expired."}"#))
            #expect(r.status == .ok)
            #expect(h.health.issues[1].posts.last?.description == "Root cause: the remote's certificate expired.")
        }
    }

    @Test func reportsAreAcceptedWith202AndCheckedFieldByField() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let uri = "/api/v1/health/reports"
            let r = try await client.execute(
                uri: uri, method: .post, headers: f.jsonBearer,
                body: ByteBuffer(
                    string:
                        #"{"tenant": "contoso", "region": "nam", "text": "Mail to Fabrikam bounces", "error": "421 4.3.2 busy"}"#
                ))
            #expect(r.status == .accepted)
            expectSecurityHeaders(r, "202")
            let body = try json(r)
            #expect(body["accepted"] as? Bool == true && body["reporter"] as? String == "api:ops")
            #expect(body["tenant"] as? String == "contoso" && body["region"] as? String == "nam")
            let plain = try await client.execute(
                uri: uri, method: .post, headers: f.jsonBearer,
                body: ByteBuffer(
                    string: #"{"tenant": "t2", "region": "emea", "text": "slow", "error": "", "extra": 1}"#))
            #expect(plain.status == .accepted)
            let got = f.health.reports.withLock { $0 }
            #expect(got.count == 2)
            #expect(
                got[0].report
                    == ProblemReport(
                        tenant: "contoso", region: "nam", text: "Mail to Fabrikam bounces", errorText: "421 4.3.2 busy")
            )
            #expect(got[0].reporter == "api:ops")
            #expect(got[1].report.errorText == nil)

            for (body, word) in [
                (#"{"region": "nam", "text": "x"}"#, "tenant is required"),
                (#"{"tenant": "", "region": "nam", "text": "x"}"#, "tenant must not be empty"),
                (#"{"tenant": "c", "region": "  ", "text": "x"}"#, "region must contain"),
                (#"{"tenant": "c", "region": 7, "text": "x"}"#, "region must be a string"),
                (#"{"tenant": "c", "region": "nam"}"#, "text is required"),
                (#"{"tenant": "c", "region": "nam", "text": "x", "error": null}"#, "error must be a string"),
                (
                    "{\"tenant\": \"\(String(repeating: "é", count: 201))\", \"region\": \"r\", \"text\": \"x\"}",
                    "tenant must be at most 200"
                ),
                (
                    "{\"tenant\": \"c\", \"region\": \"r\", \"text\": \"x\", \"error\": \"\(String(repeating: "e", count: 2001))\"}",
                    "error must be at most 2000"
                ),
                ("tenant=c&region=r&text=x", "the body"),
            ] {
                let bad = try await client.execute(
                    uri: uri, method: .post, headers: f.jsonBearer, body: ByteBuffer(string: body))
                #expect(bad.status == .badRequest, "\(body.prefix(50))")
                #expect(errorMessage(bad).hasPrefix(word), "\(body.prefix(50)): \(errorMessage(bad))")
            }
            #expect(f.health.reports.withLock { $0.count } == 2)
        }
    }

    @Test func theHealthAPINeedsATokenAndTellsMethodsApart() async throws {
        let f = try AdminRouterFixture()
        let routes: [(HTTPRequest.Method, String)] = [
            (.get, "/api/v1/health/overview"), (.get, "/api/v1/health/issues"), (.get, "/api/v1/health/issues/MF1"),
            (.post, "/api/v1/health/issues/MF1/posts"), (.post, "/api/v1/health/issues/MF1/status"),
            (.post, "/api/v1/health/issues/MF1/review"), (.post, "/api/v1/health/reports"),
        ]
        try await f.test { client in
            for (method, uri) in routes {
                for headers: HTTPFields in [[:], [.authorization: "Bearer mf_not-a-token"]] {
                    let r = try await client.execute(
                        uri: uri, method: method, headers: headers, body: ByteBuffer(string: #"{"text": "x"}"#))
                    #expect(r.status == .unauthorized, "\(method) \(uri)")
                    expectSecurityHeaders(r, "\(method) \(uri)")
                }
            }
            #expect(f.health.issues[0].posts.count == 1)
            #expect(f.health.reports.withLock { $0.isEmpty })
            let get = try await client.execute(uri: "/api/v1/health/reports", method: .get, headers: f.bearer)
            #expect(get.status == .methodNotAllowed && get.headers[.allow] == "POST")
            let put = try await client.execute(uri: "/api/v1/health/issues/MF1", method: .put, headers: f.bearer)
            #expect(put.status == .methodNotAllowed && put.headers[.allow] == "GET, HEAD")
            let posts = try await client.execute(
                uri: "/api/v1/health/issues/MF1/posts", method: .get, headers: f.bearer)
            #expect(posts.status == .methodNotAllowed && posts.headers[.allow] == "POST")
            let other = try await client.execute(
                uri: "/api/v1/health/issues/MF1/close", method: .post, headers: f.bearer)
            #expect(other.status == .notFound)
            let head = try await client.execute(uri: "/api/v1/health/issues", method: .head, headers: f.bearer)
            #expect(head.status == .ok && head.body.readableBytes == 0)
        }
    }

    @Test func filtersParseLikeTheirDocumentation() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let f = try HealthIssueFilter(
            [
                "status": "investigating", "classification": "advisory", "open": "false", "since": "1h",
                "service": "Admin",
            ],
            now: now)
        #expect(f.status == .investigating && f.classification == .advisory && f.open == false)
        #expect(f.since == now - 3600 && f.service == "Admin")
        let none = try HealthIssueFilter([:])
        #expect(none.status == nil && none.open == nil && none.since == nil && none.service == nil)
    }
}

struct HealthPageTests {
    @Test func theServiceHealthPageListsOpenIssuesThenEndedOnes() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let r = try await client.execute(uri: "/health", method: .get, headers: f.session)
            #expect(r.status == .ok)
            expectSecurityHeaders(r, "/health")
            let html = String(buffer: r.body)
            #expect(html.contains("<a href=\"/health\" class=\"active\">Service health</a>"))
            let open = try #require(html.range(of: "id=\"open-issues\""))
            let ended = try #require(html.range(of: "id=\"ended-issues\""))
            #expect(open.lowerBound < ended.lowerBound)
            let openPart = html[open.lowerBound..<ended.lowerBound]
            let endedPart = html[ended.lowerBound...]
            #expect(openPart.contains("data-issue=\"MF1\"") && openPart.contains("data-issue=\"MF3\""))
            #expect(!openPart.contains("data-issue=\"MF2\"") && endedPart.contains("data-issue=\"MF2\""))
            // Newest first: MF3 started 10 minutes ago, MF1 20.
            #expect(
                try #require(openPart.range(of: "MF3")).lowerBound
                    < (try #require(openPart.range(of: "MF1"))).lowerBound)
            #expect(
                openPart.contains(
                    "<td class=\"nw\">Incident</td><td class=\"nw st-serviceInterruption\">Service interruption</td>"))
            #expect(
                openPart.contains("inbound; forests NAMPR01; regions nam; tenants contoso, fabrikam; peak 62% failing"))
            #expect(html.contains("data-service=\"Inbound mail flow\" data-status=\"serviceInterruption\""))
            #expect(html.contains("data-service=\"Admin\" data-status=\"serviceOperational\""))
            #expect(html.contains("href=\"/health/report\""))
            // The hostile title is text, not markup.
            #expect(!html.contains("<script>") && !html.contains("<b>tenant</b>"))
            #expect(html.contains("&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;"))
            #expect(!html.contains("class=\"notice\""))

            let done = try await client.execute(uri: "/health?done=report", method: .get, headers: f.session)
            #expect(String(buffer: done.body).contains("id=\"notice\">Thank you: the report was received."))
            let injected = try await client.execute(
                uri: "/health?done=%3Cb%3EYour+account+is+locked%3C%2Fb%3E", method: .get, headers: f.session)
            let injectedHTML = String(buffer: injected.body)
            #expect(!injectedHTML.contains("class=\"notice\"") && !injectedHTML.contains("account is locked"))
            // Without a session: to the sign-in page.
            let anonymous = try await client.execute(uri: "/health", method: .get)
            #expect(anonymous.status == .seeOther && anonymous.headers[.location] == "/login")
        }
    }

    @Test func anEmptyServiceHealthPageSaysSo() async throws {
        let f = try AdminRouterFixture(issues: [])
        try await f.test { client in
            let html = String(buffer: try await client.execute(uri: "/health", method: .get, headers: f.session).body)
            #expect(html.contains("No open issues.") && html.contains("<td colspan=\"9\">None.</td>"))
            #expect(html.components(separatedBy: "data-status=\"serviceOperational\"").count == 4)
        }
    }

    @Test func theIssuePageShowsFieldsScopeEvidencePostsAndForms() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let r = try await client.execute(uri: "/health/issues/MF1", method: .get, headers: f.session)
            #expect(r.status == .ok)
            let html = String(buffer: r.body)
            #expect(html.contains("<h1>MF1: Senders can&#39;t deliver mail to some organisations in NAMPR01</h1>"))
            #expect(html.contains("<tr><th>Classification</th><td>Incident</td></tr>"))
            #expect(html.contains("<tr><th>Status</th><td>Service interruption (serviceInterruption)</td></tr>"))
            #expect(html.contains("<tr><th>Forests</th><td>NAMPR01</td></tr>"))
            #expect(html.contains("<tr><th>Tenants</th><td>2: contoso, fabrikam</td></tr>"))
            #expect(html.contains("style=\"width:62%\"></span></span> 62%"))
            #expect(html.contains("<tr><th>Failures</th><td>40 in 60 outcome(s) since"))
            #expect(html.contains("<li>outbound: connection closed abruptly</li>"))
            #expect(!html.contains("<tr><th>End</th>"))
            // The timeline: one mark per post; no report chart without reports.
            #expect(html.contains("<svg id=\"chart-timeline\""))
            #expect(html.components(separatedBy: "class=\"mark\"").count - 1 == 1)
            #expect(!html.contains("chart-reports"))
            // Forms, each with the session's CSRF token; no review form while open.
            #expect(html.contains("action=\"/health/issues/MF1/posts\""))
            #expect(html.contains("action=\"/health/issues/MF1/status\""))
            #expect(html.contains("<option value=\"serviceInterruption\" selected>Service interruption</option>"))
            #expect(!html.contains("<option value=\"postIncidentReviewPublished\""))
            #expect(html.components(separatedBy: "name=\"csrf\" value=\"\(f.csrf)\"").count - 1 == 3)  // + sign out
            #expect(!html.contains("id=\"review-form\"") && html.contains("id=\"review-unavailable\""))

            // A restored issue has the review form, with the draft in it.
            let restored = String(
                buffer: try await client.execute(uri: "/health/issues/MF2", method: .get, headers: f.session).body)
            #expect(
                restored.contains("id=\"review-form\"") && restored.contains("Post-incident review for MF2: Mail to"))
            #expect(restored.contains("<tr><th>End</th>"))

            let missing = try await client.execute(uri: "/health/issues/MF9", method: .get, headers: f.session)
            #expect(missing.status == .notFound && String(buffer: missing.body).contains("No issue MF9."))
            let hostileID = try await client.execute(
                uri: "/health/issues/%3Cscript%3Ex", method: .get, headers: f.session)
            #expect(hostileID.status == .notFound && !String(buffer: hostileID.body).contains("<script>"))
        }
    }

    @Test func aReportsOnlyIssueShowsNoFailingSharesAndNamesTheReportsErrorTexts() async throws {
        var issue = FakeHealth.sample()[0]
        issue.origin = .customer
        issue.status = .investigating
        issue.classification = .advisory
        issue.evidence = IssueEvidence(firstSeen: issue.startDateTime)
        // The monitor makes the reports' most frequent error text the signature, the others related.
        issue.signature = "451 4.7.500 Server busy"
        issue.evidence.relatedSignatures = ["421 4.3.2 try later"]
        issue.scope.peakFailureShare = 0
        issue.reportsByRegion = ["nam": 3]
        let f = try AdminRouterFixture(issues: [issue])
        try await f.test { client in
            let html = String(
                buffer: try await client.execute(uri: "/health/issues/MF1", method: .get, headers: f.session).body)
            #expect(!html.contains("failing share") && !html.contains("<th>Failures</th>"))
            #expect(
                html.contains(
                    "<tr><th>Error texts in the reports</th><td><ul id=\"related\"><li>451 4.7.500 Server busy</li><li>421 4.3.2 try later"
                ))
            #expect(html.contains("<svg id=\"chart-reports\""))
        }
        var bare = issue
        bare.signature = "user reports: nam"
        bare.evidence.relatedSignatures = []
        let g = try AdminRouterFixture(issues: [bare])
        try await g.test { client in
            let html = String(
                buffer: try await client.execute(uri: "/health/issues/MF1", method: .get, headers: g.session).body)
            #expect(html.contains("No telemetry behind this issue yet: user reports only."))
        }
    }

    @Test func hostileTitlesPostsTenantsAndRegionsAreEscaped() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let html = String(
                buffer: try await client.execute(uri: "/health/issues/MF3", method: .get, headers: f.session).body)
            for raw in ["<script>", "<img", "</pre><img", "<b>tenant</b>", "<i>eu</i>", "api:<ops>"] {
                #expect(!html.contains(raw), "\(raw)")
            }
            #expect(html.contains("<title>MF3: &lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;"))
            #expect(html.contains("<pre>&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;\nsecond line &amp; more</pre>"))
            #expect(html.contains("&lt;b&gt;tenant&lt;/b&gt;"))
            // Posts newest first: the admin's post (5 minutes ago) above the opening one.
            let admin = try #require(html.range(of: "data-kind=\"regular\"><h3>"))
            let auto = try #require(html.range(of: "data-kind=\"automatic\"><h3>"))
            #expect(admin.lowerBound < auto.lowerBound)
            #expect(html.contains("· Admin post · api:&lt;ops&gt;</h3>"))
            // Both charts; the report chart's region label and the timeline's tooltip are escaped.
            #expect(html.contains("<svg id=\"chart-reports\"") && html.contains("&lt;i&gt;eu&lt;/i&gt;</text>"))
            #expect(html.contains("Admin post by api:&lt;ops&gt;</title>"))
            #expect(html.components(separatedBy: "class=\"mark\"").count - 1 == 2)
            #expect(html.contains("User reports</th><td>3 (&lt;i&gt;eu&lt;/i&gt;: 2, nam: 1)"))
            // The API gives the same text back as it is: JSON, not HTML.
            let api = try await client.execute(uri: "/api/v1/health/issues/MF3", method: .get, headers: f.bearer)
            #expect(try json(api)["title"] as? String == FakeHealth.hostileTitle)
        }
    }

    @Test func theIssueFormsNeedTheCSRFTokenAndActAsTheWebUser() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            // Without the token, or with another: 403, nothing done.
            for body in ["text=hi", "csrf=wrong&text=hi"] {
                let r = try await client.execute(
                    uri: "/health/issues/MF1/posts", method: .post, headers: f.formSession,
                    body: ByteBuffer(string: body))
                #expect(r.status == .forbidden)
                expectSecurityHeaders(r, "403")
            }
            let unsigned = try await client.execute(
                uri: "/health/issues/MF1/posts", method: .post, body: f.form([("text", "hi")]))
            #expect(unsigned.status == .unauthorized)
            #expect(f.health.issues[0].posts.count == 1)

            let post = try await client.execute(
                uri: "/health/issues/MF1/posts", method: .post, headers: f.formSession,
                body: f.form([("text", "Sessions are being moved.\nNext update at 11:00.")]))
            #expect(post.status == .seeOther && post.headers[.location] == "/health/issues/MF1?done=posts")
            let added = try #require(f.health.issues[0].posts.last)
            #expect(
                added.author == "web:ops" && added.description == "Sessions are being moved.\nNext update at 11:00.")
            let page = String(
                buffer: try await client.execute(
                    uri: "/health/issues/MF1?done=posts", method: .get, headers: f.session
                ).body)
            #expect(page.contains("id=\"notice\">Your post was added.</p>"))
            #expect(page.contains("<pre>Sessions are being moved.\nNext update at 11:00.</pre>"))

            let status = try await client.execute(
                uri: "/health/issues/MF1/status", method: .post, headers: f.formSession,
                body: f.form([("status", "restoringService")]))
            #expect(status.status == .seeOther && status.headers[.location] == "/health/issues/MF1?done=status")
            #expect(f.health.issues[0].status == .restoringService)

            // Refusals are pages with the reason and the status code.
            let blank = try await client.execute(
                uri: "/health/issues/MF1/posts", method: .post, headers: f.formSession, body: f.form([("text", "  ")]))
            #expect(blank.status == .badRequest && String(buffer: blank.body).contains("text must contain more"))
            let bogus = try await client.execute(
                uri: "/health/issues/MF1/status", method: .post, headers: f.formSession,
                body: f.form([("status", "<b>fine</b>")]))
            #expect(bogus.status == .badRequest && !String(buffer: bogus.body).contains("<b>fine"))
            let early = try await client.execute(
                uri: "/health/issues/MF1/review", method: .post, headers: f.formSession, body: f.form([("text", "x")]))
            #expect(early.status == .conflict)
            #expect(
                String(buffer: early.body).contains("a post-incident review is published once the service is restored"))
            let unknown = try await client.execute(
                uri: "/health/issues/MF8/posts", method: .post, headers: f.formSession, body: f.form([("text", "x")]))
            #expect(unknown.status == .notFound && String(buffer: unknown.body).contains("no issue MF8"))

            let review = try await client.execute(
                uri: "/health/issues/MF2/review", method: .post, headers: f.formSession,
                body: f.form([("text", "Root cause: <expired certificate>.")]))
            #expect(review.status == .seeOther && review.headers[.location] == "/health/issues/MF2?done=review")
            #expect(f.health.issues[1].status == .postIncidentReviewPublished)
            #expect(f.health.issues[1].posts.last?.description == "Root cause: <expired certificate>.")
            let final = String(
                buffer: try await client.execute(uri: "/health/issues/MF2", method: .get, headers: f.session).body)
            #expect(final.contains("The post-incident review is published: the status is final."))
            #expect(!final.contains("id=\"status-form\"") && final.contains("&lt;expired certificate&gt;"))
        }
    }

    @Test func theReportFormRecordsAReportAndKeepsWhatWasTypedOnAnError() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            let form = try await client.execute(uri: "/health/report", method: .get, headers: f.session)
            let html = String(buffer: form.body)
            #expect(form.status == .ok && html.contains("id=\"report-form\""))
            #expect(html.contains("<option value=\"contoso\">") && html.contains("name=\"csrf\" value=\"\(f.csrf)\""))

            let bad = try await client.execute(
                uri: "/health/report", method: .post, headers: f.formSession,
                body: f.form([("tenant", "<b>contoso</b>"), ("region", " "), ("text", "</textarea><script>x</script>")])
            )
            #expect(bad.status == .badRequest)
            let again = String(buffer: bad.body)
            #expect(again.contains("id=\"report-error\">region must contain more than white space</p>"))
            #expect(again.contains("value=\"&lt;b&gt;contoso&lt;/b&gt;\""))
            #expect(again.contains("&lt;/textarea&gt;&lt;script&gt;x&lt;/script&gt;</textarea>"))
            #expect(!again.contains("<script>"))
            #expect(f.health.reports.withLock { $0.isEmpty })

            let noCSRF = try await client.execute(
                uri: "/health/report", method: .post, headers: f.formSession,
                body: ByteBuffer(string: "tenant=contoso&region=nam&text=x"))
            #expect(noCSRF.status == .forbidden)

            let ok = try await client.execute(
                uri: "/health/report", method: .post, headers: f.formSession,
                body: f.form([
                    ("tenant", "contoso"), ("region", "nam"), ("text", "Mail from Fabrikam bounces"),
                    ("error", "421 4.3.2 The maximum number of concurrent connections"),
                ]))
            #expect(ok.status == .seeOther && ok.headers[.location] == "/health?done=report")
            let got = f.health.reports.withLock { $0 }
            #expect(got.count == 1 && got[0].reporter == "web:ops")
            #expect(got[0].report.tenant == "contoso" && got[0].report.region == "nam")
            #expect(got[0].report.errorText == "421 4.3.2 The maximum number of concurrent connections")
            let noError = try await client.execute(
                uri: "/health/report", method: .post, headers: f.formSession,
                body: f.form([("tenant", "contoso"), ("region", "nam"), ("text", "slow"), ("error", "")]))
            #expect(noError.status == .seeOther)
            #expect(f.health.reports.withLock { $0.last?.report.errorText } == nil)
        }
    }
}

struct LoginErrorTests {
    @Test func theSignInPageShowsOnlyFixedMessagesForKnownCodes() async throws {
        let f = try AdminRouterFixture()
        try await f.test { client in
            func box(_ uri: String) async throws -> String? {
                let html = String(buffer: try await client.execute(uri: uri, method: .get).body)
                guard let start = html.range(of: "id=\"login-error\">"),
                    let end = html.range(of: "</p>", range: start.upperBound..<html.endIndex)
                else { return nil }
                return String(html[start.upperBound..<end.lowerBound])
            }
            #expect(try await box("/login?error=invalid_token") == "That token is not valid.")
            #expect(try await box("/login?error=session_expired") == "Your session has ended; sign in again.")
            // Text from the URL is never shown: not as text, not as markup, not a known message spelt out.
            for uri in [
                "/login?error=Your+account+is+locked.+Call+%2B1-555-0100",
                "/login?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                "/login?error=That+token+is+not+valid.", "/login?error=INVALID_TOKEN", "/login?error=", "/login?error",
                "/login?error=invalid_token%00",
            ] {
                #expect(try await box(uri) == nil, "\(uri)")
                let html = String(buffer: try await client.execute(uri: uri, method: .get).body)
                #expect(!html.contains("locked") && !html.contains("alert(1)"), "\(uri)")
            }
        }
    }
}

struct TimelineChartTests {
    @Test func marksSitOnTheAxisInTimeOrderWithEscapedTooltips() {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let svg = Charts.timeline(
            id: "t", start: t0, end: t0 + 100, band: (t0, t0 + 50),
            marks: [
                .init(time: t0 + 10, kind: "automatic", color: "#000", title: "opened <by> \"mailflow\""),
                .init(time: t0 + 100, kind: "regular", color: "#111", title: "post"),
            ], keys: [.init(name: "A&B", color: "#000", values: [])], startLabel: "start", endLabel: "end")
        #expect(svg.hasPrefix("<svg id=\"t\"") && svg.hasSuffix("</svg>"))
        #expect(svg.components(separatedBy: "class=\"mark\"").count - 1 == 2)
        #expect(svg.contains("<title>opened &lt;by&gt; &quot;mailflow&quot;</title>"))
        #expect(svg.contains(">A&amp;B</text>"))
        // The plot runs from x=40 to 466: the last mark at the right end, the band to the middle.
        #expect(svg.contains("data-kind=\"regular\" cx=\"466\""))
        #expect(svg.contains("class=\"band\" x=\"40\" y=\"38\" width=\"213\""))
        // A single instant still draws.
        let one = Charts.timeline(
            id: "o", start: t0, end: t0, band: nil, marks: [], keys: [], startLabel: "", endLabel: "")
        #expect(one.contains("<line") && !one.contains("class=\"band\""))
    }

    @Test func barLabelsAndSeriesNamesAreEscaped() {
        let svg = Charts.bars(
            id: "b", series: [.init(name: "<s>", color: "#000", values: [1])], labels: ["<l>"], labelEvery: 1)
        #expect(!svg.contains("<s>") && !svg.contains("<l>"))
        #expect(svg.contains("data-series=\"&lt;s&gt;\"") && svg.contains(">&lt;l&gt;</text>"))
    }
}

struct HealthInputTests {
    /// docs/openapi.yaml spells out, in the patterns of the fields that must not be blank, the white
    /// space the server (and the monitor's trimming) skips: the two must agree, or the fuzzer's valid
    /// input would be refused (or its invalid input taken).
    @Test func theDocumentsWhiteSpaceIsFoundationsWhiteSpace() throws {
        let doc = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../docs/openapi.yaml")
        let text = try String(contentsOf: doc, encoding: .utf8)
        var listed: [String] = []
        var v = 0
        while v <= 0x10FFFF {
            if let u = Unicode.Scalar(v), CharacterSet.whitespacesAndNewlines.contains(u) {
                listed.append(String(format: "%04x", v))
            }
            v += 1
        }
        #expect(
            listed == [
                "0009", "000a", "000b", "000c", "000d", "0020", "0085", "00a0", "1680", "2000", "2001", "2002", "2003",
                "2004", "2005", "2006", "2007", "2008", "2009", "200a", "200b", "2028", "2029", "202f", "205f", "3000",
            ])
        let pattern =
            #"pattern: "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200b\\u2028\\u2029\\u202f\\u205f\\u3000]""#
        #expect(text.components(separatedBy: pattern).count - 1 == 4)
        #expect(
            AdminHTTPServer.isBlank(" \t\r\n\u{0B}\u{0C}\u{85}\u{A0}\u{1680}\u{2000}\u{200B}\u{2028}\u{202F}\u{3000}"))
        #expect(
            !AdminHTTPServer.isBlank("\u{1C}") && !AdminHTTPServer.isBlank("\u{FEFF}") && !AdminHTTPServer.isBlank(" x")
        )
    }
}

struct ShareBandChartTests {
    @Test func theShareLineLeavesTheShadedUsualBand() {
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let svg = Charts.shareBand(
            id: "s", times: [t0, t0 + 30, t0 + 60], share: [0.8, 0.7, 0.01], baseline: [0.01, 0.01, 0.01],
            threshold: [0.11, 0.11, 0.11])
        #expect(svg.hasPrefix("<svg id=\"s\"") && svg.hasSuffix("</svg>"))
        // Percent axis up to the highest value (80%), plot x 40...476, y 8...122: the band from 1% (y 120.6)
        // to 11% (y 106.3), three upper points and three lower ones; the line from 80% (y 8) down.
        #expect(svg.contains(">80%</text>"))
        #expect(
            svg.contains("<polygon class=\"band\" points=\"40,106.3 258,106.3 476,106.3 476,120.6 258,120.6 40,120.6\"")
        )
        #expect(
            svg.contains(
                "<polyline class=\"line\" data-series=\"failing share\" data-last=\"0\" points=\"40,8 258,22.3 476,120.6\""
            ))
        #expect(Charts.shareBand(id: "e", times: [], share: [], baseline: [], threshold: []).isEmpty)
    }
}
