import DNSClient
import Foundation

// The model every `mailflow check` probe reports into: findings with a severity, a stable check id
// and (for TLS) the NCSC-NL guideline level; a report whose verdict is its worst finding.

/// How bad a finding is, ordered `ok < info < warning < failure`.
public enum CheckSeverity: String, Codable, Sendable, Comparable, CaseIterable {
    case ok, info, warning, failure

    private var rank: Int {
        switch self {
        case .ok: 0
        case .info: 1
        case .warning: 2
        case .failure: 3
        }
    }

    public static func < (lhs: CheckSeverity, rhs: CheckSeverity) -> Bool { lhs.rank < rhs.rank }
}

/// The part of mail flow a finding is about; the human output groups findings by it.
public enum CheckCategory: String, Codable, Sendable, CaseIterable {
    case mx, address, smtp, starttls, tls, certificate
    case mtaSTS = "mta-sts"
    case tlsRPT = "tls-rpt"
    case dane, spf, dmarc, dkim
    case reverseDNS = "reverse-dns"
    case blocklist, trace
}

/// The levels of the NCSC-NL "IT Security Guidelines for Transport Layer Security (TLS)".
public enum NCSCLevel: String, Codable, Sendable, CaseIterable {
    case good, sufficient
    case phaseOut = "phase-out"
    case insufficient
}

/// One observation of one check about one subject.
public struct CheckFinding: Codable, Sendable, Hashable {
    public var category: CheckCategory
    /// What was checked, e.g. `mx1.example.org [192.0.2.1]:25` or `example.org`.
    public var subject: String
    /// A stable id such as `tls.version.tls1_0` or `spf.lookups`; tests and scripts match on it.
    public var check: String
    public var severity: CheckSeverity
    /// One short line.
    public var summary: String
    public var detail: String?
    /// For TLS findings: the NCSC-NL level of what was seen.
    public var ncsc: NCSCLevel?

    public init(
        category: CheckCategory, subject: String, check: String, severity: CheckSeverity, summary: String,
        detail: String? = nil, ncsc: NCSCLevel? = nil
    ) {
        self.category = category
        self.subject = subject
        self.check = check
        self.severity = severity
        self.summary = summary
        self.detail = detail
        self.ncsc = ncsc
    }
}

/// The result of one `mailflow check` run.
public struct CheckReport: Codable, Sendable {
    public enum Kind: String, Codable, Sendable {
        case domain, host, ip
    }

    public var kind: Kind
    /// The domain, `host:port` or IP address checked.
    public var target: String
    public var startedAt: Date
    public var durationSeconds: Double
    public var findings: [CheckFinding]

    public init(kind: Kind, target: String, startedAt: Date, durationSeconds: Double, findings: [CheckFinding]) {
        self.kind = kind
        self.target = target
        self.startedAt = startedAt
        self.durationSeconds = durationSeconds
        self.findings = findings
    }

    /// The worst severity among the findings; `ok` when there are none.
    public var verdict: CheckSeverity { findings.map(\.severity).max() ?? .ok }

    /// The process exit code for the verdict: ok and info 0, warning 1, failure 2.
    public var exitCode: Int32 { Self.exitCode(for: verdict) }

    public static func exitCode(for severity: CheckSeverity) -> Int32 {
        switch severity {
        case .ok, .info: 0
        case .warning: 1
        case .failure: 2
        }
    }

    private enum CodingKeys: String, CodingKey {
        case kind, target, startedAt, durationSeconds, findings, verdict, exitCode
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(Kind.self, forKey: .kind)
        target = try c.decode(String.self, forKey: .target)
        startedAt = try c.decode(Date.self, forKey: .startedAt)
        durationSeconds = try c.decode(Double.self, forKey: .durationSeconds)
        findings = try c.decode([CheckFinding].self, forKey: .findings)
    }

    /// Encodes the stored fields plus the derived `verdict` and `exitCode`, so JSON readers need not
    /// recompute them.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(target, forKey: .target)
        try c.encode(startedAt, forKey: .startedAt)
        try c.encode(durationSeconds, forKey: .durationSeconds)
        try c.encode(findings, forKey: .findings)
        try c.encode(verdict, forKey: .verdict)
        try c.encode(exitCode, forKey: .exitCode)
    }
}

/// What every probe of a `mailflow check` run is given.
public struct ProbeOptions: Sendable {
    /// The SMTP port probed on each MX or host.
    public var port: Int
    /// The bound on one probe (one connection's whole conversation, one HTTPS fetch, one DNS query).
    public var probeTimeout: Duration
    /// A PEM file of trust anchors used instead of the system roots (certificates and MTA-STS HTTPS).
    public var caFile: String?
    /// The name sent in EHLO.
    public var heloName: String
    /// The DNS servers asked; nothing else but the probed hosts is contacted.
    public var dnsServers: [DNSServer]
    /// How many host probes run at once.
    public var maxParallelProbes: Int
    /// The HTTPS port of the MTA-STS policy host: 443 (RFC 8461 §3.3) except in tests.
    public var mtaSTSPort: Int

    public init(
        port: Int = 25, probeTimeout: Duration = .seconds(10), caFile: String? = nil, heloName: String = "localhost",
        dnsServers: [DNSServer] = [], maxParallelProbes: Int = 8, mtaSTSPort: Int = 443
    ) {
        self.port = port
        self.probeTimeout = probeTimeout
        self.caFile = caFile
        self.heloName = heloName
        self.dnsServers = dnsServers
        self.maxParallelProbes = maxParallelProbes
        self.mtaSTSPort = mtaSTSPort
    }
}

/// What probing one SMTP server at one address found.
public struct HostProbeResult: Sendable {
    public var findings: [CheckFinding]
    /// The certificate chain the server presented after STARTTLS, DER, leaf first; empty when no TLS
    /// handshake completed. DANE matching reads it.
    public var presentedChainDER: [[UInt8]]
    public var starttlsOffered: Bool

    public init(findings: [CheckFinding], presentedChainDER: [[UInt8]] = [], starttlsOffered: Bool = false) {
        self.findings = findings
        self.presentedChainDER = presentedChainDER
        self.starttlsOffered = starttlsOffered
    }
}

/// The SMTP/TLS/certificate probe of one server address; `HostProbe` is the real one, tests inject fakes.
public protocol HostProbing: Sendable {
    /// Probes `address:port`, naming the server `host` (for the certificate name match and subjects).
    /// Never throws: what went wrong is a finding. Bounded by `options.probeTimeout`.
    func probe(host: String, address: String, port: Int, options: ProbeOptions) async -> HostProbeResult
}
