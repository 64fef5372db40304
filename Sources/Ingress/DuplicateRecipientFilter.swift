import SMTPCore

/// Keeps one envelope recipient per destination mailbox, as Postfix's cleanup duplicate filter
/// does: the same recipient given 200 times in one transaction (or in other letter cases, or quoted
/// and unquoted) is delivered once, not 200 times.
///
/// Every `RCPT` still gets its `250` (a client is not told about duplicates); only the stored
/// envelope loses them. The first occurrence wins, with its ORCPT and NOTIFY parameters.
///
/// Identity: a local recipient is its route (`local:<domain>/<mailbox>`, already lower-cased and
/// unquoted by the recipient policy); a relayed recipient is its route plus the unquoted local part
/// (case kept: RFC 5321 §2.4 leaves a remote local part's case to its owner) and the lower-cased
/// domain.
public enum DuplicateRecipientFilter {
    public static func unique(_ recipients: [AcceptedRecipient]) -> [AcceptedRecipient] {
        guard recipients.count > 1 else { return recipients }
        var seen = Set<String>()
        seen.reserveCapacity(recipients.count)
        return recipients.filter { seen.insert(key($0)).inserted }
    }

    static func key(_ r: AcceptedRecipient) -> String {
        if r.route.hasPrefix("local:") { return r.route }
        switch r.path {
        case .postmaster: return r.route + "\u{0}postmaster"
        case .mailbox(let m): return r.route + "\u{0}" + m.unquotedLocalPart + "@" + m.domain.lowercased()
        }
    }
}
