import ArgumentParser
import DNSClient
import Diagnostics
import MailAuth

/// `mailflow spf`: RFC 7208 `check_host()` for a client address and sender, as Mailflow evaluates
/// inbound mail, printing the result, the deciding term, the lookup counts and why.
struct SPFCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spf",
        abstract: "Evaluate SPF (RFC 7208) for a client IP and a MAIL FROM address.",
        discussion: """
            Looks up the sender domain's SPF record through --dns-server (else /etc/resolv.conf) and evaluates \
            it with RFC 7208's limits (10 DNS-querying terms, 2 void lookups). An empty --sender checks \
            postmaster@HELO. Exit code: 0 pass, 2 fail, 3 temperror, 4 permerror, 1 for none, neutral, softfail.
            """)

    @Option(help: "The SMTP client's IP address.") var ip: String
    @Option(help: "The MAIL FROM address (empty for the null reverse-path).") var sender: String
    @Option(help: "The HELO/EHLO name.") var helo: String = "unknown"
    @Option(
        name: .customLong("dns-server"), help: "A DNS server to ask, IP[:PORT]; repeatable (default: resolv.conf).")
    var dnsServers: [String] = []
    @Option(help: "Seconds each DNS query may take.") var timeout: Double = 5
    @Option(help: "Print an Authentication-Results field with this authserv-id.") var authservID: String?

    func validate() throws {
        guard DNSIPAddress(ip) != nil else { throw ValidationError("--ip '\(ip)' is not an IP address") }
        try AuthCommandDNS.validate(dnsServers, timeout: timeout)
    }

    func run() async throws {
        let dns = try AuthCommandDNS.make(dnsServers, timeout: timeout)
        let client = DNSIPAddress(ip)!
        let result = await SPFEvaluator(dns: dns).checkMailFrom(ip: client, mailFrom: sender, helo: helo)
        print("spf=\(result.kind.rawValue)")
        print("domain: \(result.domain)")
        if let mechanism = result.mechanism { print("mechanism: \(mechanism)") }
        print("reason: \(result.reason)")
        print(
            "lookups: \(result.lookups) of \(SPFEvaluator.lookupLimit), void lookups: \(result.voidLookups) of \(SPFEvaluator.voidLookupLimit)"
        )
        if let explanation = result.explanation { print("explanation: \(explanation)") }
        if let authservID {
            let mailFrom = sender.isEmpty ? "postmaster@" + helo : sender
            let header = AuthenticationResults(
                authservID: authservID, spf: .init(result: result.kind, mailFrom: mailFrom, helo: helo))
            print("\(AuthenticationResults.fieldName): \(header.value)")
        }
        let code: Int32 =
            switch result.kind {
            case .pass: 0
            case .fail: 2
            case .temperror: 3
            case .permerror: 4
            case .none, .neutral, .softfail: 1
            }
        if code != 0 { throw ExitCode(code) }
    }
}

/// `mailflow dmarc`: RFC 7489 policy discovery and verdict for a From domain, given the SPF and DKIM
/// results.
struct DMARCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dmarc",
        abstract: "Evaluate DMARC (RFC 7489) for a From domain and given SPF and DKIM results.",
        discussion: """
            Finds the policy at _dmarc.FROM, else at the organizational domain (Public Suffix List from \
            /usr/share/publicsuffix, else the last two labels), checks SPF and DKIM alignment and prints the \
            result and the policy to apply. Exit code: 0 pass, 2 fail, 1 none, 3 temperror, 4 permerror.
            """)

    @Option(help: "The RFC5322.From domain.") var from: String
    @Option(help: "The SPF result for the MAIL FROM identity (pass, fail, softfail, neutral, none, ...).")
    var spf: String = "none"
    @Option(help: "The domain SPF evaluated (the MAIL FROM domain).") var spfDomain: String = ""
    @Option(help: "A DKIM signature's result as DOMAIN=pass or DOMAIN=fail; repeatable.") var dkim: [String] = []
    @Option(help: "The per-message pct= sample, 0 to 99 (the policy applies when it is below pct).")
    var pctSample: Int = 0
    @Option(
        name: .customLong("dns-server"), help: "A DNS server to ask, IP[:PORT]; repeatable (default: resolv.conf).")
    var dnsServers: [String] = []
    @Option(help: "Seconds each DNS query may take.") var timeout: Double = 5
    @Option(help: "Print an Authentication-Results field with this authserv-id.") var authservID: String?

    func validate() throws {
        guard SPFResult.Kind(rawValue: spf.lowercased()) != nil else {
            throw ValidationError(
                "--spf must be one of \(SPFResult.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        for d in dkim where DMARCDKIMInput(parsing: d) == nil {
            throw ValidationError("--dkim '\(d)' is not DOMAIN=RESULT")
        }
        guard (0..<100).contains(pctSample) else { throw ValidationError("--pct-sample must be 0 to 99") }
        try AuthCommandDNS.validate(dnsServers, timeout: timeout)
    }

    func run() async throws {
        let dns = try AuthCommandDNS.make(dnsServers, timeout: timeout)
        let psl = PublicSuffixList.system
        let result = await DMARCEvaluator.check(
            fromDomain: from, spf: SPFResult.Kind(rawValue: spf.lowercased())!, spfDomain: spfDomain,
            dkim: dkim.compactMap(DMARCDKIMInput.init(parsing:)), dns: dns, pctSample: pctSample, publicSuffixes: psl)
        print("dmarc=\(result.kind.rawValue)")
        print("from: \(result.fromDomain)")
        print(
            "organizational domain: \(result.organizationalDomain)"
                + (psl.isFallback ? " (no public suffix list at \(PublicSuffixList.debianPath): last two labels)" : ""))
        if let recordDomain = result.recordDomain { print("record: _dmarc.\(recordDomain)") }
        if let requested = result.requestedPolicy { print("requested policy: \(requested.rawValue)") }
        print("policy: \(result.policy.rawValue)" + (result.sampledOut ? " (pct= sample left it out)" : ""))
        print("spf aligned: \(result.spfAligned ? "yes" : "no")")
        print("dkim aligned: \(result.alignedDKIMDomain.map { "yes (d=\($0))" } ?? "no")")
        print("reason: \(result.reason)")
        if let authservID {
            let header = AuthenticationResults(authservID: authservID, dmarc: .init(result))
            print("\(AuthenticationResults.fieldName): \(header.value)")
        }
        let code: Int32 =
            switch result.kind {
            case .pass: 0
            case .fail: 2
            case .none: 1
            case .temperror: 3
            case .permerror: 4
            }
        if code != 0 { throw ExitCode(code) }
    }
}

enum AuthCommandDNS {
    /// `--timeout` within (0, 60] seconds and every `--dns-server` an IP[:PORT].
    static func validate(_ servers: [String], timeout: Double) throws {
        guard timeout > 0, timeout <= 60 else { throw ValidationError("--timeout must be in (0, 60] seconds") }
        for s in servers {
            do {
                _ = try CheckResolver.server(s)
            } catch {
                throw ValidationError("--dns-server \(error)")
            }
        }
    }

    static func make(_ servers: [String], timeout: Double) throws -> ResolverSPFDNS {
        let list = try servers.map { try CheckResolver.server($0) }
        return ResolverSPFDNS(
            resolver: CheckResolver.make(servers: list, timeout: .milliseconds(Int64(timeout * 1000))))
    }
}
