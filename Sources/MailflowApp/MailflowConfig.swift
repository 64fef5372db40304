import AdminServer
import Cluster
import DNSClient
import Delivery
import Foundation
import Ingress
import NIOCore
import SMTPCore
import ServiceHealth
import Yams

/// Mailflow's configuration, read from YAML (see docs/configuration.md for every key and default).
///
/// Parsing is strict: an unknown key or a bad value is an error that names the key path and says
/// what is wrong, so a typo never silently falls back to a default.
///
/// Each top-level section has its own decoder in `MailflowConfig+<Section>.swift`; `parse` only
/// checks the document and hands each section to its decoder. A default lives with the type that
/// uses it (`AdmissionLimits`, `SessionTimeouts`, `RetrySchedule`, `OutboundSettings`, ...) and is
/// read from there, never copied.
public struct MailflowConfig: Sendable, Equatable {
    // server
    public var hostname = "mx.example.test"
    public var smtpListen: [String] = ["127.0.0.1:2525"]
    public var dataDirectory = "./mailflow-data"
    public var logLevel = "info"
    /// `text` (swift-log's stream format) or `json` (one object per line).
    public var logFormat = "text"
    // tls
    public var tlsCertificate: String?
    public var tlsKey: String?
    // limits
    public var maxMessageSize = SMTPLimits.defaultMessageSize
    public var recipientsPerMessage = SMTPLimits.defaultRecipientsPerMessage
    public var maxErrorsPerSession = Self.sessionDefaults.maxErrors
    public var recipientsPerDomainPerTransaction = Self.sessionDefaults.maxRecipientsPerDomain
    /// Server-wide, per-source and per-mailbox caps (`limits`) and the resource forests (`forests`),
    /// exactly as admission control takes them.
    public var admissionLimits = AdmissionLimits()
    /// Free space the data directory's filesystem keeps; below it new messages get `452 4.3.1`
    /// (`limits.queue_min_free`; nil: `queueMinimumFree`'s default).
    public var queueMinFree: Int?
    /// Delay before every error reply (0: none; Exchange on-premises uses 5 s).
    public var tarpit: TimeInterval = 0
    /// Wait this long before the greeting; a client that talks first is refused (0: off).
    public var greetPause: TimeInterval = 0
    // relay
    /// Client networks allowed to relay to other domains (CIDR); none by default.
    public var trustedNetworks: [String] = []
    /// Confirms trusted networks wider than an IPv4 /8 or an IPv6 /16 (`relay.allow_open_relay`).
    public var allowOpenRelay = false
    // dns
    /// DNS servers (`ip:port`); empty means those of /etc/resolv.conf.
    public var dnsServers: [String] = []
    public var dnsTimeout = Self.seconds(Self.dnsDefaults.timeout)
    public var dnsAttempts = Self.dnsDefaults.attempts
    // diagnostics
    /// DNS blocklist zones `mailflow check ip` and the admin API's checks ask; none by default.
    public var diagnosticsBlocklists: [String] = []
    // delivery
    public var mxPort = Self.outboundDefaults.mxPort
    public var heloName: String?
    /// Local routes over LMTP to a mailbox server instead of Maildir; nil: Maildir.
    public var lmtp: LMTPSettings?
    public var maxAbruptCloses = DeliveryPolicy.defaultMaxAbruptCloses
    /// After this long undelivered the sender gets one delay DSN; nil: never.
    public var delayNotice: TimeInterval? = DeliveryPolicy.defaultDelayNotice
    public var destinationInitialConcurrency = Self.outboundDefaults.initialWindow
    public var destinationMaxConcurrency = Self.outboundDefaults.maxWindow
    /// Messages in flight; most wait on remote servers, so this is far above the I/O parallelism.
    public var deliveryConcurrency = 100
    public var retryIntervals = RetrySchedule.exchangeLike.intervals
    public var expiry = RetrySchedule.exchangeLike.expiry
    // timeouts
    public var commandTimeout = Self.seconds(SessionTimeouts().command)
    public var dataTimeout = Self.seconds(SessionTimeouts().data)
    public var sessionTimeout = Self.seconds(SessionTimeouts().session)
    public var shutdownGrace: TimeInterval = 30
    /// Timeouts are deadlines per request, not idle timers every byte restarts (`timeouts.request_deadline`).
    public var requestDeadline = SessionTimeouts().requestDeadline
    /// Octets a second a body must keep up to earn more time (`timeouts.min_data_rate`, as Postfix's
    /// `smtpd_min_data_rate`).
    public var minDataRate = SessionTimeouts().minDataRate
    /// A TLS handshake not finished in this is closed (`timeouts.tls_handshake`).
    public var tlsHandshakeTimeout = Self.seconds(SessionTimeouts().tlsHandshake)
    /// Deadlines of outbound sessions (`timeouts.outbound`).
    public var outboundTimeouts = Self.outboundDefaults.timeouts
    // cluster
    /// Cluster mode (`cluster`): the shared PostgreSQL, this node's name, heartbeats; nil: one node.
    public var cluster: ClusterSettings?
    /// The queue in a shared PostgreSQL (`storage.postgres`); nil: this node's SQLite file.
    public var sharedQueue: SharedQueueSettings?
    // health
    /// Service health: the live monitor (`health.enabled`), its webhook (URL and HMAC secret), the
    /// admin addresses mailed on open, classification change and restore, and how much trace history
    /// rebuilds its baselines at start.
    public var healthEnabled = true
    public var healthWebhook: URL?
    public var healthWebhookSecret: String?
    public var healthNotify: [String] = []
    public var healthWarmUp = HealthService.defaultWarmUp
    /// The detector's thresholds; `health.bucket`, `window`, `minimum_duration` and `restore_after`
    /// change the time scales (docs/health.md).
    public var healthPolicy = HealthDetectionPolicy()
    // tenants
    public var tenants: [TenantConfig] = [TenantConfig.sample]
    // admin
    /// The admin HTTP listener (API, web admin center, /metrics); nil when `admin.enabled` is false.
    public var adminListen: String? = "127.0.0.1:8025"
    public var adminSessionLifetime = AdminHTTPServer.defaultSessionLifetime
    /// TLS on the admin listener (`admin.tls`); nil serves plain HTTP. Failed sign-ins per source
    /// before `429` (`admin.signin_failures`) within `admin.signin_window`.
    public var adminTLS: AdminTLS?
    public var adminSignInFailures = SignInThrottle.defaultLimit
    public var adminSignInWindow = SignInThrottle.defaultWindow
    // sender_auth
    /// SPF, DKIM and DMARC for mail received from other servers (`sender_auth.verify`); off by default.
    public var senderAuthVerify = false
    // submission
    /// Submission listeners with STARTTLS (port 587 style); none by default.
    public var submissionListen: [String] = []
    /// Submission listeners inside TLS from the first byte (port 465 style); none by default.
    public var submissionImplicitTLSListen: [String] = []
    /// AUTH failure delays and lockout (`submission.max_failures`, `failure_window`, `lockout`).
    public var submissionPolicy = SubmissionPolicy()
    // trace
    /// How long trace events and finished messages are kept.
    public var traceRetention: TimeInterval = 90 * 86400
    public var tracePruneInterval: TimeInterval = 3600
    /// How often the queue size is sampled for the overview chart.
    public var queueSampleInterval: TimeInterval = 60

    public init() {}

    /// A tenant as configured.
    public struct TenantConfig: Sendable, Equatable {
        public var name: String
        public var domains: [String]
        public var mailboxes: [String]
        public var catchAll: Bool
        /// This tenant's own message size limit, at most the server's.
        public var maxMessageSize: Int?
        /// Where this tenant's external mail goes instead of MX.
        public var connector: OutboundConnector?
        /// DKIM keys its relayed mail is signed with (`dkim`, docs/dkim.md).
        public var dkim: [TenantDKIMKey] = []
        /// Refuse (`550 5.7.1`) mail that fails a DMARC `p=reject`, rather than only record it.
        public var dmarcReject = false
        /// Leave the submitting client's name and address out of `Received:` (`hide_client_address`).
        public var hideClientAddress = false

        public static let sample = TenantConfig(
            name: "example", domains: ["example.test"], mailboxes: ["postmaster", "alice", "bob"], catchAll: false)
    }

    /// A configuration error: where, and what is wrong.
    public struct ConfigError: Error, CustomStringConvertible, Equatable {
        public var path: String
        public var message: String
        public var line: Int?

        /// One line: any control or line-breaking character is shown escaped.
        public var description: String {
            MailflowConfig.escaped(
                (line.map { "line \($0): " } ?? "") + (path.isEmpty ? message : "\(path): \(message)"))
        }
    }

    // The owners of defaults that are not plain values of their own.
    static let sessionDefaults = ServerSessionConfiguration(hostname: "")
    static let dnsDefaults = DNSResolverConfiguration(servers: [])
    static let outboundDefaults = OutboundSettings(heloName: "")

    static func seconds(_ t: TimeAmount) -> TimeInterval { Double(t.nanoseconds) / 1e9 }

    /// Reads and validates a YAML file; relative paths in it are taken relative to the file's folder.
    public static func load(file: String) throws -> MailflowConfig {
        guard let handle = FileHandle(forReadingAtPath: file) else {
            throw ConfigError(path: "", message: "cannot read config file \(file)")
        }
        defer { try? handle.close() }
        let data: Data
        do {
            // At most one octet past the limit: enough to know the file is too large.
            data = try handle.read(upToCount: maxFileSize + 1) ?? Data()
        } catch {
            throw ConfigError(path: "", message: "cannot read config file \(file): \(error.localizedDescription)")
        }
        guard data.count <= maxFileSize else { throw tooLarge() }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(path: "", message: "config file \(file) is not UTF-8")
        }
        let base = URL(fileURLWithPath: file).deletingLastPathComponent().path
        return try parse(yaml: text, baseDirectory: base)
    }

    /// The top-level keys a file may have, one decoder each (forests are decoded after tenants:
    /// a forest names tenants).
    static let sections = [
        "server", "tls", "limits", "timeouts", "delivery", "tenants", "forests", "relay", "dns", "admin", "trace",
        "health", "diagnostics", "submission", "sender_auth", "cluster",
        "storage",
    ]

    public static func parse(yaml: String, baseDirectory: String = ".") throws -> MailflowConfig {
        var config = MailflowConfig()
        guard let node = try document(yaml) else { return config }  // an empty file means all defaults
        let root = try ConfigReader(node, "")
        try root.only(sections)
        if let r = try root.mapping("health") { try config.decodeHealth(r) }
        if let r = try root.mapping("admin") { try config.decodeAdmin(r, baseDirectory: baseDirectory) }
        if let r = try root.mapping("trace") { try config.decodeTrace(r) }
        if let r = try root.mapping("cluster") { try config.decodeCluster(r) }
        if let r = try root.mapping("storage") { try config.decodeStorage(r) }
        if let r = try root.mapping("relay") { try config.decodeRelay(r) }
        if let r = try root.mapping("submission") { try config.decodeSubmission(r) }
        if let r = try root.mapping("sender_auth") { try config.decodeSenderAuth(r) }
        if let r = try root.mapping("dns") { try config.decodeDNS(r) }
        if let r = try root.mapping("diagnostics") { try config.decodeDiagnostics(r) }
        if let r = try root.mapping("server") { try config.decodeServer(r, baseDirectory: baseDirectory) }
        if let r = try root.mapping("tls") { try config.decodeTLS(r, baseDirectory: baseDirectory) }
        if let r = try root.mapping("limits") { try config.decodeLimits(r) }
        if let r = try root.mapping("timeouts") { try config.decodeTimeouts(r) }
        if let r = try root.mapping("delivery") { try config.decodeDelivery(r) }
        if let list = try root.list("tenants") { try config.decodeTenants(list, path: root.path("tenants")) }
        try config.loadDKIMKeys(baseDirectory: baseDirectory)
        if let list = try root.list("forests") { try config.decodeForests(list, path: root.path("forests")) }
        return config
    }

    static func resolve(_ path: String, _ base: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: base).appendingPathComponent(path).standardized.path
    }

    /// A host name in text form has at most 253 octets (RFC 1035 §2.3.4, without the final dot).
    static let maxHostNameLength = 253

    static func checkHostName(_ name: String, _ r: ConfigReader, _ key: String) throws {
        guard name.utf8.count <= maxHostNameLength else {
            throw r.error(key, "is \(name.utf8.count) octets long; a host name has at most \(maxHostNameLength)")
        }
        guard (try? Mailbox.validateDomain(name[...], allowUTF8: false)) != nil else {
            throw r.error(key, "\(quote(name)) is not a valid host name")
        }
    }
}
