import AdminServer
import Cluster
import DNSClient
import Delivery
import Dispatch
import Foundation
import Ingress
import Logging
import MailMessage
import MailQueue
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import SMTPCore
import ServiceHealth
import Synchronization

/// The running Mailflow: queue, spool, delivery and the SMTP listeners, wired from a config, with an
/// orderly start and stop.
///
/// Data directory layout: `queue.sqlite` (queue, trace), `spool/` (large bodies), `mailboxes/`
/// (Maildirs, `<domain>/<local part>/`), `tls/` (a generated pair, when none is configured).
public final class MailflowService: Sendable {
    public let config: MailflowConfig
    public let logger: Logger
    public let store: SQLiteQueueStore
    public let spool: Spool
    public let committer: GroupCommitter
    public let scheduler: DeliveryScheduler
    let group: MultiThreadedEventLoopGroup
    let threadPool: NIOThreadPool
    /// Service health's blocking work (its rounds, a warm-up, admins' actions waiting for the
    /// leader): off `threadPool`, which message bodies are spooled on.
    let healthPool: NIOThreadPool
    let server: SMTPServer
    public let admission: AdmissionControl
    public let outbound: OutboundDelivery
    let dns: DNSResolver
    let policy: SharedPolicy
    let currentConfig: Shared<MailflowConfig>
    let snapshotTask: Mutex<RepeatedTask?> = Mutex(nil)
    let housekeeping: Mutex<[RepeatedTask]> = Mutex([])
    let pruning = Mutex(false)
    public let metrics: MetricsExporter?
    let admin: AdminHTTPServer?
    /// The live service-health monitor (nil with `health.enabled: false`).
    public let health: HealthService?
    /// Service health's state and the trace it and the admin's checks read, in a cluster (nil
    /// without `storage.postgres`: `store` has them).
    let sharedHealth: SharedHealthStore?
    /// This node's cluster membership (nil without `cluster`).
    public let cluster: ClusterMember?
    /// The shared queue in PostgreSQL (nil without `storage.postgres`: `store` is the queue).
    public let sharedQueue: SharedQueueNode?
    /// The shared queue as the admin API and pages read and control it (nil without
    /// `storage.postgres`), and its counts for `/metrics`, whose rendering is synchronous: the
    /// snapshot task refreshes them every second (nil until the first refresh: no queue gauges yet;
    /// a refresh that fails leaves the last counts, as the gauges keep their last values when a
    /// SQLite read fails). One refresh at a time: a database that stalls holds one up to its
    /// timeout, not one more every second.
    let adminSharedQueue: SharedQueueControl?
    let sharedQueueCounts = Shared<SQLiteQueueStore.QueueCounts?>(nil)
    let sharedQueueCounting = Atomic<Bool>(false)
    public static let version = "0.2.0"

    public static func paths(dataDirectory: String) -> (queue: String, spool: String, mailboxes: String) {
        ("\(dataDirectory)/queue.sqlite", "\(dataDirectory)/spool", "\(dataDirectory)/mailboxes")
    }

    /// `metrics`: the registry `/metrics` exports; the caller bootstraps swift-metrics with its
    /// factory (once per process) so library code that counts through swift-metrics lands there too.
    public init(config: MailflowConfig, logger: Logger, metrics: MetricsExporter? = nil) throws {
        // Values that a config built in code could get wrong are refused before anything is opened.
        let initialPolicy = try Self.policy(config)
        let dnsServers = try config.dnsServerAddresses()
        self.config = config
        self.metrics = metrics
        self.currentConfig = Shared(config)
        self.logger = logger
        let p = Self.paths(dataDirectory: config.dataDirectory)
        try DataDirectoryPermissions.prepare(dataDirectory: config.dataDirectory, logger: logger)
        do {
            try FileManager.default.createDirectory(atPath: config.dataDirectory, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: p.mailboxes, withIntermediateDirectories: true)
        } catch {
            throw StartupError("cannot create data directory \(config.dataDirectory): \(error.localizedDescription)")
        }
        store = try SQLiteQueueStore(path: p.queue)
        store.storage.minimumFree = config.queueMinimumFree
        store.storage.observePause { paused, reason in
            if paused {
                logger.warning("storage: new mail is refused with 452 4.3.1: \(reason ?? "no room")")
            } else {
                logger.notice("storage: accepting new mail again")
            }
        }
        spool = try Spool(directory: p.spool)
        let removed = spool.removeOrphans(keeping: try store.referencedSpoolPaths())
        if removed > 0 { logger.notice("removed \(removed) spool files of messages never committed") }
        group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        var dnsConfig: DNSResolverConfiguration
        if config.dnsServers.isEmpty {
            dnsConfig = DNSResolverConfiguration(resolvConf: ResolvConf.load())
        } else {
            dnsConfig = DNSResolverConfiguration(servers: dnsServers)
        }
        dnsConfig.timeout = .seconds(config.dnsTimeout)
        dnsConfig.attempts = config.dnsAttempts
        dns = DNSResolver(configuration: dnsConfig, group: group)
        outbound = try OutboundDelivery(
            settings: OutboundSettings(
                heloName: config.heloName ?? config.hostname, mxPort: config.mxPort,
                initialWindow: config.destinationInitialConcurrency, maxWindow: config.destinationMaxConcurrency,
                timeouts: config.outboundTimeouts),
            resolver: DNSMailExchangerResolver(resolver: dns), group: group, logger: logger)
        // Every reader of tenants below asks `policy` or `current` at the time it reads, so a reload
        // (SIGHUP) reaches outbound connectors, DSN routes and notices as it reaches new sessions.
        let policy = SharedPolicy(initialPolicy)
        self.policy = policy
        let current = self.currentConfig
        // Maildir deliveries give way to the syncs that acknowledge incoming mail.
        let syncPriority = SyncPriority()
        let group = self.group
        let sharedQueue = config.sharedQueue.map { SharedQueueNode(settings: $0, group: group, logger: logger) }
        self.sharedQueue = sharedQueue
        let scheduler = DeliveryScheduler(
            store: store, spool: spool, maildir: MaildirDelivery(root: p.mailboxes, hostname: config.hostname),
            retry: RetrySchedule(intervals: config.retryIntervals, expiry: config.expiry),
            concurrency: config.deliveryConcurrency, logger: logger, outbound: outbound,
            connectorFor: { sender in current.mutex.withLock { $0.connector(forSender: sender) } },
            signingFor: { sender in current.mutex.withLock { $0.dkimSigning(forSender: sender) } },
            dsnRoute: { address in
                let directory = policy.current.directory
                guard let at = address.lastIndex(of: "@") else { return nil }
                let domain = String(address[address.index(after: at)...]).lowercased()
                let local = String(address[..<at])
                guard directory.tenant(forDomain: domain) != nil else { return .relay(domain: domain) }
                // A bounce to a local sender that has no mailbox would only bounce again: drop it.
                if case .accept(let route) = directory.decide(.mailbox(Mailbox(localPart: local, domain: domain))) {
                    return route
                }
                return nil
            },
            maxAbruptCloses: config.maxAbruptCloses, delayNotice: config.delayNotice,
            metricsFactory: metrics?.factory ?? MetricsSystem.factory, syncPriority: syncPriority,
            lmtp: config.lmtp.map { [group] in
                LMTPDelivery(
                    settings: $0, heloName: config.heloName ?? config.hostname, group: group,
                    timeouts: config.outboundTimeouts)
            }, leased: sharedQueue)
        self.scheduler = scheduler
        if let sharedQueue {
            self.committer = Self.sharedCommitter(sharedQueue, store: store, spool: spool, logger: logger) { _ in
                scheduler.wakeUp()
            }
        } else {
            self.committer = GroupCommitter(store: store, priority: syncPriority) { _ in scheduler.wakeUp() }
        }
        threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        healthPool = NIOThreadPool(numberOfThreads: 2)
        healthPool.start()
        let healthPool = self.healthPool
        let tls = try TLSSetup.serverContext(
            certificate: config.tlsCertificate, key: config.tlsKey, dataDirectory: config.dataDirectory,
            hostname: config.hostname, logger: logger)
        let committer = self.committer
        admission = AdmissionControl(
            limits: config.admissionLimits,
            onThrottle: { e in
                committer.record(
                    TraceEvent(
                        time: e.time, queueID: "", recipient: nil, kind: .throttled, detail: nil, forest: e.forest,
                        region: e.region, tenant: e.tenant, clientAddress: e.source, reply: e.reply))
            })
        var ctx = IngressContext(
            policy: policy, admission: admission, committer: committer, spool: spool, threadPool: threadPool,
            tls: tls, logger: logger, metrics: IngressMetrics(factory: metrics?.factory ?? MetricsSystem.factory),
            accounts: StoredAccounts(store: store),
            inboundAuthenticator: config.senderAuthVerify
                ? SenderAuthenticator(
                    authservID: config.hostname, resolver: dns,
                    metricsFactory: metrics?.factory ?? MetricsSystem.factory)
                : nil)
        ctx.standInSecret = try Self.standInSecret(dataDirectory: config.dataDirectory)
        try DataDirectoryPermissions.secure(config: config, logger: logger)
        ctx.forgedResultsRemover = StoredForgedResultsRemover(authservID: config.hostname, blockingPool: .singleton)
        server = SMTPServer(group: group, context: ctx)
        let sharedHealth = config.sharedQueue.map { SharedHealthStore(settings: $0, group: group, logger: logger) }
        self.sharedHealth = sharedHealth
        if config.healthEnabled {
            let admissionForPlacement = admission
            let notifier = HealthNotifier(
                webhook: config.healthWebhook.map {
                    HealthNotifier.Webhook(url: $0, secret: config.healthWebhookSecret ?? "")
                }, emailTo: config.healthNotify, logger: logger,
                sendEmail: { [committer] subject, body, to in
                    let now = policy.current
                    Self.queueNotice(
                        subject: subject, body: body, to: to, hostname: now.session.hostname,
                        directory: now.directory, committer: committer)
                })
            // In a cluster the health state is the shared queue's database's, and one node at a
            // time (the leader) runs the monitor over every node's trace.
            health = HealthService(
                store: sharedHealth ?? store, leadership: sharedHealth,
                placement: { tenant in
                    let f = admissionForPlacement.forest(forTenant: tenant)
                    return TenantPlacement(forest: f.name, region: f.region)
                }, notifier: notifier, logger: logger, policy: config.healthPolicy)
        } else {
            health = nil
        }
        if let settings = config.cluster {
            let admission = self.admission
            cluster = ClusterMember(
                settings: settings, address: config.smtpListen.joined(separator: ","),
                forests: { admission.limits.forests }, admission: admission, group: group, logger: logger)
        } else {
            cluster = nil
        }
        adminSharedQueue =
            config.adminListen == nil
            ? nil
            : config.sharedQueue.map { settings in
                SharedQueueControl(
                    queue: SharedQueue(
                        database: settings.database, timeout: .milliseconds(Int64(settings.timeout * 1000)),
                        logger: logger), group: group)
            }
        if config.adminListen != nil {
            let store = self.store
            let admission = self.admission
            let outbound = self.outbound
            let shared = adminSharedQueue
            let sharedCounts = sharedQueueCounts
            let backend = AdminBackend(
                store: store, queue: shared,
                queueName: shared.map { "the shared queue at \($0.queue.database)" } ?? "the queue database",
                hostname: config.hostname, version: Self.version,
                usage: { admission.usage(topSources: 20) },
                destinations: { [scheduler] in await outbound.destinations() + scheduler.localDestinations() },
                tenants: {
                    let now = current.mutex.withLock { $0 }
                    return now.tenants.map { t in
                        TenantInfo(
                            name: t.name, domains: t.domains, forest: admission.forest(forTenant: t.name).name,
                            maxMessageSize: t.maxMessageSize ?? now.maxMessageSize)
                    }
                },
                wakeDelivery: { scheduler.wakeUp() },
                metrics: {
                    let storage = store.storage.status()
                    let counts = shared == nil ? try? store.queueCounts() : sharedCounts.mutex.withLock { $0 }
                    return metrics?.render(usage: admission.usage(), queue: counts, storage: storage) ?? ""
                },
                healthIssues: { [health] in health?.issues ?? [] },
                // On the blocking pool: the store blocks, and a node that does not lead waits for
                // the one that does.
                healthAct: { [health] id, action, actor in
                    guard let health else { throw HealthActionError.unknownIssue(id) }
                    return try await healthPool.runIfActive { try health.apply(action, to: id, by: actor) }
                },
                healthReport: { [health] report, reporter in
                    guard let health else { return }
                    try await healthPool.runIfActive { try health.report(report, by: reporter) }
                },
                runCheck: AdminCheckRunner.make(
                    hostname: config.hostname, dataDirectory: config.dataDirectory, dnsServers: dnsServers,
                    sharedTrace: sharedHealth, blocklists: { current.mutex.withLock { $0.diagnosticsBlocklists } }))
            var adminLogger = logger
            adminLogger[metadataKey: "listener"] = "admin"
            admin = try AdminHTTPServer(
                backend: backend, sessionLifetime: config.adminSessionLifetime,
                throttle: SignInThrottle(limit: config.adminSignInFailures, window: config.adminSignInWindow),
                tls: try config.adminTLS.map { try TLSSetup.adminConfiguration($0, config: config, logger: logger) },
                group: group, logger: adminLogger)
        } else {
            admin = nil
        }
    }

    /// What new sessions use; throws when the config holds a value ingress cannot take (a config
    /// built in code skips the file's checks).
    static func policy(_ config: MailflowConfig) throws -> IngressPolicy {
        let tenants = TenantDirectory(
            tenants: config.tenants.map {
                var t = Tenant(
                    name: $0.name, domains: $0.domains, mailboxes: $0.mailboxes, catchAll: $0.catchAll,
                    maxMessageSize: $0.maxMessageSize, dmarcReject: $0.dmarcReject)
                t.hideClientInReceived = $0.hideClientAddress
                return t
            })
        var policy = IngressPolicy(
            session: ServerSessionConfiguration(
                hostname: config.hostname, maxMessageSize: config.maxMessageSize,
                maxRecipients: config.recipientsPerMessage, maxErrors: config.maxErrorsPerSession, tlsAvailable: true,
                maxRecipientsPerDomain: config.recipientsPerDomainPerTransaction),
            timeouts: SessionTimeouts(
                command: .seconds(config.commandTimeout), data: .seconds(config.dataTimeout),
                session: .seconds(config.sessionTimeout), requestDeadline: config.requestDeadline,
                minDataRate: config.minDataRate, tlsHandshake: .seconds(config.tlsHandshakeTimeout)),
            directory: tenants, tarpit: .seconds(config.tarpit), greetPause: .seconds(config.greetPause),
            trustedNetworks: try config.trustedNetworkBlocks())
        policy.submission = config.submissionPolicy
        return policy
    }

    /// Applies a reloaded config (SIGHUP): limits, forests, tenants (with their outbound connectors
    /// and the routes of DSNs and notices), relay networks and timeouts. Live sessions keep what they
    /// started with. A config ingress cannot take throws and changes nothing; settings read only at
    /// start (`restartOnlyChanges`) are logged as waiting for the next restart.
    public func reload(_ new: MailflowConfig) throws {
        let newPolicy = try Self.policy(new)
        let old = currentConfig.mutex.withLock { c -> MailflowConfig in
            defer { c = new }
            return c
        }
        let waiting = Self.restartOnlyChanges(from: old, to: new)
        if !waiting.isEmpty {
            logger.warning("changes to \(waiting.joined(separator: ", ")) take effect at the next restart")
        }
        admission.update(new.admissionLimits)
        store.storage.minimumFree = new.queueMinimumFree
        policy.replace(newPolicy)
        logger.notice(
            "configuration reloaded: \(new.admissionLimits.forests.count) forest(s), \(new.tenants.count) tenant(s)")
        Self.warnIfOpenRelay(new, logger)
    }

    /// The settings read once, at start, that differ between `old` and `new`, by their config key:
    /// listeners, data directory, TLS and logging, and the DNS resolver, delivery, admin listener,
    /// trace housekeeping and health monitor, which are built once.
    static func restartOnlyChanges(from old: MailflowConfig, to new: MailflowConfig) -> [String] {
        func differ<T: Equatable>(_ key: KeyPath<MailflowConfig, T>) -> Bool { old[keyPath: key] != new[keyPath: key] }
        let checks: [(String, Bool)] = [
            ("server.smtp", differ(\.smtpListen)), ("server.data", differ(\.dataDirectory)),
            ("server.log_level", differ(\.logLevel)), ("server.log_format", differ(\.logFormat)),
            ("tls", differ(\.tlsCertificate) || differ(\.tlsKey)),
            ("dns", differ(\.dnsServers) || differ(\.dnsTimeout) || differ(\.dnsAttempts)),
            (
                "delivery",
                differ(\.mxPort) || (old.heloName ?? old.hostname) != (new.heloName ?? new.hostname)
                    || differ(\.maxAbruptCloses) || differ(\.delayNotice) || differ(\.destinationInitialConcurrency)
                    || differ(\.destinationMaxConcurrency) || differ(\.deliveryConcurrency)
                    || differ(\.retryIntervals) || differ(\.expiry) || differ(\.lmtp)
            ),
            (
                "admin",
                differ(\.adminListen) || differ(\.adminSessionLifetime) || differ(\.adminTLS)
                    || differ(\.adminSignInFailures) || differ(\.adminSignInWindow)
            ),
            ("trace", differ(\.traceRetention) || differ(\.tracePruneInterval) || differ(\.queueSampleInterval)),
            (
                "health",
                differ(\.healthEnabled) || differ(\.healthWebhook) || differ(\.healthWebhookSecret)
                    || differ(\.healthNotify) || differ(\.healthWarmUp) || differ(\.healthPolicy)
            ),
        ]
        return checks.filter(\.1).map(\.0)
    }

    /// An open relay is only ever configured on purpose (`relay.allow_open_relay`), and still said
    /// at every start and reload.
    static func warnIfOpenRelay(_ config: MailflowConfig, _ logger: Logger) {
        let open = config.openRelayNetworks
        guard !open.isEmpty else { return }
        let shown = open.prefix(5).map { MailflowConfig.excerpt($0) }.joined(separator: ", ")
        let more = open.count > 5 ? " and \(open.count - 5) more" : ""
        logger.warning(
            "open relay: relay.trusted_networks lets every client in \(shown)\(more) send mail to any domain (relay.allow_open_relay is true)"
        )
    }

    /// Where `mailflow limits` reads the live usage; rewritten every second while serving.
    public static func limitsSnapshotPath(dataDirectory: String) -> String { "\(dataDirectory)/limits.json" }
    /// The queue filesystem's state (`StorageStatus`), rewritten with the limits snapshot.
    public static func storageSnapshotPath(dataDirectory: String) -> String { "\(dataDirectory)/storage.json" }

    /// Where `mailflow queue destinations` reads each destination's window; rewritten every second.
    public static func destinationsSnapshotPath(dataDirectory: String) -> String {
        "\(dataDirectory)/destinations.json"
    }

    func writeDestinationsSnapshot() async {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .iso8601
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let all = await outbound.destinations() + scheduler.localDestinations()
        guard let data = try? enc.encode(all) else { return }
        let path = Self.destinationsSnapshotPath(dataDirectory: config.dataDirectory)
        if FileManager.default.createFile(atPath: path + ".tmp", contents: data) {
            _ = rename(path + ".tmp", path)
        }
    }

    func writeLimitsSnapshot() {
        admission.sampleDescriptors()
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .iso8601
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        for (path, data) in [
            (Self.limitsSnapshotPath(dataDirectory: config.dataDirectory), try? enc.encode(admission.usage())),
            (Self.storageSnapshotPath(dataDirectory: config.dataDirectory), try? enc.encode(store.storage.status())),
        ] {
            guard let data else { continue }
            let tmp = path + ".tmp"
            if FileManager.default.createFile(atPath: tmp, contents: data) {
                _ = rename(tmp, path)
            }
        }
    }

    /// Starts delivery (pending work resumes by itself) and binds the SMTP listeners.
    public func start() async throws -> [SocketAddress] {
        Self.warnIfOpenRelay(config, logger)
        sharedQueue?.start()
        scheduler.start()
        let pool = threadPool
        let task = group.next().scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1000)) { [self] _ in
            pool.submit { _ in self.writeLimitsSnapshot() }
            Task { await self.writeDestinationsSnapshot() }
            if let shared = self.adminSharedQueue,
                !self.sharedQueueCounting.exchange(true, ordering: .acquiringAndReleasing)
            {
                Task {
                    if let counts = try? await shared.queueCounts() {
                        self.sharedQueueCounts.mutex.withLock { $0 = counts }
                    }
                    self.sharedQueueCounting.store(false, ordering: .releasing)
                }
            }
        }
        snapshotTask.withLock { $0 = task }
        startHousekeeping()
        await cluster?.start()
        if let health {
            // Baselines come back from the stored trace off the start path (on the blocking pool:
            // a week of trace is read); then the monitor runs.
            let warmUp = config.healthWarmUp
            let logger = self.logger
            let healthPool = self.healthPool
            Task.detached {
                do {
                    try await healthPool.runIfActive { try health.prepare(warmUp: warmUp) }
                } catch {
                    logger.error("service health could not load its state: \(error)")
                }
                health.start(threadPool: healthPool)
            }
        }
        var addresses: [SocketAddress] = []
        for a in config.smtpListen {
            guard let (host, port) = ListenAddress.parse(a) else { throw StartupError("bad listen address \(a)") }
            do {
                addresses.append(try SocketAddress(ipAddress: host, port: port))
            } catch {
                throw StartupError("bad listen address \(a): \(host) is not an IP address")
            }
        }
        do {
            let bound = try await server.start(addresses: addresses)
            cluster?.setAddress(
                bound.map { a in a.ipAddress.map { "\($0.contains(":") ? "[\($0)]" : $0):\(a.port ?? 0)" } ?? "\(a)" }
                    .joined(separator: ","))
            return bound
        } catch {
            throw StartupError("cannot listen on \(config.smtpListen.joined(separator: ", ")): \(error)")
        }
    }

    /// The secret an unknown user's SCRAM salt is derived from, kept in `<data>/auth.secret` (32
    /// random octets, mode 0600) so the salt an attacker sees for a name that does not exist stays
    /// the same across restarts, as a real user's does.
    static func standInSecret(dataDirectory: String) throws -> [UInt8] {
        let path = "\(dataDirectory)/auth.secret"
        if let d = FileManager.default.contents(atPath: path), d.count == 32 { return Array(d) }
        var rng = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        guard
            FileManager.default.createFile(
                atPath: path, contents: Data(secret), attributes: [.posixPermissions: 0o600])
        else { throw StartupError("cannot write \(path)") }
        return secret
    }

    /// Binds the submission listeners (`submission.starttls`, `submission.implicit_tls`), none by
    /// default; returns the bound addresses of each kind.
    public func startSubmission() async throws -> (starttls: [SocketAddress], implicitTLS: [SocketAddress]) {
        func addresses(_ list: [String]) throws -> [SocketAddress] {
            try list.map { a in
                guard let (host, port) = ListenAddress.parse(a), let s = try? SocketAddress(ipAddress: host, port: port)
                else { throw StartupError("bad submission listen address \(a)") }
                return s
            }
        }
        do {
            let starttls = try await server.start(addresses: addresses(config.submissionListen), listener: .submission)
            let implicit = try await server.start(
                addresses: addresses(config.submissionImplicitTLSListen), listener: .submissionImplicitTLS)
            return (starttls, implicit)
        } catch let error as StartupError {
            throw error
        } catch {
            throw StartupError("cannot listen for submission: \(error)")
        }
    }

    /// `https` when the admin listener has TLS (`admin.tls`), else `http`: the scheme of its URL.
    public var adminScheme: String { config.adminTLS == nil ? "http" : "https" }

    /// Starts the admin listener, when configured; returns its address.
    public func startAdmin() async throws -> SocketAddress? {
        guard let admin, let listen = config.adminListen else { return nil }
        guard let (host, port) = ListenAddress.parse(listen) else { throw StartupError("bad admin address \(listen)") }
        if config.adminTLS == nil, !(host.hasPrefix("127.") || host == "::1") {
            logger.warning(
                "the admin listener \(listen) is not on loopback and is plain HTTP: tokens cross the network in the clear; set admin.tls (docs/admin.md)"
            )
        }
        do {
            return try await admin.start(host: host, port: port)
        } catch {
            throw StartupError("cannot listen for the admin center on \(listen): \(error)")
        }
    }

    /// Queue-size samples for the overview chart, and retention pruning of the trace stream and
    /// finished messages: small batches off the event loops, so acceptance never waits long.
    func startHousekeeping() {
        let store = self.store
        let pool = threadPool
        let logger = self.logger
        let sample = group.next().scheduleRepeatedTask(
            initialDelay: .zero, delay: .seconds(config.queueSampleInterval)
        ) { [self] _ in
            pool.submit { _ in
                do {
                    // Cluster mode: the shared queue's counts, as the 1 s snapshot last read them.
                    if self.sharedQueue != nil {
                        if let counts = self.sharedQueueCounts.mutex.withLock({ $0 }) { try store.recordSample(counts) }
                    } else {
                        try store.recordSample()
                    }
                } catch {
                    logger.warning("queue sample not recorded: \(error)")
                }
            }
        }
        let retention = config.traceRetention
        let prune = group.next().scheduleRepeatedTask(
            initialDelay: .seconds(min(5, config.tracePruneInterval)), delay: .seconds(config.tracePruneInterval)
        ) { [self] _ in
            pool.submit { _ in self.pruneOnce(before: Date() - retention) }
            if let sharedQueue {
                Task {
                    let r = await sharedQueue.prune(before: Date() - retention)
                    if r.traceEvents + r.messages > 0 {
                        logger.info(
                            "shared queue: pruned \(r.traceEvents) trace events and \(r.messages) finished messages")
                    }
                }
            }
        }
        housekeeping.withLock { $0 = [sample, prune] }
    }

    /// One pruning pass: batches of 2,000 rows with a pause between, until nothing is older than
    /// the cutoff. Returns what was removed.
    @discardableResult
    public func pruneOnce(before cutoff: Date) -> SQLiteQueueStore.PruneResult {
        var total = SQLiteQueueStore.PruneResult()
        let started = pruning.withLock { busy -> Bool in
            if busy { return false }
            busy = true
            return true
        }
        guard started else { return total }
        defer { pruning.withLock { $0 = false } }
        while true {
            guard let r = try? store.prune(before: cutoff, batch: 2000) else { break }
            total.traceEvents += r.traceEvents
            total.messages += r.messages
            total.samples += r.samples
            total.auditEvents += r.auditEvents
            if r.total == 0 { break }
            usleep(20_000)
        }
        if total.total > 0 {
            logger.notice(
                "pruned \(total.traceEvents) trace events, \(total.messages) finished messages, \(total.samples) samples older than \(cutoff)"
            )
        }
        return total
    }

    /// Orderly stop: listeners closed, sessions told `421 4.3.2`, transactions in flight given
    /// `shutdownGrace` to finish, then commits drained, deliveries finished, threads stopped.
    public func shutdown() async {
        logger.notice("shutting down")
        await server.shutdown(grace: .seconds(currentConfig.mutex.withLock { $0.shutdownGrace }))
        await admin?.shutdown()
        await cluster?.stop()
        await health?.stop()
        await sharedHealth?.close()
        snapshotTask.withLock { $0?.cancel() }
        housekeeping.withLock { tasks in for t in tasks { t.cancel() } }
        writeLimitsSnapshot()
        await committer.shutdownGracefully()
        let stats = committer.statistics
        logger.notice("group commit: \(stats.messages) messages in \(stats.batches) transactions")
        // A delivery whose record waits for an absent database gives up past its lease now.
        sharedQueue?.beginStop()
        await scheduler.shutdown()
        let recorded = scheduler.recorder.statistics
        logger.notice("delivery outcomes: \(recorded.attempts) attempts in \(recorded.batches) transactions")
        await sharedQueue?.stop()
        try? await threadPool.shutdownGracefully()
        try? await healthPool.shutdownGracefully()
        try? await group.shutdownGracefully()
        logger.notice("stopped")
    }
}

extension MailflowService {
    /// The group committer of cluster mode: each batch of acceptances goes into the shared queue in
    /// one transaction (a spooled body is read into it, and its file removed once committed), with
    /// the throttle events riding along: every node's service health reads them there. A batch of
    /// throttle events alone that cannot be written is dropped (logged), never retried.
    static func sharedCommitter(
        _ queue: SharedQueueNode, store: SQLiteQueueStore, spool: Spool, logger: Logger,
        onCommitted: @escaping @Sendable ([String]) -> Void
    ) -> GroupCommitter {
        GroupCommitter(storage: store.storage, onCommitted: onCommitted) { messages, events in
            do {
                try queue.acceptBlocking(messages, events: events)
            } catch {
                guard !messages.isEmpty else {
                    logger.warning("shared queue: \(events.count) trace events not written: \(error)")
                    return
                }
                logger.error("shared queue: \(messages.count) messages not accepted (451 4.3.0): \(error)")
                throw error
            }
            for m in messages {
                if case .spooled(let path) = m.body { spool.remove(path: path) }
            }
        }
    }

    /// Queues a plain-text notice from `postmaster@hostname` to admin addresses through the queue
    /// (routed like a DSN: local mailboxes, or relayed to their domain).
    static func queueNotice(
        subject: String, body: String, to: [String], hostname: String, directory: TenantDirectory,
        committer: GroupCommitter
    ) {
        var rng = SystemRandomNumberGenerator()
        let now = Date()
        let id = QueueID.generate(now: now, using: &rng)
        let recipients = to.compactMap { address -> EnvelopeRecipient? in
            guard let at = address.lastIndex(of: "@") else { return nil }
            let domain = String(address[address.index(after: at)...]).lowercased()
            let local = String(address[..<at])
            if directory.tenant(forDomain: domain) == nil {
                return EnvelopeRecipient(address: address, route: .relay(domain: domain))
            }
            guard case .accept(let route) = directory.decide(.mailbox(Mailbox(localPart: local, domain: domain)))
            else { return nil }
            return EnvelopeRecipient(address: address, route: route)
        }
        guard !recipients.isEmpty else { return }
        let cleanSubject = subject.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        let text =
            "From: Mailflow service health <postmaster@\(hostname)>\r\nTo: \(to.joined(separator: ", "))\r\n"
            + "Subject: \(cleanSubject)\r\nDate: \(HeaderStamps.rfc5322Date(now))\r\n"
            + "Message-ID: <\(id)@\(hostname)>\r\nMIME-Version: 1.0\r\n"
            + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + body.replacingOccurrences(of: "\r", with: "").split(separator: "\n", omittingEmptySubsequences: false)
            .joined(separator: "\r\n") + "\r\n"
        let data = Data(text.utf8)
        committer.commit(
            NewMessage(
                id: id, receivedAt: now, sender: "", recipients: recipients, size: data.count, bodyType: .eightBitMIME,
                clientAddress: "127.0.0.1", helo: hostname, protocolName: "local", messageID: "<\(id)@\(hostname)>",
                subject: cleanSubject, body: .inline(data))
        ) { _ in }
    }
}

extension TimeAmount {
    /// Fractional seconds, as configs give them.
    static func seconds(_ s: TimeInterval) -> TimeAmount { .nanoseconds(Int64(s * 1e9)) }
}

/// A value shared between threads behind a lock, as a class so closures can hold it.
final class Shared<Value: Sendable>: Sendable {
    let mutex: Mutex<Value>
    init(_ v: Value) { mutex = Mutex(v) }
}
