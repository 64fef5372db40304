import Foundation
import NIOCore
import NIOSSL
import SMTPCore

/// The probe of one SMTP server at one address: the SMTP conversation and STARTTLS
/// (`SMTPProbe`), the TLS versions and ciphers it accepts (`TLSProbe`) and the certificate chain it
/// presents (`CertificateCheck`), as findings with stable check ids (docs/check.md, "Host probe").
///
/// One main connection greets, says EHLO, starts TLS with an ordinary client offer, reads the
/// chain and says EHLO again inside TLS. Only when that handshake works do the side probes run, each
/// on a connection of its own and at most `maxConcurrentConnections` at a time: STARTTLS with a
/// pipelined NOOP (CVE-2011-0411), one handshake per TLS version, one per weak cipher class, and a
/// hand-made ClientHello (`TLSClientHello`) for SSL 3.0 and each class BoringSSL cannot offer. Each
/// connection is bounded as a whole by `options.probeTimeout`.
///
/// ```swift
/// let result = await HostProbe().probe(host: "mx1.example.org", address: "192.0.2.1", port: 25,
///                                      options: ProbeOptions())
/// ```
public struct HostProbe: HostProbing {
    /// The versions probed one by one. SSL 3.0 (which BoringSSL does not have) with a hand-made
    /// ClientHello, the others through swift-nio-ssl.
    public var versions: [TLSProtocolVersion] = [.ssl3, .tls10, .tls11, .tls12, .tls13]
    public var maxConcurrentConnections = 4
    /// The time the certificates are judged at; nil for the current time.
    public var now: Date?

    public init() {}

    public func probe(host: String, address: String, port: Int, options: ProbeOptions) async -> HostProbeResult {
        let subject = host == address ? Self.hostPort(address, port) : "\(host) [\(address)]:\(port)"
        let deadline = NIODeadline.now() + TimeAmount(options.probeTimeout)
        var findings: [CheckFinding] = []

        let connection: SMTPProbeConnection
        let greeting: SMTPGreeting
        switch await SMTPProbe.greet(address: address, port: port, heloName: options.heloName, deadline: deadline) {
        case .failure(let stop):
            return HostProbeResult(findings: [SMTPProbe.stopFinding(stop, subject: subject)])
        case .success(let (c, g)): (connection, greeting) = (c, g)
        }
        findings += SMTPProbe.findings(for: greeting, subject: subject)
        guard greeting.startTLSOffered else {
            await connection.close()
            return HostProbeResult(findings: findings, starttlsOffered: false)
        }

        let mainSetup = TLSProbe.setup(minimum: .tls10, maximum: nil, ciphers: nil, host: host)
        guard case .success(let setup) = mainSetup else {
            await connection.close()
            findings.append(
                CheckFinding(
                    category: .starttls, subject: subject, check: "starttls.handshake", severity: .info,
                    summary: "not probed: the TLS client could not be set up"))
            return HostProbeResult(findings: findings, starttlsOffered: true)
        }
        let outcome = await TLSProbe.startTLS(on: connection, setup: setup)
        let chain = await connection.read { $0.presentedChain } ?? []
        findings += await mainHandshakeFindings(
            outcome, on: connection, heloName: options.heloName, subject: subject)
        await connection.close(quit: outcome.isEstablished)
        guard case .established(_, let mainCipher, _) = outcome else {
            return HostProbeResult(findings: findings, presentedChainDER: chain, starttlsOffered: true)
        }

        let side = await sideProbes(host: host, address: address, port: port, options: options, tls: setup)
        findings.append(side.pipelining)
        for v in versions {
            findings += TLSProbe.versionFindings(v, outcome: side.versions[v] ?? .timedOut, subject: subject)
        }
        let accepted = versions.filter { side.versions[$0]?.isEstablished == true }
        if accepted.isEmpty {
            findings.append(
                CheckFinding(
                    category: .tls, subject: subject, check: "tls.versions", severity: .warning,
                    summary: "no single version was accepted on its own, though the main handshake worked"))
        } else {
            let worst = accepted.map(\.ncscLevel).max(by: { $0.severityWhenAccepted < $1.severityWhenAccepted })!
            findings.append(
                CheckFinding(
                    category: .tls, subject: subject, check: "tls.versions", severity: worst.severityWhenAccepted,
                    summary: "accepted: " + accepted.map(\.rawValue).joined(separator: ", "), ncsc: worst))
        }
        for weak in TLSProbe.weakClasses {
            findings.append(
                TLSProbe.weakClassFinding(weak, outcome: side.weak[weak.id] ?? .timedOut, subject: subject))
        }
        if let fs = TLSProbe.forwardSecrecyFinding(
            main: mainCipher, rsaKeyExchange: side.weak["rsa-kx"], subject: subject)
        {
            findings.append(fs)
        }

        switch CertificateCheck.forOptions(caFile: options.caFile, now: now ?? Date()) {
        case .success(let check):
            findings += await check.findings(chainDER: chain, host: host, subject: subject)
        case .failure(let why):
            findings.append(
                CheckFinding(
                    category: .certificate, subject: subject, check: "certificate.trust", severity: .failure,
                    summary: "trust not checked: \(why)"))
        }
        return HostProbeResult(findings: findings, presentedChainDER: chain, starttlsOffered: true)
    }

    static func hostPort(_ address: String, _ port: Int) -> String {
        address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    private func mainHandshakeFindings(
        _ outcome: TLSHandshakeOutcome, on connection: SMTPProbeConnection, heloName: String, subject: String
    ) async -> [CheckFinding] {
        func finding(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil)
            -> CheckFinding
        {
            CheckFinding(
                category: .starttls, subject: subject, check: check, severity: severity, summary: summary,
                detail: detail)
        }
        switch outcome {
        case .established(let version, let cipher, _):
            var out = [
                finding(
                    "starttls.handshake", .ok,
                    "TLS established: \(version?.rawValue ?? "?"), \(cipher?.name ?? "cipher unknown")")
            ]
            // RFC 3207 §4.2: the client must say EHLO again; a server that cannot answer inside TLS
            // is as good as one without STARTTLS.
            switch await SMTPProbe.command(.ehlo(heloName), on: connection, step: .ehloAfterTLS) {
            case .success(let reply):
                let exts = SMTPProbe.extensions(of: reply)
                let stillOffers = exts.contains { $0.hasPrefix("STARTTLS") }
                out.append(
                    finding(
                        "starttls.ehlo", stillOffers ? .warning : .ok,
                        stillOffers
                            ? "EHLO inside TLS answered, but it still offers STARTTLS" : "EHLO inside TLS answered",
                        exts.isEmpty ? nil : "extensions: " + exts.joined(separator: ", ")))
            case .failure(let stop):
                out.append(SMTPProbe.stopFinding(stop, subject: subject))
            }
            return out
        case .dropped:
            return [
                finding(
                    "starttls.dropped", .failure, "drops the session after STARTTLS",
                    "the server closed the connection after STARTTLS without a TLS handshake")
            ]
        case .refused(let why):
            return [finding("starttls.handshake", .failure, "the TLS handshake failed", why)]
        case .timedOut:
            return [finding("starttls.handshake", .failure, "the TLS handshake timed out")]
        case .stopped(let stop):
            return [SMTPProbe.stopFinding(stop, subject: subject)]
        case .notProbed(let why):
            return [finding("starttls.handshake", .info, "not probed", why)]
        }
    }

    struct SideResults: Sendable {
        var pipelining: CheckFinding
        var versions: [TLSProtocolVersion: TLSHandshakeOutcome] = [:]
        var weak: [String: TLSHandshakeOutcome] = [:]
    }

    private enum Job: Sendable {
        case pipelining
        case version(TLSProtocolVersion)
        case weak(TLSProbe.WeakClass)
    }

    private enum JobResult: Sendable {
        case pipelining(CheckFinding)
        case version(TLSProtocolVersion, TLSHandshakeOutcome)
        case weak(String, TLSHandshakeOutcome)
    }

    private func sideProbes(
        host: String, address: String, port: Int, options: ProbeOptions, tls: ProbeTLSSetup
    ) async -> SideResults {
        let subject = host == address ? Self.hostPort(address, port) : "\(host) [\(address)]:\(port)"
        var jobs: [Job] = [.pipelining] + versions.map { .version($0) } + TLSProbe.weakClasses.map { .weak($0) }
        jobs.reverse()
        var results = SideResults(
            pipelining: CheckFinding(
                category: .starttls, subject: subject, check: "starttls.pipelining", severity: .info,
                summary: "not tested"))
        await withTaskGroup(of: JobResult.self) { group in
            func start(_ job: Job) {
                group.addTask {
                    switch job {
                    case .pipelining:
                        return .pipelining(
                            await SMTPProbe.pipeliningFinding(
                                address: address, port: port, host: host, options: options, tls: tls,
                                subject: subject))
                    case .version(.ssl3):
                        let hello = TLSClientHello(
                            version: .ssl3, cipherSuites: HandMadeSuites.ssl3, serverName: host)
                        return .version(
                            .ssl3,
                            await TLSProbe.handMadeHandshake(hello, address: address, port: port, options: options))
                    case .version(let v):
                        let setup = TLSProbe.setup(version: v, ciphers: TLSProbe.allCiphers, host: host)
                        return .version(
                            v, await TLSProbe.handshake(setup: setup, address: address, port: port, options: options))
                    case .weak(let w):
                        switch w.offer {
                        case .handMade(let version, let suites):
                            let hello = TLSClientHello(version: version, cipherSuites: suites, serverName: host)
                            return .weak(
                                w.id,
                                await TLSProbe.handMadeHandshake(hello, address: address, port: port, options: options))
                        case .library(let ciphers):
                            // TLS 1.3 has no weak suites; from TLS 1.0 so an old-only server is probed too.
                            let setup = TLSProbe.setup(minimum: .tls10, maximum: .tls12, ciphers: ciphers, host: host)
                            return .weak(
                                w.id,
                                await TLSProbe.handshake(setup: setup, address: address, port: port, options: options))
                        }
                    }
                }
            }
            for _ in 0..<max(1, maxConcurrentConnections) {
                guard let job = jobs.popLast() else { break }
                start(job)
            }
            for await result in group {
                switch result {
                case .pipelining(let f): results.pipelining = f
                case .version(let v, let o): results.versions[v] = o
                case .weak(let id, let o): results.weak[id] = o
                }
                if let job = jobs.popLast() { start(job) }
            }
        }
        return results
    }
}
