/// Sender authentication for mail Mailflow receives and sends (issue 14): DKIM signing and
/// verification (RFC 6376, RFC 8463), SPF (RFC 7208) and DMARC (RFC 7489) evaluation. The
/// evaluators are pure over their inputs; DNS comes through `DNSClient`.
public enum MailAuth {}
