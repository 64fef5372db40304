import DNSClient
import Foundation

/// `mailflow check domain`: the MX set (RFC 5321 §5.1, RFC 7505 Null MX, RFC 2181 §10.3 CNAMEs),
/// each MX address probed through the injected ``HostProbing`` (in parallel, at most
/// ``ProbeOptions/maxParallelProbes`` at once), DANE per MX, MTA-STS, TLS-RPT, SPF, DMARC and DKIM.
/// The DNS checks run while the probes do.
public struct DomainCheck: Sendable {
    let dns: any DiagnosticsDNS
    let prober: any HostProbing
    let options: ProbeOptions
    let fetcher: HTTPSFetcher
    let progress: @Sendable (String) -> Void

    public init(
        dns: any DiagnosticsDNS, prober: any HostProbing, options: ProbeOptions, fetcher: HTTPSFetcher = HTTPSFetcher(),
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.dns = dns
        self.prober = prober
        self.options = options
        self.fetcher = fetcher
        self.progress = progress
    }

    /// All findings for `domain`; `dkimSelector` adds the DKIM key check.
    public func run(domain rawDomain: String, dkimSelector: String? = nil) async -> [CheckFinding] {
        let domain =
            rawDomain.lowercased().hasSuffix(".") ? String(rawDomain.lowercased().dropLast()) : rawDomain.lowercased()
        progress("looking up MX for \(domain)")
        let (mxFindings, targets) = await mailExchangers(domain)
        let dns = self.dns
        let options = self.options
        let fetcher = self.fetcher
        let progress = self.progress
        return await withTaskGroup(of: [CheckFinding].self) { group in
            group.addTask { await SPFCheck(dns: dns).run(domain: domain) }
            group.addTask { await DMARCCheck(dns: dns).run(domain: domain) }
            if let dkimSelector {
                group.addTask { await DKIMCheck(dns: dns).run(domain: domain, selector: dkimSelector) }
            }
            group.addTask { await TLSRPTCheck(dns: dns).run(domain: domain) }
            let explicit = targets.filter { $0.preference != nil }.map(\.host)
            group.addTask {
                progress("checking MTA-STS of \(domain)")
                return await MTASTSCheck(dns: dns, fetcher: fetcher, options: options).run(
                    domain: domain, mxHosts: explicit)
            }
            group.addTask { await self.probeAll(targets) }
            var all = mxFindings
            for await findings in group { all += findings }
            return all
        }
    }

    /// The MX findings and the hosts to probe (none for a Null MX or a domain that does not exist).
    func mailExchangers(_ domain: String) async -> ([CheckFinding], [MXTarget]) {
        var out: [CheckFinding] = []
        func add(
            _ category: CheckCategory, _ check: String, _ severity: CheckSeverity, _ summary: String,
            _ detail: String? = nil, subject: String? = nil
        ) {
            out.append(
                CheckFinding(
                    category: category, subject: subject ?? domain, check: check, severity: severity, summary: summary,
                    detail: detail))
        }
        let records: [MXRecord]
        switch await dns.lookup(domain, .mx) {
        case .failed(let error):
            add(.mx, "mx.dns", .failure, "MX lookup failed: \(error)", "Senders defer mail while this lasts.")
            return (out, [])
        case .none(let error):
            if case .nxdomain = error {
                add(.mx, "mx.domain", .failure, "\(domain) does not exist (NXDOMAIN)")
                return (out, [])
            }
            // RFC 5321 §5.1: no MX records, so the domain itself is the implicit MX.
            switch await dns.addresses(domain) {
            case .found(let addresses, _):
                add(
                    .mx, "mx.implicit", .warning,
                    "No MX records: senders use the domain's own address (implicit MX, RFC 5321 §5.1)",
                    addresses.map(\.description).joined(separator: ", "))
                return (out, [MXTarget(host: domain, preference: nil, addresses: addresses.map(\.description))])
            case .none:
                add(.mx, "mx.none", .failure, "No MX records and no address: \(domain) cannot receive mail")
            case .failed(let error):
                add(.mx, "mx.dns", .failure, "No MX records, and the address lookup failed: \(error)")
            }
            return (out, [])
        case .found(let found, _):
            records = found.compactMap { if case .mx(let mx) = $0.data { mx } else { nil } }
                .sorted { ($0.preference, $0.exchange.plain) < ($1.preference, $1.exchange.plain) }
        }
        let listing = records.map { "\($0.preference) \($0.exchange.plain)" }.joined(separator: "\n")
        // RFC 7505 §3: a Null MX is one record, preference 0, exchange the root.
        if records.contains(where: { $0.exchange.isRoot }) {
            if records.count == 1, records[0].preference == 0 {
                add(.mx, "mx.null", .info, "Null MX: \(domain) accepts no mail (RFC 7505)", listing)
            } else {
                add(
                    .mx, "mx.null-invalid", .failure,
                    "A Null MX mixed with other MX records or a non-zero preference (RFC 7505 §3)", listing)
            }
            return (out, [])
        }
        add(.mx, "mx.records", .ok, "\(records.count) MX record(s)", listing)
        var targets: [MXTarget] = []
        for record in records {
            let host = record.exchange.plain
            if DNSIPAddress(host) != nil {
                add(
                    .mx, "mx.ip-literal", .failure, "MX \(host) is an IP address, not a host name (RFC 7505 §3 errata)",
                    subject: host)
                continue
            }
            async let v4 = dns.lookup(host, .a)
            async let v6 = dns.lookup(host, .aaaa)
            var addresses: [String] = []
            var cname: String?
            var failure: String?
            for outcome in await [v4, v6] {
                switch outcome {
                case .found(_, let answer):
                    addresses += answer.addresses.map(\.description)
                    if answer.canonicalName.plain != host { cname = answer.canonicalName.plain }
                case .none: break
                case .failed(let error): failure = "\(error)"
                }
            }
            if let cname {
                add(
                    .mx, "mx.cname", .warning,
                    "MX \(host) is a CNAME (to \(cname)); RFC 2181 §10.3 says it must not be",
                    subject: host)
            }
            if addresses.isEmpty {
                if let failure {
                    add(
                        .address, "address.dns", .failure, "Address lookup for \(host) failed: \(failure)",
                        subject: host)
                } else {
                    add(.address, "address.none", .failure, "MX \(host) has no A or AAAA record", subject: host)
                }
                continue
            }
            add(.address, "address.records", .ok, "\(host): \(addresses.joined(separator: ", "))", subject: host)
            targets.append(MXTarget(host: host, preference: record.preference, addresses: addresses))
        }
        return (out, targets)
    }

    /// Probes every address of every target, at most `maxParallelProbes` at once, and looks up each
    /// target's TLSA records meanwhile; returns the probe and DANE findings in MX order.
    func probeAll(_ targets: [MXTarget]) async -> [CheckFinding] {
        let jobs = targets.enumerated().flatMap { i, t in t.addresses.map { (target: i, host: t.host, address: $0) } }
        let prober = self.prober
        let options = self.options
        let progress = self.progress
        let dane = DANECheck(dns: dns)
        async let tlsa: [DANECheck.Lookup] = withTaskGroup(of: (Int, DANECheck.Lookup).self) { group in
            for (i, t) in targets.enumerated() {
                group.addTask { (i, await dane.lookup(host: t.host, port: options.port)) }
            }
            var out = [DANECheck.Lookup](repeating: .none, count: targets.count)
            for await (i, lookup) in group { out[i] = lookup }
            return out
        }
        var results = [HostProbeResult?](repeating: nil, count: jobs.count)
        await withTaskGroup(of: (Int, HostProbeResult).self) { group in
            var next = 0
            func start() {
                guard next < jobs.count else { return }
                let index = next
                let job = jobs[index]
                next += 1
                group.addTask {
                    progress("probing \(job.host) [\(job.address)]:\(options.port)")
                    return (
                        index,
                        await prober.probe(host: job.host, address: job.address, port: options.port, options: options)
                    )
                }
            }
            for _ in 0..<max(1, options.maxParallelProbes) { start() }
            for await (index, result) in group {
                results[index] = result
                start()
            }
        }
        let lookups = await tlsa
        var out: [CheckFinding] = []
        for (i, target) in targets.enumerated() {
            var probes: [(address: String, result: HostProbeResult)] = []
            for (j, job) in jobs.enumerated() where job.target == i {
                guard let result = results[j] else { continue }
                out += result.findings
                probes.append((job.address, result))
            }
            out += DANECheck.evaluate(host: target.host, port: options.port, lookup: lookups[i], probes: probes)
        }
        return out
    }
}
