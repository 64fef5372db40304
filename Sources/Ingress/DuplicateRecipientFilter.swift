import SMTPCore

/// Keeps one envelope recipient per destination mailbox, as Postfix's cleanup duplicate filter
/// does: the same recipient given 200 times in one transaction (or in other letter cases, or quoted
/// and unquoted) is delivered once, not 200 times.
///
/// Every `RCPT` still gets its `250` (a client is not told about duplicates); only the stored
/// envelope loses them. The first occurrence wins, with its ORCPT and NOTIFY parameters.
///
/// Identity: a local recipient is its route (domain and mailbox, already lower-cased and unquoted
/// by the recipient policy); a relayed recipient is its route plus the unquoted local part (case
/// kept: RFC 5321 §2.4 leaves a remote local part's case to its owner).
public enum DuplicateRecipientFilter {
    public static func unique(_ recipients: [AcceptedRecipient]) -> [AcceptedRecipient] {
        guard recipients.count > 1 else { return recipients }
        var seen = Set<Identity>()
        seen.reserveCapacity(recipients.count)
        return recipients.filter { seen.insert(Identity($0)).inserted }
    }

    struct Identity: Hashable {
        var route: Route
        /// The remote local part, for relayed recipients only.
        var remoteLocalPart: String?

        init(_ r: AcceptedRecipient) {
            route = r.route
            switch (r.route, r.path) {
            case (.local, _): remoteLocalPart = nil
            case (.relay, .postmaster): remoteLocalPart = "postmaster"
            case (.relay, .mailbox(let m)): remoteLocalPart = m.unquotedLocalPart
            }
        }
    }
}
