import NIOCore
import NIOEmbedded
import SMTPCore
import Testing

@testable import Delivery

/// The client handler in LMTP mode on an `EmbeddedChannel`: LHLO on the wire, the per-recipient
/// replies after the final dot (RFC 2033 §4.2) however the server packs them into reads, each with
/// its own deadline, and a server that goes silent half-way settles only the recipients it has not
/// answered for.
struct LMTPClientHandlerTests {
    static let timeouts = OutboundTimeouts(
        connect: .seconds(1), greeting: .seconds(5), command: .seconds(4), tlsHandshake: .seconds(3),
        dataInitiation: .seconds(2), dataBlock: .seconds(6), dataTermination: .seconds(7))

    static let envelope = OutboundEnvelope(
        sender: "s@example.test",
        recipients: ["a@mail.test", "b@mail.test", "c@mail.test"].map { OutboundRecipient(address: $0) }, size: 10)

    func written(_ channel: EmbeddedChannel) throws -> String {
        var out = ""
        while let b = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: b) }
        return out
    }

    /// Past the greeting and LHLO, the envelope sent, `354` in: the body is owed and then written.
    func bodyWritten() throws -> (EmbeddedChannel, SMTPClientHandler, CloseReason) {
        let reason = CloseReason()
        let handler = SMTPClientHandler(
            machine: ClientSession(heloName: "mx.test", tls: .disabled, protocol: .lmtp), tlsContext: nil,
            serverName: nil, verify: false, closeReason: reason, timeouts: Self.timeouts)
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 24)).wait()
        try channel.writeInbound(ByteBuffer(string: "220 mailbox.test LMTP\r\n"))
        #expect(try written(channel) == "LHLO mx.test\r\n")
        try channel.writeInbound(
            ByteBuffer(string: "250-mailbox.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"))
        #expect(handler.machine.isReady)
        handler.handle(handler.machine.send(Self.envelope))
        #expect(
            try written(channel)
                == "MAIL FROM:<s@example.test>\r\nRCPT TO:<a@mail.test>\r\nRCPT TO:<b@mail.test>\r\n"
                + "RCPT TO:<c@mail.test>\r\nDATA\r\n")
        try channel.writeInbound(
            ByteBuffer(string: "250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 <b@mail.test> User doesn't exist\r\n"))
        try channel.writeInbound(ByteBuffer(string: "250 2.1.5 OK\r\n354 OK\r\n"))
        guard case .needBody(chunked: false)? = handler.queued.last else {
            Issue.record("expected the body to be asked for, got \(handler.queued)")
            return (channel, handler, reason)
        }
        handler.bodyChunkStarted()
        handler.bodyWritten()
        handler.queued = []
        return (channel, handler, reason)
    }

    @Test func repliesAfterTheDotInOneReadSettleEachRecipient() throws {
        let (channel, handler, _) = try bodyWritten()
        try channel.writeInbound(
            ByteBuffer(string: "250 2.0.0 <a@mail.test> Saved\r\n452 4.2.2 <c@mail.test> Quota exceeded\r\n"))
        guard case .finished(let results)? = handler.queued.first else {
            Issue.record("expected results, got \(handler.queued)")
            return
        }
        #expect(results.map(\.disposition) == [.delivered, .failed, .deferred])
        #expect(results.map { $0.reply.enhancedCode } == [.init(2, 0, 0), .init(5, 1, 1), .init(4, 2, 2)])
        #expect(handler.machine.isReady)
    }

    @Test func eachReplyAfterTheDotGetsItsOwnDeadline() throws {
        let (channel, handler, reason) = try bodyWritten()
        channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        try channel.writeInbound(ByteBuffer(string: "250 2.0.0 <a@mail.test> Saved\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(reason.failure.withLock { $0 } == nil, "the first reply re-armed the 7 s deadline")
        #expect(handler.queued.isEmpty)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        guard case .closed(let results, _)? = handler.queued.last else {
            Issue.record("expected the session closed, got \(handler.queued)")
            return
        }
        // a was saved: retrying it would store it twice. c is deferred with what went wrong.
        #expect(results.map(\.disposition) == [.delivered, .failed, .deferred])
        #expect(results[2].reply.enhancedCode == EnhancedStatusCode(4, 4, 2))
        #expect(results[2].reply.description.contains("waiting for the reply to the end of the data"))
        #expect(!channel.isActive)
    }
}
