import Foundation
import Testing

@testable import MailMessage

struct HeaderTests {
    @Test func scannerFindsMessageIDAndSubjectAcrossChunks() {
        var s = HeaderScanner()
        let text = "Subject: hello\r\n world\r\nMessage-ID: <x@y.test>\r\n\r\nbody Message-ID: <no@no>\r\n"
        for ch in text.utf8 { s.feed([ch]) }
        #expect(s.complete)
        #expect(s.messageID == "<x@y.test>")
        #expect(s.subject == "hello world")
    }

    @Test func scannerWithoutMessageID() {
        var s = HeaderScanner()
        s.feed(Array("From: a@b.test\r\n\r\nMessage-ID: <in-body@x>\r\n".utf8))
        #expect(s.messageID == nil)
    }

    /// The TLS part of the stamp says what is known and nothing else: never an empty cipher.
    @Test(arguments: [
        (HeaderStamps.TLSInfo?.none, "ESMTP"),
        (HeaderStamps.TLSInfo(version: "TLSv1.3"), "ESMTPS (TLSv1.3)"),
        (HeaderStamps.TLSInfo(version: "TLSv1.3", cipher: ""), "ESMTPS (TLSv1.3)"),
        (
            HeaderStamps.TLSInfo(version: "TLSv1.2", cipher: "ECDHE-RSA-AES128-GCM-SHA256"),
            "ESMTPS (TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256)"
        ),
        (HeaderStamps.TLSInfo(version: "TLSv1.3", cipher: "X\r\nBcc: y"), "ESMTPS (TLSv1.3 XBcc: y)"),
    ])
    func receivedStampHasProtocolTLSAndID(_ tls: HeaderStamps.TLSInfo?, _ with: String) {
        let r = HeaderStamps.received(
            helo: "client.test", clientAddress: "127.0.0.1", by: "mx.test",
            protocolName: tls == nil ? "ESMTP" : "ESMTPS", tls: tls, queueID: "ABC", singleRecipient: "a@b.test",
            date: Date(timeIntervalSince1970: 0))
        #expect(
            r == "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Mailflow) with \(with)\r\n"
                + "\tid ABC for <a@b.test>; Thu, 1 Jan 1970 00:00:00 +0000\r\n")
    }

    @Test func aHiddenClientLeavesOutTheFromClause() {
        let r = HeaderStamps.received(
            helo: "alices-laptop", clientAddress: nil, by: "mx.test", protocolName: "ESMTPSA", tls: nil,
            queueID: "ABC", singleRecipient: nil, date: Date(timeIntervalSince1970: 0))
        #expect(r == "Received: by mx.test (Mailflow) with ESMTPSA\r\n\tid ABC; Thu, 1 Jan 1970 00:00:00 +0000\r\n")
        #expect(!r.contains("alices-laptop"))
    }

    @Test func stampsCannotBeBrokenByHostileHelo() {
        let r = HeaderStamps.received(
            helo: "evil\r\nBcc: x@y", clientAddress: "127.0.0.1", by: "mx.test", protocolName: "SMTP", tls: nil,
            queueID: "A", singleRecipient: nil, date: Date())
        #expect(r.components(separatedBy: "\r\n").count == 4)
        #expect(HeaderStamps.returnPath("a\r\nb@c") == "Return-Path: <ab@c>\r\n")
    }
}

struct DSNTests {
    func make(headersOnly: Bool) -> String {
        let original = Data("Subject: hello\r\nFrom: a@x.test\r\n\r\nsecret body\r\n".utf8)
        let dsn = DeliveryStatusNotification(
            reportingMTA: "mx.mailflow.test", sender: "a@x.test", originalEnvelopeID: "env-1",
            arrivalDate: Date(timeIntervalSince1970: 0),
            recipients: [
                .init(
                    finalRecipient: "bob@remote.test", originalRecipient: "rfc822;Bob@remote.test", action: .failed,
                    status: "5.1.1", remoteMTA: "mx1.remote.test", diagnostic: "550 5.1.1 no such user",
                    lastAttempt: Date(timeIntervalSince1970: 60))
            ], original: original, headersOnly: headersOnly)
        return String(
            decoding: dsn.render(date: Date(timeIntervalSince1970: 120), messageID: "<d@mx>", boundary: "B1"),
            as: UTF8.self)
    }

    @Test func failureReportHasRFC3464Fields() {
        let text = make(headersOnly: false)
        for needle in [
            "Content-Type: multipart/report; report-type=delivery-status;", "Auto-Submitted: auto-replied",
            "Reporting-MTA: dns; mx.mailflow.test", "Original-Envelope-Id: env-1",
            "Final-Recipient: rfc822; bob@remote.test", "Original-Recipient: rfc822; Bob@remote.test",
            "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx1.remote.test",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user", "Content-Type: message/rfc822", "secret body", "--B1--",
        ] {
            #expect(text.contains(needle), "missing \(needle)")
        }
        // Only CRLF line endings: the report must pass Mailflow's own smuggling check.
        let bytes = Array(text.utf8)
        #expect(bytes.indices.allSatisfy { i in bytes[i] != 0x0A || (i > 0 && bytes[i - 1] == 0x0D) })
    }

    @Test func retHeadersReturnsOnlyTheHeaders() {
        let text = make(headersOnly: true)
        #expect(text.contains("Content-Type: text/rfc822-headers"))
        #expect(text.contains("Subject: hello"))
        #expect(!text.contains("secret body"))
    }
}
