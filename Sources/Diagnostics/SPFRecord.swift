import MailAuth

/// The SPF record parser is MailAuth's (one parser for evaluation and for `mailflow check`).
public typealias SPFRecord = MailAuth.SPFRecord
