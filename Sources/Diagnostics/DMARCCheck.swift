import MailAuth

/// DMARC (RFC 7489) of a domain: the `_dmarc` record (or the organisational domain's), its policy,
/// alignment, and whether external report destinations have authorised the reports (§7.1).
///
/// The organisational domain comes from the Public Suffix List (MailAuth's `PublicSuffixList.system`:
/// Debian's `publicsuffix` file, or the last two labels when it is not installed).
public struct DMARCCheck: Sendable {
    let dns: any DiagnosticsDNS

    public init(dns: any DiagnosticsDNS) { self.dns = dns }

    /// The organisational domain (RFC 7489 §3.2) by the Public Suffix List.
    public static func organisationalDomain(_ domain: String) -> String {
        PublicSuffixList.system.organizationalDomain(of: domain)
    }

    public func run(domain: String) async -> [CheckFinding] {
        var out: [CheckFinding] = []
        func add(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil) {
            out.append(
                CheckFinding(
                    category: .dmarc, subject: domain, check: check, severity: severity, summary: summary,
                    detail: detail))
        }
        var source = domain.lowercased()
        var texts: [String]
        switch await records(at: source) {
        case .failed(let error):
            add("dmarc.dns", .warning, "DMARC lookup failed: \(error)")
            return out
        case .found(let found): texts = found
        case .none: texts = []
        }
        let organisational = Self.organisationalDomain(domain)
        if texts.isEmpty, organisational != source {
            source = organisational
            if case .found(let found) = await records(at: organisational) { texts = found }
        }
        guard let text = texts.first else {
            add(
                "dmarc.record", .warning, "No DMARC record at _dmarc.\(domain)",
                "Receivers apply no DMARC policy and send no reports (RFC 7489 §6.6.3).")
            return out
        }
        guard texts.count == 1 else {
            add(
                "dmarc.multiple", .failure,
                "\(texts.count) DMARC records at _dmarc.\(source): receivers ignore them all (RFC 7489 §6.6.3)",
                texts.joined(separator: "\n"))
            return out
        }
        let record: DMARCRecord
        do {
            record = try DMARCRecord(parsing: text)
        } catch {
            add("dmarc.syntax", .failure, "DMARC record does not parse: \(error)", text)
            return out
        }
        add(
            "dmarc.record", .ok,
            source == domain.lowercased()
                ? "DMARC record found" : "DMARC record of the organisational domain \(source)",
            text)
        let inherited = source != domain.lowercased()
        let effective = inherited ? (record.subdomainPolicy ?? record.policy) : record.policy
        switch effective {
        case nil:
            add(
                "dmarc.policy", .warning, "No p= tag: treated as p=none (RFC 7489 §6.6.3)",
                "Mail failing DMARC is delivered as usual.")
        case .none?:
            add(
                "dmarc.policy", .warning, "p=none: monitoring only, failing mail is delivered",
                "Move to quarantine, then reject, once the reports show legitimate mail aligns.")
        case .quarantine?:
            add("dmarc.policy", .ok, "p=quarantine: failing mail goes to spam")
        case .reject?:
            add("dmarc.policy", .ok, "p=reject: failing mail is refused")
        }
        if !inherited, let sp = record.subdomainPolicy, let p = record.policy, sp == .none, p != .none {
            add("dmarc.subdomain-policy", .info, "sp=none: subdomains are not protected although p=\(p.rawValue)")
        }
        if record.percent < 100 {
            add(
                "dmarc.pct", .info,
                "pct=\(record.percent): the policy applies to \(record.percent)% of failing mail, the rest one step milder"
            )
        }
        add(
            "dmarc.alignment", .ok,
            "DKIM alignment \(record.dkimAlignment == .strict ? "strict" : "relaxed"), SPF alignment \(record.spfAlignment == .strict ? "strict" : "relaxed")"
        )
        if record.aggregateReports.isEmpty {
            add("dmarc.rua", .info, "No rua=: no aggregate reports are sent, so failures go unseen")
        } else {
            add("dmarc.rua", .ok, "Aggregate reports to \(record.aggregateReports.map(\.uri).joined(separator: ", "))")
        }
        if !record.failureReports.isEmpty {
            add("dmarc.ruf", .info, "Failure reports to \(record.failureReports.map(\.uri).joined(separator: ", "))")
        }
        if !record.unknownTags.isEmpty {
            add("dmarc.unknown-tags", .info, "Unknown tags ignored: \(record.unknownTags.joined(separator: ", "))")
        }
        let ownOrg = Self.organisationalDomain(source)
        var asked: Set<String> = []
        for uri in record.aggregateReports + record.failureReports {
            guard let destination = uri.domain, Self.organisationalDomain(destination) != ownOrg,
                asked.insert(destination).inserted
            else { continue }
            // RFC 7489 §7.1: the destination publishes <domain>._report._dmarc.<destination> "v=DMARC1".
            let name = "\(source)._report._dmarc.\(destination)"
            switch await dns.txt(name) {
            case .found(let found, _) where found.contains(where: DMARCRecord.isDMARC):
                add("dmarc.external-destination", .ok, "\(destination) accepts reports for \(source)", name)
            case .failed(let error):
                add("dmarc.external-destination", .info, "Could not check \(name): \(error)")
            default:
                add(
                    "dmarc.external-destination", .warning,
                    "\(destination) has not authorised reports for \(source): receivers will not send them",
                    "Expected a TXT record \"v=DMARC1\" at \(name) (RFC 7489 §7.1).")
            }
        }
        return out
    }

    enum Records {
        case found([String])
        case none
        case failed(String)
    }

    func records(at domain: String) async -> Records {
        switch await dns.txt("_dmarc." + domain) {
        case .found(let texts, _): .found(texts.filter(DMARCRecord.isDMARC))
        case .none: .none
        case .failed(let error): .failed("\(error)")
        }
    }
}
