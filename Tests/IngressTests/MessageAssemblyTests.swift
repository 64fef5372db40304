import Foundation
import MailMessage
import MailQueue
import SMTPCore
import Testing

@testable import Ingress

struct MessageAssemblyTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func transaction(
        sender: String = "s@x.test", recipients: [String], parameters: MailParameters = MailParameters()
    ) throws -> MailTransaction {
        guard case .mail(let reverse, _) = try SMTPCommandParser.parse("MAIL FROM:<\(sender)>"[...]) else {
            throw CancellationError()
        }
        var tx = MailTransaction(sender: reverse, parameters: parameters)
        for r in recipients {
            guard
                case .rcpt(let path, let params) = try SMTPCommandParser.parse(
                    "RCPT TO:<\(r)>\(r.hasPrefix("b") ? " NOTIFY=NEVER" : "")"[...])
            else {
                throw CancellationError()
            }
            // The route the recipient policy would choose: lower-cased, so duplicates in other cases match.
            let parts = r.lowercased().split(separator: "@").map(String.init)
            let route = Route.local(domain: parts.count == 2 ? parts[1] : "example.test", mailbox: parts[0])
            tx.recipients.append(AcceptedRecipient(path: path, parameters: params, route: route))
        }
        return tx
    }

    static func assembly(_ tx: MailTransaction, tls: HeaderStamps.TLSInfo? = nil, helo: String? = "client.test")
        -> MessageAssembly
    {
        MessageAssembly(
            queueID: "Q1", transaction: tx, hostname: "mx.test", clientAddress: "192.0.2.1", helo: helo,
            protocolName: tls == nil ? "ESMTP" : "ESMTPS", tls: tls, startedAt: start)
    }

    /// The stamp's `for <...>` names the recipient only when there is exactly one (duplicates count once).
    @Test(arguments: [
        (["alice@example.test"], " for <alice@example.test>"),
        (["alice@example.test", "ALICE@example.test"], " for <alice@example.test>"),
        (["alice@example.test", "bob@example.test"], ""),
        (["Postmaster"], " for <Postmaster>"),
    ])
    func stampNamesASingleRecipient(_ recipients: [String], _ forClause: String) throws {
        let a = Self.assembly(try Self.transaction(recipients: recipients))
        #expect(
            a.stamp
                == "Received: from client.test ([192.0.2.1])\r\n\tby mx.test (Mailflow) with ESMTP\r\n\tid Q1"
                + forClause + "; Fri, 15 Jan 2027 08:00:00 +0000\r\n")
    }

    @Test(
        arguments: [
            (HeaderStamps.TLSInfo?.none, "client.test", "with ESMTP\r\n"),
            (HeaderStamps.TLSInfo(version: "TLSv1.3"), "client.test", "with ESMTPS (TLSv1.3)\r\n"),
            (HeaderStamps.TLSInfo?.none, nil, "with ESMTP\r\n"),
        ] as [(HeaderStamps.TLSInfo?, String?, String)])
    func stampSaysWhatIsKnown(_ tls: HeaderStamps.TLSInfo?, _ helo: String?, _ with: String) throws {
        let stamp = Self.assembly(try Self.transaction(recipients: ["a@example.test"]), tls: tls, helo: helo).stamp
        #expect(stamp.hasPrefix("Received: from \(helo ?? "unknown") ([192.0.2.1])\r\n"))
        #expect(stamp.contains(with))
        #expect(!stamp.contains("()"))
    }

    /// Every field of the stored message comes from the assembly's inputs; the body is the one given.
    @Test(arguments: [MessageBody.inline(Data("Subject: hi\r\n\r\nx\r\n".utf8)), .spooled(path: "/spool/Q1")])
    func messageCarriesTheBodyItWasGiven(_ body: MessageBody) throws {
        let params = MailParameters(size: 100, body: .eightBitMIME, smtpUTF8: true, ret: .headers, envelopeID: "env-1")
        let tx = try Self.transaction(
            recipients: ["alice@example.test", "bob@example.test", "alice@example.test"], parameters: params)
        let a = Self.assembly(tx, tls: .init(version: "TLSv1.2", cipher: "ECDHE-RSA-AES128-GCM-SHA256"))
        var headers = HeaderScanner()
        headers.feed(Array("Subject: hello\r\nMessage-ID: <m@x.test>\r\n\r\nbody\r\n".utf8))
        let received = Self.start.addingTimeInterval(3)
        let m = a.message(
            transaction: tx, headers: headers, body: body, size: 1234, tenant: "example", receivedAt: received)
        #expect(m.body == body)
        #expect(m.id == "Q1")
        #expect(m.receivedAt == received)
        #expect(m.sender == "s@x.test")
        #expect(m.recipients.map(\.address) == ["alice@example.test", "bob@example.test"])
        #expect(m.recipients.map(\.notify) == [nil, tx.recipients[1].parameters.notify])
        #expect(m.size == 1234)
        #expect(m.bodyType == .eightBitMIME)
        #expect(m.smtpUTF8)
        #expect(m.ret == .headers)
        #expect(m.envelopeID == "env-1")
        #expect(m.clientAddress == "192.0.2.1")
        #expect(m.helo == "client.test")
        #expect(m.protocolName == "ESMTPS")
        #expect(m.tls == "TLSv1.2")
        #expect(m.tenant == "example")
        #expect(m.messageID == "<m@x.test>")
        #expect(!m.addMessageID)
        #expect(m.subject == "hello")
        #expect(m.stampLength == a.stamp.utf8.count)
    }

    @Test(
        arguments: [
            ("From: a@b.test\r\n\r\n", "<Q1@mx.test>", true, nil),
            ("Message-ID: <own@x>\r\n\r\n", "<own@x>", false, nil),
            ("Subject: " + String(repeating: "s", count: 2000) + "\r\n\r\n", "<Q1@mx.test>", true, 998),
        ] as [(String, String, Bool, Int?)])
    func messageIDAndSubject(_ header: String, _ messageID: String, _ added: Bool, _ subjectLength: Int?) throws {
        let tx = try Self.transaction(recipients: ["a@example.test"])
        var headers = HeaderScanner()
        headers.feed(Array(header.utf8))
        let m = Self.assembly(tx, helo: nil).message(
            transaction: tx, headers: headers, body: .inline(Data()), size: 0, tenant: nil, receivedAt: Self.start)
        #expect(m.messageID == messageID)
        #expect(m.addMessageID == added)
        #expect(m.subject?.count == subjectLength)
        #expect(m.helo == "")
        #expect(m.tenant == nil)
    }
}
