import Foundation
import MailQueue
import NIOCore
import SMTPCore

/// One lease on one message: which message, and which claim of it (`lease_epoch`). A node that
/// claims a message again after its own lease ran out holds a new epoch; records made under the old
/// one are refused.
public struct SharedLease: Sendable, Hashable, Codable {
    public var queueID: String
    public var epoch: Int64

    public init(queueID: String, epoch: Int64) {
        self.queueID = queueID
        self.epoch = epoch
    }
}

/// A message `claimDue` leased to this node: the message as a delivery reads it (envelope,
/// recipients with their progress, body inline: a spool file on one node is no use to another)
/// and the lease to renew and to record under.
public struct ClaimedMessage: Sendable, Hashable {
    public var lease: SharedLease
    /// When the lease runs out, on the database's clock.
    public var leaseUntil: Date
    public var message: StoredMessage

    public var id: String { message.id }

    init(lease: SharedLease, leaseUntil: Date, message: StoredMessage) {
        self.lease = lease
        self.leaseUntil = leaseUntil
        self.message = message
    }
}

/// What `renew` found: leases lost (stop working on those: another node may take them), and
/// leases kept on messages an administrator held or asked to bounce meanwhile (start no new
/// delivery of those; `recordAttempt` still records what is in flight).
public struct LeaseCheck: Sendable, Equatable {
    public var lost: Set<String> = []
    public var held: Set<String> = []
    public var bounceRequested: Set<String> = []

    public init(lost: Set<String> = [], held: Set<String> = [], bounceRequested: Set<String> = []) {
        self.lost = lost
        self.held = held
        self.bounceRequested = bounceRequested
    }
}

/// A message's state in the shared queue (tests and `queue` commands).
public struct SharedMessageStatus: Sendable, Equatable {
    public var state: MessageState
    public var attempts: Int
    public var nextAttempt: Date?
    public var leaseOwner: String?
    public var leaseEpoch: Int64
    public var recipients: [RecipientStatus]
}

/// Why a shared-queue call failed. A caller answering an SMTP client maps every case but the
/// queue-control ones to `reply` (`451 4.3.0`): the sender keeps the message and tries again.
public enum SharedQueueError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The database could not be reached, did not answer within the timeout, or the connection
    /// broke. The connection's state is unknown: close it and connect again.
    case unavailable(String)
    /// The database answered with an error (SQLSTATE and its message): e.g. a duplicate queue ID.
    case refused(sqlState: String, message: String)
    /// A spooled body could not be read to be stored in the database.
    case unreadableBody(String)
    /// A stored value this version cannot read back (written by hand or by a newer version).
    case unreadable(String)
    /// Queue control on a message the queue does not know.
    case notFound(String)
    /// Queue control that does not apply to the message in its state.
    case notApplicable(String, String)

    /// The reply for an SMTP client whose message could not be kept (RFC 5321 §4.2.3 `451`,
    /// RFC 3463 X.3.0).
    public var reply: SMTPReply {
        SMTPReply(451, .init(4, 3, 0), "Local error in processing (queue database unavailable), try again later")
    }

    public var description: String {
        switch self {
        case .unavailable(let why): "the shared queue's database is unavailable: \(why)"
        case .refused(let state, let message): "the shared queue's database refused the change (\(state)): \(message)"
        case .unreadableBody(let why): "a spooled body could not be read: \(why)"
        case .unreadable(let why): why
        case .notFound(let id): "no message \(id) in the shared queue"
        case .notApplicable(let id, let why): "message \(id): \(why)"
        }
    }
}

/// The envelope JSON `claimDue` builds in SQL (`SharedQueue.envelopeJSON`).
struct SharedQueueEnvelope: Decodable {
    struct Recipient: Decodable {
        var idx: Int
        var address: String
        var route: String
        var notify: String?
        var orcpt: String?
        var status: String
        var attempts: Int
        var lastReply: String?
    }
    var receivedAt: Double
    var sender: String
    var size: Int
    var bodyType: String?
    var smtputf8: Bool
    var ret: String?
    var envid: String?
    var clientAddress: String
    var helo: String
    var protocolName: String
    var tls: String?
    var tenant: String?
    var messageId: String?
    var addMessageId: Bool
    var subject: String?
    var stampLength: Int
    var attempts: Int
    var nextAttempt: Double?
    var state: String
    var bounceRequested: Bool
    var abruptCloses: Int
    var delayNoticeAt: Double?
    var authResults: String?
    var spf: String?
    var dkim: String?
    var dmarc: String?
    var addDate: Bool
    var recipients: [Recipient]
}

/// A batch of new messages as the insert statement's parameters: the envelopes, recipients and
/// trace events as JSON record sets (their optional columns as JSON nulls), the bodies as one
/// `bytea[]`, joined to the envelopes by position.
struct SharedQueueRows: Sendable {
    var messages: String
    var recipients: String
    var events: String
    var bodies: [ByteBuffer]
    /// The `dsn` trace event detail of each message, when the batch is a failed attempt's DSNs.
    var dsnDetails: [String]

    struct Message: Encodable {
        var n: Int
        var id, sender, clientAddress, helo, protocolName: String
        var receivedAt: Double
        var size, stampLength: Int
        var bodyType, ret, envid, tls, tenant, messageId, subject, authResults, spf, dkim, dmarc: String?
        var smtputf8, addMessageId, addDate: Bool
    }
    struct Recipient: Encodable {
        var message: String
        var idx: Int
        var address, route: String
        var notify, orcpt: String?
    }
    struct Event: Encodable {
        var time: Double
        var queueId: String
        var recipient: String?
        var kind: String
        var detail: String?
    }
    struct Outcome: Encodable {
        var idx: Int
        var status, kind, detail: String
    }

    init(_ batch: [NewMessage]) throws(SharedQueueError) {
        var messages: [Message] = []
        var recipients: [Recipient] = []
        var events: [Event] = []
        var bodies: [ByteBuffer] = []
        for (n, m) in batch.enumerated() {
            switch m.body {
            case .inline(let d): bodies.append(ByteBuffer(bytes: d))
            case .spooled(let path):
                do {
                    bodies.append(ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: path))))
                } catch {
                    throw .unreadableBody("\(path): \(error.localizedDescription)")
                }
            }
            messages.append(
                Message(
                    n: n + 1, id: m.id, sender: m.sender, clientAddress: m.clientAddress, helo: m.helo,
                    protocolName: m.protocolName, receivedAt: m.receivedAt.timeIntervalSince1970, size: m.size,
                    stampLength: m.stampLength, bodyType: m.bodyType?.rawValue, ret: m.ret?.rawValue,
                    envid: m.envelopeID, tls: m.tls, tenant: m.tenant, messageId: m.messageID, subject: m.subject,
                    authResults: m.authentication?.field, spf: m.authentication?.spf, dkim: m.authentication?.dkim,
                    dmarc: m.authentication?.dmarc, smtputf8: m.smtpUTF8, addMessageId: m.addMessageID,
                    addDate: m.addDate))
            for (i, r) in m.recipients.enumerated() {
                recipients.append(
                    Recipient(
                        message: m.id, idx: i, address: r.address, route: r.route.stored,
                        notify: r.notify?.description, orcpt: r.originalRecipient?.stored))
            }
            // The same words as SQLiteQueueStore's `received` event, so the trace reads alike.
            let detail = m.receivedEvent.detail
            events.append(
                Event(
                    time: m.receivedAt.timeIntervalSince1970, queueId: m.id, recipient: nil, kind: "received",
                    detail: detail))
        }
        self.messages = try Self.json(messages)
        self.recipients = try Self.json(recipients)
        self.events = try Self.json(events)
        self.bodies = bodies
        self.dsnDetails = batch.map { n in
            "DSN \(n.id) (\(n.subject ?? "report")) to <\(n.recipients.first?.address ?? "")>"
        }
    }

    static func outcomes(_ outcomes: [Int: RecipientOutcome]) throws(SharedQueueError) -> String {
        try json(
            outcomes.sorted { $0.key < $1.key }.map { idx, outcome in
                let r = outcome.recorded
                return Outcome(idx: idx, status: r.status.rawValue, kind: r.kind.rawValue, detail: r.detail)
            })
    }

    static func json(_ value: some Encodable) throws(SharedQueueError) -> String {
        do {
            let encoder = JSONEncoder()
            encoder.keyEncodingStrategy = .convertToSnakeCase
            return String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            throw .unavailable("could not encode a batch: \(error)")
        }
    }
}
