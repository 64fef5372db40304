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

    @Test func receivedStampHasProtocolTLSAndID() {
        let r = HeaderStamps.received(
            helo: "client.test", clientAddress: "127.0.0.1", by: "mx.test", protocolName: "ESMTPS",
            tls: .init(version: "TLSv1.3", cipher: ""), queueID: "ABC", singleRecipient: "a@b.test",
            date: Date(timeIntervalSince1970: 0))
        #expect(
            r == "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Mailflow) with ESMTPS (TLSv1.3)\r\n"
                + "\tid ABC for <a@b.test>; Thu, 1 Jan 1970 00:00:00 +0000\r\n")
    }

    @Test func stampsCannotBeBrokenByHostileHelo() {
        let r = HeaderStamps.received(
            helo: "evil\r\nBcc: x@y", clientAddress: "127.0.0.1", by: "mx.test", protocolName: "SMTP", tls: nil,
            queueID: "A", singleRecipient: nil, date: Date())
        #expect(r.components(separatedBy: "\r\n").count == 4)
        #expect(HeaderStamps.returnPath("a\r\nb@c") == "Return-Path: <ab@c>\r\n")
    }
}
