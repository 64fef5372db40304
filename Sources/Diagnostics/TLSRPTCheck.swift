/// SMTP TLS Reporting (RFC 8460): the `_smtp._tls` TXT record and its `rua` destinations.
public struct TLSRPTCheck: Sendable {
    let dns: any DiagnosticsDNS

    public init(dns: any DiagnosticsDNS) { self.dns = dns }

    public func run(domain: String) async -> [CheckFinding] {
        let name = "_smtp._tls.\(domain)"
        func finding(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil)
            -> CheckFinding
        {
            CheckFinding(
                category: .tlsRPT, subject: name, check: check, severity: severity, summary: summary, detail: detail)
        }
        let texts: [String]
        switch await dns.txt(name) {
        case .failed(let error): return [finding("tls-rpt.dns", .warning, "TLS-RPT record lookup failed: \(error)")]
        case .none: texts = []
        case .found(let found, _): texts = found.filter { TXTRecordKind.isVersion($0, "TLSRPTv1") }
        }
        guard let text = texts.first else {
            return [finding("tls-rpt.record", .info, "No TLS-RPT record: senders cannot report TLS failures to you")]
        }
        guard texts.count == 1 else {
            return [
                finding(
                    "tls-rpt.multiple", .failure,
                    "\(texts.count) TLS-RPT records: senders ignore them all (RFC 8460 §3)",
                    texts.joined(separator: "\n"))
            ]
        }
        do {
            let destinations = try TXTRecordKind.tlsRPTDestinations(text)
            return [finding("tls-rpt.record", .ok, "TLS reports to \(destinations.joined(separator: ", "))", text)]
        } catch {
            return [finding("tls-rpt.syntax", .failure, "TLS-RPT record does not parse: \(error)", text)]
        }
    }
}
