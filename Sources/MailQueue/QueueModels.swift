import Foundation
import SMTPCore

/// One envelope recipient as the queue keeps it (RFC 5321 envelope plus RFC 3461 DSN parameters).
public struct EnvelopeRecipient: Sendable, Hashable {
    public var address: String
    /// How it is delivered, chosen at RCPT time.
    public var route: Route
    /// RFC 3461 NOTIFY as sent, nil when absent.
    public var notify: DSNNotify?
    /// RFC 3461 ORCPT (decoded from xtext), nil when absent.
    public var originalRecipient: OriginalRecipient?

    public init(
        address: String, route: Route, notify: DSNNotify? = nil, originalRecipient: OriginalRecipient? = nil
    ) {
        self.address = address
        self.route = route
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// Where a message's body is while it waits: small bodies travel inside the queue database (so a
/// whole batch costs one sync), large ones in a spool file synced before the batch.
public enum MessageBody: Sendable, Hashable {
    case inline(Data)
    case spooled(path: String)
}

/// A message the ingress has received in full and wants made durable.
public struct NewMessage: Sendable, Hashable {
    public var id: String
    public var receivedAt: Date
    public var sender: String
    public var recipients: [EnvelopeRecipient]
    public var size: Int
    /// RFC 6152 `BODY=`, nil when the client did not say.
    public var bodyType: BodyType?
    public var smtpUTF8: Bool
    /// RFC 3461 `RET=`, nil when absent.
    public var ret: DSNReturn?
    public var envelopeID: String?
    public var clientAddress: String
    public var helo: String
    public var protocolName: String
    public var tls: String?
    public var tenant: String?
    public var messageID: String?
    /// Mailflow adds `Message-ID:` at delivery when the sender left it out (RFC 5322 §3.6.4 SHOULD).
    public var addMessageID: Bool
    public var subject: String?
    /// Octets at the start of the body that are Mailflow's own `Received:` stamp.
    public var stampLength: Int
    public var body: MessageBody
    /// What sender authentication found (SPF, DKIM, DMARC), when it ran.
    public var authentication: SenderAuthentication?
    /// Submitted without `Date:`: Mailflow adds one at delivery, the time it was received (RFC 6409
    /// §8.3 lets a submission server add it; RFC 5322 §3.6 requires it).
    public var addDate = false

    public init(
        id: String, receivedAt: Date, sender: String, recipients: [EnvelopeRecipient], size: Int,
        bodyType: BodyType? = nil, smtpUTF8: Bool = false, ret: DSNReturn? = nil, envelopeID: String? = nil,
        clientAddress: String, helo: String, protocolName: String, tls: String? = nil, tenant: String? = nil,
        messageID: String? = nil, addMessageID: Bool = false, subject: String? = nil, stampLength: Int = 0,
        body: MessageBody
    ) {
        self.id = id
        self.receivedAt = receivedAt
        self.sender = sender
        self.recipients = recipients
        self.size = size
        self.bodyType = bodyType
        self.smtpUTF8 = smtpUTF8
        self.ret = ret
        self.envelopeID = envelopeID
        self.clientAddress = clientAddress
        self.helo = helo
        self.protocolName = protocolName
        self.tls = tls
        self.tenant = tenant
        self.messageID = messageID
        self.addMessageID = addMessageID
        self.subject = subject
        self.stampLength = stampLength
        self.body = body
    }
}

/// The sender authentication of one received message: the `Authentication-Results` field added in
/// front of the stored message at delivery (RFC 8601; the body itself is stored as received), and
/// each method's result word for the message trace and its filters.
public struct SenderAuthentication: Sendable, Hashable, Codable {
    /// The whole field, `Authentication-Results: ...` with its CRLF (folded lines allowed).
    public var field: String
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`.
    public var spf: String
    /// The best DKIM result of the message's signatures (`pass` if one passed), `none` without one.
    public var dkim: String
    /// `pass`, `fail`, `none`, `temperror`, `permerror`.
    public var dmarc: String

    public init(field: String, spf: String, dkim: String, dmarc: String) {
        self.field = field
        self.spf = spf
        self.dkim = dkim
        self.dmarc = dmarc
    }

    /// `spf=pass dkim=none dmarc=fail`, as the trace shows it.
    public var summary: String { "spf=\(spf) dkim=\(dkim) dmarc=\(dmarc)" }
}

/// A recipient's delivery status.
public enum RecipientStatus: String, Sendable, Codable, CaseIterable {
    case pending
    case delivered
    case failed
}

/// A message's state in the queue: `queued` while any recipient is pending, `done` after.
public enum MessageState: String, Sendable, Codable {
    case queued
    /// Put aside by an administrator: not attempted until released.
    case held
    case done
}

/// A recipient as stored, with its progress.
public struct StoredRecipient: Sendable, Hashable {
    public var index: Int
    public var recipient: EnvelopeRecipient
    public var status: RecipientStatus
    public var attempts: Int
    public var lastReply: String?

    public init(
        index: Int, recipient: EnvelopeRecipient, status: RecipientStatus, attempts: Int, lastReply: String?
    ) {
        self.index = index
        self.recipient = recipient
        self.status = status
        self.attempts = attempts
        self.lastReply = lastReply
    }
}

/// A message as stored in the queue.
public struct StoredMessage: Sendable, Hashable {
    public var id: String
    public var receivedAt: Date
    public var sender: String
    public var size: Int
    public var bodyType: BodyType?
    public var smtpUTF8: Bool
    public var ret: DSNReturn?
    public var envelopeID: String?
    public var clientAddress: String
    public var helo: String
    public var protocolName: String
    public var tls: String?
    public var tenant: String?
    public var messageID: String?
    public var addMessageID: Bool
    public var subject: String?
    public var stampLength: Int
    public var state: MessageState
    public var nextAttempt: Date?
    public var attempts: Int
    public var recipients: [StoredRecipient]
    /// nil once the message is done and its body dropped.
    public var body: MessageBody?
    /// An administrator asked for it to be returned to the sender.
    public var bounceRequested = false
    /// Delivery attempts a remote cut off by closing the connection abruptly (Exchange's
    /// SuspiciousRemoteServerError); enough of them and the message fails as possibly harmful.
    public var abruptCloses = 0
    /// When the sender was sent a delay notice (RFC 3464 `delayed`), nil if never: one is enough.
    public var delayNoticeSentAt: Date?
    /// What sender authentication found at receipt, when it ran.
    public var authentication: SenderAuthentication?
    /// `Date:` is added at delivery (see `NewMessage.addDate`).
    public var addDate = false

    /// Every stored column, as a queue store reads them back (SQLite's, or the shared queue's).
    public init(
        id: String, receivedAt: Date, sender: String, size: Int, bodyType: BodyType?, smtpUTF8: Bool,
        ret: DSNReturn?, envelopeID: String?, clientAddress: String, helo: String, protocolName: String,
        tls: String?, tenant: String?, messageID: String?, addMessageID: Bool, subject: String?, stampLength: Int,
        state: MessageState, nextAttempt: Date?, attempts: Int, recipients: [StoredRecipient], body: MessageBody?,
        bounceRequested: Bool = false, abruptCloses: Int = 0, delayNoticeSentAt: Date? = nil,
        authentication: SenderAuthentication? = nil, addDate: Bool = false
    ) {
        self.id = id
        self.receivedAt = receivedAt
        self.sender = sender
        self.size = size
        self.bodyType = bodyType
        self.smtpUTF8 = smtpUTF8
        self.ret = ret
        self.envelopeID = envelopeID
        self.clientAddress = clientAddress
        self.helo = helo
        self.protocolName = protocolName
        self.tls = tls
        self.tenant = tenant
        self.messageID = messageID
        self.addMessageID = addMessageID
        self.subject = subject
        self.stampLength = stampLength
        self.state = state
        self.nextAttempt = nextAttempt
        self.attempts = attempts
        self.recipients = recipients
        self.body = body
        self.bounceRequested = bounceRequested
        self.abruptCloses = abruptCloses
        self.delayNoticeSentAt = delayNoticeSentAt
        self.authentication = authentication
        self.addDate = addDate
    }
}

/// The kind of a trace event: one per state change of a message (Exchange message trace's Receive,
/// Deliver, Defer, Fail).
public enum TraceEventKind: String, Sendable, Codable {
    case received
    case delivered
    case deferred
    case failed
    /// An administrator acted on the message (hold, release, retry, bounce, delete); who and what
    /// in the detail.
    case admin
    /// A delivery status notification was generated for this message (its ID in the detail).
    case dsn
    /// Admission control refused or deferred a connection, message or recipient (no queue ID).
    case throttled
    /// Cluster mode: a node's lease on the message ran out before it recorded an attempt (it died
    /// or stalled), and another node took the message over; the first may have delivered it, so
    /// the next delivery may be a duplicate (who and which claim in the detail).
    case leaseExpired = "lease_expired"
}

/// One entry in the trace stream, written in the same transaction as the change it records.
public struct TraceEvent: Sendable, Hashable, Codable {
    public var time: Date
    public var queueID: String
    public var recipient: String?
    public var kind: TraceEventKind
    public var detail: String?
    public var forest: String?
    public var region: String?
    public var tenant: String?
    public var clientAddress: String?
    /// The reply the client got, for throttle events.
    public var reply: String?

    public init(
        time: Date, queueID: String, recipient: String?, kind: TraceEventKind, detail: String?, forest: String? = nil,
        region: String? = nil, tenant: String? = nil, clientAddress: String? = nil, reply: String? = nil
    ) {
        self.time = time
        self.queueID = queueID
        self.recipient = recipient
        self.kind = kind
        self.detail = detail
        self.forest = forest
        self.region = region
        self.tenant = tenant
        self.clientAddress = clientAddress
        self.reply = reply
    }
}

/// What one delivery attempt did for one recipient.
public enum RecipientOutcome: Sendable, Hashable {
    case delivered(detail: String)
    case deferred(reason: String)
    case failed(reason: String)
}

extension NewMessage {
    /// The `received` trace event a store writes with the message (the same words in SQLite and in
    /// the shared queue, so the trace reads alike).
    public var receivedEvent: TraceEvent {
        let detail =
            "from=<\(sender)> size=\(size) client=\(clientAddress) helo=\(helo) proto=\(protocolName)"
            + (tls.map { " tls=\($0)" } ?? "") + " rcpts=\(recipients.count)"
            + (authentication.map { " " + $0.summary } ?? "")
        return TraceEvent(time: receivedAt, queueID: id, recipient: nil, kind: .received, detail: detail)
    }
}

extension RecipientOutcome {
    /// The recipient's status after this outcome, and the trace event's kind and detail.
    public var recorded: (status: RecipientStatus, kind: TraceEventKind, detail: String) {
        switch self {
        case .delivered(let d): (.delivered, .delivered, d)
        case .deferred(let r): (.pending, .deferred, r)
        case .failed(let r): (.failed, .failed, r)
        }
    }
}
