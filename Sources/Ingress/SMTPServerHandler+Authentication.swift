import Accounts
import MailMessage
import NIOCore
import SMTPCore

/// AUTH on the submission listeners (RFC 4954): runs the `SASLExchange` the session asked for,
/// looks the user up and checks the password on the thread pool, slows and then locks out a source
/// that keeps failing, and keeps an authenticated user to its tenant's sender addresses.
extension SMTPServerHandler {
    static let invalidCredentials = SMTPReply(535, .init(5, 7, 8), "Authentication credentials invalid")
    static let temporaryFailure = SMTPReply(454, .init(4, 7, 0), "Temporary authentication failure, try again later")

    func startAuthentication(_ name: String, _ initialResponse: String?) {
        guard ctx.accounts != nil, let mechanism = SASLExchange.Mechanism(rawValue: name) else {
            perform(session.authenticationFinished(.failure(Self.temporaryFailure)))
            return
        }
        if ctx.authGuard.isLockedOut(source: clientAddress) {
            perform(session.authenticationFinished(.failureAndClose(lockoutReply)))
            return
        }
        var rng = SystemRandomNumberGenerator()
        var exchange = SASLExchange(
            mechanism: mechanism, serverNonce: SASLExchange.makeNonce(using: &rng), standInSecret: ctx.standInSecret)
        // The session let through only `=` or strict base64.
        let initial = initialResponse.map { $0 == "=" ? [] : SASLBase64.decode($0) ?? [] }
        let step = exchange.start(initialResponse: initial)
        sasl = exchange
        handle(step)
    }

    func continueAuthentication(_ line: String) {
        guard var exchange = sasl, let bytes = SASLBase64.decode(line) else {
            sasl = nil
            perform(session.authenticationFinished(.failure(Self.temporaryFailure)))
            return
        }
        let step = exchange.response(bytes)
        sasl = exchange
        handle(step)
    }

    /// A bad or overlong line inside an exchange ends it; elsewhere it is a refused command.
    func rejectLine(_ reply: SMTPReply) {
        if session.isAuthenticating {
            sasl = nil
            perform(session.authenticationFinished(.failure(reply)))
        } else {
            perform(session.commandRejected(SMTPCommandError(reply)))
        }
    }

    func handle(_ step: SASLExchange.Step) {
        switch step {
        case .challenge(let bytes):
            perform(session.authenticationChallenge(SASLBase64.encode(bytes)))
        case .lookup(let username):
            lookUp(username)
        case .succeeded(let account):
            let mechanism = sasl?.mechanism.rawValue ?? "?"
            sasl = nil
            authenticatedAccount = account
            logger[metadataKey: "user"] = "\(account.username)"
            logger.info("authenticated", metadata: ["mechanism": "\(mechanism)"])
            perform(session.authenticationFinished(.success(identity: account.username)))
        case .failed(.malformed(let why)):
            sasl = nil
            perform(
                session.authenticationFinished(
                    .failure(SMTPReply(501, .init(5, 5, 2), "Malformed authentication response: \(why)"))))
        case .failed(.invalidCredentials), .failed(.unsupported):
            sasl = nil
            failed()
        }
    }

    /// Finds the account and lets the exchange use it (a PBKDF2 for PLAIN and LOGIN), on the KDF pool,
    /// at most `AuthenticationGuard.maxInFlight` at once server-wide.
    func lookUp(_ username: String) {
        guard let accounts = ctx.accounts, let exchange = sasl, let context else { return }
        // A source locked out while this exchange ran gets no more password checks.
        if ctx.authGuard.isLockedOut(source: clientAddress) {
            sasl = nil
            perform(session.authenticationFinished(.failureAndClose(lockoutReply)))
            return
        }
        guard ctx.authGuard.beginCheck() else {
            sasl = nil
            perform(
                session.authenticationFinished(
                    .failure(SMTPReply(454, .init(4, 7, 0), "Too many authentications in progress, try again later"))))
            return
        }
        mode = .waiting
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let guardian = ctx.authGuard
        let source = clientAddress
        let submission = policy.submission
        ctx.kdfPool.runIfActive(eventLoop: context.eventLoop) { () throws -> SASLExchange.Answer in
            var x = exchange
            let step = x.account(try accounts.account(username: username))
            return SASLExchange.Answer(exchange: x, step: step)
        }.whenComplete { result in
            guardian.endCheck()
            let handler = bound.value
            guard case .waiting = handler.mode else {
                // The client left while its password was checked: a wrong one still counts.
                if case .success(let answer) = result, case .failed(.invalidCredentials) = answer.step {
                    _ = guardian.recordFailure(source: source, policy: submission)
                }
                return
            }
            handler.mode = .commands
            switch result {
            case .success(let answer):
                handler.sasl = answer.exchange
                handler.handle(answer.step)
            case .failure(let error):
                handler.logger.error("account lookup failed: \(error)")
                handler.sasl = nil
                handler.perform(handler.session.authenticationFinished(.failure(Self.temporaryFailure)))
            }
            handler.resumeAfterAuthentication()
        }
    }

    /// Wrong user, password or proof: the reply waits a little longer for each failure from this
    /// source, and past the limit the source is locked out (a throttle event, `421 4.7.0`).
    func failed() {
        switch ctx.authGuard.recordFailure(source: clientAddress, policy: policy.submission) {
        case .lockOut:
            let reply = lockoutReply
            ctx.admission.recordRefusal(kind: "auth_failures", reply: reply, source: clientAddress)
            perform(session.authenticationFinished(.failureAndClose(reply)))
        case .delay(let seconds):
            guard let context, seconds > 0 else {
                perform(session.authenticationFinished(.failure(Self.invalidCredentials)))
                return
            }
            mode = .waiting
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
                let handler = bound.value
                guard case .waiting = handler.mode else { return }
                handler.mode = .commands
                handler.perform(handler.session.authenticationFinished(.failure(Self.invalidCredentials)))
                handler.resumeAfterAuthentication()
            }
        }
    }

    var lockoutReply: SMTPReply {
        SMTPReply(421, .init(4, 7, 0), "Too many failed authentication attempts, try again later")
    }

    func resumeAfterAuthentication() {
        armTimeout()
        process()
        flushIfNeeded()
    }

    /// An authenticated user sends only as an address of its own tenant (Exchange's `550 5.7.60`),
    /// and at most `messagesPerMinute` messages (`450 4.7.1`, a throttle event).
    func senderRefusal(_ sender: ReversePath) -> SMTPReply? {
        guard let account = authenticatedAccount else { return nil }
        let domains = policy.directory.tenants.first { $0.name == account.tenant }?.domains ?? []
        guard case .mailbox(let m) = sender, domains.contains(m.domain.lowercased()) else {
            return SMTPReply(
                550, .init(5, 7, 60), "Client does not have permission to send as \(sender) (user \(account.username))")
        }
        guard ctx.submissionQuota.admitMessage(user: account.username, policy: policy.submission) else {
            let reply = SMTPReply(
                450, .init(4, 7, 1),
                "User \(account.username) exceeded \(policy.submission.messagesPerMinute) messages a minute, try again later"
            )
            ctx.admission.recordRefusal(
                kind: "user_message_rate", reply: reply, source: clientAddress, tenant: account.tenant)
            return reply
        }
        return nil
    }

    /// What an authenticated user submits says it is from its own tenant in the header too (Exchange's
    /// SendAs check, `550 5.7.60`): one From address in one of the tenant's domains.
    func headerFromRefusal(_ headers: HeaderScanner) -> SMTPReply? {
        guard let account = authenticatedAccount else { return nil }
        let domains = policy.directory.tenants.first { $0.name == account.tenant }?.domains ?? []
        let froms = headers.fields.filter { $0.name.lowercased() == "from" }
        guard froms.count == 1 else {
            return SMTPReply(
                550, .init(5, 7, 60), "The message needs exactly one From field (it has \(froms.count))")
        }
        if case .domain(let d) = FromField.identity(value: froms[0].value), domains.contains(d) { return nil }
        return SMTPReply(
            550, .init(5, 7, 60),
            "Client does not have permission to send as the message's From (user \(account.username))")
    }

    /// An authenticated user's recipients count against its day budget (`554 5.2.0`, a throttle
    /// event, as Exchange Online's submission quota answers).
    func recipientRefusal() -> SMTPReply? {
        guard let account = authenticatedAccount,
            !ctx.submissionQuota.admitRecipient(user: account.username, policy: policy.submission)
        else { return nil }
        let reply = SMTPReply(
            554, .init(5, 2, 0),
            "User \(account.username) exceeded \(policy.submission.recipientsPerDay) recipients a day")
        ctx.admission.recordRefusal(
            kind: "user_recipients_per_day", reply: reply, source: clientAddress, tenant: account.tenant)
        return reply
    }
}

extension SASLExchange {
    /// The exchange after the pool used it, with what it decided.
    struct Answer: Sendable {
        var exchange: SASLExchange
        var step: SASLExchange.Step
    }
}
