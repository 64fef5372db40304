import DNSClient

/// `mailflow check host HOST[:PORT]`: the SMTP/TLS probe of one server (each of its addresses) and its
/// TLSA records.
public struct HostCheck: Sendable {
    let dns: any DiagnosticsDNS
    let prober: any HostProbing
    let options: ProbeOptions
    let progress: @Sendable (String) -> Void

    public init(
        dns: any DiagnosticsDNS, prober: any HostProbing, options: ProbeOptions,
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.dns = dns
        self.prober = prober
        self.options = options
        self.progress = progress
    }

    public func run(host rawHost: String) async -> [CheckFinding] {
        let host = rawHost.hasSuffix(".") ? String(rawHost.dropLast()) : rawHost
        if let literal = DNSIPAddress(host) {
            // An address alone: nothing to look up, no name to match TLSA against.
            progress("probing [\(literal)]:\(options.port)")
            return await prober.probe(host: host, address: literal.description, port: options.port, options: options)
                .findings
        }
        let subject = host.lowercased()
        let addresses: [String]
        switch await dns.addresses(subject) {
        case .found(let found, _): addresses = found.map(\.description)
        case .none:
            return [
                CheckFinding(
                    category: .address, subject: subject, check: "address.none", severity: .failure,
                    summary: "\(subject) has no A or AAAA record")
            ]
        case .failed(let error):
            return [
                CheckFinding(
                    category: .address, subject: subject, check: "address.dns", severity: .failure,
                    summary: "Address lookup for \(subject) failed: \(error)")
            ]
        }
        let target = MXTarget(host: subject, preference: nil, addresses: addresses)
        let domainCheck = DomainCheck(dns: dns, prober: prober, options: options, progress: progress)
        let address = CheckFinding(
            category: .address, subject: subject, check: "address.records", severity: .ok,
            summary: "\(subject): \(addresses.joined(separator: ", "))")
        return [address] + (await domainCheck.probeAll([target]))
    }
}
