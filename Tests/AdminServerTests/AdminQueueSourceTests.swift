import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MailQueue
import NIOCore
import NIOPosix
import Testing

@testable import AdminServer

/// The admin listener reads and controls the queue through `AdminBackend.queue`, not through the
/// node's own store (which keeps tokens, users and audit): in cluster mode that is the shared queue.
/// Here the "queue" is a second, real SQLite store, so a read that went to the node's store would
/// find nothing; and a queue whose calls fail (an injected fault, as a database that is away) makes
/// every queue route a `503` that names the queue, never a `500`.
struct AdminQueueSourceTests {
    static let messageID = "5XQKPVG483DHYM45"

    struct Fixture {
        let server: AdminHTTPServer
        let token: String
        let queueStore: SQLiteQueueStore
        let cookie: String

        init(queue: ((SQLiteQueueStore) -> any QueueControl)? = nil, queueName: String = "the test queue") throws {
            let dir = NSTemporaryDirectory() + "mf-admin-queue-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let store = try SQLiteQueueStore(path: "\(dir)/node.sqlite")
            queueStore = try SQLiteQueueStore(path: "\(dir)/shared.sqlite")
            token = AdminTokens.generate()
            try store.addAdminToken(name: "ops", hash: AdminTokens.hash(token))
            let body = "Subject: shared\r\n\r\nhi\r\n"
            try queueStore.insert([
                NewMessage(
                    id: AdminQueueSourceTests.messageID, receivedAt: Date(), sender: "anne@x.test",
                    recipients: [EnvelopeRecipient(address: "far@remote.test", route: .relay(domain: "remote.test"))],
                    size: body.utf8.count, clientAddress: "127.0.0.1", helo: "client.test", protocolName: "ESMTP",
                    tenant: "contoso", subject: "shared", body: .inline(Data(body.utf8)))
            ])
            server = try AdminHTTPServer(
                backend: AdminBackend(
                    store: store, queue: (queue ?? { LocalQueueControl($0) })(queueStore), queueName: queueName,
                    hostname: "mx.test", version: "test",
                    tenants: {
                        [
                            TenantInfo(
                                name: "contoso", domains: ["contoso.test"], forest: "NAMPR01", maxMessageSize: 1000)
                        ]
                    }),
                group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "admin-queue-test"))
            cookie = "\(AdminAuth.cookie)=\(server.sessions.create(tokenName: "ops").0)"
        }

        var bearer: HTTPFields { [.authorization: "Bearer \(token)"] }

        func test(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
            try await Application(router: server.makeRouter()).test(.router, body)
        }
    }

    struct Overview: Decodable {
        struct Bucket: Decodable { var received: Int }
        var activity: [Bucket]
    }

    /// A queue whose every call fails as `SharedQueueControl`'s do when the database is away.
    struct UnreachableQueue: QueueControl {
        struct Away: Error, CustomStringConvertible {
            var description: String { "the shared queue's database is unavailable: connection refused" }
        }

        func trace(_ query: SQLiteQueueStore.TraceQuery) async throws -> [SQLiteQueueStore.TraceRow] { throw Away() }
        func list(tenant: String?, includeDone: Bool, limit: Int) async throws -> [SQLiteQueueStore.QueueListing] {
            throw Away()
        }
        func message(_ id: String) async throws -> StoredMessage? { throw Away() }
        func traceEvents(queueID: String) async throws -> [TraceEvent] { throw Away() }
        func control(_ action: SQLiteQueueStore.ControlAction, id: String, actor: String) async throws
            -> SQLiteQueueStore.ControlResult
        { throw Away() }
        func shape() async throws -> [SQLiteQueueStore.QueueShape] { throw Away() }
        func queueCounts() async throws -> SQLiteQueueStore.QueueCounts { throw Away() }
        func tenantActivity(since: Date) async throws -> [SQLiteQueueStore.TenantActivity] { throw Away() }
        func activity(now: Date, width: TimeInterval, count: Int) async throws -> [SQLiteQueueStore.ActivityBucket] {
            throw Away()
        }
        func topErrors(since: Date, limit: Int) async throws -> [SQLiteQueueStore.ErrorSummary] { throw Away() }
    }

    @Test func everyQueueReadAndActionGoesToTheBackendsQueue() async throws {
        let f = try Fixture()
        let id = Self.messageID
        try await f.test { client in
            let list = try await client.execute(uri: "/api/v1/queue", method: .get, headers: f.bearer)
            #expect(list.status == .ok)
            #expect(String(buffer: list.body).contains(id))
            let detail = try await client.execute(uri: "/api/v1/queue/\(id)", method: .get, headers: f.bearer)
            #expect(detail.status == .ok)
            #expect(String(buffer: detail.body).contains(#""value":"shared""#))
            let trace = try await client.execute(uri: "/api/v1/trace?since=1h", method: .get, headers: f.bearer)
            #expect(String(buffer: trace.body).contains(id))
            let shape = try await client.execute(uri: "/api/v1/queue/shape", method: .get, headers: f.bearer)
            #expect(String(buffer: shape.body).contains(#""domain":"remote.test""#))
            let overview = try await client.execute(uri: "/api/v1/overview", method: .get, headers: f.bearer)
            #expect(String(buffer: overview.body).contains(#""queuedMessages":1"#))
            // The activity chart counts the queue's trace (in cluster mode every node's), not the node's.
            let activity = try JSONDecoder().decode(Overview.self, from: Data(buffer: overview.body)).activity
            #expect(activity.map(\.received).reduce(0, +) == 1)
            let tenants = try await client.execute(uri: "/api/v1/tenants", method: .get, headers: f.bearer)
            #expect(String(buffer: tenants.body).contains(#""receivedLastHour":1"#))
            #expect(String(buffer: tenants.body).contains(#""pendingRecipients":1"#))
            let hold = try await client.execute(uri: "/api/v1/queue/\(id)/hold", method: .post, headers: f.bearer)
            #expect(hold.status == .ok)
            let page = try await client.execute(uri: "/queue/\(id)", method: .get, headers: [.cookie: f.cookie])
            #expect(page.status == .ok)
            #expect(String(buffer: page.body).contains("held"))
        }
        // The action changed the queue's store, with its admin event.
        #expect(try f.queueStore.message(id)?.state == .held)
        #expect(try f.queueStore.traceEvents(queueID: id).contains { $0.detail == "hold by api:ops" })
    }

    @Test(arguments: [
        (HTTPRequest.Method.get, "/api/v1/queue"), (.get, "/api/v1/queue/\(messageID)"), (.get, "/api/v1/trace"),
        (.get, "/api/v1/queue/shape"), (.get, "/api/v1/overview"), (.post, "/api/v1/queue/\(messageID)/hold"),
        (.delete, "/api/v1/queue/\(messageID)"), (.get, "/queue"), (.get, "/queue/\(messageID)"), (.get, "/"),
        (.get, "/api/v1/tenants"), (.get, "/forests"),
    ])
    func aQueueThatCannotBeReachedIsA503NamingIt(method: HTTPRequest.Method, path: String) async throws {
        let f = try Fixture(queue: { _ in UnreachableQueue() }, queueName: "the shared queue at postgres://mf:***@db/q")
        try await f.test { client in
            let headers = path.hasPrefix("/api") ? f.bearer : [.cookie: f.cookie]
            let r = try await client.execute(uri: path, method: method, headers: headers)
            #expect(r.status == .serviceUnavailable)
            #expect(r.headers[.retryAfter] == "5")
            let expected =
                "the shared queue at postgres://mf:***@db/q cannot be read right now: "
                + "the shared queue's database is unavailable: connection refused"
            if path.hasPrefix("/api") {
                let error = try JSONDecoder().decode([String: [String: String]].self, from: Data(buffer: r.body))
                #expect(error["error"]?["message"] == expected)
            } else {
                // The admin center's error page, with the same words (HTML-escaped).
                #expect(r.headers[.contentType] == "text/html; charset=utf-8")
                let page = String(buffer: r.body)
                #expect(
                    page.contains("cannot be read right now: the shared queue&#39;s database is unavailable"), "\(page)"
                )
                #expect(page.contains("postgres://mf:***@db/q"), "\(page)")
            }
        }
    }
}
