import DNSClient

/// DANE for SMTP (RFC 7672): the TLSA records at `_<port>._tcp.<mx>`, whether the answer was
/// DNSSEC-validated (the AD bit from the configured resolver, RFC 7672 §2.1.1), and whether the chain
/// the server presented matches a usable record.
///
/// Without the AD bit senders do not use the records, so every finding is informational then.
public struct DANECheck: Sendable {
    /// The TLSA lookup for one MX.
    public enum Lookup: Sendable {
        case records([TLSARecord], authenticated: Bool)
        case none
        case failed(String)
    }

    let dns: any DiagnosticsDNS

    public init(dns: any DiagnosticsDNS) { self.dns = dns }

    public static func name(host: String, port: Int) -> String { "_\(port)._tcp.\(host)" }

    public func lookup(host: String, port: Int) async -> Lookup {
        switch await dns.lookup(Self.name(host: host, port: port), .tlsa) {
        case .found(_, let answer): .records(answer.tlsaRecords, authenticated: answer.authenticated)
        case .none: .none
        case .failed(let error): .failed("\(error)")
        }
    }

    /// The findings for one MX from its TLSA lookup and its probes (one per address; nil if not probed).
    public static func evaluate(
        host: String, port: Int, lookup: Lookup, probes: [(address: String, result: HostProbeResult)]
    )
        -> [CheckFinding]
    {
        let name = Self.name(host: host, port: port)
        func finding(
            _ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil,
            subject: String? = nil
        ) -> CheckFinding {
            CheckFinding(
                category: .dane, subject: subject ?? name, check: check, severity: severity, summary: summary,
                detail: detail)
        }
        let records: [TLSARecord]
        let authenticated: Bool
        switch lookup {
        case .none: return [finding("dane.tlsa", .info, "No TLSA records: DANE is not in use for \(host)")]
        case .failed(let reason):
            return [
                finding(
                    "dane.dns", .warning, "TLSA lookup failed: \(reason)",
                    "Senders validating DNSSEC defer mail when the TLSA lookup fails (RFC 7672 §2.2).")
            ]
        case .records(let r, let a):
            records = r
            authenticated = a
        }
        var out = [
            finding(
                "dane.tlsa", authenticated ? .ok : .info, "\(records.count) TLSA record(s)",
                records.map(TLSAMatcher.presentation).joined(separator: "\n"))
        ]
        if authenticated {
            out.append(finding("dane.dnssec", .ok, "The TLSA answer was DNSSEC-validated (AD bit set)"))
        } else {
            out.append(
                finding(
                    "dane.dnssec", .info,
                    "The TLSA answer was not DNSSEC-validated (no AD bit): senders ignore these records",
                    "DANE needs a signed zone and a validating resolver on a trusted path (RFC 7672 §2.1.1)."))
        }
        let usable = records.filter { TLSAMatcher.usability($0) == .usable }
        for record in records {
            if case .unusable(let reason) = TLSAMatcher.usability(record) {
                out.append(
                    finding(
                        "dane.tlsa-unusable", usable.isEmpty && authenticated ? .failure : .info,
                        "Unusable TLSA record: \(reason)", TLSAMatcher.presentation(record)))
            }
        }
        guard !usable.isEmpty else { return out }
        let miss: CheckSeverity = authenticated ? .failure : .info
        for (address, result) in probes {
            let subject = "\(host) [\(address)]:\(port)"
            guard result.starttlsOffered else {
                out.append(
                    finding(
                        "dane.starttls", miss, "No STARTTLS, though TLSA records require it (RFC 7672 §2.2)",
                        subject: subject))
                continue
            }
            guard !result.presentedChainDER.isEmpty else {
                out.append(
                    finding(
                        "dane.match", miss, "No certificate chain to match (TLS did not complete)", subject: subject))
                continue
            }
            if let hit = usable.first(where: { TLSAMatcher.matches($0, chain: result.presentedChainDER) == true }) {
                out.append(
                    finding(
                        "dane.match", authenticated ? .ok : .info, "The presented chain matches a TLSA record",
                        TLSAMatcher.presentation(hit), subject: subject))
            } else {
                out.append(
                    finding(
                        "dane.match", miss,
                        authenticated
                            ? "No TLSA record matches the presented chain: DANE senders will not deliver"
                            : "No TLSA record matches the presented chain",
                        usable.map(TLSAMatcher.presentation).joined(separator: "\n"), subject: subject))
            }
        }
        return out
    }
}
