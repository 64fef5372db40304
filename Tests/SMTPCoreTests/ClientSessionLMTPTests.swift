import NIOCore
import Testing

@testable import SMTPCore

/// `ClientSession` in LMTP mode (RFC 2033): LHLO, no HELO fallback, one reply per accepted recipient
/// after the final dot.
struct ClientSessionLMTPTests {
    func r(_ code: Int, _ e: String? = nil, _ text: String = "ok") -> SMTPReply {
        SMTPReply(code, e.flatMap { EnhancedStatusCode(parsing: $0) }, text)
    }

    func env(_ rcpts: [String]) -> OutboundEnvelope {
        OutboundEnvelope(sender: "s@mailflow.test", recipients: rcpts.map { OutboundRecipient(address: $0) }, size: 10)
    }

    func sent(_ lines: String...) -> ClientSession.Action {
        .send(ByteBuffer(string: lines.map { $0 + "\r\n" }.joined()))
    }

    /// An LMTP session past the greeting and LHLO with these capability lines.
    func ready(_ lhlo: [String]) -> ClientSession {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled, protocol: .lmtp)
        #expect(c.replyReceived(r(220, nil, "mailbox.test LMTP")) == sent("LHLO mx.mailflow.test"))
        #expect(c.replyReceived(SMTPReply(250, nil, lines: ["mailbox.test"] + lhlo)) == .none)
        #expect(c.isReady)
        return c
    }

    @Test func greetingIsAnsweredWithLHLO() {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled, protocol: .lmtp)
        #expect(c.replyReceived(r(220)) == sent("LHLO mx.mailflow.test"))
        #expect(c.awaiting == .hello)
    }

    @Test func refusedLHLODoesNotFallBackToHELO() {
        // RFC 2033 §4.1: LMTP has no HELO; a refused LHLO ends the session.
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled, protocol: .lmtp)
        _ = c.replyReceived(r(220))
        guard case .close(let results, let reason) = c.replyReceived(r(500, "5.5.1", "unknown command")) else {
            Issue.record("expected close")
            return
        }
        #expect(results.isEmpty)
        #expect(reason?.code == 500)
        #expect(c.isClosed)
    }

    /// After the dot, each accepted recipient gets its own reply, in RCPT order; recipients RCPT
    /// refused keep that refusal and take no reply after the dot.
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var rcptReplies: [Int]
        var dotReplies: [Int]
        var expected: [RecipientResult.Disposition]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "all accepted, all delivered", rcptReplies: [250, 250, 250], dotReplies: [250, 250, 250],
            expected: [.delivered, .delivered, .delivered]),
        Case(
            name: "one unknown at RCPT", rcptReplies: [250, 550, 250], dotReplies: [250, 250],
            expected: [.delivered, .failed, .delivered]),
        Case(
            name: "mixed after the dot", rcptReplies: [250, 250, 250], dotReplies: [250, 452, 552],
            expected: [.delivered, .deferred, .failed]),
        Case(
            name: "deferred at RCPT, over quota after the dot", rcptReplies: [450, 250, 250], dotReplies: [552, 250],
            expected: [.deferred, .failed, .delivered]),
    ]

    @Test(arguments: cases) func perRecipientReplies(_ t: Case) {
        for pipelining in [true, false] {
            var c = ready(pipelining ? ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"] : ["ENHANCEDSTATUSCODES"])
            let rcpts = t.rcptReplies.indices.map { "u\($0)@mailbox.test" }
            let first = c.send(env(rcpts))
            if pipelining {
                #expect(
                    first
                        == .send(
                            ByteBuffer(
                                string: (["MAIL FROM:<s@mailflow.test>"] + rcpts.map { "RCPT TO:<\($0)>" }
                                    + ["DATA"]).map { $0 + "\r\n" }.joined())))
                #expect(c.replyReceived(r(250)) == .none)
                for code in t.rcptReplies { #expect(c.replyReceived(r(code)) == .none) }
            } else {
                #expect(first == sent("MAIL FROM:<s@mailflow.test>"))
                #expect(c.replyReceived(r(250)) == sent("RCPT TO:<\(rcpts[0])>"))
                for (n, code) in t.rcptReplies.enumerated() {
                    let next = n + 1 < rcpts.count ? sent("RCPT TO:<\(rcpts[n + 1])>") : sent("DATA")
                    #expect(c.replyReceived(r(code)) == next)
                }
            }
            #expect(c.replyReceived(r(354)) == .sendData)
            #expect(c.awaiting == .dataTermination)
            var last: ClientSession.Action = .none
            for (n, code) in t.dotReplies.enumerated() {
                last = c.replyReceived(r(code, nil, "reply \(n)"))
                if n + 1 < t.dotReplies.count {
                    #expect(last == .none)
                    #expect(c.awaiting == .dataTermination)
                }
            }
            guard case .finished(let results) = last else {
                Issue.record("\(t.name): expected results, got \(last)")
                continue
            }
            #expect(results.map(\.index) == Array(rcpts.indices))
            #expect(results.map(\.disposition) == t.expected)
            #expect(c.isReady)
        }
    }

    @Test func dropAfterSomeRepliesKeepsThoseAndDefersTheRest() {
        var c = ready(["PIPELINING"])
        _ = c.send(env(["a@mailbox.test", "b@mailbox.test", "c@mailbox.test"]))
        for _ in 0..<4 { _ = c.replyReceived(r(250)) }
        #expect(c.replyReceived(r(354)) == .sendData)
        #expect(c.replyReceived(r(250, "2.0.0", "a saved")) == .none)
        guard case .close(let results, _) = c.connectionClosed() else {
            Issue.record("expected close")
            return
        }
        // The one the server confirmed stays delivered: retrying it would deliver it twice.
        #expect(results.map(\.disposition) == [.delivered, .deferred, .deferred])
        #expect(results[0].reply.lines == ["a saved"])
    }

    @Test func chunkingGetsOneReplyPerRecipientAfterBDATLast() {
        var c = ready(["PIPELINING", "CHUNKING"])
        #expect(
            c.send(env(["a@mailbox.test", "b@mailbox.test"]))
                == sent("MAIL FROM:<s@mailflow.test>", "RCPT TO:<a@mailbox.test>", "RCPT TO:<b@mailbox.test>"))
        #expect(c.replyReceived(r(250)) == .none)
        #expect(c.replyReceived(r(250)) == .none)
        #expect(c.replyReceived(r(250)) == .sendChunk(ByteBuffer(string: "BDAT 10 LAST\r\n")))
        #expect(c.replyReceived(r(550, "5.2.1", "mailbox disabled")) == .none)
        guard case .finished(let results) = c.replyReceived(r(250)) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.failed, .delivered])
    }

    /// RFC 1870: SIZE only to a server that announced it (Dovecot's LMTP refuses it otherwise).
    @Test func sizeOnlyWhenAnnounced() {
        var c = ready(["PIPELINING", "SIZE 50"])
        #expect(
            c.send(env(["a@mailbox.test"]))
                == sent("MAIL FROM:<s@mailflow.test> SIZE=10", "RCPT TO:<a@mailbox.test>", "DATA"))
    }

    @Test func smtpModeStillTakesOneReplyForAll() {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled)
        #expect(c.replyReceived(r(220)) == sent("EHLO mx.mailflow.test"))
        _ = c.replyReceived(SMTPReply(250, nil, lines: ["remote.test", "PIPELINING"]))
        _ = c.send(env(["a@remote.test", "b@remote.test"]))
        for _ in 0..<3 { _ = c.replyReceived(r(250)) }
        #expect(c.replyReceived(r(354)) == .sendData)
        guard case .finished(let results) = c.replyReceived(r(250)) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.delivered, .delivered])
    }
}
