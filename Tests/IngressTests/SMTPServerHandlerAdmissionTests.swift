import Foundation
import MailQueue
import NIOCore
import NIOEmbedded
import SMTPCore
import Testing

@testable import Ingress

/// Every way a session ends gives back what admission control granted it: its connection (server
/// and per-source counts) and every resource-forest slot its recipients took. Rate tokens
/// (per-source messages, forest messages, mailbox receipts) are spent, not held, so there is
/// nothing of theirs to give back; a refused recipient gives back the slot it took at once.
struct SMTPServerHandlerAdmissionTests {
    static let transaction = "EHLO client.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<alice@example.test>\r\n"

    /// How the session ends once a recipient holds the forest slot.
    enum Ending: String, CaseIterable, CustomTestStringConvertible {
        case quit, rsetThenQuit, clientClosesInData, clientClosesInBDAT, timeout, commitThenQuit
        case commitFailsThenClientCloses, channelError, shutdown, tooManyErrors
        var testDescription: String { rawValue }
    }

    @Test(arguments: Ending.allCases)
    func everyEndingGivesBackTheSlotAndTheConnection(_ ending: Ending) throws {
        let fixture = try HandlerFixture()
        let (channel, _) = try fixture.connect()
        defer { channel.end() }
        try channel.send(Self.transaction)
        #expect(try channel.replies().contains("250 2.1.5"))
        #expect(fixture.forestSessions == 1, "the accepted recipient holds its forest's slot")
        #expect(fixture.connections == 1)

        switch ending {
        case .quit:
            try channel.send("QUIT\r\n")
            #expect(try channel.replies().contains("221 2.0.0"))
        case .rsetThenQuit:
            try channel.send("RSET\r\n")
            #expect(try channel.replies().contains("250 2.0.0"))
            // The slot is the session's, not the transaction's: RSET keeps it.
            #expect(fixture.forestSessions == 1)
            try channel.send("QUIT\r\n")
        case .clientClosesInData:
            try channel.send("DATA\r\nSubject: partial\r\n\r\nsome")
            #expect(try channel.replies().contains("354 "))
            channel.end()
        case .clientClosesInBDAT:
            try channel.send("BDAT 1000\r\nSubject: partial\r\n")
            channel.end()
        case .timeout:
            channel.embeddedEventLoop.advanceTime(by: .seconds(301))
            #expect(try channel.replies().contains("421 4.4.2"))
        case .commitThenQuit:
            try channel.send("DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
            channel.embeddedEventLoop.run()
            #expect(try channel.replies().contains("250 2.0.0 Ok: queued as "))
            #expect(fixture.forestSessions == 1, "a committed message does not end the session")
            try channel.send("QUIT\r\n")
        case .commitFailsThenClientCloses:
            fixture.committer.failing.withLock { $0 = true }
            try channel.send("DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
            channel.embeddedEventLoop.run()
            #expect(try channel.replies().contains("451 4.3.0"))
            channel.end()
        case .channelError:
            channel.pipeline.fireErrorCaught(ChannelError.ioOnClosedChannel)
        case .shutdown:
            // Inside a transaction the session may finish it; its next command is refused.
            channel.pipeline.fireUserInboundEventTriggered(ShutdownRequestedEvent())
            try channel.send("RSET\r\nMAIL FROM:<s@x.test>\r\n")
            #expect(try channel.replies().contains("421 4.3.2"))
        case .tooManyErrors:
            // The 21st error reply (the default limit is 20) closes the session.
            try channel.send(String(repeating: "RCPT TO:<nobody@example.test>\r\n", count: 21))
            #expect(try channel.replies().contains("421 4.7.0 Too many errors"))
        }
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive, "the session ended")
        #expect(fixture.forestSessions == 0, "the forest slot was given back")
        #expect(fixture.connections == 0, "the connection was given back")
        #expect(fixture.sources == 0, "the per-source count was given back")
    }

    /// A recipient refused after its forest slot was taken gives the slot back at once, while the
    /// session goes on; the session's own connection is given back when it ends.
    enum LateRefusal: String, CaseIterable, CustomTestStringConvertible {
        case mailboxRate, forestMessageRate
        var testDescription: String { rawValue }
    }

    @Test(arguments: LateRefusal.allCases)
    func aRecipientRefusedAfterTakingTheSlotGivesItBack(_ refusal: LateRefusal) throws {
        var limits = AdmissionLimits()
        if refusal == .mailboxRate { limits.mailboxMessagesPerHour = 1 }
        let fixture = try HandlerFixture(limits: limits, forestMessagesPerMinute: refusal == .forestMessageRate ? 1 : 0)
        // The first session spends the one token.
        let (first, _) = try fixture.connect()
        try first.send(Self.transaction + "QUIT\r\n")
        #expect(try first.replies().contains("250 2.1.5"))
        first.end()
        #expect(fixture.forestSessions == 0)

        let (second, _) = try fixture.connect()
        try second.send(Self.transaction)
        let expected = refusal == .mailboxRate ? "450 4.2.1" : "451 4.7.1"
        #expect(try second.replies().contains(expected))
        #expect(second.isActive)
        #expect(fixture.forestSessions == 0, "the refused recipient's slot was given back at once")
        #expect(fixture.connections == 1)
        second.end()
        #expect(fixture.connections == 0)
        #expect(fixture.forestSessions == 0)
    }

    /// A full forest closes the session that would take a slot (Exchange's `421 4.3.2`); the
    /// sessions holding slots keep them until they end.
    @Test func aFullForestClosesTheNewcomerAndCountsStayRight() throws {
        let fixture = try HandlerFixture(forestConnections: 1)
        let (holder, _) = try fixture.connect(from: "192.0.2.20")
        try holder.send(Self.transaction)
        _ = try holder.replies()
        let (newcomer, _) = try fixture.connect(from: "192.0.2.21")
        try newcomer.send(Self.transaction)
        newcomer.embeddedEventLoop.run()
        #expect(try newcomer.replies().contains("421 4.3.2 The maximum number of concurrent connections"))
        #expect(!newcomer.isActive)
        #expect(fixture.forestSessions == 1)
        #expect(fixture.connections == 1)
        holder.end()
        newcomer.end()
        #expect(fixture.forestSessions == 0)
        #expect(fixture.connections == 0)
    }

    /// A session refused at connect holds nothing: it was never counted.
    @Test func aSourceOverItsLimitIsRefusedAndCountsNothing() throws {
        var limits = AdmissionLimits()
        limits.perSourceMaxConnections = 1
        let fixture = try HandlerFixture(limits: limits)
        let (first, _) = try fixture.connect()
        let (second, _) = try fixture.connect()
        second.embeddedEventLoop.run()
        #expect(try second.replies().hasPrefix("421 4.7.0"))
        #expect(fixture.connections == 1)
        second.end()
        #expect(fixture.connections == 1)
        first.end()
        #expect(fixture.connections == 0)
        #expect(fixture.sources == 0)
    }

    /// The committed message is assembled from the finished body (stamp first), with the injected
    /// wall clock's time, and the refusals the session makes are counted by kind.
    @Test func theCommittedMessageCarriesItsBodyAndTheInjectedTime() throws {
        let fixture = try HandlerFixture()
        let (channel, _) = try fixture.connect()
        defer { channel.end() }
        try channel.send(Self.transaction + "DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")
        channel.embeddedEventLoop.run()
        let reply = try channel.replies()
        let message = try #require(fixture.committer.committed.first)
        #expect(reply.contains("250 2.0.0 Ok: queued as \(message.id)"))
        guard case .inline(let data) = message.body else {
            Issue.record("a small body is stored inline")
            return
        }
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.hasPrefix("Received: from client.test ([192.0.2.10])\r\n\tby mx.test (Mailflow) with ESMTP\r\n"))
        #expect(text.hasSuffix("; Fri, 15 Jan 2027 08:00:00 +0000\r\nSubject: hi\r\n\r\nbody\r\n"))
        #expect(message.stampLength == text.utf8.count - "Subject: hi\r\n\r\nbody\r\n".utf8.count)
        #expect(message.size == data.count)
        #expect(message.receivedAt == HandlerFixture.now)
        #expect(message.tenant == "example")
        #expect(message.subject == "hi")
        #expect(message.addMessageID)
    }

    /// Refusals the session makes are counted by their typed kind (`mailflow limits`).
    @Test(
        arguments: [
            ("MAIL FROM:<s@x.test> SIZE=100000000\r\n", "552 5.3.4", "message_size"),
            ("MAIL FROM:<s@x.test>\r\nRCPT TO:<nobody@example.test>\r\n", "550 5.1.1", nil),
        ] as [(String, String, String?)])
    func refusalsAreCountedByKind(_ commands: String, _ reply: String, _ kind: String?) throws {
        let fixture = try HandlerFixture()
        let (channel, _) = try fixture.connect()
        defer { channel.end() }
        try channel.send("EHLO client.test\r\n" + commands)
        #expect(try channel.replies().contains(reply))
        let refusals = fixture.admission.usage().refusals
        #expect(refusals == (kind.map { [$0: 1] } ?? [:]))
    }
}
