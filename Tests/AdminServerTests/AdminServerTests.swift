import Foundation
import Hummingbird
import Ingress
import MailQueue
import Metrics
import Testing

@testable import AdminServer

struct AdminTokenTests {
    @Test func tokensAreRandomAndHashedWithSHA256() {
        let a = AdminTokens.generate()
        let b = AdminTokens.generate()
        #expect(a != b)
        #expect(a.hasPrefix("mf_") && a.count == 46)
        #expect(a.dropFirst(3).allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        #expect(AdminTokens.hash(a).count == 32)
        #expect(AdminTokens.hash(a) == AdminTokens.hash(a) && AdminTokens.hash(a) != AdminTokens.hash(b))
        // SHA-256("abc"), FIPS 180-2 test vector.
        #expect(
            AdminTokens.hash("abc").map { String(format: "%02x", $0) }.joined()
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func verifyAcceptsOnlyStoredTokens() throws {
        let dir = NSTemporaryDirectory() + "mf-admin-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        let token = AdminTokens.generate()
        try store.addAdminToken(name: "ops", hash: AdminTokens.hash(token))
        let lastUse = AdminTokens.LastUse()
        #expect(try AdminTokens.verify(token, store: store, lastUse: lastUse)?.name == "ops")
        for bad in [
            "", "mf_", token + "x", String(token.dropLast()), "MF_" + token.dropFirst(3), String(token.dropFirst(3)),
        ] {
            #expect(try AdminTokens.verify(bad, store: store, lastUse: lastUse) == nil, "\(bad)")
        }
        #expect(
            try AdminTokens.verify("mf_" + String(repeating: "a", count: 500), store: store, lastUse: lastUse) == nil)
    }

    @Test func aStoreThatCannotBeReadIsNotAnInvalidToken() throws {
        let dir = NSTemporaryDirectory() + "mf-admin-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try SQLiteQueueStore(path: "\(dir)/q.sqlite")
        let token = AdminTokens.generate()
        try store.addAdminToken(name: "ops", hash: AdminTokens.hash(token))
        try store.pool.write { try $0.execute(sql: "DROP TABLE admin_token") }
        #expect(throws: AdminTokens.StoreUnavailable.self) {
            try AdminTokens.verify(token, store: store, lastUse: AdminTokens.LastUse())
        }
        // A token that cannot be one is refused without reading the store.
        #expect(try AdminTokens.verify("not-a-token", store: store, lastUse: AdminTokens.LastUse()) == nil)
    }

    @Test func lastUseIsRecordedAtMostOncePerMinute() {
        let l = AdminTokens.LastUse()
        let t = Date()
        #expect(l.shouldRecord("a", now: t))
        #expect(!l.shouldRecord("a", now: t + 59))
        #expect(l.shouldRecord("b", now: t + 59))
        #expect(l.shouldRecord("a", now: t + 61))
    }

    @Test func sessionsExpireAndCanBeRemoved() {
        let s = AdminSessions(lifetime: 60)
        let t = Date()
        let (id, session) = s.create(tokenName: "ops", now: t)
        #expect(session.actor == "web:ops" && session.csrf.count >= 40 && session.csrf != id)
        #expect(s.lookup(id, now: t + 59)?.tokenName == "ops")
        #expect(s.lookup(id, now: t + 61) == nil)
        #expect(s.lookup(id, now: t) == nil)  // expired sessions are dropped, not revived
        let (id2, _) = s.create(tokenName: "ops", now: t)
        s.remove(id2)
        #expect(s.lookup(id2, now: t) == nil)
        #expect(s.lookup("not-a-session") == nil)
    }
}

struct AdminParsingTests {
    @Test func formDecodingHandlesPlusPercentAndRepeats() {
        let f = AdminHTTPServer.form("sender=anne+b%40x.test&q=a%2Bb&empty=&flag&sender=second&bad=%zz")
        #expect(f["sender"] == "anne b@x.test")
        #expect(f["q"] == "a+b")
        #expect(f["empty"] == "" && f["flag"] == "")
        #expect(f["bad"] == "%zz")
        #expect(AdminHTTPServer.form("").isEmpty)
    }

    @Test func traceQueryParametersAreValidated() throws {
        let q = try AdminHTTPServer.traceQuery([
            "sender": " anne ", "status": "Delivered", "direction": "outbound", "since": "2h", "limit": "7",
            "recipient": "",
        ])
        #expect(q.sender == "anne" && q.recipient == nil && q.status == "Delivered" && q.direction == "outbound")
        #expect(q.limit == 7)
        #expect(abs(q.since!.timeIntervalSinceNow + 7200) < 5)
        let table: [([String: String], String)] = [
            (["status": "lost"], "status"), (["direction": "up"], "direction"), (["since": "soon"], "since"),
            (["until": "2026-13-45"], "until"), (["limit": "0"], "limit"), (["limit": "5001"], "limit"),
            (["limit": "-3"], "limit"), (["status": ""], "status"), (["since": ""], "since"),
        ]
        for (params, word) in table {
            do {
                _ = try AdminHTTPServer.traceQuery(params)
                Issue.record("accepted \(params)")
            } catch let e as HTTPError {
                #expect(e.status == .badRequest)
                #expect(e.body?.contains(word) == true, "\(params): \(e.body ?? "")")
            }
        }
    }

    @Test func timesParseAsISOOrDurations() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(AdminHTTPServer.parseTime("30m", now: now) == now - 1800)
        #expect(AdminHTTPServer.parseTime("7d", now: now) == now - 7 * 86400)
        #expect(AdminHTTPServer.parseTime("2026-11-29T10:00:00Z")?.timeIntervalSince1970 == 1_795_946_400)
        #expect(AdminHTTPServer.parseTime("2026-11-29")?.timeIntervalSince1970 == 1_795_910_400)
        #expect(AdminHTTPServer.parseTime("2026-11-29T11:00:00+01:00")?.timeIntervalSince1970 == 1_795_946_400)
        #expect(AdminHTTPServer.parseTime("1.5h", now: now) == now - 5400)
        #expect(AdminHTTPServer.parseTime("0392-04-20T09:15:46+21:25") != nil)
        for bad in [
            "2026-02-30", "2026-13-01", "2026-11-29T24:00:00Z", "2026-11-29T10:00:00", "2026-11-29T10:00Z",
            "26-11-29", "2026-11-29T10:00:00+1:00", "2026-11-29 10:00:00Z", "２０２６-11-29",
        ] {
            #expect(AdminHTTPServer.parseTime(bad) == nil, "\(bad)")
        }
        #expect(AdminHTTPServer.parseTime("-5h", now: now) == nil)
        #expect(AdminHTTPServer.parseTime("h") == nil)
    }

    @Test func headersAreUnfoldedAndStopAtTheBody() {
        let body = "Received: from a\r\n\tby b; Sun\r\nSubject: Hi\r\n there\r\nX-Empty:\r\n\r\nNot: a header\r\n"
        let h = AdminHTTPServer.headerFields(.inline(Data(body.utf8)))
        #expect(h.map(\.name) == ["Received", "Subject", "X-Empty"])
        #expect(h[0].value == "from a by b; Sun" && h[1].value == "Hi there" && h[2].value == "")
        #expect(AdminHTTPServer.headerFields(nil).isEmpty)
        #expect(AdminHTTPServer.headerFields(.spooled(path: "/nonexistent/file")).isEmpty)
    }
}

struct ChartTests {
    @Test func barsCarryTheirValuesAndScaleToTheMaximum() {
        let svg = Charts.bars(
            id: "c",
            series: [
                .init(name: "In", color: "#000", values: [0, 5, 10]),
                .init(name: "Out", color: "#111", values: [1, 2, 3]),
            ],
            labels: ["a", "b", "c"], labelEvery: 1)
        #expect(svg.hasPrefix("<svg id=\"c\"") && svg.hasSuffix("</svg>"))
        #expect(svg.components(separatedBy: "class=\"bar\"").count - 1 == 6)
        #expect(svg.contains("data-series=\"In\" data-value=\"10\""))
        // The tallest bar fills the plot height (140 - 18 bottom - 8 top = 114).
        #expect(svg.contains("data-value=\"10\" x=\"") && svg.contains("height=\"114\""))
        #expect(svg.contains(">10</text>"))  // y-axis top label
    }

    @Test func emptyAndPercentChartsRender() {
        let empty = Charts.bars(id: "e", series: [.init(name: "S", color: "#000", values: [])], labels: [])
        #expect(!empty.contains("class=\"bar\""))
        let pct = Charts.bars(
            id: "p", series: [.init(name: "S", color: "#000", values: [0.25, 0.5])], labels: [], percent: true)
        #expect(pct.contains(">50%</text>"))
        let line = Charts.line(id: "l", series: .init(name: "Q", color: "#000", values: [1, 3, 2]), labels: [])
        #expect(line.contains("data-last=\"2\"") && line.contains("<polyline"))
    }
}

struct MetricsExporterTests {
    @Test func exportsStateGaugesAndSwiftMetricsCounters() throws {
        let m = MetricsExporter()
        // What ingress and delivery count through swift-metrics lands in the same registry.
        Counter(label: "mailflow_delivery_attempts_total", dimensions: [("outcome", "delivered")], factory: m.factory)
            .increment(by: 3)
        Metrics.Timer(label: "mailflow_smtp_acceptance_latency_seconds", factory: m.factory).recordMilliseconds(3)
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .iso8601
        let usage = try dec.decode(
            AdmissionUsage.self,
            from: Data(
                """
                {"time": "2026-11-29T10:00:00Z", "connections": 3, "maxConnections": 100, "busiestSources": [],
                 "refusals": {}, "forests": [{"name": "NAMPR01", "region": "nam", "sessions": 2,
                 "maxConnections": 10, "maxMessagesPerMinute": 0, "refused": 4,
                 "share": {"connections": 4, "nodes": 3}},
                 {"name": "EURPR01", "region": "eu", "sessions": 0, "maxConnections": 5,
                  "maxMessagesPerMinute": 0, "refused": 0}]}
                """.utf8))
        let queue = try dec.decode(
            SQLiteQueueStore.QueueCounts.self,
            from: Data(
                #"{"queuedMessages": 5, "heldMessages": 1, "pendingRecipients": 9, "deferredMessages": 2}"#
                    .utf8))
        let text = m.render(usage: usage, queue: queue)
        #expect(text.contains("mailflow_smtp_sessions{forest=\"NAMPR01\"} 2.0"))
        #expect(text.contains("mailflow_smtp_sessions_max{forest=\"NAMPR01\"} 10.0"))
        #expect(text.contains("mailflow_forest_refused_sessions{forest=\"NAMPR01\"} 4.0"))
        // Cluster mode: this node's claim and the nodes sharing the forest; not for a forest it has whole.
        #expect(text.contains("mailflow_cluster_claim_sessions{forest=\"NAMPR01\"} 4.0"))
        #expect(text.contains("mailflow_cluster_nodes{forest=\"NAMPR01\"} 3.0"))
        #expect(!text.contains("mailflow_cluster_claim_sessions{forest=\"EURPR01\"}"))
        #expect(text.contains("mailflow_smtp_connections 3.0"))
        #expect(text.contains("mailflow_queue_messages{state=\"held\"} 1.0"))
        #expect(text.contains("mailflow_queue_pending_recipients 9.0"))
        #expect(text.contains("# HELP mailflow_queue_pending_recipients"))
        #expect(text.contains("mailflow_delivery_attempts_total{outcome=\"delivered\"} 3"))
        #expect(text.contains("mailflow_smtp_acceptance_latency_seconds_bucket{le=\"0.005\"} 1"))
        #expect(text.contains("mailflow_smtp_acceptance_latency_seconds_bucket{le=\"0.002\"} 0"))
    }
}

struct MethodTests {
    @Test func knownPathsNameTheirMethodsWithHeadWhereGetIs() {
        #expect(MethodNotAllowed.allowedMethods(path: "/api/v1/overview") == [.get, .head])
        #expect(MethodNotAllowed.allowedMethods(path: "/api/v1/queue/5XQKPVG483DHYM44") == [.get, .head, .delete])
        #expect(MethodNotAllowed.allowedMethods(path: "/api/v1/queue/5XQKPVG483DHYM44/hold") == [.post])
        #expect(MethodNotAllowed.allowedMethods(path: "/login?error=x") == [.get, .head, .post])
        #expect(MethodNotAllowed.allowedMethods(path: "/") == [.get, .head])
        #expect(MethodNotAllowed.allowedMethods(path: "/healthz") == [.get, .head])
        #expect(MethodNotAllowed.allowedMethods(path: "/logout") == [.post])
        #expect(MethodNotAllowed.allowedMethods(path: "/api/v1/queue/shape") == [.get, .head])
        #expect(MethodNotAllowed.allowedMethods(path: "/api/v2/overview").isEmpty)
        #expect(MethodNotAllowed.allowedMethods(path: "/api/v1/queue/a/b/c").isEmpty)
    }
}
