import Testing

@testable import SMTPCore

struct ServerSessionTests {
    static let config = ServerSessionConfiguration(
        hostname: "mx.test", maxMessageSize: 1000, maxRecipients: 2, maxErrors: 5)

    func session(tls: Bool = true) -> ServerSession {
        var c = Self.config
        c.tlsAvailable = tls
        var s = ServerSession(configuration: c)
        _ = s.greeting()
        return s
    }

    func code(_ a: ServerSession.Action) -> String {
        switch a {
        case .send(let r, _), .sendAndClose(let r, _), .startTLS(let r), .receiveData(let r):
            return [String(r.code), r.enhancedCode?.description].compactMap { $0 }.joined(separator: " ")
        case .checkRecipient, .checkSender: return "check"
        case .receiveChunk(let size, let last, let store): return "chunk \(size) \(last) \(store)"
        case .commit: return "commit"
        case .authenticate(let mechanism, let initial): return "auth \(mechanism) \(initial ?? "-")"
        case .continueAuthentication(let line): return "auth-continue \(line)"
        case .none: return "none"
        }
    }

    func run(_ s: inout ServerSession, _ line: String) -> String {
        do {
            let cmd = try SMTPCommandParser.parse(line[...])
            var a = s.commandReceived(cmd)
            if case .checkSender(let sender, let params) = a {
                a = s.senderChecked(sender, params, .accept)
            }
            if case .checkRecipient(let p, let params) = a {
                // A stand-in policy: contoso.test mailboxes exist, anything else is not ours.
                let decision: ServerSession.RecipientDecision
                if case .mailbox(let m) = p, m.domain.lowercased() == "contoso.test" {
                    decision = .accept(route: .local(domain: "contoso.test", mailbox: m.localPart))
                } else {
                    decision = .reject(SMTPReply(550, .init(5, 7, 1), "Relaying denied"))
                }
                a = s.recipientChecked(p, params, decision)
            }
            return code(a)
        } catch {
            return code(s.commandRejected(error))
        }
    }

    struct Script: Sendable, CustomTestStringConvertible {
        var name: String
        var steps: [(String, String)]
        var testDescription: String { name }
    }

    static let scripts: [Script] = [
        Script(
            name: "happy path",
            steps: [
                ("EHLO c.test", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"),
                ("RCPT TO:<x@contoso.test>", "250 2.1.5"), ("DATA", "354"),
            ]),
        Script(
            name: "HELO path",
            steps: [
                ("HELO c.test", "250"), ("MAIL FROM:<>", "250 2.1.0"), ("RCPT TO:<x@contoso.test>", "250 2.1.5"),
                ("DATA", "354"),
            ]),
        Script(name: "MAIL before hello", steps: [("MAIL FROM:<a@b.test>", "503 5.5.1")]),
        Script(name: "RCPT before MAIL", steps: [("EHLO c", "250"), ("RCPT TO:<x@contoso.test>", "503 5.5.1")]),
        Script(name: "DATA before MAIL", steps: [("EHLO c", "250"), ("DATA", "503 5.5.1")]),
        Script(
            name: "DATA before RCPT",
            steps: [("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("DATA", "503 5.5.1")]),
        Script(
            name: "nested MAIL",
            steps: [("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("MAIL FROM:<a@b.test>", "503 5.5.1")]),
        Script(
            name: "RSET clears",
            steps: [
                ("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("RSET", "250 2.0.0"),
                ("RCPT TO:<x@contoso.test>", "503 5.5.1"),
            ]),
        Script(
            name: "EHLO resets transaction",
            steps: [
                ("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("EHLO c", "250"),
                ("RCPT TO:<x@contoso.test>", "503 5.5.1"),
            ]),
        Script(
            name: "relay denied",
            steps: [("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("RCPT TO:<x@other.test>", "550 5.7.1")]),
        Script(
            name: "too many recipients",
            steps: [
                ("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("RCPT TO:<x@contoso.test>", "250 2.1.5"),
                ("RCPT TO:<y@contoso.test>", "250 2.1.5"), ("RCPT TO:<z@contoso.test>", "452 4.5.3"),
            ]),
        Script(
            name: "declared size over the limit",
            steps: [
                ("EHLO c", "250"), ("MAIL FROM:<a@b.test> SIZE=1001", "552 5.3.4"),
                ("MAIL FROM:<a@b.test> SIZE=1000", "250 2.1.0"),
            ]),
        Script(
            name: "UTF-8 recipient needs SMTPUTF8",
            steps: [
                ("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("RCPT TO:<ü@contoso.test>", "553 5.6.7"),
            ]),
        Script(
            name: "UTF-8 recipient with SMTPUTF8",
            steps: [
                ("EHLO c", "250"), ("MAIL FROM:<a@b.test> SMTPUTF8", "250 2.1.0"),
                ("RCPT TO:<ü@contoso.test>", "250 2.1.5"),
            ]),
        Script(
            name: "ESMTP parameters after HELO",
            steps: [("HELO c", "250"), ("MAIL FROM:<a@b.test> BODY=8BITMIME", "555 5.5.4")]),
        Script(
            name: "misc commands",
            steps: [
                ("NOOP", "250 2.0.0"), ("VRFY alice", "252 2.5.0"), ("HELP", "214 2.0.0"), ("EXPN x", "502 5.5.1"),
                ("QUIT", "221 2.0.0"),
            ]),
        Script(
            name: "STARTTLS needs EHLO",
            steps: [("STARTTLS", "503 5.5.1"), ("EHLO c", "250"), ("STARTTLS", "220 2.0.0")]),
        Script(
            name: "STARTTLS not inside a transaction",
            steps: [("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("STARTTLS", "503 5.5.1")]),
        Script(
            name: "BDAT without a transaction consumes and refuses",
            steps: [("EHLO c", "250"), ("BDAT 5 LAST", "chunk 5 true false")]),
        Script(
            name: "BDAT in a transaction",
            steps: [
                ("EHLO c", "250"), ("MAIL FROM:<a@b.test>", "250 2.1.0"), ("RCPT TO:<x@contoso.test>", "250 2.1.5"),
                ("BDAT 5", "chunk 5 false true"),
            ]),
        Script(
            name: "too many errors closes",
            steps: [
                ("FOO", "502 5.5.1"), ("FOO", "502 5.5.1"), ("FOO", "502 5.5.1"), ("FOO", "502 5.5.1"),
                ("FOO", "502 5.5.1"), ("FOO", "421 4.7.0"), ("NOOP", "none"),
            ]),
    ]

    @Test(arguments: scripts)
    func scriptedSessions(_ script: Script) {
        var s = session()
        for (line, expected) in script.steps {
            #expect(run(&s, line) == expected, "after \(line)")
        }
    }

    @Test func ehloAdvertisesExtensionsAndDropsSTARTTLSAfterTLS() {
        var s = session()
        guard case .send(let r, _) = s.commandReceived(.ehlo("c")) else {
            Issue.record("no reply")
            return
        }
        for ext in [
            "PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN", "STARTTLS",
        ] {
            #expect(r.lines.contains(ext), "missing \(ext)")
        }
        #expect(code(s.commandReceived(.startTLS)) == "220 2.0.0")
        let afterTLS = s.tlsEstablished()
        #expect(afterTLS == .none)
        #expect(s.tlsActive)
        // RFC 3207 §4.2: the client must EHLO again.
        #expect(run(&s, "MAIL FROM:<a@b.test>") == "503 5.5.1")
        guard case .send(let r2, _) = s.commandReceived(.ehlo("c")) else {
            Issue.record("no reply")
            return
        }
        #expect(!r2.lines.contains("STARTTLS"))
        #expect(run(&s, "STARTTLS") == "503 5.5.1")
        #expect(s.receivedProtocol == "ESMTPS")
    }

    @Test func noSTARTTLSWithoutCertificate() {
        var s = session(tls: false)
        guard case .send(let r, _) = s.commandReceived(.ehlo("c")) else {
            Issue.record("no reply")
            return
        }
        #expect(!r.lines.contains("STARTTLS"))
        #expect(code(s.commandReceived(.startTLS)) == "502 5.5.1")
    }

    func transaction(_ s: inout ServerSession) {
        _ = run(&s, "EHLO c")
        _ = run(&s, "MAIL FROM:<a@b.test>")
        _ = run(&s, "RCPT TO:<x@contoso.test>")
    }

    @Test func dataCommitsThenRepliesWithQueueID() {
        var s = session()
        transaction(&s)
        #expect(code(s.commandReceived(.data)) == "354")
        guard case .commit(let tx) = s.dataReceived(violation: nil) else {
            Issue.record("expected commit")
            return
        }
        #expect(tx.recipients.map(\.route) == [.local(domain: "contoso.test", mailbox: "x")])
        let committed = s.messageCommitted(queueID: "ABC")
        #expect(committed == .send(SMTPReply(250, .init(2, 0, 0), "Ok: queued as ABC")))
        #expect(s.transaction == nil)
        #expect(run(&s, "MAIL FROM:<a@b.test>") == "250 2.1.0")
    }

    @Test(arguments: [
        (BodyViolation.bareLineEnding, "550 5.6.11"), (.lineTooLong, "550 5.6.0"), (.tooLarge, "552 5.3.4"),
    ])
    func refusedBodiesResetTheTransaction(_ v: BodyViolation, _ expected: String) {
        var s = session()
        transaction(&s)
        _ = s.commandReceived(.data)
        #expect(code(s.dataReceived(violation: v)) == expected)
        #expect(s.transaction == nil)
    }

    @Test func commitFailureIsTransient() {
        var s = session()
        transaction(&s)
        _ = s.commandReceived(.data)
        _ = s.dataReceived(violation: nil)
        #expect(code(s.commitFailed()) == "451 4.3.0")
    }

    @Test func bdatChunksThenLastCommits() {
        var s = session()
        transaction(&s)
        #expect(code(s.commandReceived(.bdat(size: 3, last: false))) == "chunk 3 false true")
        #expect(code(s.chunkReceived(violation: nil)) == "250 2.0.0")
        // DATA is not allowed once chunking has begun (RFC 3030 §2).
        #expect(run(&s, "DATA") == "503 5.5.1")
        #expect(code(s.commandReceived(.bdat(size: 0, last: true))) == "chunk 0 true true")
        guard case .commit = s.chunkReceived(violation: nil) else {
            Issue.record("expected commit")
            return
        }
        #expect(code(s.messageCommitted(queueID: "X")) == "250 2.0.0")
    }

    @Test func bdatViolationRefusesAndLaterChunksAreDiscarded() {
        var s = session()
        transaction(&s)
        _ = s.commandReceived(.bdat(size: 3, last: false))
        #expect(code(s.chunkReceived(violation: .bareLineEnding)) == "550 5.6.11")
        #expect(code(s.commandReceived(.bdat(size: 3, last: true))) == "chunk 3 true false")
        #expect(code(s.chunkReceived(violation: nil)) == "503 5.5.1")
    }

    @Test func timeoutAndShutdown() {
        var s = session()
        #expect(code(s.timeoutFired()) == "421 4.4.2")
        #expect(s.isClosed)

        var idle = session()
        _ = run(&idle, "EHLO c")
        #expect(code(idle.shutdownRequested()) == "421 4.3.2")

        var busy = session()
        transaction(&busy)
        let shutdown = busy.shutdownRequested()
        #expect(shutdown == .none)
        // The transaction in flight may finish...
        #expect(code(busy.commandReceived(.data)) == "354")
        _ = busy.dataReceived(violation: nil)
        #expect(code(busy.messageCommitted(queueID: "Q")) == "250 2.0.0")
        // ...but nothing new starts.
        #expect(run(&busy, "MAIL FROM:<a@b.test>") == "421 4.3.2")
    }

    @Test func recipientsPerDomainPerTransaction() {
        var c = Self.config
        c.maxRecipients = 10
        c.maxRecipientsPerDomain = 2
        var s = ServerSession(configuration: c)
        _ = s.greeting()
        #expect(run(&s, "EHLO c") == "250")
        #expect(run(&s, "MAIL FROM:<a@b.test>") == "250 2.1.0")
        #expect(run(&s, "RCPT TO:<x@contoso.test>") == "250 2.1.5")
        #expect(run(&s, "RCPT TO:<y@CONTOSO.test>") == "250 2.1.5")
        #expect(run(&s, "RCPT TO:<z@contoso.test>") == "452 4.5.3")
        // Another domain still has room (refused here only by the stand-in policy).
        #expect(run(&s, "RCPT TO:<z@other.test>") == "550 5.7.1")
    }

    @Test func senderRefusedByAdmission() {
        var s = session()
        _ = run(&s, "EHLO c")
        let a = s.commandReceived(.mail(.null, MailParameters()))
        #expect(a == .checkSender(.null, MailParameters()))
        let busy = SMTPReply(451, .init(4, 7, 1), "busy")
        let refused = s.senderChecked(.null, MailParameters(), .reject(busy))
        #expect(refused == .send(busy))
        #expect(s.transaction == nil)
        #expect(run(&s, "RCPT TO:<x@contoso.test>") == "503 5.5.1")
    }

    @Test func rejectAndCloseEndsTheSession() {
        var s = session()
        transaction(&s)
        let a = s.commandReceived(.rcpt(.postmaster, RecipientParameters()))
        #expect(a == .checkRecipient(.postmaster, RecipientParameters()))
        let full = SMTPReply(421, .init(4, 3, 2), "forest full")
        let closed = s.recipientChecked(.postmaster, RecipientParameters(), .rejectAndClose(full))
        #expect(closed == .sendAndClose(full))
        #expect(s.isClosed)
        #expect(s.transaction == nil)
    }

    @Test func receivedProtocolNames() {
        var s = session()
        _ = run(&s, "HELO c")
        #expect(s.receivedProtocol == "SMTP")
        _ = run(&s, "EHLO c")
        #expect(s.receivedProtocol == "ESMTP")
        _ = run(&s, "MAIL FROM:<a@b.test> SMTPUTF8")
        #expect(s.receivedProtocol == "UTF8SMTP")
    }

    /// How a test reaches one refusal, and the kind the session must give it.
    enum RefusalCase: String, CaseIterable, CustomTestStringConvertible {
        case declaredSize, bodyTooLarge, chunkTooLarge, recipientsPerTransaction, recipientsPerDomain
        case policyLimit, policyRefusal, bareLineEnding, unknownCommand, tooManyErrors
        var testDescription: String { rawValue }
    }

    /// The last action of each script, and the `RefusalKind` it must carry: the shell counts
    /// refusals by this kind, never by their text.
    @Test(
        arguments: [
            (RefusalCase.declaredSize, "552 5.3.4", ServerSession.RefusalKind.messageSize),
            (.bodyTooLarge, "552 5.3.4", .messageSize),
            (.chunkTooLarge, "552 5.3.4", .messageSize),
            (.recipientsPerTransaction, "452 4.5.3", .recipientsPerTransaction),
            (.recipientsPerDomain, "452 4.5.3", .recipientsPerDomain),
            (.policyLimit, "552 5.3.4", .messageSize),
            (.policyRefusal, "550 5.7.1", nil),
            (.bareLineEnding, "550 5.6.11", nil),
            (.unknownCommand, "500 5.5.2", nil),
            (.tooManyErrors, "421 4.7.0", .tooManyErrors),
        ] as [(RefusalCase, String, ServerSession.RefusalKind?)])
    func refusalsCarryTheirKind(_ path: RefusalCase, _ expected: String, _ kind: ServerSession.RefusalKind?) throws {
        var c = Self.config
        if path == .recipientsPerDomain { c.maxRecipientsPerDomain = 1 }
        var s = ServerSession(configuration: c)
        _ = s.greeting()
        _ = run(&s, "EHLO c")
        let last: ServerSession.Action
        switch path {
        case .declaredSize:
            last = s.commandReceived(.mail(.null, MailParameters(size: 5000)))
        case .bodyTooLarge:
            _ = run(&s, "MAIL FROM:<a@b.test>")
            _ = run(&s, "RCPT TO:<x@contoso.test>")
            _ = s.commandReceived(.data)
            last = s.dataReceived(violation: .tooLarge)
        case .chunkTooLarge:
            _ = run(&s, "MAIL FROM:<a@b.test>")
            _ = run(&s, "RCPT TO:<x@contoso.test>")
            _ = s.commandReceived(.bdat(size: 10, last: false))
            last = s.chunkReceived(violation: .tooLarge)
        case .recipientsPerTransaction:
            _ = run(&s, "MAIL FROM:<a@b.test>")
            _ = run(&s, "RCPT TO:<x@contoso.test>")
            _ = run(&s, "RCPT TO:<y@contoso.test>")
            last = s.commandReceived(try SMTPCommandParser.parse("RCPT TO:<z@contoso.test>"))
        case .recipientsPerDomain:
            _ = run(&s, "MAIL FROM:<a@b.test>")
            _ = run(&s, "RCPT TO:<x@contoso.test>")
            last = s.commandReceived(try SMTPCommandParser.parse("RCPT TO:<y@contoso.test>"))
        case .policyLimit, .policyRefusal:
            _ = run(&s, "MAIL FROM:<a@b.test>")
            _ = s.commandReceived(.rcpt(.postmaster, RecipientParameters()))
            let decision: ServerSession.RecipientDecision =
                path == .policyLimit
                ? .reject(SMTPReply(552, .init(5, 3, 4), "too big for this tenant"), refusal: .messageSize)
                : .reject(SMTPReply(550, .init(5, 7, 1), "Relaying denied"))
            last = s.recipientChecked(.postmaster, RecipientParameters(), decision)
        case .bareLineEnding:
            _ = run(&s, "MAIL FROM:<a@b.test>")
            _ = run(&s, "RCPT TO:<x@contoso.test>")
            _ = s.commandReceived(.data)
            last = s.dataReceived(violation: .bareLineEnding)
        case .unknownCommand:
            last = s.commandRejected(SMTPCommandError(SMTPReply(500, .init(5, 5, 2), "Unknown command")))
        case .tooManyErrors:
            for _ in 0..<Self.config.maxErrors { _ = run(&s, "RCPT TO:<x@contoso.test>") }
            last = s.commandReceived(.rcpt(.postmaster, RecipientParameters()))
        }
        #expect(code(last) == expected)
        switch last {
        case .send(_, let refusal), .sendAndClose(_, let refusal): #expect(refusal == kind)
        default: Issue.record("expected a reply, got \(last)")
        }
    }
}
