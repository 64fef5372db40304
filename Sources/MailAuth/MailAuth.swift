// MailAuth: sender authentication for mail Mailflow receives and sends (issue 14): DKIM signing and
// verification (RFC 6376, RFC 8463), SPF (RFC 7208) and DMARC (RFC 7489) evaluation, and the
// Authentication-Results header (RFC 8601). The evaluators are pure over their inputs; DNS comes
// through `DNSClient`. (No type here is named `MailAuth`: it would shadow the module's name, so
// `MailAuth.SPFRecord` would not resolve from other modules.)
