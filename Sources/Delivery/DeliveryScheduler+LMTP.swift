import Foundation
import MailMessage
import MailQueue
import SMTPCore

extension DeliveryScheduler {
    /// Local recipients over LMTP (`delivery.lmtp`) instead of Maildir: one transaction for all of
    /// them, each with the mailbox server's own reply, mapped as for remote mail (2xx delivered, 4xx
    /// deferred, 5xx failed, so the planner sends the DSN).
    ///
    /// The message carries the same stamps as in a Maildir file, except `Return-Path`: the mailbox
    /// server writes it from `MAIL FROM` (Dovecot's LMTP does), and a second one would be a lie
    /// waiting to happen.
    func deliverByLMTP(
        _ m: StoredMessage, body: MessageBody, recipients: [StoredRecipient], through lmtp: LMTPDelivery
    ) async -> [Int: RecipientOutcome] {
        var outcomes: [Int: RecipientOutcome] = [:]
        let prefix: Data
        do {
            prefix = try deliveryStamps(m, body: body)
        } catch {
            for r in recipients {
                outcomes[r.index] = .deferred(reason: "451 4.3.0 Cannot read the stored message: \(error)")
            }
            return outcomes
        }
        let outBody = OutboundBody(prefix: prefix, reader: MessageBodyReader(body: body, skip: m.stampLength))
        let local = recipients.compactMap { r -> (StoredRecipient, String)? in
            guard case .local(let domain, let mailbox) = r.recipient.route else { return nil }
            return (r, "\(mailbox)@\(domain)")
        }
        guard !local.isEmpty else { return outcomes }
        let env = OutboundEnvelope(
            sender: m.sender,
            recipients: local.map {
                OutboundRecipient(
                    address: $0.1, notify: $0.0.recipient.notify, originalRecipient: $0.0.recipient.originalRecipient)
            }, size: outBody.size, eightBit: m.bodyType == .eightBitMIME, smtpUTF8: m.smtpUTF8, ret: m.ret,
            envelopeID: m.envelopeID)
        let server = "\(lmtp.settings.address)"
        for result in await lmtp.deliver(env, body: outBody) where local.indices.contains(result.index) {
            let (r, address) = local[result.index]
            let text = "\(result.reply) (LMTP \(server), <\(address)>)"
            switch result.disposition {
            case .delivered: outcomes[r.index] = .delivered(detail: text)
            case .deferred: outcomes[r.index] = .deferred(reason: text)
            case .failed: outcomes[r.index] = .failed(reason: text)
            }
        }
        return outcomes
    }
}
