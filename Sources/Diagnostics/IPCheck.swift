import DNSClient

/// `mailflow check ip IP`: reverse DNS (PTR), forward-confirmed reverse DNS (a PTR name whose A/AAAA
/// holds the address again), and the DNS blocklists asked (RFC 5782 §2.1: the reversed address under
/// each zone; 127.0.0.x answers listed, NXDOMAIN not listed).
public struct IPCheck: Sendable {
    let dns: any DiagnosticsDNS

    public init(dns: any DiagnosticsDNS) { self.dns = dns }

    public func run(address text: String, blocklists: [String]) async -> [CheckFinding] {
        guard let address = DNSIPAddress(text) else {
            return [
                CheckFinding(
                    category: .address, subject: text, check: "address.invalid", severity: .failure,
                    summary: "'\(text)' is not an IPv4 or IPv6 address")
            ]
        }
        let subject = address.description
        func finding(
            _ category: CheckCategory, _ check: String, _ severity: CheckSeverity, _ summary: String,
            _ detail: String? = nil, subject override: String? = nil
        ) -> CheckFinding {
            CheckFinding(
                category: category, subject: override ?? subject, check: check, severity: severity, summary: summary,
                detail: detail)
        }
        var out: [CheckFinding] = []
        let reverse = address.reverseName.plain
        switch await dns.lookup(reverse, .ptr) {
        case .failed(let error):
            out.append(finding(.reverseDNS, "reverse-dns.dns", .warning, "PTR lookup failed: \(error)"))
        case .none:
            out.append(
                finding(
                    .reverseDNS, "reverse-dns.ptr", .warning, "No PTR record for \(subject)",
                    "Many receivers refuse or score down mail from addresses without reverse DNS."))
        case .found(let records, _):
            let names = records.compactMap { if case .ptr(let n) = $0.data { n.plain } else { nil } }
            out.append(finding(.reverseDNS, "reverse-dns.ptr", .ok, "PTR: \(names.joined(separator: ", "))"))
            var confirmed: [String] = []
            for name in names.prefix(5) {
                if case .found(let addresses, _) = await dns.addresses(name), addresses.contains(address) {
                    confirmed.append(name)
                }
            }
            if confirmed.isEmpty {
                out.append(
                    finding(
                        .reverseDNS, "reverse-dns.fcrdns", .warning,
                        "Forward-confirmed reverse DNS fails: no PTR name resolves back to \(subject)",
                        names.joined(separator: "\n")))
            } else {
                out.append(
                    finding(
                        .reverseDNS, "reverse-dns.fcrdns", .ok,
                        "Forward-confirmed: \(confirmed.joined(separator: ", ")) resolves back to \(subject)"))
            }
        }
        let labels = String(reverse.dropLast(address.isIPv4 ? ".in-addr.arpa".count : ".ip6.arpa".count))
        await withTaskGroup(of: (Int, CheckFinding).self) { group in
            for (index, zone) in blocklists.enumerated() {
                let dns = self.dns
                group.addTask {
                    let name = "\(labels).\(zone)"
                    let result: CheckFinding
                    switch await dns.lookup(name, .a) {
                    case .found(_, let answer):
                        var reason = ""
                        if case .found(let texts, _) = await dns.txt(name) { reason = texts.joined(separator: " ") }
                        let codes = answer.addresses.map(\.description).joined(separator: ", ")
                        result = finding(
                            .blocklist, "blocklist.listed", .failure, "Listed on \(zone) (\(codes))",
                            reason.isEmpty ? nil : reason, subject: zone)
                    case .none:
                        result = finding(.blocklist, "blocklist.listed", .ok, "Not listed on \(zone)", subject: zone)
                    case .failed(let error):
                        result = finding(
                            .blocklist, "blocklist.dns", .warning, "\(zone) could not be asked: \(error)", subject: zone
                        )
                    }
                    return (index, result)
                }
            }
            var results: [(Int, CheckFinding)] = []
            for await r in group { results.append(r) }
            out += results.sorted { $0.0 < $1.0 }.map(\.1)
        }
        if blocklists.isEmpty {
            out.append(
                finding(
                    .blocklist, "blocklist.none", .info,
                    "No DNS blocklists asked (none configured: diagnostics.blocklists or --blocklist)",
                    subject: "-"))
        }
        return out
    }
}
