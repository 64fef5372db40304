import Foundation

/// A delivery status notification (RFC 3464): a `multipart/report; report-type=delivery-status`
/// with a human-readable part, the machine-readable `message/delivery-status`, and the original
/// message (RET=FULL) or its headers (RET=HDRS), following RFC 3461's rules for what to return.
///
/// ```swift
/// let dsn = DeliveryStatusNotification(reportingMTA: "mx.test", ...)
/// dsn.render(date: Date(), messageID: "<id@mx.test>")
/// ```
public struct DeliveryStatusNotification: Sendable {
    /// RFC 3464 §2.3.3 `Action`.
    public enum Action: String, Sendable {
        case failed
        case delayed
        case delivered
        case relayed
        case expanded
    }

    /// One per-recipient block (RFC 3464 §2.3).
    public struct Recipient: Sendable {
        public var finalRecipient: String
        public var originalRecipient: String?
        public var action: Action
        /// `4.4.7`, `5.1.1`, ...
        public var status: String
        public var remoteMTA: String?
        /// The reply text, e.g. `550 5.1.1 no such user`.
        public var diagnostic: String?
        public var lastAttempt: Date?
        public var willRetryUntil: Date?

        public init(
            finalRecipient: String, originalRecipient: String? = nil, action: Action, status: String,
            remoteMTA: String? = nil, diagnostic: String? = nil, lastAttempt: Date? = nil, willRetryUntil: Date? = nil
        ) {
            self.finalRecipient = finalRecipient
            self.originalRecipient = originalRecipient
            self.action = action
            self.status = status
            self.remoteMTA = remoteMTA
            self.diagnostic = diagnostic
            self.lastAttempt = lastAttempt
            self.willRetryUntil = willRetryUntil
        }
    }

    public var reportingMTA: String
    public var sender: String
    public var originalEnvelopeID: String?
    public var arrivalDate: Date
    public var recipients: [Recipient]
    /// The original message, or only its header section for RET=HDRS.
    public var original: Data
    public var headersOnly: Bool

    public init(
        reportingMTA: String, sender: String, originalEnvelopeID: String?, arrivalDate: Date, recipients: [Recipient],
        original: Data, headersOnly: Bool
    ) {
        self.reportingMTA = reportingMTA
        self.sender = sender
        self.originalEnvelopeID = originalEnvelopeID
        self.arrivalDate = arrivalDate
        self.recipients = recipients
        self.original = original
        self.headersOnly = headersOnly
    }

    /// The header section of a message (up to and including the blank line).
    public static func headerSection(of message: Data) -> Data {
        let crlfcrlf = Data("\r\n\r\n".utf8)
        if let r = message.range(of: crlfcrlf) { return message.subdata(in: message.startIndex..<r.upperBound) }
        return message
    }

    public func render(date: Date, messageID: String, boundary: String) -> Data {
        let d = HeaderStamps.rfc5322Date
        let failed = recipients.contains { $0.action == .failed }
        let delayed = recipients.contains { $0.action == .delayed }
        let subject =
            failed
            ? "Undelivered Mail Returned to Sender"
            : delayed ? "Delayed Mail (still being retried)" : "Delivery Status Notification"
        var s = ""
        s += "From: Mail Delivery System <MAILER-DAEMON@\(reportingMTA)>\r\n"
        s += "To: <\(HeaderStamps.sanitize(sender))>\r\n"
        s += "Subject: \(subject)\r\n"
        s += "Date: \(d(date))\r\n"
        s += "Message-ID: \(messageID)\r\n"
        s += "Auto-Submitted: auto-replied\r\n"  // RFC 3834: never answered automatically
        s += "MIME-Version: 1.0\r\n"
        s += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"\(boundary)\"\r\n"
        s += "\r\n"
        s += "This is a MIME-encapsulated message.\r\n\r\n"
        s += "--\(boundary)\r\n"
        s += "Content-Type: text/plain; charset=utf-8\r\n"
        s += "Content-Transfer-Encoding: 8bit\r\n\r\n"
        s += "This is the mail system at \(reportingMTA).\r\n\r\n"
        if failed {
            s += "Your message could not be delivered to one or more recipients.\r\n"
        } else if delayed {
            s += "Your message has not been delivered yet. Mailflow will keep trying"
            if let until = recipients.compactMap(\.willRetryUntil).first { s += " until \(d(until))" }
            s += ";\r\nyou do not need to send it again.\r\n"
        } else {
            s += "Here is the delivery status you asked for.\r\n"
        }
        s += "\r\n"
        for r in recipients {
            s += "<\(HeaderStamps.sanitize(r.finalRecipient))>: \(r.action.rawValue)"
            if let diag = r.diagnostic { s += ", \(HeaderStamps.sanitize(diag))" }
            s += "\r\n"
        }
        s += "\r\n--\(boundary)\r\n"
        s += "Content-Type: message/delivery-status\r\n\r\n"
        s += "Reporting-MTA: dns; \(reportingMTA)\r\n"
        if let envid = originalEnvelopeID { s += "Original-Envelope-Id: \(HeaderStamps.sanitize(envid))\r\n" }
        s += "Arrival-Date: \(d(arrivalDate))\r\n"
        for r in recipients {
            s += "\r\n"
            s += "Final-Recipient: rfc822; \(HeaderStamps.sanitize(r.finalRecipient))\r\n"
            if let o = r.originalRecipient {
                let parts = o.split(separator: ";", maxSplits: 1)
                if parts.count == 2 {
                    s += "Original-Recipient: \(parts[0]); \(HeaderStamps.sanitize(String(parts[1])))\r\n"
                }
            }
            s += "Action: \(r.action.rawValue)\r\n"
            s += "Status: \(r.status)\r\n"
            if let m = r.remoteMTA { s += "Remote-MTA: dns; \(HeaderStamps.sanitize(m))\r\n" }
            if let diag = r.diagnostic { s += "Diagnostic-Code: smtp; \(HeaderStamps.sanitize(diag))\r\n" }
            if let t = r.lastAttempt { s += "Last-Attempt-Date: \(d(t))\r\n" }
            if let t = r.willRetryUntil { s += "Will-Retry-Until: \(d(t))\r\n" }
        }
        s += "\r\n--\(boundary)\r\n"
        s += headersOnly ? "Content-Type: text/rfc822-headers\r\n\r\n" : "Content-Type: message/rfc822\r\n\r\n"
        var out = Data(s.utf8)
        out.append(headersOnly ? Self.headerSection(of: original) : original)
        if !out.ends(with: Data("\r\n".utf8)) { out.append(Data("\r\n".utf8)) }
        // The CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1): one more keeps the
        // returned message's own last line break.
        out.append(Data("\r\n--\(boundary)--\r\n".utf8))
        return out
    }
}

extension Data {
    func ends(with suffix: Data) -> Bool {
        count >= suffix.count && self[(endIndex - suffix.count)...] == suffix
    }
}
