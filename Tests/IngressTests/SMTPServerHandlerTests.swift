import Foundation
import Logging
import MailQueue
import NIOCore
import NIOEmbedded
import NIOPosix
import SMTPCore
import Synchronization
import Testing

@testable import Ingress

/// The queue as a script: every message handed over is kept, and the answer is the one the test set.
final class ScriptedCommitter: MessageCommitter {
    struct Refused: Error {}
    let failing = Mutex(false)
    let messages = Mutex<[NewMessage]>([])

    var committed: [NewMessage] { messages.withLock { $0 } }

    func commit(_ message: NewMessage, completion: @escaping @Sendable (Error?) -> Void) {
        messages.withLock { $0.append(message) }
        completion(failing.withLock { $0 } ? Refused() : nil)
    }
}

/// A server's shared parts for handler tests: a scripted queue, a spool in a temporary folder, one
/// tenant (`example.test`, mailboxes alice and bob) on its own resource forest `EXAMPLE01`,
/// admission control with the given limits, and a fixed wall clock.
///
/// Bodies sent in these tests stay under `Spool.inlineLimit` (256 KiB). `EmbeddedEventLoop` says
/// every thread is its own, so a spilled body's writes, finished on the pool's thread, would run the
/// handler there while the test drives it from its own: a data race that crashed the test process
/// (a 360 KB body did, in about one run in three on a loaded two-core machine).
final class HandlerFixture {
    static let forest = "EXAMPLE01"
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    let directory: URL
    let committer = ScriptedCommitter()
    let pool: NIOThreadPool
    let admission: AdmissionControl
    let context: IngressContext

    init(
        limits: AdmissionLimits = AdmissionLimits(), timeouts: SessionTimeouts = SessionTimeouts(),
        forestConnections: Int = 10, forestMessagesPerMinute: Int = 0
    ) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mf-handler-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        var limits = limits
        limits.forests = [
            ResourceForest(
                name: Self.forest, region: "test", tenants: ["example"], maxConnections: forestConnections,
                maxMessagesPerMinute: forestMessagesPerMinute)
        ]
        admission = AdmissionControl(limits: limits)
        let directoryOfTenants = TenantDirectory(tenants: [
            Tenant(name: "example", domains: ["example.test"], mailboxes: ["alice", "bob"])
        ])
        let policy = IngressPolicy(
            session: ServerSessionConfiguration(hostname: "mx.test", tlsAvailable: false), timeouts: timeouts,
            directory: directoryOfTenants)
        context = IngressContext(
            policy: SharedPolicy(policy), admission: admission, committer: committer,
            spool: try Spool(directory: directory.appendingPathComponent("spool").path), threadPool: pool, tls: nil,
            logger: Logger(label: "test"), now: { HandlerFixture.now })
    }

    deinit {
        try? pool.syncShutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }

    /// A connected channel with a fresh handler, as the server's child initializer builds it.
    func connect(from address: String = "192.0.2.10") throws -> (EmbeddedChannel, SMTPServerHandler) {
        let channel = EmbeddedChannel()
        let handler = SMTPServerHandler(context: context)
        try channel.pipeline.syncOperations.addHandler(handler)
        channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 25)
        // EmbeddedChannel takes the address it connects to as the peer's: the client's.
        try channel.connect(to: SocketAddress(ipAddress: address, port: 40000)).wait()
        return (channel, handler)
    }

    /// Forest sessions admission control counts on the tenant's forest.
    var forestSessions: Int { admission.usage().forests.first { $0.name == Self.forest }?.sessions ?? -1 }
    var connections: Int { admission.usage().connections }
    var sources: Int { admission.usage().busiestSources.count }
}

extension EmbeddedChannel {
    /// Closes the channel (if the server has not) and runs what the close scheduled: NIO removes a
    /// closed channel's handlers in a task of its event loop.
    func end() {
        _ = try? finish()
        embeddedEventLoop.run()
    }

    func send(_ text: String) throws {
        var buffer = allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        try writeInbound(buffer)
    }

    /// Everything the server wrote so far, as text.
    func replies() throws -> String {
        var out = ""
        while var b = try readOutbound(as: ByteBuffer.self) { out += b.readString(length: b.readableBytes) ?? "" }
        return out
    }
}

/// The session handler on `EmbeddedChannel`: every kind of session leaves nothing behind once its
/// channel closes (issue 10: the handler and its context kept each other alive, leaking every
/// connection and every partial body), and request deadlines close slow senders.
struct SMTPServerHandlerTests {
    /// How a session ends, one per kind the memory benchmark measures.
    enum Ending: String, CaseIterable, CustomTestStringConvertible {
        case connectAndClose, ehloQuit, droppedInData, droppedInBDAT, droppedInDataAfterLongBody, timedOut
        var testDescription: String { rawValue }
    }

    @Test(arguments: Ending.allCases)
    func handlerIsFreedWhenTheChannelCloses(_ ending: Ending) throws {
        let fixture = try HandlerFixture()
        weak var weakHandler: SMTPServerHandler?
        weak var weakSink: BodySink?
        do {
            let (channel, handler) = try fixture.connect()
            weakHandler = handler
            #expect(try channel.replies().hasPrefix("220 "))
            switch ending {
            case .connectAndClose:
                break
            case .ehloQuit:
                try channel.send("EHLO client.test\r\nQUIT\r\n")
                #expect(try channel.replies().contains("221 2.0.0"))
            case .droppedInData, .droppedInDataAfterLongBody:
                try channel.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
                #expect(try channel.replies().contains("354 "))
                let line = String(repeating: "x", count: 998) + "\r\n"
                let lines = ending == .droppedInData ? 4 : 60
                try channel.send("Subject: partial\r\n\r\n" + String(repeating: line, count: lines))
                weakSink = handler.sink
                #expect(weakSink != nil)
            case .droppedInBDAT:
                try channel.send("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\n")
                try channel.send("BDAT 100000\r\nSubject: partial\r\n\r\n" + String(repeating: "y", count: 4000))
                weakSink = handler.sink
                #expect(weakSink != nil)
            case .timedOut:
                channel.embeddedEventLoop.advanceTime(by: .seconds(301))
                #expect(try channel.replies().contains("421 4.4.2"))
            }
            channel.end()
        }
        #expect(weakHandler == nil, "the handler outlived its channel")
        #expect(weakSink == nil, "the partial body outlived its channel")
        #expect(fixture.admission.usage().connections == 0)
    }

    @Test func connectionRefusedAtConnectIsFreed() throws {
        var limits = AdmissionLimits()
        limits.maxConnections = 1
        let fixture = try HandlerFixture(limits: limits)
        let (first, _) = try fixture.connect()
        weak var weakHandler: SMTPServerHandler?
        do {
            let (channel, handler) = try fixture.connect(from: "192.0.2.11")
            weakHandler = handler
            #expect(try channel.replies().hasPrefix("421 4.3.2"))
            channel.end()
        }
        #expect(weakHandler == nil, "a refused session's handler outlived its channel")
        first.end()
        #expect(fixture.admission.usage().connections == 0)
    }

    /// Request deadlines (Postfix's `smtpd_per_request_deadline`): bytes that never finish a command
    /// do not keep the session alive.
    @Test func commandDripIsClosedAtTheCommandDeadline() throws {
        let fixture = try HandlerFixture()
        let (channel, _) = try fixture.connect()
        _ = try channel.replies()
        for _ in 0..<100 {
            try channel.send("E")
            channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        }
        // 400 s of one byte every 4 s: an idle timer would still be waiting; the deadline was 300 s.
        #expect(try channel.replies().contains("421 4.4.2"))
        channel.end()
    }

    /// The queue ID comes from the context (`IngressContext.queueID`): a test can know it before
    /// the message is sent, and the `250` and the committed message carry the same one.
    @Test func theQueueIDComesFromTheContext() throws {
        let fixture = try HandlerFixture()
        var context = fixture.context
        context.queueID = { now in
            #expect(now == HandlerFixture.now)
            return "BCDFGHJKLMNPQRST"
        }
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(SMTPServerHandler(context: context))
        channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 25)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.10", port: 40000)).wait()
        try channel.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        try channel.send("Subject: id\r\n\r\nhello\r\n.\r\n")
        channel.embeddedEventLoop.run()
        #expect(try channel.replies().contains("250 2.0.0 Ok: queued as BCDFGHJKLMNPQRST"))
        #expect(fixture.committer.committed.map(\.id) == ["BCDFGHJKLMNPQRST"])
        channel.end()
    }

    @Test func bodyDripIsClosedWhenBelowTheMinimumRate() throws {
        let fixture = try HandlerFixture()
        let (channel, _) = try fixture.connect()
        try channel.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        _ = try channel.replies()
        var closedAfter = 0
        for second in stride(from: 3, through: 600, by: 3) {
            try channel.send("x")
            channel.embeddedEventLoop.advanceTime(by: .seconds(3))
            if try channel.replies().contains("421 4.4.2") {
                closedAfter = second
                break
            }
        }
        // 180 s of budget, plus 2 ms per byte at 500 octets/s: closed a little after 180 s.
        #expect((180...183).contains(closedAfter))
        channel.end()
    }

    @Test func bodyAtTheMinimumRateKeepsGoing() throws {
        let fixture = try HandlerFixture()
        let (channel, handler) = try fixture.connect()
        try channel.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        _ = try channel.replies()
        let line = String(repeating: "z", count: 598) + "\r\n"
        // 600 octets a second for 5 minutes, well past the 180 s budget: above 500 octets/s, the
        // deadline keeps moving. (180 KB: under `Spool.inlineLimit`, see `HandlerFixture`.)
        for _ in 0..<300 {
            try channel.send(line)
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        }
        #expect(handler.sink?.isSpooled == false, "the body must stay in memory on EmbeddedEventLoop")
        #expect(!(try channel.replies().contains("421")))
        channel.end()
    }

    @Test func idleTimersRestartOnEveryByteWhenDeadlinesAreOff() throws {
        let fixture = try HandlerFixture(timeouts: SessionTimeouts(requestDeadline: false))
        let (channel, _) = try fixture.connect()
        _ = try channel.replies()
        for _ in 0..<100 {
            try channel.send("E")
            channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        }
        #expect(try channel.replies().isEmpty)
        channel.end()
    }
}
