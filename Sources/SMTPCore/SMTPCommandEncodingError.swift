/// A command that `SMTPCommandEncoder` refuses to write, because the line it would make is not one
/// `SMTPCommandParser` reads back as the same command.
///
/// The refusal names the argument and the problem but never repeats the value: a refused value may be
/// an attempt to smuggle a line (`"a@b.test>\r\nRCPT TO:<victim@c.test"`), and the reply is logged and
/// recorded as a delivery result.
///
/// ```swift
/// SMTPCommandEncodingError(.recipient, .lineBreakOrNUL).reply
/// // 553 5.1.3 Cannot send the recipient: it holds a CR, LF or NUL
/// ```
public struct SMTPCommandEncodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The argument that cannot be written.
    public enum Argument: String, Hashable, Sendable {
        case helloName = "the EHLO/HELO name"
        case sender = "the sender"
        case recipient = "the recipient"
        case size = "SIZE"
        case envelopeID = "ENVID"
        case notify = "NOTIFY"
        case originalRecipient = "ORCPT"
        case chunkSize = "the BDAT size"
        case vrfy = "the VRFY argument"
        case auth = "the AUTH command"
        case authenticatedSubmitter = "the AUTH= parameter"
    }

    /// Why it cannot be written.
    public enum Problem: Hashable, Sendable {
        /// A CR or LF would end the command line early and start another (RFC 5321 §2.3.8 allows
        /// them only as the line's end); a NUL is cut off or refused by many servers.
        case lineBreakOrNUL
        /// Outside the argument's grammar, or a character that would join a delimiter (`<`, `@`,
        /// `>`, a space) into one Unicode character, so the parser would split the line elsewhere.
        case invalid(String)
    }

    public var argument: Argument
    public var problem: Problem

    public init(_ argument: Argument, _ problem: Problem) {
        self.argument = argument
        self.problem = problem
    }

    /// The reply Mailflow records for a command it could not send: `553` with `5.1.7` or `5.1.3` for
    /// an address (RFC 3463 §3.2: bad sender's or destination mailbox address syntax), `501 5.5.4`
    /// for any other argument (invalid command arguments).
    public var reply: SMTPReply {
        switch argument {
        case .sender: return SMTPReply(553, .init(5, 1, 7), text)
        case .recipient: return SMTPReply(553, .init(5, 1, 3), text)
        default: return SMTPReply(501, .init(5, 5, 4), text)
        }
    }

    var text: String {
        switch problem {
        case .lineBreakOrNUL: return "Cannot send \(argument.rawValue): it holds a CR, LF or NUL"
        case .invalid(let why): return "Cannot send \(argument.rawValue): \(why)"
        }
    }

    public var description: String { text }
}
