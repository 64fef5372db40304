import NIOCore
import NIOEmbedded
import SMTPCore
import Synchronization
import Testing

@testable import Delivery

/// The outbound session's deadlines on an `EmbeddedChannel` with its clock moved by hand: a remote
/// that never greets, trickles a reply, never answers DATA or the final dot, stalls the TLS
/// handshake, or stops taking the body, is ended with a precise 4.4.2 and the connection closed.
struct SMTPClientDeadlineTests {
    static let timeouts = OutboundTimeouts(
        connect: .seconds(1), greeting: .seconds(5), command: .seconds(4), tlsHandshake: .seconds(3),
        dataInitiation: .seconds(2), dataBlock: .seconds(6), dataTermination: .seconds(7))

    static let envelope = OutboundEnvelope(
        sender: "s@example.test", recipients: [OutboundRecipient(address: "r@example.net")], size: 10)

    /// A connected session; the greeting deadline starts when the channel becomes active.
    func connected(tls: TLSRequirement = .disabled) throws -> (EmbeddedChannel, SMTPClientHandler, CloseReason) {
        let reason = CloseReason()
        let handler = SMTPClientHandler(
            machine: ClientSession(heloName: "mx.test", tls: tls), tlsContext: nil, serverName: nil, verify: false,
            closeReason: reason, timeouts: Self.timeouts)
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 25)).wait()
        return (channel, handler, reason)
    }

    func ready(pipelining: Bool = true) throws -> (EmbeddedChannel, SMTPClientHandler, CloseReason) {
        let (channel, handler, reason) = try connected()
        try channel.writeInbound(ByteBuffer(string: "220 remote ESMTP\r\n"))
        try channel.writeInbound(ByteBuffer(string: pipelining ? "250-remote\r\n250 PIPELINING\r\n" : "250 remote\r\n"))
        #expect(handler.machine.isReady)
        return (channel, handler, reason)
    }

    func timedOut(_ reason: CloseReason) -> (TimeAmount, String)? {
        guard case .timeout(let after, let what)? = reason.failure.withLock({ $0 }) else { return nil }
        return (after, what ?? "")
    }

    @Test func aRemoteThatNeverGreetsIsEndedAtTheGreetingDeadline() throws {
        let (channel, handler, reason) = try connected()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(4999))
        #expect(reason.failure.withLock { $0 } == nil && channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(timedOut(reason)?.0 == .seconds(5))
        #expect(timedOut(reason)?.1 == "the greeting")
        #expect(!channel.isActive, "the connection is closed")
        #expect(
            reason.asFailure.reply.description
                == "451 4.4.2 No reply from the remote within 5 s waiting for the greeting")
        guard case .closed? = handler.queued.last else {
            Issue.record("expected the session closed, got \(handler.queued)")
            return
        }
    }

    @Test func aTrickledReplyGetsOneDeadlineForTheWholeReply() throws {
        let (channel, _, reason) = try connected()
        // One byte a second: each well within any per-read timeout, the whole far past 5 s.
        for byte in "220 remote ESMTP".utf8 {
            guard channel.isActive else { break }
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        }
        #expect(!channel.isActive)
        #expect(timedOut(reason)?.0 == .seconds(5))
        #expect(timedOut(reason)?.1 == "the greeting (5 octets of a reply had come, not a whole one)")
    }

    @Test func aTrickledMultilineReplyCountsItsWholeLines() throws {
        let (channel, _, reason) = try connected()
        try channel.writeInbound(ByteBuffer(string: "220 remote ESMTP\r\n"))
        try channel.writeInbound(ByteBuffer(string: "250-remote\r\n250-PIPE"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(timedOut(reason)?.1 == "the reply to EHLO (20 octets of a reply had come, not a whole one)")
        #expect(!channel.isActive)
    }

    @Test func eachWholeReplyRearmsTheDeadline() throws {
        let (channel, handler, reason) = try connected()
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        try channel.writeInbound(ByteBuffer(string: "220 remote ESMTP\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        try channel.writeInbound(ByteBuffer(string: "250 remote\r\n"))
        #expect(handler.machine.isReady)
        // Ready: Mailflow owes the next command, the remote owes nothing; no deadline runs.
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(reason.failure.withLock { $0 } == nil && channel.isActive)
    }

    @Test func noReplyToDataDefersWithTheDataInitiationDeadline() throws {
        let (channel, handler, reason) = try ready()
        handler.handle(handler.machine.send(Self.envelope))
        try channel.writeInbound(ByteBuffer(string: "250 2.1.0 ok\r\n250 2.1.5 ok\r\n"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(timedOut(reason)?.1 == "the reply to DATA")
        guard case .closed(let results, _)? = handler.queued.last else {
            Issue.record("expected the session closed, got \(handler.queued)")
            return
        }
        #expect(results.map(\.disposition) == [.deferred])
        #expect(results.first?.reply.enhancedCode == EnhancedStatusCode(4, 4, 2))
        #expect(results.first?.reply.description.contains("waiting for the reply to DATA") == true)
        #expect(!channel.isActive)
    }

    @Test func noReplyToTheFinalDotWaitsTheDataTerminationDeadline() throws {
        let (channel, handler, reason) = try ready()
        handler.handle(handler.machine.send(Self.envelope))
        try channel.writeInbound(ByteBuffer(string: "250 ok\r\n250 ok\r\n354 go\r\n"))
        // The body writer holds the deadline while it writes: dataBlock per chunk.
        handler.bodyChunkStarted()
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(reason.failure.withLock { $0 } == nil)
        handler.bodyWritten()
        channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(reason.failure.withLock { $0 } == nil, "10 minutes by default; 7 s here")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(timedOut(reason)?.0 == .seconds(7))
        #expect(timedOut(reason)?.1 == "the reply to the end of the data")
        #expect(!channel.isActive)
    }

    @Test func aRemoteThatStopsTakingTheBodyIsEndedAtTheDataBlockDeadline() throws {
        let (channel, handler, reason) = try ready()
        handler.handle(handler.machine.send(Self.envelope))
        try channel.writeInbound(ByteBuffer(string: "250 ok\r\n250 ok\r\n354 go\r\n"))
        handler.bodyChunkStarted()
        channel.embeddedEventLoop.advanceTime(by: .seconds(6))
        #expect(timedOut(reason)?.1 == "the remote to take the message body")
        #expect(!channel.isActive)
    }

    @Test func aStalledTLSHandshakeIsEndedAtItsDeadline() throws {
        let (channel, handler, reason) = try connected(tls: .opportunistic)
        try channel.writeInbound(ByteBuffer(string: "220 remote ESMTP\r\n"))
        try channel.writeInbound(ByteBuffer(string: "250-remote\r\n250 STARTTLS\r\n"))
        // No TLS context here: put the machine into the handshake by hand, as `.startTLS` would.
        #expect(handler.machine.replyReceived(SMTPReply(220, nil, "go")) == .startTLS)
        handler.rearm()
        #expect(handler.machine.awaiting == .tlsHandshake)
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(timedOut(reason)?.1 == "the TLS handshake")
        #expect(!channel.isActive)
    }

    @Test func aGiantMultilineReplyIsRefusedAndHoldsNoMemory() throws {
        let (channel, handler, reason) = try connected()
        try channel.writeInbound(ByteBuffer(string: "220 remote ESMTP\r\n"))
        let block = String(repeating: "250-X-FILLER a capability line of a remote that does not stop\r\n", count: 1000)
        for _ in 0..<100 {
            guard channel.isActive else { break }
            _ = try? channel.writeInbound(ByteBuffer(string: block))
        }
        #expect(reason.asFailure == .replyParse("reply has too many lines (over 100)"))
        #expect(reason.asFailure.reply.enhancedCode == EnhancedStatusCode(4, 5, 0))
        #expect(handler.input.readableBytes == 0, "nothing of the refused reply is kept")
        #expect(!channel.isActive)
    }

    @Test func timeoutTextsSayWhatWasAwaited() {
        #expect(
            SMTPClientFailure.timeout(after: .milliseconds(1500), waitingFor: "the greeting").reply.description
                == "451 4.4.2 No reply from the remote within 1.5 s waiting for the greeting")
        #expect(Self.timeouts.deadline(for: .dataInitiation) == .seconds(2))
        #expect(OutboundTimeouts().deadline(for: .dataTermination) == .seconds(600))
        #expect(OutboundTimeouts().deadline(for: .greeting) == .seconds(300))
    }
}
