/// Protocol limits, each with the section that sets it.
public enum SMTPLimits {
    /// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
    public static let commandLineLength = 512
    /// An `AUTH` command line and each SASL response line (RFC 4954 §4: 12,288 octets, CRLF included).
    public static let authLineLength = 12_288
    /// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
    public static let textLineLength = 1000
    /// RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
    public static let localPartLength = 64
    /// RFC 5321 §4.5.3.1.2: a domain is at most 255 octets.
    public static let domainLength = 255
    /// RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the brackets.
    public static let pathLength = 256
    /// RFC 3461 §4.4: ENVID is at most 100 characters.
    public static let envidLength = 100
    /// RFC 3461 §4.2: ORCPT's address is at most 500 characters.
    public static let orcptLength = 500
    /// RFC 5321 §4.5.3.1.8 requires at least 100 recipients; Exchange's default is 500.
    public static let defaultRecipientsPerMessage = 500
    /// Exchange Online's default maximum message size (35 MB).
    public static let defaultMessageSize = 35 * 1024 * 1024
}
