import NIOCore
import Testing

@testable import SMTPCore

struct ClientSessionTests {
    static let ehloFull = SMTPReply(
        250, nil,
        lines: [
            "mx.remote.test", "PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "STARTTLS", "DSN",
            "ENHANCEDSTATUSCODES",
        ])

    func r(_ code: Int, _ e: String? = nil, _ text: String = "ok") -> SMTPReply {
        SMTPReply(code, e.flatMap { EnhancedStatusCode(parsing: $0) }, text)
    }

    func env(_ rcpts: [String] = ["a@remote.test", "b@remote.test"], size: Int = 100) -> OutboundEnvelope {
        OutboundEnvelope(
            sender: "s@mailflow.test", recipients: rcpts.map { OutboundRecipient(address: $0) }, size: size)
    }

    /// `.send` of these command lines, each with its CRLF: the exact bytes for the wire.
    func sent(_ lines: String...) -> ClientSession.Action {
        .send(ByteBuffer(string: lines.map { $0 + "\r\n" }.joined()))
    }

    /// A session past greeting and EHLO (no TLS) with the given EHLO lines.
    func ready(_ ehlo: [String]) -> ClientSession {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .disabled)
        _ = c.replyReceived(r(220, nil, "mx.remote.test ESMTP"))
        _ = c.replyReceived(SMTPReply(250, nil, lines: ["mx.remote.test"] + ehlo))
        return c
    }

    @Test func startTLSThenPipelinedTransaction() {
        var c = ClientSession(heloName: "mx.mailflow.test", tls: .opportunistic)
        #expect(c.replyReceived(r(220)) == sent("EHLO mx.mailflow.test"))
        #expect(c.replyReceived(Self.ehloFull) == sent("STARTTLS"))
        #expect(c.replyReceived(r(220, "2.0.0", "go")) == .startTLS)
        #expect(c.tlsEstablished() == sent("EHLO mx.mailflow.test"))
        let afterTLS = SMTPReply(250, nil, lines: ["mx.remote.test", "PIPELINING", "SIZE 1000", "DSN"])
        #expect(c.replyReceived(afterTLS) == .none)
        #expect(c.isReady && c.tlsActive)
        var e = env()
        e.ret = .headers
        e.envelopeID = "id+1"
        e.recipients[0].notify = DSNNotify(failure: true, delay: true)
        e.recipients[0].originalRecipient = OriginalRecipient(addressType: "rfc822", address: "a@remote.test")
        #expect(
            c.send(e)
                == sent(
                    "MAIL FROM:<s@mailflow.test> SIZE=100 RET=HDRS ENVID=id+2B1",
                    "RCPT TO:<a@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@remote.test",
                    "RCPT TO:<b@remote.test>", "DATA",
                ))
        #expect(c.replyReceived(r(250, "2.1.0")) == .none)
        #expect(c.replyReceived(r(250, "2.1.5")) == .none)
        #expect(c.replyReceived(r(550, "5.1.1", "no such user")) == .none)
        #expect(c.replyReceived(r(354)) == .sendData)
        guard case .finished(let results) = c.replyReceived(r(250, "2.0.0", "queued")) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.delivered, .failed])
        #expect(results[1].reply.enhancedCode == .init(5, 1, 1))
        #expect(c.isReady)
        #expect(c.quit() == sent("QUIT"))
        #expect(c.replyReceived(r(221)) == .close(results: [], reason: nil))
    }

    @Test func withoutPipeliningOneCommandAtATime() {
        var c = ready([])
        #expect(c.send(env()) == sent("MAIL FROM:<s@mailflow.test>"))
        #expect(c.replyReceived(r(250)) == sent("RCPT TO:<a@remote.test>"))
        #expect(c.replyReceived(r(250)) == sent("RCPT TO:<b@remote.test>"))
        #expect(c.replyReceived(r(450, "4.2.1", "slow down")) == sent("DATA"))
        #expect(c.replyReceived(r(354)) == .sendData)
        guard case .finished(let results) = c.replyReceived(r(250)) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.delivered, .deferred])
    }

    @Test func everyRecipientRefusedMeansNoDataAndRset() {
        var c = ready([])
        _ = c.send(env(["a@remote.test"]))
        _ = c.replyReceived(r(250))
        #expect(c.replyReceived(r(550, "5.1.1")) == sent("RSET"))
        guard case .finished(let results) = c.replyReceived(r(250)) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.failed])
        #expect(c.isReady)
    }

    @Test func pipelinedMailRefusalAppliesToAll() {
        var c = ready(["PIPELINING"])
        _ = c.send(env())
        #expect(c.replyReceived(r(451, "4.7.1", "try later")) == .none)
        #expect(c.replyReceived(r(503, "5.5.1")) == .none)
        #expect(c.replyReceived(r(503, "5.5.1")) == .none)
        #expect(c.replyReceived(r(503, "5.5.1", "no valid recipients")) == sent("RSET"))
        guard case .finished(let results) = c.replyReceived(r(250)) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.deferred, .deferred])
        #expect(results.allSatisfy { $0.reply.code == 451 })
    }

    /// RFC 1870 §6 and RFC 5321 §4.1.1.11: no SIZE= to a server that did not announce SIZE, even one
    /// that pipelines (Dovecot's LMTP refuses it with 555 5.5.4).
    @Test func sizeIsSentOnlyWhereAnnounced() {
        for (keywords, expected) in [
            (["PIPELINING"], "MAIL FROM:<s@mailflow.test>"),
            (["PIPELINING", "SIZE"], "MAIL FROM:<s@mailflow.test> SIZE=100"),
            (["SIZE 1000"], "MAIL FROM:<s@mailflow.test> SIZE=100"),
            (["SIZE 0"], "MAIL FROM:<s@mailflow.test> SIZE=100"),
        ] {
            var c = ready(keywords)
            guard case .send(let bytes) = c.send(env(["a@remote.test"])) else {
                Issue.record("expected a send for \(keywords)")
                continue
            }
            #expect(String(buffer: bytes).hasPrefix(expected + "\r\n"), "\(keywords)")
        }
    }

    @Test func chunkingSendsBDATAfterRecipients() {
        var c = ready(["PIPELINING", "CHUNKING", "SIZE"])
        #expect(
            c.send(env(["a@remote.test"]))
                == sent("MAIL FROM:<s@mailflow.test> SIZE=100", "RCPT TO:<a@remote.test>"))
        _ = c.replyReceived(r(250))
        #expect(c.replyReceived(r(250)) == .sendChunk(ByteBuffer(string: "BDAT 100 LAST\r\n")))
        guard case .finished(let results) = c.replyReceived(r(250, "2.0.0")) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.delivered])
    }

    @Test func fourTwoOneDefersEverythingPendingAndCloses() {
        var c = ready(["PIPELINING"])
        _ = c.send(env())
        _ = c.replyReceived(r(250))
        let busy = SMTPReply(
            421, .init(4, 3, 2),
            "The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel"
        )
        guard case .close(let results, let reason) = c.replyReceived(busy) else {
            Issue.record("expected close")
            return
        }
        #expect(reason == busy)
        #expect(results.map(\.disposition) == [.deferred, .deferred])
        #expect(results.allSatisfy { $0.reply == busy })
        #expect(c.isClosed)
    }

    @Test func droppedConnectionMidBodyIsSuspicious() {
        var c = ready(["PIPELINING"])
        _ = c.send(env(["a@remote.test"]))
        _ = c.replyReceived(r(250))
        _ = c.replyReceived(r(250))
        #expect(c.replyReceived(r(354)) == .sendData)
        guard case .close(let results, _) = c.connectionClosed() else {
            Issue.record("expected close")
            return
        }
        #expect(results == [RecipientResult(index: 0, disposition: .deferred, reply: ClientSession.abruptClose)])
        #expect(ClientSession.abruptClose.description.contains("SuspiciousRemoteServerError"))
    }

    @Test func localRefusalsBeforeAnyCommand() {
        var plain = ready(["SIZE 50"])
        var utf8 = env(["ü@remote.test"])
        utf8.smtpUTF8 = true
        guard case .finished(let r1) = plain.send(utf8) else {
            Issue.record("expected local failure")
            return
        }
        #expect(r1.first?.reply.enhancedCode == .init(5, 6, 7))
        guard case .finished(let r2) = plain.send(env(size: 51)) else {
            Issue.record("expected size failure")
            return
        }
        #expect(r2.first?.reply.code == 552)
        var eight = env()
        eight.eightBit = true
        guard case .finished(let r3) = plain.send(eight) else {
            Issue.record("expected 8bit failure")
            return
        }
        #expect(r3.allSatisfy { $0.disposition == .failed })
        #expect(plain.isReady)
    }

    @Test func requiredTLSNotOfferedDefers() {
        var c = ClientSession(heloName: "h", tls: .required)
        _ = c.replyReceived(r(220))
        guard case .close(_, let reason) = c.replyReceived(SMTPReply(250, nil, lines: ["mx", "PIPELINING"])) else {
            Issue.record("expected close")
            return
        }
        #expect(reason?.code == 451)
        #expect(reason?.enhancedCode == .init(4, 7, 10))
    }

    @Test func ehloRefusedFallsBackToHelo() {
        var c = ClientSession(heloName: "h", tls: .opportunistic)
        _ = c.replyReceived(r(220))
        #expect(c.replyReceived(r(502, "5.5.1")) == sent("HELO h"))
        #expect(c.replyReceived(r(250)) == .none)
        #expect(c.isReady)
        #expect(c.capabilities == ServerCapabilities())
    }

    /// A recipient whose address would smuggle a second command is settled by the encoder's refusal
    /// and never written; the others go out as usual.
    @Test func smugglingRecipientIsRefusedNotSent() {
        for pipelining in [true, false] {
            var c = ready(pipelining ? ["PIPELINING", "SIZE"] : [])
            let e = env(["a@remote.test", "b@remote.test>\r\nRCPT TO:<victim@evil.test", "c@remote.test"])
            if pipelining {
                #expect(
                    c.send(e)
                        == sent(
                            "MAIL FROM:<s@mailflow.test> SIZE=100", "RCPT TO:<a@remote.test>",
                            "RCPT TO:<c@remote.test>",
                            "DATA"))
                #expect(c.replyReceived(r(250)) == .none)
                #expect(c.replyReceived(r(250)) == .none)
                #expect(c.replyReceived(r(250)) == .none)
            } else {
                #expect(c.send(e) == sent("MAIL FROM:<s@mailflow.test>"))
                #expect(c.replyReceived(r(250)) == sent("RCPT TO:<a@remote.test>"))
                #expect(c.replyReceived(r(250)) == sent("RCPT TO:<c@remote.test>"))
                #expect(c.replyReceived(r(250)) == sent("DATA"))
            }
            #expect(c.replyReceived(r(354)) == .sendData)
            guard case .finished(let results) = c.replyReceived(r(250)) else {
                Issue.record("expected results")
                return
            }
            #expect(results.map(\.disposition) == [.delivered, .failed, .delivered])
            #expect(results[1].reply == SMTPCommandEncodingError(.recipient, .lineBreakOrNUL).reply)
        }
    }

    @Test func unsendableSenderFailsEveryRecipientAndSendsNothing() {
        var c = ready(["PIPELINING", "DSN"])
        var e = env()
        e.sender = "s@mailflow.test\r\nRSET"
        let refused = SMTPCommandEncodingError(.sender, .lineBreakOrNUL).reply
        #expect(c.send(e) == .finished([.from(refused, index: 0), .from(refused, index: 1)]))
        e.sender = "s@mailflow.test"
        e.envelopeID = "id\r\nQUIT"
        guard case .finished(let results) = c.send(e) else {
            Issue.record("expected local failure")
            return
        }
        #expect(
            results.map(\.reply)
                == Array(repeating: SMTPCommandEncodingError(.envelopeID, .lineBreakOrNUL).reply, count: 2))
        #expect(c.isReady)
    }

    @Test func everyRecipientUnsendableMeansNoMail() {
        var c = ready(["PIPELINING"])
        guard case .finished(let results) = c.send(env(["a@remote.test\0", "no-domain"])) else {
            Issue.record("expected local failure")
            return
        }
        #expect(results.map(\.disposition) == [.failed, .failed])
        #expect(results[1].reply == SMTPCommandEncodingError(.recipient, .invalid("empty domain")).reply)
        #expect(c.isReady)
    }

    @Test func refusedRecipientKeepsItsResultWhenMailIsRefused() {
        var c = ready([])
        #expect(c.send(env(["a@remote.test", "b\n@remote.test"])) == sent("MAIL FROM:<s@mailflow.test>"))
        #expect(c.replyReceived(r(451, "4.3.0", "later")) == sent("RSET"))
        guard case .finished(let results) = c.replyReceived(r(250)) else {
            Issue.record("expected results")
            return
        }
        #expect(results.map(\.disposition) == [.deferred, .failed])
    }

    @Test func bareSenderlessAndPostmasterPathsAndEmptyData() {
        var c = ready(["PIPELINING", "DSN", "SIZE"])
        var e = OutboundEnvelope(
            sender: "", recipients: [OutboundRecipient(address: "Postmaster", notify: DSNNotify(never: true))], size: 7)
        e.recipients[0].originalRecipient = OriginalRecipient(addressType: "utf-8", address: "pöstmaster@remote.test")
        #expect(
            c.send(e)
                == sent(
                    "MAIL FROM:<> SIZE=7", "RCPT TO:<Postmaster> NOTIFY=NEVER ORCPT=utf-8;p+C3+B6stmaster@remote.test",
                    "DATA"))
        _ = c.replyReceived(r(250))
        _ = c.replyReceived(r(550, "5.1.1"))
        // Pipelined DATA after every RCPT failed: the empty message ends at once.
        #expect(c.replyReceived(r(354)) == .send(ByteBuffer(string: ".\r\n")))
    }

    @Test func unsendableHeloNameClosesWithoutWritingIt() {
        var c = ClientSession(heloName: "mx.test\r\nMAIL FROM:<x@y.test>", tls: .opportunistic)
        guard case .close(let results, let reason) = c.replyReceived(r(220)) else {
            Issue.record("expected close")
            return
        }
        #expect(results.isEmpty)
        #expect(reason?.code == 451)
        #expect(reason?.enhancedCode == .init(4, 3, 5))
        #expect(c.isClosed)
    }

    @Test func greetingRefusalCloses() {
        var c = ClientSession(heloName: "h", tls: .opportunistic)
        guard case .close(_, let reason) = c.replyReceived(r(554, "5.7.1", "go away")) else {
            Issue.record("expected close")
            return
        }
        #expect(reason?.code == 554)
    }
}

struct ReplyParserTests {
    func parseAll(_ text: String) throws -> [SMTPReply] {
        var p = SMTPReplyParser()
        var b = ByteBuffer(string: text)
        var out: [SMTPReply] = []
        while let r = try p.parse(&b) { out.append(r) }
        return out
    }

    @Test func multilineWithEnhancedCodes() throws {
        let replies = try parseAll("250-mx.test Hello\r\n250-SIZE 100\r\n250 DSN\r\n550 5.1.1 No such user\r\n354\r\n")
        #expect(replies.count == 3)
        #expect(replies[0].lines == ["mx.test Hello", "SIZE 100", "DSN"])
        #expect(replies[0].enhancedCode == nil)
        #expect(replies[1] == SMTPReply(550, .init(5, 1, 1), "No such user"))
        #expect(replies[2].code == 354)
    }

    @Test func partialInputWaits() throws {
        var p = SMTPReplyParser()
        var b = ByteBuffer(string: "250-a\r\n250 b")
        #expect(try p.parse(&b) == nil)
        b.writeString("\r\n")
        #expect(try p.parse(&b)?.lines == ["a", "b"])
    }

    @Test(arguments: ["xyz ok\r\n", "25 ok\r\n", "250-a\r\n251 b\r\n", "999 what\r\n", "250_ok\r\n"])
    func malformedRepliesAreErrors(_ text: String) {
        #expect(throws: SMTPReplyParser.ProtocolError.self) { _ = try parseAll(text) }
    }

    @Test func endlessLineIsAnError() {
        var p = SMTPReplyParser()
        var b = ByteBuffer(string: "250 " + String(repeating: "x", count: 5000))
        #expect(throws: SMTPReplyParser.ProtocolError.self) { _ = try p.parse(&b) }
    }

    @Test func mismatchedEnhancedClassIsText() throws {
        let r = try parseAll("450 5.1.1 odd\r\n")
        #expect(r[0].enhancedCode == nil)
        #expect(r[0].lines == ["5.1.1 odd"])
    }
}

struct DotStufferTests {
    @Test func stuffsLeadingDotsAcrossChunks() {
        var s = DotStuffer()
        let a = s.stuff(ByteBuffer(string: ".a\r\nb.\r"))
        let b = s.stuff(ByteBuffer(string: "\n..c\r\n"))
        #expect(String(buffer: a) + String(buffer: b) == "..a\r\nb.\r\n...c\r\n")
        #expect(s.terminator == ".\r\n")
        _ = s.stuff(ByteBuffer(string: "no newline"))
        #expect(s.terminator == "\r\n.\r\n")
    }

    @Test func roundTripsThroughTheServerDecoder() {
        let body = ".\r\n..\r\nx\r\n.y\r\n"
        var s = DotStuffer()
        var wire = s.stuff(ByteBuffer(string: body))
        wire.writeString(s.terminator)
        var d = DataBodyDecoder(maxSize: 1000)
        var out = ByteBuffer()
        #expect(d.decode(&wire, into: &out) == .finished)
        #expect(String(buffer: out) == body)
    }
}
