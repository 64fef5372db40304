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
public struct MailflowConfig: Sendable, Equatable {
    public var hostname = "mx.example.test"
    public var smtpListen: [String] = ["127.0.0.1:2525"]
    public var dataDirectory = "./mailflow-data"
    public var logLevel = "info"
    /// `text` (swift-log's stream format) or `json` (one object per line).
    public var logFormat = "text"
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var maxMessageSize = SMTPLimits.defaultMessageSize
    public var recipientsPerMessage = SMTPLimits.defaultRecipientsPerMessage
    public var maxErrorsPerSession = 20
    public var recipientsPerDomainPerTransaction = 200
    // Admission defaults live in one place, `AdmissionLimits`.
    public var maxConnections = AdmissionLimits().maxConnections
    public var perSourceMaxConnections = AdmissionLimits().perSourceMaxConnections
    public var perSourceConnectionsPerMinute = AdmissionLimits().perSourceConnectionsPerMinute
    public var perSourceMessagesPerMinute = AdmissionLimits().perSourceMessagesPerMinute
    public var mailboxMessagesPerHour = AdmissionLimits().mailboxMessagesPerHour
    public var mailboxMessagesPerHourPerSender = AdmissionLimits().mailboxMessagesPerHourPerSender
    /// Delay before every error reply (0: none; Exchange on-premises uses 5 s).
    public var tarpit: TimeInterval = 0
    /// Wait this long before the greeting; a client that talks first is refused (0: off).
    public var greetPause: TimeInterval = 0
    public var forests: [ResourceForest] = []
    /// Client networks allowed to relay to other domains (CIDR); none by default.
    public var trustedNetworks: [String] = []
    /// Confirms trusted networks wider than an IPv4 /8 or an IPv6 /16 (`relay.allow_open_relay`).
    public var allowOpenRelay = false
    /// DNS servers (`ip:port`); empty means those of /etc/resolv.conf.
    public var dnsServers: [String] = []
    public var dnsTimeout: TimeInterval = 2
    public var dnsAttempts = 2
    public var mxPort = 25
    public var heloName: String?
    public var maxAbruptCloses = 3
    /// After this long undelivered the sender gets one delay DSN; nil: never.
    public var delayNotice: TimeInterval? = 4 * 3600
    public var destinationInitialConcurrency = 2
    public var destinationMaxConcurrency = 20
    public var commandTimeout: TimeInterval = 300
    public var dataTimeout: TimeInterval = 180
    public var sessionTimeout: TimeInterval = 3600
    public var shutdownGrace: TimeInterval = 30
    /// Timeouts are deadlines per request, not idle timers every byte restarts (`timeouts.request_deadline`).
    public var requestDeadline = true
    /// Service health: the live monitor (`health.enabled`), its webhook (URL and HMAC secret), the
    /// admin addresses mailed on open, classification change and restore, and how much trace history
    /// rebuilds its baselines at start.
    public var healthEnabled = true
    public var healthWebhook: URL?
    public var healthWebhookSecret: String?
    public var healthNotify: [String] = []
    public var healthWarmUp: TimeInterval = 7 * 86400
    /// The detector's thresholds; `health.bucket`, `window`, `minimum_duration` and `restore_after`
    /// change the time scales (docs/health.md).
    public var healthPolicy = HealthDetectionPolicy()
    /// Octets a second a body must keep up to earn more time (`timeouts.min_data_rate`, as Postfix's
    /// `smtpd_min_data_rate`).
    public var minDataRate = 500
    /// Messages in flight; most wait on remote servers, so this is far above the I/O parallelism.
    public var deliveryConcurrency = 100
    public var retryIntervals: [TimeInterval] = Array(repeating: 60, count: 4) + Array(repeating: 300, count: 6) + [900]
    public var expiry: TimeInterval = 24 * 3600
    public var tenants: [TenantConfig] = [TenantConfig.sample]
    /// The admin HTTP listener (API, web admin center, /metrics); nil when `admin.enabled` is false.
    public var adminListen: String? = "127.0.0.1:8025"
    public var adminSessionLifetime: TimeInterval = 12 * 3600
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

        public static let sample = TenantConfig(
            name: "example", domains: ["example.test"], mailboxes: ["postmaster", "alice", "bob"], catchAll: false)
    }

    /// The admission limits this config describes.
    public var admissionLimits: AdmissionLimits {
        var l = AdmissionLimits()
        l.maxConnections = maxConnections
        l.perSourceMaxConnections = perSourceMaxConnections
        l.perSourceConnectionsPerMinute = perSourceConnectionsPerMinute
        l.perSourceMessagesPerMinute = perSourceMessagesPerMinute
        l.mailboxMessagesPerHour = mailboxMessagesPerHour
        l.mailboxMessagesPerHourPerSender = mailboxMessagesPerHourPerSender
        l.forests = forests
        return l
    }

    /// The trusted networks that make Mailflow an open relay (accepted only with `allowOpenRelay`).
    public var openRelayNetworks: [String] {
        guard let t = try? TrustedNetworks(trustedNetworks) else { return [] }
        return t.openRelayEntries.map { trustedNetworks[$0] }
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

    // Bounds checked before the YAML is parsed, so a hostile file is refused with a line instead of
    // taking the process down: Yams composes recursively (a few thousand levels overflow the stack).
    /// The largest config file read (1 MiB); a real one is a few KB.
    public static let maxFileSize = 1 << 20
    /// Lists and mappings inside one another, counted through aliases; a real config uses 4.
    public static let maxNesting = 64
    /// The longest text value or key (4 KiB, as PATH_MAX).
    public static let maxValueSize = 4096
    /// Values in the document once aliases are expanded: far more than 1 MiB can hold without them.
    static let maxExpandedValues = 1_000_000

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

    static func tooLarge() -> ConfigError {
        ConfigError(
            path: "", message: "the file is larger than 1 MiB (\(maxFileSize) octets), the most a config file may be")
    }

    public static func parse(yaml: String, baseDirectory: String = ".") throws -> MailflowConfig {
        guard yaml.utf8.count <= maxFileSize else { throw tooLarge() }
        // Before Yams: its composer recurses once per level.
        if let refusal = YAMLNestingScan.check(yaml, limit: maxNesting) {
            throw ConfigError(path: "", message: refusal.message, line: refusal.line)
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw yamlError(error, yaml)
        }
        var config = MailflowConfig()
        guard let node else { return config }  // an empty file means all defaults
        try checkTree(node)
        let root = try Reader(node, "")
        try root.only([
            "server", "tls", "limits", "timeouts", "delivery", "tenants", "forests", "relay", "dns", "admin", "trace",
            "health",
        ])
        if let health = try root.mapping("health") {
            try health.only([
                "enabled", "webhook", "webhook_secret", "notify", "warm_up", "bucket", "window", "minimum_duration",
                "restore_after",
            ])
            if let b = try health.duration("bucket") {
                guard (1...300).contains(b) else { throw health.error("bucket", "must be between 1s and 5m") }
                config.healthPolicy.bucketSeconds = b
            }
            if let w = try health.duration("window") {
                let buckets = Int((w / config.healthPolicy.bucketSeconds).rounded())
                guard (2...120).contains(buckets) else {
                    throw health.error("window", "must be 2 to 120 buckets long")
                }
                config.healthPolicy.windowBuckets = buckets
            }
            if let d = try health.duration("minimum_duration") { config.healthPolicy.minimumDuration = d }
            if let r = try health.duration("restore_after") { config.healthPolicy.restoreAfter = r }
            if let e = try health.bool("enabled") { config.healthEnabled = e }
            if let u = try health.string("webhook") {
                guard let url = URL(string: u), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
                    url.host != nil
                else { throw health.error("webhook", "\(quote(u)) is not an http(s) URL") }
                config.healthWebhook = url
            }
            if let secret = try health.string("webhook_secret") {
                guard secret.utf8.count >= 16 else {
                    throw health.error("webhook_secret", "must be at least 16 characters (it signs each webhook call)")
                }
                config.healthWebhookSecret = secret
            }
            if config.healthWebhook != nil && config.healthWebhookSecret == nil {
                throw health.error("webhook_secret", "is required with webhook (the receiver checks the signature)")
            }
            if let list = try health.stringList("notify") {
                for a in list where !a.contains("@") {
                    throw health.error("notify", "\(quote(a)) is not a mail address")
                }
                config.healthNotify = list
            }
            if let w = try health.duration("warm_up") { config.healthWarmUp = w }
        }
        if let admin = try root.mapping("admin") {
            try admin.only(["enabled", "listen", "session_lifetime"])
            if let l = try admin.string("listen") {
                guard let (host, port) = ListenAddress.parse(l),
                    (try? SocketAddress(ipAddress: host, port: port)) != nil
                else {
                    throw admin.error("listen", "\(quote(l)) is not IP:port (for example 127.0.0.1:8025)")
                }
                config.adminListen = l
            }
            if try admin.bool("enabled") == false { config.adminListen = nil }
            if let t = try admin.duration("session_lifetime") { config.adminSessionLifetime = t }
        }
        if let trace = try root.mapping("trace") {
            try trace.only(["retention", "prune_interval", "sample_interval"])
            if let t = try trace.duration("retention") {
                guard t >= 3600 else { throw trace.error("retention", "must be at least 1h") }
                config.traceRetention = t
            }
            if let t = try trace.duration("prune_interval") { config.tracePruneInterval = t }
            if let t = try trace.duration("sample_interval") { config.queueSampleInterval = t }
        }
        if let relay = try root.mapping("relay") {
            try relay.only(["trusted_networks", "allow_open_relay"])
            let nets = try relay.stringList("trusted_networks") ?? []
            let trusted: TrustedNetworks
            do {
                trusted = try TrustedNetworks(nets)
            } catch {
                throw relay.error("trusted_networks", "\(error)")
            }
            let allowOpen = try relay.bool("allow_open_relay") ?? false
            // Each block is judged alone, so 0.0.0.0/1 plus 128.0.0.0/1 is caught as well as 0.0.0.0/0.
            if !allowOpen, let i = trusted.openRelayEntries.first {
                throw ConfigError(
                    path: relay.path("trusted_networks[\(i)]"),
                    message: "\(quote(nets[i])) is wider than /\(TrustedNetworks.openRelayIPv4Prefix) (IPv4) or "
                        + "/\(TrustedNetworks.openRelayIPv6Prefix) (IPv6): anyone in it may relay, an open relay; "
                        + "narrow it, or confirm with relay.allow_open_relay: true",
                    line: relay["trusted_networks"]?.sequence.flatMap { Array($0)[i].mark?.line })
            }
            config.trustedNetworks = nets
            config.allowOpenRelay = allowOpen
        }
        if let dns = try root.mapping("dns") {
            try dns.only(["servers", "timeout", "attempts"])
            if let list = try dns.stringList("servers") {
                for (i, a) in list.enumerated() {
                    let parsed = ListenAddress.parse(a) ?? (a, 53)
                    guard (try? SocketAddress(ipAddress: parsed.0, port: parsed.1)) != nil else {
                        throw dns.error("servers[\(i)]", "\(quote(a)) is not an IP address with an optional :port")
                    }
                }
                config.dnsServers = list
            }
            if let t = try dns.duration("timeout") { config.dnsTimeout = t }
            if let a = try dns.int("attempts") {
                guard (1...10).contains(a) else { throw dns.error("attempts", "must be between 1 and 10") }
                config.dnsAttempts = a
            }
        }

        if let server = try root.mapping("server") {
            try server.only(["hostname", "smtp", "data", "log_level", "log_format"])
            if let f = try server.string("log_format") {
                guard ["text", "json"].contains(f) else {
                    throw server.error("log_format", "\(quote(f)) is not one of text, json")
                }
                config.logFormat = f
            }
            if let h = try server.string("hostname") {
                try checkHostName(h, server, "hostname")
                config.hostname = h
            }
            if let list = try server.stringList("smtp") {
                guard !list.isEmpty else { throw server.error("smtp", "needs at least one listen address") }
                for (i, a) in list.enumerated() {
                    guard let (host, port) = ListenAddress.parse(a) else {
                        throw server.error(
                            "smtp[\(i)]", "\(quote(a)) is not host:port (for example 127.0.0.1:2525 or [::1]:2525)")
                    }
                    guard (try? SocketAddress(ipAddress: host, port: port)) != nil else {
                        throw server.error(
                            "smtp[\(i)]", "\(quote(host)) is not an IP address (host names are not resolved)")
                    }
                }
                config.smtpListen = list
            }
            if let d = try server.string("data") { config.dataDirectory = resolve(d, baseDirectory) }
            if let l = try server.string("log_level") {
                let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
                guard levels.contains(l) else {
                    throw server.error("log_level", "\(quote(l)) is not one of \(levels.joined(separator: ", "))")
                }
                config.logLevel = l
            }
        }
        if let tls = try root.mapping("tls") {
            try tls.only(["certificate", "key"])
            let cert = try tls.string("certificate")
            let key = try tls.string("key")
            guard (cert == nil) == (key == nil) else {
                throw tls.error(
                    cert == nil ? "certificate" : "key",
                    "is required when tls.\(cert == nil ? "key" : "certificate") is set")
            }
            config.tlsCertificate = cert.map { resolve($0, baseDirectory) }
            config.tlsKey = key.map { resolve($0, baseDirectory) }
        }
        if let limits = try root.mapping("limits") {
            try limits.only([
                "max_message_size", "recipients_per_message", "max_errors_per_session",
                "recipients_per_domain_per_transaction", "max_connections", "per_source", "mailbox_messages_per_hour",
                "mailbox_messages_per_hour_per_sender", "tarpit", "greet_pause",
            ])
            func count(_ r: Reader, _ key: String, _ range: ClosedRange<Int>) throws -> Int? {
                guard let v = try r.int(key) else { return nil }
                guard range.contains(v) else {
                    throw r.error(key, "must be between \(range.lowerBound) and \(range.upperBound)")
                }
                return v
            }
            if let v = try count(limits, "recipients_per_domain_per_transaction", 1...1000) {
                config.recipientsPerDomainPerTransaction = v
            }
            if let v = try count(limits, "max_connections", 1...1_000_000) { config.maxConnections = v }
            if let v = try count(limits, "mailbox_messages_per_hour", 1...10_000_000) {
                config.mailboxMessagesPerHour = v
            }
            if let v = try count(limits, "mailbox_messages_per_hour_per_sender", 1...10_000_000) {
                config.mailboxMessagesPerHourPerSender = v
            }
            if let v = try limits.duration("tarpit", allowZero: true) {
                guard v <= 60 else { throw limits.error("tarpit", "must be at most 60 seconds") }
                config.tarpit = v
            }
            if let v = try limits.duration("greet_pause", allowZero: true) {
                guard v <= 60 else { throw limits.error("greet_pause", "must be at most 60 seconds") }
                config.greetPause = v
            }
            if let ps = try limits.mapping("per_source") {
                try ps.only(["max_connections", "connections_per_minute", "messages_per_minute"])
                if let v = try count(ps, "max_connections", 1...1_000_000) { config.perSourceMaxConnections = v }
                if let v = try count(ps, "connections_per_minute", 1...10_000_000) {
                    config.perSourceConnectionsPerMinute = v
                }
                if let v = try count(ps, "messages_per_minute", 1...10_000_000) {
                    config.perSourceMessagesPerMinute = v
                }
            }
            if let s = try limits.size("max_message_size") {
                guard (1024...(150 * 1024 * 1024)).contains(s) else {
                    throw limits.error("max_message_size", "must be between 1 KB and 150 MB")
                }
                config.maxMessageSize = s
            }
            if let r = try limits.int("recipients_per_message") {
                guard (1...1000).contains(r) else {
                    throw limits.error("recipients_per_message", "must be between 1 and 1000")
                }
                config.recipientsPerMessage = r
            }
            if let e = try limits.int("max_errors_per_session") {
                guard (1...1000).contains(e) else {
                    throw limits.error("max_errors_per_session", "must be between 1 and 1000")
                }
                config.maxErrorsPerSession = e
            }
        }
        if let t = try root.mapping("timeouts") {
            try t.only(["command", "data", "session", "shutdown_grace", "request_deadline", "min_data_rate"])
            if let v = try t.bool("request_deadline") { config.requestDeadline = v }
            if let v = try t.int("min_data_rate") {
                guard (1...1_000_000_000).contains(v) else {
                    throw t.error("min_data_rate", "must be between 1 and 1000000000 octets a second")
                }
                config.minDataRate = v
            }
            if let v = try t.duration("command") { config.commandTimeout = v }
            if let v = try t.duration("data") { config.dataTimeout = v }
            if let v = try t.duration("session") { config.sessionTimeout = v }
            if let v = try t.duration("shutdown_grace") { config.shutdownGrace = v }
        }
        if let d = try root.mapping("delivery") {
            try d.only([
                "concurrency", "retry_intervals", "expiry", "mx_port", "helo_name", "max_abrupt_closes",
                "destination_concurrency", "delay_notice",
            ])
            if let p = try d.int("mx_port") {
                guard (1...65535).contains(p) else { throw d.error("mx_port", "must be between 1 and 65535") }
                config.mxPort = p
            }
            if let h = try d.string("helo_name") {
                try checkHostName(h, d, "helo_name")
                config.heloName = h
            }
            if let dn = try d.duration("delay_notice", allowZero: true) { config.delayNotice = dn == 0 ? nil : dn }
            if let m = try d.int("max_abrupt_closes") {
                guard (1...100).contains(m) else { throw d.error("max_abrupt_closes", "must be between 1 and 100") }
                config.maxAbruptCloses = m
            }
            if let dc = try d.mapping("destination_concurrency") {
                try dc.only(["initial", "maximum"])
                if let i = try dc.int("initial") {
                    guard (1...1000).contains(i) else { throw dc.error("initial", "must be between 1 and 1000") }
                    config.destinationInitialConcurrency = i
                }
                if let m = try dc.int("maximum") {
                    guard (1...1000).contains(m) else { throw dc.error("maximum", "must be between 1 and 1000") }
                    config.destinationMaxConcurrency = m
                }
            }
            if let c = try d.int("concurrency") {
                guard (1...256).contains(c) else { throw d.error("concurrency", "must be between 1 and 256") }
                config.deliveryConcurrency = c
            }
            if let list = try d.list("retry_intervals") {
                guard !list.isEmpty else { throw d.error("retry_intervals", "needs at least one interval") }
                config.retryIntervals = try list.enumerated().map { i, n in
                    try Reader.parseDuration(n, path: d.path("retry_intervals[\(i)]"))
                }
            }
            if let e = try d.duration("expiry") { config.expiry = e }
        }
        if let tenants = try root.list("tenants") {
            var seenNames = Set<String>()
            var seenDomains: [String: String] = [:]
            config.tenants = []
            for (i, n) in tenants.enumerated() {
                let t = try Reader(n, root.path("tenants[\(i)]"))
                try t.only(["name", "domains", "mailboxes", "catch_all", "max_message_size", "outbound_connector"])
                var connector: OutboundConnector?
                if let c = try t.mapping("outbound_connector") {
                    try c.only(["smart_host", "tls", "verify_name"])
                    guard let hp = try c.string("smart_host"), let (host, port) = ListenAddress.parse(hp) else {
                        throw c.error("smart_host", "is required, as host:port")
                    }
                    let tlsText = try c.string("tls") ?? "opportunistic"
                    guard let tls = TLSRequirement(rawValue: tlsText) else {
                        throw c.error("tls", "\(quote(tlsText)) is not one of required, opportunistic, disabled")
                    }
                    connector = OutboundConnector(
                        host: host, port: port, tls: tls, verifyName: try c.string("verify_name"))
                }
                guard let name = try t.string("name"), !name.isEmpty else { throw t.error("name", "is required") }
                guard seenNames.insert(name).inserted else {
                    throw t.error("name", "\(quote(name)) is used by two tenants")
                }
                guard let domains = try t.stringList("domains"), !domains.isEmpty else {
                    throw t.error("domains", "is required and needs at least one domain")
                }
                for (j, dom) in domains.enumerated() {
                    guard dom.utf8.count <= maxHostNameLength,
                        (try? Mailbox.validateDomain(dom[...], allowUTF8: false)) != nil
                    else {
                        throw t.error("domains[\(j)]", "\(quote(dom)) is not a valid domain")
                    }
                    if let other = seenDomains[dom.lowercased()] {
                        throw t.error("domains[\(j)]", "\(quote(dom)) already belongs to tenant \(quote(other))")
                    }
                    seenDomains[dom.lowercased()] = name
                }
                let boxes = try t.stringList("mailboxes") ?? []
                for (j, b) in boxes.enumerated() {
                    do {
                        try Mailbox.validateLocalPart(b[...], allowUTF8: true)
                    } catch {
                        throw t.error("mailboxes[\(j)]", "\(quote(b)) is not a valid local part")
                    }
                }
                let catchAll = try t.bool("catch_all") ?? false
                let size = try t.size("max_message_size")
                if let size, !(1024...(150 * 1024 * 1024)).contains(size) {
                    throw t.error("max_message_size", "must be between 1 KB and 150 MB")
                }
                config.tenants.append(
                    TenantConfig(
                        name: name, domains: domains, mailboxes: boxes, catchAll: catchAll, maxMessageSize: size,
                        connector: connector))
            }
        }
        if let forests = try root.list("forests") {
            var names = Set<String>()
            var forestOfTenant: [String: String] = [:]
            let tenantNames = Set(config.tenants.map(\.name))
            for (i, n) in forests.enumerated() {
                let f = try Reader(n, root.path("forests[\(i)]"))
                try f.only(["name", "region", "tenants", "max_connections", "max_messages_per_minute"])
                guard let name = try f.string("name"), !name.isEmpty else { throw f.error("name", "is required") }
                guard name != ResourceForest.defaultName else {
                    throw f.error("name", "\(quote(name)) is reserved for tenants in no forest")
                }
                guard names.insert(name).inserted else {
                    throw f.error("name", "\(quote(name)) is used by two forests")
                }
                let tenants = try f.stringList("tenants") ?? []
                for (j, t) in tenants.enumerated() {
                    guard tenantNames.contains(t) else {
                        throw f.error("tenants[\(j)]", "no tenant is named \(quote(t))")
                    }
                    if let other = forestOfTenant[t] {
                        throw f.error("tenants[\(j)]", "tenant \(quote(t)) is already in forest \(quote(other))")
                    }
                    forestOfTenant[t] = name
                }
                let maxConnections = try f.int("max_connections") ?? 200
                guard (1...1_000_000).contains(maxConnections) else {
                    throw f.error("max_connections", "must be between 1 and 1000000")
                }
                let rate = try f.int("max_messages_per_minute") ?? 0
                guard (0...100_000_000).contains(rate) else {
                    throw f.error("max_messages_per_minute", "must be between 0 (no limit) and 100000000")
                }
                config.forests.append(
                    ResourceForest(
                        name: name, region: try f.string("region") ?? "default", tenants: tenants,
                        maxConnections: maxConnections, maxMessagesPerMinute: rate))
            }
        }
        return config
    }

    static func resolve(_ path: String, _ base: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: base).appendingPathComponent(path).standardized.path
    }

    /// A host name in text form has at most 253 octets (RFC 1035 §2.3.4, without the final dot).
    static let maxHostNameLength = 253

    static func checkHostName(_ name: String, _ r: Reader, _ key: String) throws {
        guard name.utf8.count <= maxHostNameLength else {
            throw r.error(key, "is \(name.utf8.count) octets long; a host name has at most \(maxHostNameLength)")
        }
        guard (try? Mailbox.validateDomain(name[...], allowUTF8: false)) != nil else {
            throw r.error(key, "\(quote(name)) is not a valid host name")
        }
    }

    /// A value as an error message shows it: in quotes, at most 80 characters.
    static func quote(_ value: String) -> String { "'\(excerpt(value))'" }

    /// At most `limit` characters of `value` (then `…`), with control and line-breaking characters
    /// escaped: a message that quotes a value stays one short line.
    public static func excerpt(_ value: String, limit: Int = 80) -> String {
        var out = ""
        for (n, u) in value.unicodeScalars.enumerated() {
            if n == limit { return escaped(out) + "…" }
            out.unicodeScalars.append(u)
        }
        return escaped(out)
    }

    /// `text` with every control, format and line or paragraph separator character written as an
    /// escape (`\n`, `\u{7}`), so it prints as one line that cannot restyle a terminal.
    static func escaped(_ text: String) -> String {
        var out = ""
        for u in text.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                switch u.properties.generalCategory {
                case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
                    out += "\\u{\(String(u.value, radix: 16))}"
                default: out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    /// Yams' error as one line: libyaml's problem and where, without the multi-line snippet.
    static func yamlError(_ error: Error, _ yaml: String) -> ConfigError {
        switch error as? YamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let during = context.map { "; \($0.text) from line \($0.mark.line)" } ?? ""
            return ConfigError(
                path: "", message: "not valid YAML: \(problem) (column \(mark.column)\(during))", line: mark.line)
        case .reader(let problem, let offset, let value, _):
            let line = offset.map { o in yaml.prefix(o).reduce(1) { $1.isNewline ? $0 + 1 : $0 } }
            return ConfigError(
                path: "", message: "not valid YAML: \(problem) (U+\(String(format: "%04X", value)))", line: line)
        default:
            return ConfigError(path: "", message: "not valid YAML: \(error)")
        }
    }

    /// Every mapping key appears once and is text; no text value is longer than `maxValueSize`;
    /// aliases do not expand the document past `maxExpandedValues`. Iterative: nothing here recurses.
    static func checkTree(_ root: Node) throws {
        // Paths are built only for an error, from each node's parent.
        var parents: [(parent: Int, segment: String)] = [(-1, "")]
        var stack: [(node: Node, at: Int)] = [(root, 0)]
        func path(_ at: Int) -> String {
            var segments: [String] = []
            var i = at
            while i > 0 {
                segments.append(parents[i].segment)
                i = parents[i].parent
            }
            return segments.reversed().reduce("") { p, s in s.hasPrefix("[") || p.isEmpty ? p + s : p + "." + s }
        }
        func tooLong(_ s: Node.Scalar, _ at: Int, key: Bool) -> ConfigError? {
            let size = s.string.utf8.count
            guard size > maxValueSize else { return nil }
            return ConfigError(
                path: path(at),
                message:
                    "\(key ? "a key" : "a value") of \(size) octets (\(quote(s.string))); at most \(maxValueSize) allowed",
                line: s.mark?.line)
        }
        var count = 0
        while let (node, at) = stack.popLast() {
            count += 1
            guard count <= maxExpandedValues else {
                // No line: an alias's copy carries its anchor's lines.
                throw ConfigError(
                    path: path(at), message: "aliases expand the document past \(maxExpandedValues) values")
            }
            switch node {
            case .scalar(let s):
                if let e = tooLong(s, at, key: false) { throw e }
            case .sequence(let seq):
                for (i, item) in seq.enumerated().reversed() {
                    parents.append((at, "[\(i)]"))
                    stack.append((item, parents.count - 1))
                }
            case .mapping(let m):
                var seen: [String: Int] = [:]
                var children: [(Node, Int)] = []
                for (k, v) in m {
                    guard case .scalar(let ks) = k else {
                        throw ConfigError(
                            path: path(at), message: "a key must be text, not a list or mapping", line: k.mark?.line)
                    }
                    if let e = tooLong(ks, at, key: true) { throw e }
                    parents.append((at, excerpt(ks.string)))
                    let line = ks.mark?.line ?? 0
                    if let first = seen[ks.string] {
                        throw ConfigError(
                            path: path(parents.count - 1),
                            message:
                                "appears twice in the same mapping, on lines \(first) and \(line) (a key may appear once)",
                            line: line)
                    }
                    seen[ks.string] = line
                    children.append((v, parents.count - 1))
                }
                stack.append(contentsOf: children.reversed())
            }
        }
    }
}

/// `host:port` or `[v6]:port`.
public enum ListenAddress {
    public static func parse(_ text: String) -> (host: String, port: Int)? {
        let host: String
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return nil
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        return (host, port)
    }
}

/// Walks a YAML mapping, tracking the key path for error messages.
struct Reader {
    let node: Node
    let mapping: Node.Mapping
    let prefix: String

    init(_ node: Node, _ prefix: String) throws {
        guard let m = node.mapping else {
            throw MailflowConfig.ConfigError(
                path: prefix, message: "expected a mapping of keys", line: node.mark?.line)
        }
        self.node = node
        self.mapping = m
        self.prefix = prefix
    }

    func path(_ key: String) -> String { prefix.isEmpty ? key : "\(prefix).\(key)" }

    func error(_ key: String, _ message: String) -> MailflowConfig.ConfigError {
        MailflowConfig.ConfigError(path: path(key), message: message, line: self[key]?.mark?.line)
    }

    subscript(key: String) -> Node? {
        mapping.first { $0.key.string == key }?.value
    }

    func only(_ keys: [String]) throws {
        for (k, _) in mapping {
            let name = k.string ?? "?"
            guard keys.contains(name) else {
                throw MailflowConfig.ConfigError(
                    path: path(MailflowConfig.excerpt(name)),
                    message: "unknown key (expected one of: \(keys.joined(separator: ", ")))",
                    line: k.mark?.line)
            }
        }
    }

    func mapping(_ key: String) throws -> Reader? {
        guard let n = self[key] else { return nil }
        if n.scalar?.string == "" || n.scalar?.tag.description == Tag.Name.null.rawValue { return nil }
        return try Reader(n, path(key))
    }

    func string(_ key: String) throws -> String? {
        guard let n = self[key] else { return nil }
        guard let s = n.scalar?.string else { throw error(key, "expected a text value") }
        return s
    }

    func int(_ key: String) throws -> Int? {
        guard let n = self[key] else { return nil }
        guard let s = n.scalar?.string, let v = Int(s) else { throw error(key, "expected a whole number") }
        return v
    }

    func bool(_ key: String) throws -> Bool? {
        guard let n = self[key] else { return nil }
        switch n.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error(key, "expected true or false")
        }
    }

    func list(_ key: String) throws -> [Node]? {
        guard let n = self[key] else { return nil }
        guard let s = n.sequence else { throw error(key, "expected a list") }
        return Array(s)
    }

    func stringList(_ key: String) throws -> [String]? {
        guard let items = try list(key) else { return nil }
        return try items.enumerated().map { i, n in
            guard let s = n.scalar?.string, !s.isEmpty else { throw error("\(key)[\(i)]", "expected a text value") }
            return s
        }
    }

    /// Seconds as a number, or a number with a unit: `30s`, `5m`, `24h`, `2d`.
    func duration(_ key: String, allowZero: Bool = false) throws -> TimeInterval? {
        guard let n = self[key] else { return nil }
        return try Self.parseDuration(n, path: path(key), allowZero: allowZero)
    }

    static func parseDuration(_ n: Node, path: String, allowZero: Bool = false) throws -> TimeInterval {
        let bad = MailflowConfig.ConfigError(
            path: path, message: "expected a duration such as 30, 30s, 5m, 24h or 2d", line: n.mark?.line)
        guard var s = n.scalar?.string.trimmingCharacters(in: .whitespaces), !s.isEmpty else { throw bad }
        var unit = 1.0
        switch s.last {
        case "s": unit = 1
        case "m": unit = 60
        case "h": unit = 3600
        case "d": unit = 86400
        default: s += "s"
        }
        s.removeLast()
        guard let v = Double(s), v > 0 || (allowZero && v == 0), v.isFinite else { throw bad }
        return v * unit
    }

    /// Octets as a number, or with a unit: `10KB`, `35MB` (binary multiples, like Exchange).
    func size(_ key: String) throws -> Int? {
        guard let n = self[key] else { return nil }
        guard var s = n.scalar?.string.uppercased().replacingOccurrences(of: " ", with: ""), !s.isEmpty else {
            throw error(key, "expected a size such as 35MB")
        }
        var mult = 1
        for (suffix, m) in [("KB", 1024), ("MB", 1024 * 1024), ("GB", 1024 * 1024 * 1024), ("B", 1)]
        where s.hasSuffix(suffix) {
            mult = m
            s.removeLast(suffix.count)
            break
        }
        guard let v = Int(s), v >= 0 else { throw error(key, "expected a size such as 35MB") }
        return v * mult
    }
}
