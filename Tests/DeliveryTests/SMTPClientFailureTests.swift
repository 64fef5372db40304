import NIOCore
import NIOEmbedded
import NIOSSL
import SMTPCore
import Testing

@testable import Delivery

struct SMTPClientFailureTests {
    @Test(
        "Each kind of failure is reported as what happened",
        arguments: [
            (
                SMTPClientFailure.connect(address: "192.0.2.1", detail: "refused"), 451, "4.4.1",
                "Connection to 192.0.2.1"
            ),
            (.noAddress("mx.example.net"), 451, "4.4.4", "No address for mx.example.net"),
            (.tlsHandshake("bad certificate"), 451, "4.7.5", "TLS handshake with the remote failed"),
            (
                .replyParse("malformed reply line"), 451, "4.5.0",
                "Protocol error: the remote's reply could not be parsed"
            ),
            (.timeout(after: .seconds(300)), 451, "4.4.2", "No reply from the remote within 300 s"),
            (.closed, 451, "4.4.0", "remote server disconnected abruptly"),
            (.refused(SMTPReply(421, .init(4, 3, 2), "busy")), 421, "4.3.2", "busy"),
        ] as [(SMTPClientFailure, Int, String, String)])
    func replies(failure: SMTPClientFailure, code: Int, status: String, text: String) {
        #expect(failure.reply.code == code)
        #expect(failure.reply.enhancedCode.map { "\($0)" } == status)
        #expect(failure.description.contains(text))
    }

    @Test func pipelineErrorsAreMappedByWhereTheyHappened() {
        func kind(_ f: SMTPClientFailure) -> String {
            switch f {
            case .tlsHandshake: return "tls"
            case .closed: return "closed"
            default: return "other"
            }
        }
        let reset = IOError(errnoCode: 104, reason: "read")
        #expect(kind(SMTPClientHandler.failure(for: reset, inHandshake: true)) == "tls")
        #expect(
            kind(SMTPClientHandler.failure(for: NIOSSLError.handshakeFailed(.sslError([])), inHandshake: false))
                == "tls")
        // A TLS session cut without close_notify is an abrupt close, as a reset is.
        #expect(kind(SMTPClientHandler.failure(for: NIOSSLError.uncleanShutdown, inHandshake: false)) == "closed")
        #expect(kind(SMTPClientHandler.failure(for: reset, inHandshake: false)) == "closed")
    }

    func session() throws -> (EmbeddedChannel, SMTPClientHandler, CloseReason) {
        let reason = CloseReason()
        let handler = SMTPClientHandler(
            machine: ClientSession(heloName: "mx.test", tls: .disabled), tlsContext: nil, serverName: nil,
            verify: false, closeReason: reason)
        let channel = EmbeddedChannel(handler: handler)
        try channel.writeInbound(ByteBuffer(string: "220 remote ESMTP\r\n"))
        try channel.writeInbound(ByteBuffer(string: "250-remote\r\n250 PIPELINING\r\n"))
        #expect(handler.machine.isReady)
        return (channel, handler, reason)
    }

    static let envelope = OutboundEnvelope(
        sender: "s@example.test", recipients: [OutboundRecipient(address: "r@example.net")], size: 10)

    @Test func aReplyThatCannotBeParsedIsAProtocolErrorNotATLSFailure() throws {
        let (channel, handler, reason) = try session()
        handler.handle(handler.machine.send(Self.envelope))
        try channel.writeInbound(ByteBuffer(string: "garbage that is no reply\r\n"))
        #expect(reason.asFailure == .replyParse("malformed reply line"))
        #expect(reason.value?.enhancedCode == EnhancedStatusCode(4, 5, 0))
        guard case .closed(let results, let reply)? = handler.queued.last else {
            Issue.record("expected the session closed, got \(handler.queued)")
            return
        }
        #expect(reply?.enhancedCode == EnhancedStatusCode(4, 5, 0))
        #expect(results.map(\.disposition) == [.deferred])
        #expect(results.first?.reply.description.contains("TLS") == false)
        #expect(results.first?.reply != ClientSession.abruptClose, "a protocol error is not a poison-message signal")
    }

    @Test func aSilentRemoteTimesOutAndIsNotAnAbruptClose() throws {
        let (_, handler, reason) = try session()
        handler.handle(handler.machine.send(Self.envelope))
        handler.fail(.timeout(after: .seconds(300)))
        #expect(reason.asFailure == .timeout(after: .seconds(300)))
        guard case .closed(let results, _)? = handler.queued.last else {
            Issue.record("expected the session closed, got \(handler.queued)")
            return
        }
        #expect(results.first?.reply.enhancedCode == EnhancedStatusCode(4, 4, 2))
        #expect(results.first?.disposition == .deferred)
    }

    @Test func aDroppedConnectionIsAnAbruptClose() throws {
        let (channel, handler, reason) = try session()
        handler.handle(handler.machine.send(Self.envelope))
        channel.pipeline.fireChannelInactive()
        #expect(reason.asFailure == .closed)
        guard case .closed(let results, _)? = handler.queued.last else {
            Issue.record("expected the session closed, got \(handler.queued)")
            return
        }
        #expect(results.first?.reply == ClientSession.abruptClose)
    }

    @Test func aRemoteRefusalKeepsTheRemotesReply() throws {
        let reason = CloseReason()
        let handler = SMTPClientHandler(
            machine: ClientSession(heloName: "mx.test", tls: .disabled), tlsContext: nil, serverName: nil,
            verify: false, closeReason: reason)
        let channel = EmbeddedChannel(handler: handler)
        try channel.writeInbound(ByteBuffer(string: "421 4.3.2 too many connections\r\n"))
        #expect(reason.asFailure == .refused(SMTPReply(421, .init(4, 3, 2), "too many connections")))
    }

    @Test func aClosedSessionsHandlerIsFreed() throws {
        weak var freed: SMTPClientHandler?
        try {
            let (channel, handler, _) = try session()
            freed = handler
            handler.handle(handler.machine.send(Self.envelope))
            _ = try channel.finish()
        }()
        #expect(freed == nil, "the handler outlived its channel")
    }
}
