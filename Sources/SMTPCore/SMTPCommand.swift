/// The `BODY=` parameter of `MAIL` (RFC 1652, RFC 6152).
public enum BodyType: String, Hashable, Sendable {
    case sevenBit = "7BIT"
    case eightBitMIME = "8BITMIME"
}

/// `RET=` of RFC 3461 §4.3: what a bounce carries back.
public enum DSNReturn: String, Hashable, Sendable {
    case full = "FULL"
    case headers = "HDRS"
}

/// `NOTIFY=` of RFC 3461 §4.1.
public struct DSNNotify: Hashable, Sendable, CustomStringConvertible {
    public var never: Bool
    public var success: Bool
    public var failure: Bool
    public var delay: Bool

    public init(never: Bool = false, success: Bool = false, failure: Bool = false, delay: Bool = false) {
        self.never = never
        self.success = success
        self.failure = failure
        self.delay = delay
    }

    /// Parses a NOTIFY value as stored (`SUCCESS,FAILURE`, `NEVER`).
    public init?(parsing text: String) {
        self.init()
        for item in text.uppercased().split(separator: ",") {
            switch item {
            case "NEVER": never = true
            case "SUCCESS": success = true
            case "FAILURE": failure = true
            case "DELAY": delay = true
            default: return nil
            }
        }
    }

    public var description: String {
        if never { return "NEVER" }
        var parts: [String] = []
        if success { parts.append("SUCCESS") }
        if failure { parts.append("FAILURE") }
        if delay { parts.append("DELAY") }
        return parts.joined(separator: ",")
    }
}

/// `ORCPT=addr-type;xtext` of RFC 3461 §4.2, decoded.
public struct OriginalRecipient: Hashable, Sendable {
    public var addressType: String
    public var address: String

    public init(addressType: String, address: String) {
        self.addressType = addressType
        self.address = address
    }
}

/// The ESMTP parameters of `MAIL FROM` that Mailflow implements.
public struct MailParameters: Hashable, Sendable {
    public var size: Int?
    public var body: BodyType?
    public var smtpUTF8 = false
    public var ret: DSNReturn?
    /// ENVID, decoded from xtext.
    public var envelopeID: String?
    /// `AUTH=` (RFC 4954 §5): the submitter another server vouches for, decoded from xtext; `<>`
    /// when unknown. Accepted and kept, never trusted: the session's own authentication decides.
    public var authenticatedSubmitter: String?

    public init(
        size: Int? = nil, body: BodyType? = nil, smtpUTF8: Bool = false, ret: DSNReturn? = nil,
        envelopeID: String? = nil, authenticatedSubmitter: String? = nil
    ) {
        self.authenticatedSubmitter = authenticatedSubmitter
        self.size = size
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.ret = ret
        self.envelopeID = envelopeID
    }
}

/// The ESMTP parameters of `RCPT TO` that Mailflow implements.
public struct RecipientParameters: Hashable, Sendable {
    public var notify: DSNNotify?
    public var originalRecipient: OriginalRecipient?

    public init(notify: DSNNotify? = nil, originalRecipient: OriginalRecipient? = nil) {
        self.notify = notify
        self.originalRecipient = originalRecipient
    }
}

/// One parsed SMTP command (RFC 5321 §4.1.1 and the extensions Mailflow advertises).
public enum SMTPCommand: Hashable, Sendable {
    case ehlo(String)
    case helo(String)
    /// Sender, parameters; the raw parameter text is validated against the session (SMTPUTF8 needs
    /// the parameter, size against the limit) by the state machine.
    case mail(ReversePath, MailParameters)
    case rcpt(ForwardPath, RecipientParameters)
    case data
    case bdat(size: Int, last: Bool)
    case rset
    case noop
    case quit
    case vrfy(String)
    case help
    case startTLS
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4). The mechanism is upper-cased; the initial
    /// response is the client's base64 text as sent (`=` for an empty one), decoded by the SASL
    /// mechanism, not by the parser.
    case auth(mechanism: String, initialResponse: String?)
}

/// A command line that could not be turned into an `SMTPCommand`, with the reply it earns.
public struct SMTPCommandError: Error, Hashable, Sendable {
    public var reply: SMTPReply
    public init(_ reply: SMTPReply) { self.reply = reply }
}
