import MailQueue
import SMTPCore

/// Sender authentication of mail received from other servers (SPF, DKIM, DMARC), run once the body is
/// durable and before the message is committed. Ingress only asks; the evaluators live in MailAuth and
/// are wired in by the app (`MailflowApp.SenderAuthenticator`).
public protocol InboundAuthenticator: Sendable {
    func authenticate(_ request: InboundAuthenticationRequest) async -> InboundAuthenticationVerdict
}

/// What the session knows about a message that sender authentication needs.
public struct InboundAuthenticationRequest: Sendable {
    /// The client's IP address.
    public var clientAddress: String
    public var helo: String
    /// The reverse-path, `""` for the null sender.
    public var mailFrom: String
    /// The stored body: this server's stamp (`stampLength` octets), then the message as received.
    public var body: MessageBody
    public var stampLength: Int
    /// The receiving tenant honours a DMARC `p=reject` with `550 5.7.1` (else it is recorded only).
    public var honourReject: Bool

    public init(
        clientAddress: String, helo: String, mailFrom: String, body: MessageBody, stampLength: Int, honourReject: Bool
    ) {
        self.clientAddress = clientAddress
        self.helo = helo
        self.mailFrom = mailFrom
        self.body = body
        self.stampLength = stampLength
        self.honourReject = honourReject
    }
}

/// The outcome: what to store with the message, and a refusal when the message is not to be taken.
public struct InboundAuthenticationVerdict: Sendable {
    public var authentication: SenderAuthentication
    /// Set when the message is refused (DMARC reject honoured): the reply instead of `250`.
    public var refusal: SMTPReply?
    /// The body to store instead, when fields were removed from it (forged `Authentication-Results`
    /// claiming this server's id, RFC 8601 §5), with its new size; the spool file, if any, was
    /// rewritten durably in place.
    public var rewrittenBody: (body: MessageBody, size: Int)?

    public init(
        authentication: SenderAuthentication, refusal: SMTPReply? = nil,
        rewrittenBody: (body: MessageBody, size: Int)? = nil
    ) {
        self.authentication = authentication
        self.refusal = refusal
        self.rewrittenBody = rewrittenBody
    }
}

/// Removes `Authentication-Results` fields that claim this server's authserv-id from mail that sender
/// authentication does not check (submitted, relayed for a trusted network, or with checks off), as
/// RFC 8601 §5 requires of every message: downstream readers trust fields with this server's id.
public protocol ForgedResultsRemover: Sendable {
    /// The body without such fields and its new size, or nil when it had none. Throws when the
    /// stored body could not be rewritten (the message is then not taken: `451`).
    func removeForgedResults(from body: MessageBody, stampLength: Int) async throws -> (body: MessageBody, size: Int)?
}
