/// MTA-STS (RFC 8461) of a domain: the `_mta-sts` TXT record, the policy fetched over HTTPS from
/// `mta-sts.<domain>/.well-known/mta-sts.txt` (certificate verified, no redirects, bounded), its mode
/// and max_age, and whether every MX matches an `mx:` pattern.
public struct MTASTSCheck: Sendable {
    /// RFC 8461 §3.2 suggests max_age of weeks; below a day, senders re-fetch constantly and a
    /// downgrade window opens between fetches.
    public static let shortMaxAge = 86_400
    /// RFC 8461 §3.3: senders SHOULD cap the policy body at 64 KiB.
    public static let maxPolicyBytes = 64 * 1024
    public static let wellKnownPath = "/.well-known/mta-sts.txt"

    let dns: any DiagnosticsDNS
    let fetcher: HTTPSFetcher
    let options: ProbeOptions

    public init(dns: any DiagnosticsDNS, fetcher: HTTPSFetcher = HTTPSFetcher(), options: ProbeOptions) {
        self.dns = dns
        self.fetcher = fetcher
        self.options = options
    }

    /// The findings; `mxHosts` are the domain's MX names (empty for a Null MX or implicit MX).
    public func run(domain: String, mxHosts: [String]) async -> [CheckFinding] {
        var out: [CheckFinding] = []
        func add(
            _ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil,
            subject: String? = nil
        ) {
            out.append(
                CheckFinding(
                    category: .mtaSTS, subject: subject ?? domain, check: check, severity: severity, summary: summary,
                    detail: detail))
        }
        let recordName = "_mta-sts.\(domain)"
        switch await dns.txt(recordName) {
        case .failed(let error):
            add("mta-sts.dns", .warning, "MTA-STS record lookup failed: \(error)", subject: recordName)
            return out
        case .none:
            add("mta-sts.record", .info, "No MTA-STS record: senders use TLS opportunistically", subject: recordName)
            return out
        case .found(let texts, _):
            let records = texts.filter { TXTRecordKind.isVersion($0, "STSv1") }
            guard let text = records.first else {
                add(
                    "mta-sts.record", .info, "No MTA-STS record: senders use TLS opportunistically", subject: recordName
                )
                return out
            }
            guard records.count == 1 else {
                add(
                    "mta-sts.multiple", .failure,
                    "\(records.count) MTA-STS records: senders treat the domain as having none (RFC 8461 §3.1)",
                    records.joined(separator: "\n"), subject: recordName)
                return out
            }
            do {
                let id = try TXTRecordKind.mtaSTSID(text)
                add("mta-sts.record", .ok, "MTA-STS record, policy id \(id)", text, subject: recordName)
            } catch {
                add(
                    "mta-sts.record-syntax", .failure, "MTA-STS record does not parse: \(error)", text,
                    subject: recordName)
                return out
            }
        }
        let policyHost = "mta-sts.\(domain)"
        let url =
            "https://\(policyHost)\(options.mtaSTSPort == 443 ? "" : ":\(options.mtaSTSPort)")\(Self.wellKnownPath)"
        let addresses: [String]
        switch await dns.addresses(policyHost) {
        case .found(let found, _): addresses = found.map(\.description)
        case .none:
            add(
                "mta-sts.policy-host", .failure, "\(policyHost) has no address: the policy cannot be fetched",
                subject: url)
            return out
        case .failed(let error):
            add("mta-sts.policy-host", .warning, "\(policyHost) could not be resolved: \(error)", subject: url)
            return out
        }
        var fetched: HTTPSFetcher.Response?
        var errors: [String] = []
        // At most two addresses, each within the probe timeout.
        for address in addresses.prefix(2) {
            do {
                fetched = try await fetcher.get(
                    host: policyHost, address: address, port: options.mtaSTSPort, path: Self.wellKnownPath,
                    caFile: options.caFile, timeout: options.probeTimeout, maxBodyBytes: Self.maxPolicyBytes)
                break
            } catch {
                errors.append("[\(address)]: \(error)")
            }
        }
        guard let response = fetched else {
            add(
                "mta-sts.policy-fetch", .failure, "The policy could not be fetched",
                errors.joined(separator: "\n"), subject: url)
            return out
        }
        guard response.status == 200 else {
            let redirect = (300..<400).contains(response.status)
            add(
                "mta-sts.policy-fetch", .failure,
                redirect
                    ? "HTTP \(response.status): senders do not follow redirects (RFC 8461 §3.3)"
                    : "HTTP \(response.status) instead of 200", response.header("location").map { "Location: \($0)" },
                subject: url)
            return out
        }
        let contentType = response.header("content-type") ?? ""
        if !contentType.lowercased().hasPrefix("text/plain") {
            add(
                "mta-sts.content-type", .warning,
                "Content-Type '\(contentType)': the policy is served as text/plain (RFC 8461 §3.2)", subject: url)
        }
        let text = String(decoding: response.body, as: UTF8.self)
        let policy: MTASTSPolicy
        do {
            policy = try MTASTSPolicy(parsing: text)
        } catch {
            add("mta-sts.policy-syntax", .failure, "The policy does not parse: \(error)", text, subject: url)
            return out
        }
        add("mta-sts.policy-fetch", .ok, "Policy fetched over verified HTTPS", text, subject: url)
        switch policy.mode {
        case .enforce: add("mta-sts.mode", .ok, "mode: enforce", subject: url)
        case .testing:
            add("mta-sts.mode", .info, "mode: testing: failures are reported, mail still flows", subject: url)
        case .none: add("mta-sts.mode", .info, "mode: none: the policy is being withdrawn", subject: url)
        }
        if policy.maxAge < Self.shortMaxAge {
            add(
                "mta-sts.max-age", .warning,
                "max_age \(policy.maxAge) s is under a day; RFC 8461 §3.2 suggests weeks", subject: url)
        } else {
            add("mta-sts.max-age", .ok, "max_age \(policy.maxAge) s (\(policy.maxAge / 86_400) days)", subject: url)
        }
        guard policy.mode != .none else { return out }
        for host in mxHosts {
            if let pattern = policy.pattern(matching: host) {
                add("mta-sts.mx-match", .ok, "\(host) matches mx: \(pattern)", subject: host)
            } else {
                add(
                    "mta-sts.mx-match", policy.mode == .enforce ? .failure : .warning,
                    policy.mode == .enforce
                        ? "\(host) matches no mx: pattern: senders enforcing the policy will not deliver to it"
                        : "\(host) matches no mx: pattern: would fail once the mode is enforce",
                    "Patterns: \(policy.mx.joined(separator: ", "))", subject: host)
            }
        }
        return out
    }
}
