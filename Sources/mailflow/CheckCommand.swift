import ArgumentParser
import Diagnostics
import Foundation
import MailQueue
import MailflowApp

#if canImport(Glibc)
    import Glibc
#endif

/// `mailflow check domain|host|ip`: is it me or them? See docs/check.md.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a domain's mail setup, one SMTP server, or an IP address (see docs/check.md).",
        discussion: """
            Exit code: 0 when every finding is ok or info, 1 when the worst is a warning, 2 for a failure. \
            Only the named hosts and the DNS servers (--dns-server, else the \
            config's dns.servers, else /etc/resolv.conf) are contacted.
            """,
        subcommands: [DomainCommand.self, HostCommand.self, IPCommand.self])

    /// What every check subcommand takes.
    struct Options: ParsableArguments {
        @OptionGroup var config: ConfigOption
        @Option(
            name: .customLong("data-dir"),
            help: "Mailflow's data directory, for the trace (default: the config's data_directory).")
        var dataDirectory: String?
        @Flag(help: "Print the report as JSON (docs/check.schema.json).") var json = false
        @Flag(name: .shortAndLong, help: "Show the detail of every finding, not only of warnings and failures.")
        var verbose = false
        @Option(help: "Seconds each probe (one SMTP conversation, one HTTPS fetch) may take.") var timeout: Double = 10
        @Option(
            name: .customLong("dns-server"),
            help: "A DNS server to ask, IP[:PORT]; repeatable (default: the config's dns.servers, else resolv.conf).")
        var dnsServers: [String] = []
        @Option(name: .customLong("ca-file"), help: "PEM trust anchors instead of the system roots.") var caFile:
            String?
        @Option(help: "The name sent in EHLO (default: the config's hostname).") var helo: String?
        @Option(
            name: .customLong("since"), help: "How far back the trace is read (ISO 8601 or a duration such as 24h).")
        var since = "24h"
        @Option(name: .customLong("mta-sts-port"), help: .hidden) var mtaSTSPort = 443

        func validate() throws {
            guard timeout > 0, timeout <= 300 else { throw ValidationError("--timeout must be in (0, 300] seconds") }
            for s in dnsServers { _ = try server(s) }
            guard SQLiteQueueStore.TraceQuery.time(since) != nil else {
                throw ValidationError("--since '\(since)' is neither an ISO 8601 time nor a duration such as 24h")
            }
        }

        private func server(_ text: String) throws -> CheckResolver.Server {
            do {
                return try CheckResolver.server(text)
            } catch {
                throw ValidationError("--dns-server \(error)")
            }
        }

        /// The loaded config, the probe options and the resolver.
        func environment(port: Int) throws -> Environment {
            let config = try self.config.load()
            let servers = try dnsServers.isEmpty ? config.dnsServerAddresses() : dnsServers.map(server)
            let timeout = Duration.milliseconds(Int64(self.timeout * 1000))
            let options = ProbeOptions(
                port: port, probeTimeout: timeout, caFile: caFile, heloName: helo ?? config.hostname,
                dnsServers: servers, mtaSTSPort: mtaSTSPort)
            return Environment(
                options: options, resolver: CheckResolver.make(servers: servers, timeout: timeout),
                dataDirectory: dataDirectory ?? config.dataDirectory, blocklists: config.diagnosticsBlocklists,
                sharedTrace: dataDirectory == nil && config.sharedQueue != nil ? try Health.store(self.config) : nil)
        }

        /// What the trace says, through `read`; an info finding when there is no trace to read.
        func traceFindings(
            _ env: Environment, subject: String, _ read: (TraceReview) throws -> [CheckFinding]
        ) -> [CheckFinding] {
            let since = SQLiteQueueStore.TraceQuery.time(self.since) ?? Date().addingTimeInterval(-86_400)
            func note(_ summary: String) -> [CheckFinding] {
                [
                    CheckFinding(
                        category: .trace, subject: subject, check: "trace.unavailable", severity: .info,
                        summary: summary)
                ]
            }
            if let shared = env.sharedTrace {
                do {
                    return try read(TraceReview(store: shared, since: since))
                } catch {
                    return note("The shared trace could not be read: \(error)")
                }
            }
            do {
                guard let review = try TraceReview.open(dataDirectory: env.dataDirectory, since: since) else {
                    return note("No Mailflow trace in \(env.dataDirectory) (use --config or --data-dir)")
                }
                return try read(review)
            } catch {
                return note("The trace in \(env.dataDirectory) could not be read: \(error)")
            }
        }

        func progress() -> @Sendable (String) -> Void {
            guard !json, isatty(STDERR_FILENO) == 1 else { return { _ in } }
            return { line in FileHandle.standardError.write(Data("… \(line)\n".utf8)) }
        }

        /// Prints the report and exits with its code.
        func finish(_ report: CheckReport) throws {
            if json {
                let encoder = JSONEncoder()
                encoder.dateEncodingStrategy = .iso8601
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(
                    CheckReportText(colour: isatty(STDOUT_FILENO) == 1, verbose: verbose).render(report), terminator: ""
                )
            }
            if report.exitCode != 0 { throw ExitCode(report.exitCode) }
        }
    }

    struct Environment {
        var options: ProbeOptions
        var resolver: any DiagnosticsDNS
        var dataDirectory: String
        /// The config's `diagnostics.blocklists`, used by `check ip` when no `--blocklist` is given.
        var blocklists: [String]
        /// With `storage.postgres` (and no `--data-dir`): the cluster's trace, in the shared database.
        var sharedTrace: (any HealthStore)?
    }

    struct DomainCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "domain",
            abstract: "MX, every MX's SMTP/TLS/certificate, DANE, MTA-STS, TLS-RPT, SPF, DMARC, DKIM, and the trace.")

        @OptionGroup var options: Options
        @Argument(help: "The mail domain, e.g. example.org.") var domain: String
        @Option(help: "The SMTP port probed on each MX.") var port = 25
        @Option(name: .customLong("dkim-selector"), help: "Check the DKIM key of this selector.") var dkimSelector:
            String?

        func run() async throws {
            let env = try options.environment(port: port)
            let started = Date()
            let check = DomainCheck(
                dns: env.resolver, prober: HostProbe(), options: env.options, progress: options.progress())
            var findings = await check.run(domain: domain, dkimSelector: dkimSelector)
            findings += options.traceFindings(env, subject: domain.lowercased()) {
                try $0.destination(domain.lowercased())
            }
            try options.finish(
                .ordered(kind: .domain, target: domain.lowercased(), startedAt: started, findings: findings))
        }
    }

    struct HostCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "host", abstract: "The SMTP, STARTTLS, TLS and certificate probe of one server, and its TLSA.")

        @OptionGroup var options: Options
        @Argument(help: "HOST[:PORT] (port 25 unless given; [IPv6]:PORT for an IPv6 address).") var target: String

        func run() async throws {
            let (host, port) = try Self.split(target)
            let env = try options.environment(port: port)
            let started = Date()
            let findings = await HostCheck(
                dns: env.resolver, prober: HostProbe(), options: env.options, progress: options.progress()
            ).run(host: host)
            try options.finish(.ordered(kind: .host, target: "\(host):\(port)", startedAt: started, findings: findings))
        }

        static func split(_ text: String) throws -> (String, Int) {
            var host = text
            var portText: Substring?
            if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
                host = String(text[text.index(after: text.startIndex)..<close])
                let rest = text[text.index(after: close)...]
                if rest.hasPrefix(":") {
                    portText = rest.dropFirst()
                } else if !rest.isEmpty {
                    throw ValidationError("'\(text)' is not HOST[:PORT]")
                }
            } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
                host = String(text[..<colon])
                portText = text[text.index(after: colon)...]
            }
            guard !host.isEmpty else { throw ValidationError("'\(text)' names no host") }
            guard let portText else { return (host, 25) }
            guard let port = Int(portText), (1...65535).contains(port) else {
                throw ValidationError("'\(portText)' is not a port")
            }
            return (host, port)
        }
    }

    struct IPCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ip",
            abstract: "Reverse DNS, forward confirmation, DNS blocklists, and what this address did here lately.")

        @OptionGroup var options: Options
        @Argument(help: "An IPv4 or IPv6 address.") var address: String
        @Option(
            name: .customLong("blocklist"),
            help:
                "A DNS blocklist zone to ask, e.g. zen.example.net; repeatable (default: the config's diagnostics.blocklists)."
        )
        var blocklists: [String] = []

        func run() async throws {
            let env = try options.environment(port: 25)
            let started = Date()
            let zones = blocklists.isEmpty ? env.blocklists : blocklists
            var findings = await IPCheck(dns: env.resolver).run(address: address, blocklists: zones)
            findings += options.traceFindings(env, subject: address) { try $0.address(address) }
            try options.finish(.ordered(kind: .ip, target: address, startedAt: started, findings: findings))
        }
    }
}
