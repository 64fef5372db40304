import Foundation
import MailMessage
import MailQueue
import SMTPCore

/// One incoming message as the queue will store it, put together from what the session learnt.
///
/// Made when the body starts, from the transaction and the connection (client, HELO name,
/// protocol, TLS): that is when the `Received:` stamp (RFC 5321 §4.4) is written in front of the
/// body. The `NewMessage` itself is only built once the body is complete and durable, so it never
/// holds a placeholder body:
///
/// ```swift
/// let assembly = MessageAssembly(queueID: id, transaction: tx, hostname: "mx.test", clientAddress: "192.0.2.1",
///                                helo: "client.test", protocolName: "ESMTPS", tls: .init(version: "TLSv1.3"),
///                                startedAt: now)
/// sink.append(assembly.stamp)
/// // ... body streamed, then spooled:
/// let message = assembly.message(transaction: tx, headers: scanner, body: body, size: sink.size,
///                                tenant: directory.owningTenant(of: tx), receivedAt: now)
/// ```
struct MessageAssembly: Sendable, Equatable {
    var queueID: String
    /// This server's name, in the stamp and in a Message-ID it adds.
    var hostname: String
    var clientAddress: String
    /// The client's HELO/EHLO name; nil if it sent none (then `unknown` in the stamp).
    var helo: String?
    /// RFC 3848 `with` name (`ESMTPS`, `UTF8SMTP`, ...).
    var protocolName: String
    var tls: HeaderStamps.TLSInfo?
    /// When the body started: the date in the stamp.
    var startedAt: Date
    /// The recipient named in `for <...>`: only when the message has exactly one (RFC 5321 §4.4
    /// leaves it optional; naming one of several would disclose the others' presence).
    var singleRecipient: String?
    /// The stamp leaves out the client's name and address (a submitting user's tenant asked for it).
    var hideClient = false

    init(
        queueID: String, transaction: MailTransaction, hostname: String, clientAddress: String, helo: String?,
        protocolName: String, tls: HeaderStamps.TLSInfo?, startedAt: Date
    ) {
        self.queueID = queueID
        self.hostname = hostname
        self.clientAddress = clientAddress
        self.helo = helo
        self.protocolName = protocolName
        self.tls = tls
        self.startedAt = startedAt
        let recipients = DuplicateRecipientFilter.unique(transaction.recipients)
        self.singleRecipient =
            recipients.count == 1 ? recipients[0].path.description.trimmingCharacters(in: ["<", ">"]) : nil
    }

    /// The `Received:` field written in front of the body; its length is the message's `stampLength`.
    var stamp: String {
        HeaderStamps.received(
            helo: helo ?? "unknown", clientAddress: hideClient ? nil : clientAddress, by: hostname,
            protocolName: protocolName, tls: tls,
            queueID: queueID, singleRecipient: singleRecipient, date: startedAt)
    }

    /// The message to commit, once its body is on disk (or small enough to store inline).
    ///
    /// - `size`: octets of the stored body, stamp included;
    /// - `tenant`: the tenant it is recorded under (`TenantDirectory.owningTenant(of:)`);
    /// - `receivedAt`: when the body was complete (the queue's received time);
    /// - `submitted`: it came from an authenticated user, so a missing `Date:` is added at delivery.
    func message(
        transaction tx: MailTransaction, headers: HeaderScanner, body: MessageBody, size: Int, tenant: String?,
        receivedAt: Date, submitted: Bool = false
    ) -> NewMessage {
        let messageID = headers.messageID
        var message = NewMessage(
            id: queueID, receivedAt: receivedAt, sender: tx.sender.address,
            recipients: DuplicateRecipientFilter.unique(tx.recipients).map { r in
                EnvelopeRecipient(
                    address: Self.address(r.path), route: r.route, notify: r.parameters.notify,
                    originalRecipient: r.parameters.originalRecipient)
            },
            size: size, bodyType: tx.parameters.body, smtpUTF8: tx.parameters.smtpUTF8, ret: tx.parameters.ret,
            envelopeID: tx.parameters.envelopeID, clientAddress: clientAddress, helo: helo ?? "",
            protocolName: protocolName, tls: tls?.version, tenant: tenant,
            messageID: messageID ?? HeaderStamps.messageID(queueID: queueID, host: hostname),
            addMessageID: messageID == nil,
            // RFC 5322 §2.1.1: a line is at most 998 characters; the subject is shown, never reparsed.
            subject: headers.subject.map { String($0.prefix(998)) }, stampLength: stamp.utf8.count, body: body)
        message.addDate = submitted && headers.value(of: "Date") == nil
        return message
    }

    /// The envelope address of a recipient: `postmaster` for `<Postmaster>` (RFC 5321 §4.1.1.3).
    static func address(_ path: ForwardPath) -> String {
        switch path {
        case .postmaster: return "postmaster"
        case .mailbox(let m): return m.description
        }
    }
}
