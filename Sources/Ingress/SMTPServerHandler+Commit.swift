import Foundation
import Logging
import MailMessage
import MailQueue
import NIOCore
import SMTPCore

/// The end of a transaction: the body made durable, sender authentication or the forged-field
/// removal asked when they apply, the message handed to the queue, and the answer carried back to
/// the session on the event loop. A body or queue write that fails is answered with a transient
/// reply that says why (`452 4.3.1` for a full disk), and the session goes on.
extension SMTPServerHandler {
    /// Makes the body durable, then hands the assembled message to the queue; the answer comes
    /// back to `commitFinished` on the event loop.
    func commit(_ tx: MailTransaction, _ context: ChannelHandlerContext) {
        guard let sink, let assembly else {
            perform(session.commitFailed())
            return
        }
        if let refusal = headerFromRefusal(headerScanner) {
            sink.discard()
            self.sink = nil
            self.assembly = nil
            perform(session.messageRefused(refusal))
            return
        }
        mode = .waiting
        committing = true
        commitStarted = context.eventLoop.now
        flushIfNeeded()
        self.sink = nil
        let id = assembly.queueID
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let boundSink = NIOLoopBound(sink, eventLoop: context.eventLoop)
        let committer = ctx.committer
        let logger = self.logger
        let headers = headerScanner
        let size = sink.size
        let tenant = policy.directory.owningTenant(of: tx)
        let receivedAt = ctx.now()
        let submitted = authenticatedAccount != nil
        sink.finish().whenComplete { result in
            switch result {
            case .failure(let error):
                logger.error("spool write failed: \(error)", metadata: ["queue_id": "\(id)"])
                boundSink.value.discard()
                bound.value.commitFinished(id: id, error: error)
            case .success(let body):
                let message = assembly.message(
                    transaction: tx, headers: headers, body: body, size: size, tenant: tenant, receivedAt: receivedAt,
                    submitted: submitted)
                guard let request = bound.value.authenticationRequest(tx, body: body, stampLength: message.stampLength)
                else {
                    guard let remover = bound.value.ctx.forgedResultsRemover,
                        headers.fields.contains(where: { $0.name.lowercased() == "authentication-results" })
                    else {
                        Self.hand(message, to: committer, bound)
                        return
                    }
                    let cleaned = bound.eventLoop.makePromise(of: (body: MessageBody, size: Int)?.self)
                    cleaned.completeWithTask {
                        try await remover.removeForgedResults(from: body, stampLength: message.stampLength)
                    }
                    cleaned.futureResult.whenComplete { result in
                        switch result {
                        case .success(let rewritten):
                            var clean = message
                            if let rewritten {
                                clean.body = rewritten.body
                                clean.size = rewritten.size
                            }
                            Self.hand(clean, to: committer, bound)
                        case .failure(let error):
                            if case .spooled(let path) = body { Spool.unlinkQuietly(path) }
                            bound.value.commitFinished(id: id, error: error)
                        }
                    }
                    return
                }
                let verdict = bound.eventLoop.makePromise(of: InboundAuthenticationVerdict.self)
                verdict.completeWithTask { await request.authenticator.authenticate(request.request) }
                verdict.futureResult.whenSuccess { verdict in
                    if let refusal = verdict.refusal {
                        if case .spooled(let path) = body { Spool.unlinkQuietly(path) }
                        bound.value.messageRefused(id: id, refusal, verdict.authentication)
                        return
                    }
                    var authenticated = message
                    authenticated.authentication = verdict.authentication
                    if let rewritten = verdict.rewrittenBody {
                        authenticated.body = rewritten.body
                        authenticated.size = rewritten.size
                    }
                    Self.hand(authenticated, to: committer, bound)
                }
            }
        }
    }

    /// Hands a message to the queue; the answer comes back to `commitFinished` on the event loop.
    static func hand(
        _ message: NewMessage, to committer: any MessageCommitter, _ bound: NIOLoopBound<SMTPServerHandler>
    ) {
        let id = message.id
        let body = message.body
        committer.commit(message) { error in
            bound.eventLoop.execute {
                if error != nil, case .spooled(let path) = body { Spool.unlinkQuietly(path) }
                bound.value.commitFinished(id: id, error: error)
            }
        }
    }

    /// Mail from another server (port 25, not a trusted network, not authenticated) is checked
    /// (SPF, DKIM, DMARC) when an authenticator is configured; nil when it is not to be checked.
    func authenticationRequest(_ tx: MailTransaction, body: MessageBody, stampLength: Int) -> (
        authenticator: any InboundAuthenticator, request: InboundAuthenticationRequest
    )? {
        guard let authenticator = ctx.inboundAuthenticator, listener == .mx, !clientTrusted,
            authenticatedAccount == nil
        else { return nil }
        let tenantName = policy.directory.owningTenant(of: tx)
        let honour = policy.directory.tenants.first { $0.name == tenantName }?.dmarcReject ?? false
        return (
            authenticator,
            InboundAuthenticationRequest(
                clientAddress: clientAddress, helo: session.helloName ?? "", mailFrom: tx.sender.address, body: body,
                stampLength: stampLength, honourReject: honour)
        )
    }

    /// Sender authentication refused the message (a DMARC reject the tenant honours).
    func messageRefused(id: String, _ reply: SMTPReply, _ authentication: SenderAuthentication) {
        committing = false
        if case .waiting = mode { mode = .commands }
        logger.notice(
            "refused by sender authentication", metadata: ["reply": "\(reply)", "auth": "\(authentication.summary)"])
        ctx.admission.recordRefusal(kind: "dmarc_reject", reply: reply, source: clientAddress)
        perform(session.messageRefused(reply))
        assembly = nil
        logger[metadataKey: "queue_id"] = nil
        if session.shuttingDown { perform(session.shutdownRequested()) }
        armTimeout()
        process()
        flushIfNeeded()
    }

    func commitFinished(id: String, error: Error?) {
        committing = false
        if case .waiting = mode { mode = .commands }
        if let error {
            logger.error("commit failed: \(error)", metadata: ["queue_id": "\(id)"])
            // A full disk is `452 4.3.1`, an I/O error or a locked queue `451 4.3.0` (StorageFault);
            // anything else the session's generic `451 4.3.0`. Never a `250`, never a `5xx`.
            if let reply = ctx.committer.storageReply(for: error) {
                perform(session.messageRefused(reply))
            } else {
                perform(session.commitFailed())
            }
        } else {
            logger.info("queued")
            let now = context?.eventLoop.now ?? commitStarted
            ctx.metrics.acceptance.recordNanoseconds(
                Int64(now.uptimeNanoseconds - commitStarted.uptimeNanoseconds))
            perform(session.messageCommitted(queueID: id))
        }
        assembly = nil
        logger[metadataKey: "queue_id"] = nil
        // Stopping: the transaction that was allowed to finish has finished.
        if session.shuttingDown { perform(session.shutdownRequested()) }
        armTimeout()
        process()
        flushIfNeeded()
    }
}
