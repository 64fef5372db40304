import NIOCore
import Testing

@testable import SMTPCore

/// `ClientSession.awaiting`: what the remote owes at each step, so the connection can give it the
/// RFC 5321 §4.5.3.2 deadline of that step.
struct ClientSessionAwaitingTests {
    func r(_ code: Int, _ text: String = "ok") -> SMTPReply { SMTPReply(code, nil, text) }

    static let envelope = OutboundEnvelope(
        sender: "s@mailflow.test",
        recipients: [OutboundRecipient(address: "a@remote.test"), OutboundRecipient(address: "b@remote.test")],
        size: 10)

    @Test func eachStepWithoutPipeliningAwaitsItsOwnReply() {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .opportunistic)
        #expect(c.awaiting == .greeting)
        _ = c.replyReceived(r(220))
        #expect(c.awaiting == .hello)
        _ = c.replyReceived(SMTPReply(250, nil, lines: ["mx.remote.test", "STARTTLS"]))
        #expect(c.awaiting == .startTLS)
        #expect(c.replyReceived(r(220)) == .startTLS)
        #expect(c.awaiting == .tlsHandshake)
        _ = c.tlsEstablished()
        #expect(c.awaiting == .hello)
        _ = c.replyReceived(SMTPReply(250, nil, lines: ["mx.remote.test"]))
        #expect(c.awaiting == nil, "a ready session owes nothing")
        _ = c.send(Self.envelope)
        #expect(c.awaiting == .mail)
        _ = c.replyReceived(r(250))
        #expect(c.awaiting == .recipient)
        _ = c.replyReceived(r(250))
        #expect(c.awaiting == .recipient)
        _ = c.replyReceived(r(250))
        #expect(c.awaiting == .dataInitiation)
        #expect(c.replyReceived(r(354)) == .sendData)
        #expect(c.awaiting == .dataTermination)
        _ = c.replyReceived(r(250))
        #expect(c.awaiting == nil)
        _ = c.quit()
        #expect(c.awaiting == .quit)
        _ = c.replyReceived(r(221))
        #expect(c.awaiting == nil)
    }

    @Test func pipelinedEnvelopeAwaitsTheFirstOutstandingReply() {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled)
        _ = c.replyReceived(r(220))
        _ = c.replyReceived(SMTPReply(250, nil, lines: ["mx.remote.test", "PIPELINING", "CHUNKING"]))
        _ = c.send(Self.envelope)
        #expect(c.awaiting == .mail)
        _ = c.replyReceived(r(250))
        _ = c.replyReceived(r(250))
        #expect(c.awaiting == .recipient)
        guard case .sendChunk = c.replyReceived(r(250)) else {
            Issue.record("expected BDAT after the last RCPT")
            return
        }
        #expect(c.awaiting == .dataTermination, "the reply to BDAT LAST ends the transaction")
    }

    @Test func refusedRecipientsLeadToRsetWhichIsAwaited() {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled)
        _ = c.replyReceived(r(220))
        _ = c.replyReceived(SMTPReply(250, nil, lines: ["mx.remote.test"]))
        _ = c.send(OutboundEnvelope(sender: "", recipients: [OutboundRecipient(address: "a@remote.test")], size: 1))
        _ = c.replyReceived(r(250))
        _ = c.replyReceived(r(550))
        #expect(c.awaiting == .reset)
    }

    @Test func aClosedSessionAwaitsNothing() {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled)
        _ = c.replyReceived(r(421, "busy"))
        #expect(c.isClosed && c.awaiting == nil)
    }
}

/// `SMTPReplyParser`'s bounds against a hostile remote: lines, octets per line, octets per reply.
struct SMTPReplyParserBoundsTests {
    func parseAll(_ text: String) -> (replies: [SMTPReply], error: String?) {
        var p = SMTPReplyParser()
        var b = ByteBuffer(string: text)
        var out: [SMTPReply] = []
        do {
            while let r = try p.parse(&b) { out.append(r) }
            return (out, nil)
        } catch {
            return (out, error.description)
        }
    }

    @Test func aHundredLinesParseAndOneMoreIsRefused() {
        let hundred = String(repeating: "250-x\r\n", count: 99) + "250 end\r\n"
        #expect(parseAll(hundred).replies.first?.lines.count == 100)
        let more = String(repeating: "250-x\r\n", count: 100) + "250 end\r\n"
        #expect(parseAll(more).error == "reply has too many lines (over 100)")
    }

    @Test func aHundredThousandLineReplyStopsAtLine101() {
        // Fed as a remote would send it, in 64 KiB reads: the parser gives up at once and holds at
        // most what one read brought.
        let line = "250-X-FILLER a capability line of a remote that does not stop\r\n"
        var p = SMTPReplyParser()
        var b = ByteBuffer()
        var failed: String?
        var fed = 0
        let block = String(repeating: line, count: 1000)
        feeding: for _ in 0..<100 {
            b.writeString(block)
            fed += block.utf8.count
            do {
                while try p.parse(&b) != nil {}
            } catch {
                failed = error.description
                break feeding
            }
        }
        #expect(failed == "reply has too many lines (over 100)")
        #expect(fed == block.utf8.count, "refused within the first 1,000 lines")
    }

    @Test func longLinesBeyondSixtyFourKiBInAllAreRefused() {
        let line = "250-" + String(repeating: "y", count: 1000) + "\r\n"
        let text = String(repeating: line, count: 70) + "250 end\r\n"
        #expect(parseAll(text).error == "reply too long (over 65536 octets)")
        let fits = String(repeating: line, count: 60) + "250 end\r\n"
        #expect(parseAll(fits).replies.first?.lines.count == 61)
    }

    @Test func theByteCountStartsAgainForEachReply() {
        let line = "250-" + String(repeating: "y", count: 1000) + "\r\n"
        let one = String(repeating: line, count: 60) + "250 end\r\n"
        let (replies, error) = parseAll(one + one + one)
        #expect(error == nil)
        #expect(replies.count == 3)
    }

    @Test func pendingOctetsCountTheLinesOfAnUnfinishedReply() throws {
        var p = SMTPReplyParser()
        var b = ByteBuffer(string: "250-a\r\n250-b\r\n25")
        #expect(try p.parse(&b) == nil)
        #expect(p.pendingOctets == 14)
        #expect(b.readableBytes == 2)
    }
}
