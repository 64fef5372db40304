import Logging
import NIOCore
import NIOEmbedded
import SMTPCore
import Testing

@testable import Ingress

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 15, inbound hostile peers: a client that never reads its replies holds a bounded amount of
/// the server's memory and is closed at its deadline; connections past the descriptor reserve are
/// refused while a descriptor is still there to refuse them with.
struct HostilePeerTests {
    static let noops = String(repeating: "NOOP\r\n", count: 1000)

    @Test func aClientThatStopsReadingGetsNoMoreRepliesUntilItReads() throws {
        let fixture = try HandlerFixture()
        let (channel, handler) = try fixture.connect()
        #expect(try channel.replies().hasPrefix("220 "))
        // The socket's send buffer and the channel's 64 KiB of pending writes are full.
        channel.isWritable = false
        try channel.send(Self.noops)
        #expect(try channel.replies().isEmpty, "replies were made for a client that does not read them")
        #expect(handler.outputBlocked)
        #expect(handler.readPaused)
        // What waits is the input already read, not 1,000 replies.
        #expect(handler.input.readableBytes == Self.noops.utf8.count)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        let replies = try channel.replies()
        #expect(replies.components(separatedBy: "\r\n").filter { $0.hasPrefix("250 ") }.count == 1000)
        #expect(!handler.outputBlocked)
        #expect(!handler.readPaused)
        channel.end()
    }

    @Test func aClientThatNeverReadsIsClosedAtTheCommandDeadline() throws {
        let fixture = try HandlerFixture()
        let (channel, _) = try fixture.connect()
        _ = try channel.replies()
        try channel.send("EHLO c.test\r\n")
        _ = try channel.replies()
        channel.isWritable = false
        try channel.send(Self.noops)
        channel.embeddedEventLoop.advanceTime(by: .seconds(299))
        #expect(channel.isActive)
        // The 421 cannot reach a client that does not read: the connection is closed without waiting
        // for it to be written.
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, "the session outlived its command deadline")
        channel.end()
        #expect(fixture.connections == 0)
    }

    /// Holds every write without completing it, as a socket whose peer never reads does.
    final class StuckWrites: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var held: [EventLoopPromise<Void>] = []
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if let promise { held.append(promise) }
        }
        func flush(context: ChannelHandlerContext) {}
    }

    @Test func aLastReplyThatIsNeverTakenDoesNotHoldTheConnection() throws {
        let fixture = try HandlerFixture()
        let (channel, _) = try fixture.connect()
        _ = try channel.replies()
        let stuck = StuckWrites()
        try channel.pipeline.syncOperations.addHandler(stuck, position: .first)
        try channel.send("QUIT\r\n")
        // The 221 is "written" but never completes: the close waiting on it must not wait for ever.
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: SMTPServerHandler.closeGrace)
        #expect(!channel.isActive, "a reply the client never takes held the connection open")
        for p in stuck.held { p.fail(ChannelError.ioOnClosedChannel) }
        channel.end()
        #expect(fixture.connections == 0)
    }

    // MARK: descriptors

    func limits(reserve: Int? = nil) -> AdmissionLimits {
        var l = AdmissionLimits()
        l.maxConnections = 10_000
        l.perSourceMaxConnections = 10_000
        l.perSourceConnectionsPerMinute = 1_000_000
        l.descriptorReserve = reserve
        return l
    }

    @Test func connectionsPastTheDescriptorReserveAreRefusedWith421() {
        let a = AdmissionControl(limits: limits(reserve: 20))
        // 50 descriptors open, none of them sessions; limit 100, 20 kept back: sessions may take 30.
        a.noteDescriptors(open: 50, limit: 100)
        for i in 0..<30 {
            #expect(a.admitConnection(source: "192.0.2.\(i % 200)") == .admit, "session \(i)")
        }
        guard case .refuseAndClose(let r) = a.admitConnection(source: "192.0.2.250") else {
            Issue.record("the 31st connection (its own descriptor the 81st) was admitted")
            return
        }
        #expect(r.code == 421)
        #expect(r.enhancedCode == .init(4, 3, 2))
        #expect(a.usage().refusals["descriptors"] == 1)
        // A session that ends gives its descriptor back.
        a.releaseConnection(source: "192.0.2.0")
        #expect(a.admitConnection(source: "192.0.2.0") == .admit)
        // A new count that finds descriptors freed elsewhere (a delivery finished) makes room.
        a.noteDescriptors(open: 60, limit: 100)
        #expect(a.admitConnection(source: "192.0.2.1") == .admit)
        let d = a.usage().descriptors
        #expect(d == AdmissionUsage.Descriptors(open: 60, limit: 100, reserve: 20))
    }

    @Test func noCountOrNoLimitMeansNoDescriptorCheck() {
        let a = AdmissionControl(limits: limits(reserve: 20))
        for i in 0..<200 { #expect(a.admitConnection(source: "192.0.2.\(i % 200)") == .admit) }
        a.noteDescriptors(open: 5000, limit: nil)
        #expect(a.admitConnection(source: "192.0.2.1") == .admit)
    }

    @Test func theDefaultReserveIsATenthAndAtLeast64() {
        #expect(DescriptorTable.defaultReserve(limit: 256) == 64)
        #expect(DescriptorTable.defaultReserve(limit: 20_000) == 2_000)
        let a = AdmissionControl(limits: limits())
        a.noteDescriptors(open: 10, limit: 256)
        #expect(a.usage().descriptors?.reserve == 64)
    }

    @Test func theDescriptorTableCountsThisProcess() throws {
        let before = try #require(DescriptorTable.openCount())
        let fds = (0..<10).map { _ in open("/dev/null", O_RDONLY) }
        defer { for fd in fds { close(fd) } }
        let after = try #require(DescriptorTable.openCount())
        // Other tests run in parallel in this process: at least the ten opened here.
        #expect(after - before >= 10 || after >= 10)
        #expect(DescriptorTable.limit() ?? Int.max >= after)
    }

    /// Records the errors that reach the end of the listener's pipeline.
    final class ErrorSink: ChannelInboundHandler {
        typealias InboundIn = Channel
        var errors: [Error] = []
        func errorCaught(context: ChannelHandlerContext, error: Error) { errors.append(error) }
    }

    @Test func aListenerOutOfDescriptorsPausesItsAcceptsAndResumes() throws {
        let channel = EmbeddedChannel()
        let pause = AcceptPause(logger: Logger(label: "test"), metrics: IngressMetrics())
        let sink = ErrorSink()
        try channel.pipeline.syncOperations.addHandler(pause)
        try channel.pipeline.syncOperations.addHandler(sink)
        channel.pipeline.fireErrorCaught(IOError(errnoCode: EMFILE, reason: "accept"))
        #expect(pause.paused, "an accept that failed with EMFILE did not pause the listener")
        // A second failure while paused does not schedule a second resume.
        channel.pipeline.fireErrorCaught(IOError(errnoCode: ENFILE, reason: "accept"))
        channel.embeddedEventLoop.advanceTime(by: SMTPServer.acceptBackoff - .milliseconds(1))
        #expect(pause.paused)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!pause.paused, "the listener did not resume after the backoff")
        #expect(sink.errors.isEmpty)
        // A connection reset before it was accepted is not a shortage: no pause, passed on.
        channel.pipeline.fireErrorCaught(IOError(errnoCode: ECONNABORTED, reason: "accept"))
        #expect(!pause.paused)
        #expect(sink.errors.count == 1)
        _ = try? channel.finish()
    }
}
