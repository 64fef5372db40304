import MailAuth

/// The DMARC record parser is MailAuth's (one parser for evaluation and for `mailflow check`).
public typealias DMARCRecord = MailAuth.DMARCRecord
