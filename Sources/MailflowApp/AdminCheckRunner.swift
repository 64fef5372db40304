import AdminServer
import DNSClient
import Diagnostics
import Foundation
import MailQueue
import NIOPosix

/// The checks of the admin API and the Diagnostics page (`AdminBackend.runCheck`): what
/// `mailflow check domain|host|ip --json` does (docs/check.md), with the running server's DNS
/// servers, its hostname in EHLO, the CLI's probe defaults, the trace in its data directory (in a
/// cluster, `sharedTrace`: every node's) and the `diagnostics.blocklists` zones of the current
/// config (read per check, so a reload reaches them).
enum AdminCheckRunner {
    static func make(
        hostname: String, dataDirectory: String, dnsServers: [DNSServer], sharedTrace: (any HealthStore)? = nil,
        blocklists: @escaping @Sendable () -> [String] = { [] }
    ) -> @Sendable (AdminCheckRequest) async throws -> AdminCheckResult {
        { request in
            let options = ProbeOptions(port: request.port ?? 25, heloName: hostname, dnsServers: dnsServers)
            let resolver = CheckResolver.make(servers: dnsServers, timeout: options.probeTimeout)
            let started = Date()
            let kind: CheckReport.Kind
            let target: String
            var findings: [CheckFinding]
            switch request.kind {
            case .domain:
                kind = .domain
                target = request.target
                findings = await DomainCheck(dns: resolver, prober: HostProbe(), options: options).run(
                    domain: request.target, dkimSelector: request.dkimSelector)
                findings += await trace(dataDirectory, sharedTrace, subject: target) { try $0.destination(target) }
            case .host:
                kind = .host
                let port = options.port
                target = request.target.contains(":") ? "[\(request.target)]:\(port)" : "\(request.target):\(port)"
                findings = await HostCheck(dns: resolver, prober: HostProbe(), options: options).run(
                    host: request.target)
            case .ip:
                kind = .ip
                target = request.target
                findings = await IPCheck(dns: resolver).run(address: request.target, blocklists: blocklists())
                findings += await trace(dataDirectory, sharedTrace, subject: target) { try $0.address(target) }
            }
            let report = CheckReport.ordered(kind: kind, target: target, startedAt: started, findings: findings)
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return AdminCheckResult(report: try encoder.encode(report), verdict: report.verdict.rawValue)
        }
    }

    /// What the trace of the last 24 hours says, as `mailflow check` reads it; on the blocking pool
    /// (the stores block).
    static func trace(
        _ dataDirectory: String, _ shared: (any HealthStore)?, subject: String,
        _ read: @escaping @Sendable (TraceReview) throws -> [CheckFinding]
    ) async -> [CheckFinding] {
        do {
            return try await NIOThreadPool.singleton.runIfActive {
                let since = Date() - 86_400
                if let shared { return try read(TraceReview(store: shared, since: since)) }
                guard let review = try TraceReview.open(dataDirectory: dataDirectory, since: since) else {
                    return []
                }
                return try read(review)
            }
        } catch {
            return [
                CheckFinding(
                    category: .trace, subject: subject, check: "trace.unavailable", severity: .info,
                    summary: "The trace could not be read: \(error)")
            ]
        }
    }
}
