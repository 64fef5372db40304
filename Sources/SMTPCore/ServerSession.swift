/// Settings a server session needs; everything else it learns through events.
public struct ServerSessionConfiguration: Sendable, Equatable {
    /// Used in the greeting and replies (RFC 5321 §4.1.3).
    public var hostname: String
    /// RFC 1870 SIZE, enforced on the declared size at MAIL and on the real size.
    public var maxMessageSize: Int
    /// Recipients per transaction; past it `452 4.5.3` (RFC 5321 §4.5.3.1.8).
    public var maxRecipients: Int
    /// Replies of class 4 or 5 a session may earn before `421 4.7.0` closes it.
    public var maxErrors: Int
    /// Whether STARTTLS can be offered at all (a certificate is loaded).
    public var tlsAvailable: Bool
    /// Recipients of one domain per transaction; past it `452 4.5.3` (Exchange: 200).
    public var maxRecipientsPerDomain: Int
    /// SASL authentication (RFC 4954) on this listener; nil offers none (port 25 by default).
    public var authentication: AuthenticationOffer?
    /// The session runs inside TLS from its first byte (RFC 8314 §3, port 465): no STARTTLS.
    public var implicitTLS = false

    public init(
        hostname: String, maxMessageSize: Int = SMTPLimits.defaultMessageSize,
        maxRecipients: Int = SMTPLimits.defaultRecipientsPerMessage, maxErrors: Int = 20, tlsAvailable: Bool = true,
        maxRecipientsPerDomain: Int = 200, authentication: AuthenticationOffer? = nil
    ) {
        self.authentication = authentication
        self.maxRecipientsPerDomain = maxRecipientsPerDomain
        self.hostname = hostname
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.maxErrors = maxErrors
        self.tlsAvailable = tlsAvailable
    }
}

/// What a listener offers for SASL authentication (RFC 4954) and whether it requires it.
public struct AuthenticationOffer: Sendable, Equatable {
    /// Mechanism names in the order advertised (`PLAIN`, `LOGIN`, `SCRAM-SHA-256`).
    public var mechanisms: [String]
    /// AUTH only inside TLS (RFC 8314 §4.1; Postfix's `smtpd_tls_auth_only`): before STARTTLS it is
    /// not advertised and answered `530 5.7.0`.
    public var requireTLS: Bool
    /// Submission (RFC 6409 §4.3): a message needs an authenticated session (`530 5.7.0` at MAIL).
    public var required: Bool

    public init(mechanisms: [String], requireTLS: Bool = true, required: Bool = true) {
        self.mechanisms = mechanisms
        self.requireTLS = requireTLS
        self.required = required
    }
}

/// How a SASL exchange the shell ran ended.
public enum AuthenticationOutcome: Equatable, Sendable {
    /// `235 2.7.0`; the identity is the authenticated user.
    case success(identity: String)
    /// The exchange failed (`535 5.7.8`, `454 4.7.0`, `501 5.5.2`, ...); the session goes on.
    case failure(SMTPReply)
    /// The source is locked out (`421 4.7.0`): the reply, then close.
    case failureAndClose(SMTPReply)
}

/// A recipient the policy accepted, with the route it chose (carried, never read, by the session).
public struct AcceptedRecipient: Hashable, Sendable {
    public var path: ForwardPath
    public var parameters: RecipientParameters
    public var route: Route

    public init(path: ForwardPath, parameters: RecipientParameters, route: Route) {
        self.path = path
        self.parameters = parameters
        self.route = route
    }
}

/// One mail transaction as the session has built it (RFC 5321 §3.3).
public struct MailTransaction: Hashable, Sendable {
    public var sender: ReversePath
    public var parameters: MailParameters
    public var recipients: [AcceptedRecipient] = []
    /// `true` once a BDAT chunk has been accepted: DATA is no longer allowed (RFC 3030 §2).
    public var chunking = false

    public init(sender: ReversePath, parameters: MailParameters) {
        self.sender = sender
        self.parameters = parameters
    }
}

/// The server side of an SMTP session as a state machine, free of I/O (RFC 5321 §4.1, §4.3.2, with
/// PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN and STARTTLS).
///
/// Each event returns the `Action` the I/O shell must carry out; business decisions (is this
/// recipient ours? is the message on disk?) come back as events.
///
/// ```swift
/// var s = ServerSession(configuration: .init(hostname: "mx.test"))
/// _ = s.greeting()
/// s.commandReceived(.helo("client.test"))  // .send(250 mx.test ...)
/// ```
public struct ServerSession: Sendable {
    /// Why the session refused something, when it is a limit the server's throttle log counts
    /// (the shell records these; other refusals are the client's own mistakes).
    public enum RefusalKind: Sendable, Equatable {
        /// Over the message size limit: declared (RFC 1870 `SIZE=`), counted in the body, or a
        /// tenant's own limit (`552 5.3.4`).
        case messageSize
        /// Over the recipients per transaction (RFC 5321 §4.5.3.1.8, `452 4.5.3`).
        case recipientsPerTransaction
        /// Over the recipients of one domain per transaction (`452 4.5.3`).
        case recipientsPerDomain
        /// Too many error replies on one connection (`421 4.7.0`, then close).
        case tooManyErrors
    }

    public enum Action: Equatable, Sendable {
        /// Send a reply; `refusal` says which limit it enforces, if it is one.
        case send(SMTPReply, refusal: RefusalKind? = nil)
        case sendAndClose(SMTPReply, refusal: RefusalKind? = nil)
        /// Send the reply, discard every byte already received after the STARTTLS line
        /// (CVE-2011-0411), then start the TLS handshake.
        case startTLS(SMTPReply)
        /// Ask admission control whether this source may start a message; answer with `senderChecked`.
        case checkSender(ReversePath, MailParameters)
        /// Ask the recipient policy; answer with `recipientChecked`.
        case checkRecipient(ForwardPath, RecipientParameters)
        /// Send the 354 reply and read a dot-terminated body; answer with `dataReceived`.
        case receiveData(SMTPReply)
        /// Read exactly `size` octets of BDAT content; store them only if `store`. Answer with
        /// `chunkReceived`.
        case receiveChunk(size: Int, last: Bool, store: Bool)
        /// The body is complete and clean: make the transaction durable; answer with
        /// `messageCommitted` or `commitFailed`.
        case commit(MailTransaction)
        /// Start a SASL exchange (RFC 4954 §4); answer with `authenticationChallenge` or
        /// `authenticationFinished`. Lines that follow go to `authenticationResponse`, not the parser.
        case authenticate(mechanism: String, initialResponse: String?)
        /// A client response line of the exchange (base64, not `*`); answer as for `authenticate`.
        case continueAuthentication(String)
        case none
    }

    enum Phase: Equatable, Sendable {
        case awaitingHello
        case ready
        case checkingSender
        case checkingRecipient
        case receivingData
        case receivingChunk(last: Bool, store: Bool)
        case committing
        case startingTLS
        /// Inside a SASL exchange: waiting for the shell (a challenge or a verdict) or for the
        /// client's response line.
        case authenticating
        case closed
    }

    public enum HelloKind: Sendable, Equatable {
        case none
        case helo
        case ehlo
    }

    public let configuration: ServerSessionConfiguration
    var phase: Phase = .awaitingHello
    public private(set) var transaction: MailTransaction?
    public private(set) var helloName: String?
    public private(set) var helloKind: HelloKind = .none
    public private(set) var tlsActive = false
    public private(set) var errorCount = 0
    public private(set) var shuttingDown = false
    /// The user a SASL exchange authenticated (RFC 4954); nil until then, and again after STARTTLS.
    public private(set) var authenticatedIdentity: String?
    /// Set when a BDAT chunk of a failed transaction is being discarded: the reply for it.
    var discardedChunkReply: SMTPReply?

    public init(configuration: ServerSessionConfiguration) {
        self.configuration = configuration
        self.tlsActive = configuration.implicitTLS
    }

    var host: String { configuration.hostname }

    /// The `with` protocol name for `Received:` (RFC 3848, RFC 6531 §3.7.3).
    public var receivedProtocol: String {
        let utf8 = transaction?.parameters.smtpUTF8 == true
        let base: String
        switch (helloKind, tlsActive, utf8) {
        case (.ehlo, true, true): base = "UTF8SMTPS"
        case (.ehlo, false, true): base = "UTF8SMTP"
        case (.ehlo, true, false): base = "ESMTPS"
        case (.ehlo, false, false): base = "ESMTP"
        default: return "SMTP"
        }
        // RFC 3848 §2: ESMTPA, ESMTPSA (and RFC 6531's UTF8SMTPA, UTF8SMTPSA) once authenticated.
        return authenticatedIdentity == nil ? base : base + "A"
    }

    /// Whether the shell must hand the next line to `authenticationResponse` instead of the parser.
    public var isAuthenticating: Bool { phase == .authenticating }

    /// AUTH is advertised and accepted in this state of the session.
    var authenticationUsable: Bool {
        guard let offer = configuration.authentication else { return false }
        return tlsActive || !offer.requireTLS
    }

    public var isClosed: Bool { phase == .closed }

    /// Whether a transaction is between MAIL and its final reply.
    public var inTransaction: Bool { transaction != nil || phase == .committing }

    // MARK: events

    public mutating func greeting() -> Action {
        if shuttingDown {
            phase = .closed
            return .sendAndClose(SMTPReply(421, .init(4, 3, 2), "\(host) Service shutting down, try again later"))
        }
        return .send(SMTPReply(220, nil, "\(host) ESMTP Mailflow ready"))
    }

    /// A syntactically bad line, or one the framing refused (too long, bare LF, not UTF-8).
    public mutating func commandRejected(_ error: SMTPCommandError) -> Action {
        guard phase != .closed else { return .none }
        return reply(error.reply)
    }

    public mutating func commandReceived(_ command: SMTPCommand) -> Action {
        switch phase {
        case .closed:
            return .none
        case .checkingSender, .checkingRecipient, .receivingData, .receivingChunk, .committing, .startingTLS,
            .authenticating:
            // The shell never delivers commands in these phases; refuse rather than trap.
            return reply(SMTPReply(503, .init(5, 5, 1), "Bad sequence of commands"))
        case .awaitingHello, .ready:
            break
        }
        if shuttingDown && transaction == nil, command != .quit {
            phase = .closed
            return .sendAndClose(
                SMTPReply(421, .init(4, 3, 2), "\(host) Service shutting down, closing transmission channel"))
        }

        switch command {
        case .ehlo(let name):
            helloName = name
            helloKind = .ehlo
            transaction = nil
            phase = .ready
            var lines = [
                "\(host) Hello \(name)", "PIPELINING", "SIZE \(configuration.maxMessageSize)", "8BITMIME",
                "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN",
            ]
            if configuration.tlsAvailable && !tlsActive { lines.append("STARTTLS") }
            if authenticationUsable, let offer = configuration.authentication, !offer.mechanisms.isEmpty {
                lines.append((["AUTH"] + offer.mechanisms).joined(separator: " "))
            }
            lines.append("HELP")
            return .send(SMTPReply(250, nil, lines: lines))
        case .helo(let name):
            helloName = name
            helloKind = .helo
            transaction = nil
            phase = .ready
            return .send(SMTPReply(250, nil, "\(host) Hello \(name)"))
        case .mail(let sender, let params):
            guard phase == .ready else { return reply(SMTPReply(503, .init(5, 5, 1), "Send EHLO or HELO first")) }
            guard transaction == nil else { return reply(SMTPReply(503, .init(5, 5, 1), "Nested MAIL command")) }
            if helloKind == .helo
                && (params.smtpUTF8 || params.body != nil || params.size != nil || params.ret != nil
                    || params.envelopeID != nil || params.authenticatedSubmitter != nil)
            {
                return reply(SMTPReply(555, .init(5, 5, 4), "MAIL parameters need EHLO"))
            }
            // RFC 4954 §5: AUTH= belongs to servers that offer AUTH.
            if params.authenticatedSubmitter != nil, !authenticationUsable {
                return reply(SMTPReply(555, .init(5, 5, 4), "Unsupported parameter AUTH"))
            }
            if configuration.authentication?.required == true, authenticatedIdentity == nil {
                return reply(SMTPReply(530, .init(5, 7, 0), "Authentication required"))
            }
            if let size = params.size, size > configuration.maxMessageSize {
                return reply(
                    SMTPReply(
                        552, .init(5, 3, 4),
                        "Message size exceeds fixed maximum message size of \(configuration.maxMessageSize) octets"),
                    refusal: .messageSize)
            }
            phase = .checkingSender
            return .checkSender(sender, params)
        case .rcpt(let path, let params):
            guard let tx = transaction else {
                return reply(SMTPReply(503, .init(5, 5, 1), "Need MAIL before RCPT"))
            }
            guard !tx.chunking else { return reply(SMTPReply(503, .init(5, 5, 1), "RCPT not allowed during BDAT")) }
            if case .mailbox(let m) = path, m.needsSMTPUTF8, !tx.parameters.smtpUTF8 {
                return reply(
                    SMTPReply(553, .init(5, 6, 7), "UTF-8 recipient address needs the SMTPUTF8 parameter on MAIL"))
            }
            if case .mailbox(let m) = path {
                let domain = m.domain.lowercased()
                let sameDomain = tx.recipients.count { r in
                    if case .mailbox(let o) = r.path { return o.domain.lowercased() == domain }
                    return false
                }
                guard sameDomain < configuration.maxRecipientsPerDomain else {
                    return reply(
                        SMTPReply(
                            452, .init(4, 5, 3),
                            "Too many recipients for \(m.domain) in one transaction, send the rest in another"),
                        refusal: .recipientsPerDomain)
                }
            }
            guard tx.recipients.count < configuration.maxRecipients else {
                return reply(
                    SMTPReply(452, .init(4, 5, 3), "Too many recipients, send the rest in another transaction"),
                    refusal: .recipientsPerTransaction)
            }
            phase = .checkingRecipient
            return .checkRecipient(path, params)
        case .data:
            guard let tx = transaction else { return reply(SMTPReply(503, .init(5, 5, 1), "Need MAIL before DATA")) }
            guard !tx.chunking else { return reply(SMTPReply(503, .init(5, 5, 1), "DATA not allowed after BDAT")) }
            guard !tx.recipients.isEmpty else {
                return reply(SMTPReply(503, .init(5, 5, 1), "Need RCPT before DATA"))
            }
            phase = .receivingData
            return .receiveData(SMTPReply(354, nil, "End data with <CR><LF>.<CR><LF>"))
        case .bdat(let size, let last):
            if let tx = transaction, !tx.recipients.isEmpty {
                transaction?.chunking = true
                phase = .receivingChunk(last: last, store: true)
                return .receiveChunk(size: size, last: last, store: true)
            }
            // The octets must be read either way, or they would be taken for commands (RFC 3030 §2).
            discardedChunkReply = SMTPReply(
                503, .init(5, 5, 1), transaction == nil ? "Need MAIL before BDAT" : "Need RCPT before BDAT")
            phase = .receivingChunk(last: last, store: false)
            return .receiveChunk(size: size, last: last, store: false)
        case .rset:
            transaction = nil
            return .send(SMTPReply(250, .init(2, 0, 0), "Ok"))
        case .noop:
            return .send(SMTPReply(250, .init(2, 0, 0), "Ok"))
        case .quit:
            phase = .closed
            return .sendAndClose(SMTPReply(221, .init(2, 0, 0), "\(host) closing connection"))
        case .vrfy:
            return .send(
                SMTPReply(252, .init(2, 5, 0), "Cannot VRFY user, but will accept message and attempt delivery"))
        case .help:
            return .send(
                SMTPReply(
                    214, .init(2, 0, 0),
                    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"))
        case .startTLS:
            guard configuration.tlsAvailable else {
                return reply(SMTPReply(502, .init(5, 5, 1), "STARTTLS not available"))
            }
            guard !tlsActive else { return reply(SMTPReply(503, .init(5, 5, 1), "TLS already active")) }
            guard phase == .ready else { return reply(SMTPReply(503, .init(5, 5, 1), "Send EHLO first")) }
            guard transaction == nil else {
                return reply(SMTPReply(503, .init(5, 5, 1), "STARTTLS not allowed during a mail transaction"))
            }
            phase = .startingTLS
            return .startTLS(SMTPReply(220, .init(2, 0, 0), "Ready to start TLS"))
        case .auth(let mechanism, let initialResponse):
            guard let offer = configuration.authentication else {
                return reply(SMTPReply(503, .init(5, 5, 1), "Authentication not enabled"))
            }
            guard phase == .ready, helloKind == .ehlo else {
                return reply(SMTPReply(503, .init(5, 5, 1), "Send EHLO first"))
            }
            guard tlsActive || !offer.requireTLS else {
                return reply(SMTPReply(530, .init(5, 7, 0), "Must issue a STARTTLS command first"))
            }
            guard authenticatedIdentity == nil else {
                return reply(SMTPReply(503, .init(5, 5, 1), "Already authenticated"))
            }
            guard transaction == nil else {
                return reply(SMTPReply(503, .init(5, 5, 1), "AUTH not allowed during a mail transaction"))
            }
            guard offer.mechanisms.contains(mechanism) else {
                return reply(SMTPReply(504, .init(5, 5, 4), "Unrecognized authentication type"))
            }
            phase = .authenticating
            return .authenticate(mechanism: mechanism, initialResponse: initialResponse)
        }
    }

    // MARK: authentication (RFC 4954)

    /// The mechanism's next challenge, base64 as it goes on the wire (`334 <challenge>`).
    public mutating func authenticationChallenge(_ base64: String) -> Action {
        guard phase == .authenticating else { return .none }
        return .send(SMTPReply(334, nil, base64))
    }

    /// A line the client sent inside the exchange: `*` cancels (RFC 4954 §4, `501 5.0.0`),
    /// anything else goes to the mechanism.
    public mutating func authenticationResponse(_ line: String) -> Action {
        guard phase == .authenticating else { return .none }
        if line == "*" {
            phase = .ready
            return reply(SMTPReply(501, .init(5, 0, 0), "Authentication cancelled"))
        }
        guard line.isEmpty || SASLBase64.isWellFormed(line[...]) else {
            phase = .ready
            return reply(SMTPReply(501, .init(5, 5, 2), "Invalid base64 in the authentication response"))
        }
        return .continueAuthentication(line)
    }

    public mutating func authenticationFinished(_ outcome: AuthenticationOutcome) -> Action {
        guard phase == .authenticating else { return .none }
        switch outcome {
        case .success(let identity):
            phase = .ready
            authenticatedIdentity = identity
            return .send(SMTPReply(235, .init(2, 7, 0), "Authentication successful"))
        case .failure(let r):
            phase = .ready
            return reply(r)
        case .failureAndClose(let r):
            phase = .closed
            return .sendAndClose(r)
        }
    }

    /// What the recipient policy decided: a route to store with the recipient, or a refusal.
    public enum RecipientDecision: Equatable, Sendable {
        case accept(route: Route)
        /// Refuse this recipient; `refusal` says which limit refused it, if one did.
        case reject(SMTPReply, refusal: RefusalKind? = nil)
        /// Refuse and end the session (a full resource forest: `421 4.3.2`).
        case rejectAndClose(SMTPReply)
    }

    /// What admission control decided about a new message (`MAIL`) from this source.
    public enum SenderDecision: Equatable, Sendable {
        case accept
        case reject(SMTPReply)
        /// Refuse and end the session (a rate limit that closes: `421 4.7.0`).
        case rejectAndClose(SMTPReply)
    }

    /// What admission control said about a new message from this source.
    public mutating func senderChecked(
        _ sender: ReversePath, _ params: MailParameters, _ decision: SenderDecision
    ) -> Action {
        guard phase == .checkingSender else { return .none }
        phase = .ready
        switch decision {
        case .accept:
            transaction = MailTransaction(sender: sender, parameters: params)
            return .send(SMTPReply(250, .init(2, 1, 0), "Sender \(sender) OK"))
        case .reject(let r):
            return reply(r)
        case .rejectAndClose(let r):
            phase = .closed
            return .sendAndClose(r)
        }
    }

    public mutating func recipientChecked(
        _ path: ForwardPath, _ params: RecipientParameters, _ decision: RecipientDecision
    ) -> Action {
        guard phase == .checkingRecipient else { return .none }
        phase = .ready
        switch decision {
        case .accept(let route):
            transaction?.recipients.append(AcceptedRecipient(path: path, parameters: params, route: route))
            return .send(SMTPReply(250, .init(2, 1, 5), "Recipient \(path) OK"))
        case .reject(let r, let refusal):
            return reply(r, refusal: refusal)
        case .rejectAndClose(let r):
            phase = .closed
            transaction = nil
            return .sendAndClose(r)
        }
    }

    /// The DATA body ended (after `CRLF.CRLF`); `violation` is what the decoder found, if anything.
    public mutating func dataReceived(violation: BodyViolation?) -> Action {
        guard phase == .receivingData, let tx = transaction else { return .none }
        if let violation {
            transaction = nil
            phase = .ready
            return refuse(violation)
        }
        phase = .committing
        return .commit(tx)
    }

    /// One BDAT chunk has been read in full.
    public mutating func chunkReceived(violation: BodyViolation?) -> Action {
        guard case .receivingChunk(let last, let store) = phase else { return .none }
        phase = .ready
        if !store {
            let r = discardedChunkReply ?? SMTPReply(503, .init(5, 5, 1), "Bad sequence of commands")
            discardedChunkReply = nil
            return reply(r)
        }
        if let violation {
            transaction = nil
            return refuse(violation)
        }
        guard last, let tx = transaction else {
            return .send(SMTPReply(250, .init(2, 0, 0), "Chunk received"))
        }
        phase = .committing
        return .commit(tx)
    }

    public mutating func messageCommitted(queueID: String) -> Action {
        guard phase == .committing else { return .none }
        transaction = nil
        phase = .ready
        return .send(SMTPReply(250, .init(2, 0, 0), "Ok: queued as \(queueID)"))
    }

    /// The message was read but is refused for what it is (a DMARC `p=reject` the tenant honours:
    /// `550 5.7.1`); the transaction ends, the session goes on.
    public mutating func messageRefused(_ r: SMTPReply) -> Action {
        guard phase == .committing else { return .none }
        transaction = nil
        phase = .ready
        return reply(r)
    }

    public mutating func commitFailed() -> Action {
        guard phase == .committing else { return .none }
        transaction = nil
        phase = .ready
        return reply(SMTPReply(451, .init(4, 3, 0), "Local error in processing, try again later"))
    }

    public mutating func tlsEstablished() -> Action {
        guard phase == .startingTLS else { return .none }
        // RFC 3207 §4.2: forget everything learnt before TLS; the client must EHLO again.
        tlsActive = true
        helloName = nil
        helloKind = .none
        authenticatedIdentity = nil
        transaction = nil
        phase = .awaitingHello
        return .none
    }

    public mutating func timeoutFired() -> Action {
        guard phase != .closed else { return .none }
        phase = .closed
        return .sendAndClose(SMTPReply(421, .init(4, 4, 2), "\(host) Timeout exceeded, closing transmission channel"))
    }

    /// The server is stopping: an idle session is told so at once; one inside a transaction may
    /// finish it and is told at its next command.
    public mutating func shutdownRequested() -> Action {
        shuttingDown = true
        guard phase == .awaitingHello || phase == .ready, transaction == nil else { return .none }
        phase = .closed
        return .sendAndClose(
            SMTPReply(421, .init(4, 3, 2), "\(host) Service shutting down, closing transmission channel"))
    }

    public mutating func connectionClosed() {
        phase = .closed
        transaction = nil
    }

    // MARK: helpers

    /// Sends `r`, counting it if it is an error; past `maxErrors` the session closes instead.
    mutating func reply(_ r: SMTPReply, refusal: RefusalKind? = nil) -> Action {
        if r.code >= 400 {
            errorCount += 1
            if errorCount > configuration.maxErrors {
                phase = .closed
                return .sendAndClose(
                    SMTPReply(421, .init(4, 7, 0), "Too many errors on this connection, closing transmission channel"),
                    refusal: .tooManyErrors)
            }
        }
        return .send(r, refusal: refusal)
    }

    /// Refuses a body for what the decoder found; only an oversized one is a limit the server counts.
    mutating func refuse(_ violation: BodyViolation) -> Action {
        let r = Self.reply(for: violation, maxSize: configuration.maxMessageSize)
        return reply(r, refusal: violation == .tooLarge ? .messageSize : nil)
    }

    static func reply(for violation: BodyViolation, maxSize: Int) -> SMTPReply {
        switch violation {
        case .bareLineEnding:
            return SMTPReply(
                550, .init(5, 6, 11),
                "Message refused: bare CR or LF in message content, only CRLF line endings are allowed")
        case .lineTooLong:
            return SMTPReply(
                550, .init(5, 6, 0), "Message refused: a line is longer than 1000 octets (RFC 5321 4.5.3.1.6)")
        case .tooLarge:
            return SMTPReply(
                552, .init(5, 3, 4), "Message size exceeds fixed maximum message size of \(maxSize) octets")
        }
    }
}
