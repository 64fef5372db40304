import Delivery
import Foundation
import Ingress
import Logging
import MailQueue
import NIOCore
import NIOPosix
import NIOSSL
import SMTPCore

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
    let server: SMTPServer

    public static func paths(dataDirectory: String) -> (queue: String, spool: String, mailboxes: String) {
        ("\(dataDirectory)/queue.sqlite", "\(dataDirectory)/spool", "\(dataDirectory)/mailboxes")
    }

    public init(config: MailflowConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        let p = Self.paths(dataDirectory: config.dataDirectory)
        do {
            try FileManager.default.createDirectory(atPath: config.dataDirectory, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: p.mailboxes, withIntermediateDirectories: true)
        } catch {
            throw StartupError("cannot create data directory \(config.dataDirectory): \(error.localizedDescription)")
        }
        store = try SQLiteQueueStore(path: p.queue)
        spool = try Spool(directory: p.spool)
        let removed = spool.removeOrphans(keeping: try store.referencedSpoolPaths())
        if removed > 0 { logger.notice("removed \(removed) spool files of messages never committed") }
        let scheduler = DeliveryScheduler(
            store: store, spool: spool, maildir: MaildirDelivery(root: p.mailboxes, hostname: config.hostname),
            retry: RetrySchedule(intervals: config.retryIntervals, expiry: config.expiry),
            concurrency: config.deliveryConcurrency, logger: logger)
        self.scheduler = scheduler
        committer = GroupCommitter(store: store) { _ in scheduler.wakeUp() }
        group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let tls = try TLSSetup.serverContext(
            certificate: config.tlsCertificate, key: config.tlsKey, dataDirectory: config.dataDirectory,
            hostname: config.hostname, logger: logger)
        let tenants = TenantDirectory(
            tenants: config.tenants.map {
                Tenant(name: $0.name, domains: $0.domains, mailboxes: $0.mailboxes, catchAll: $0.catchAll)
            })
        let ctx = IngressContext(
            session: ServerSessionConfiguration(
                hostname: config.hostname, maxMessageSize: config.maxMessageSize,
                maxRecipients: config.recipientsPerMessage, maxErrors: config.maxErrorsPerSession, tlsAvailable: true),
            timeouts: SessionTimeouts(
                command: .nanoseconds(Int64(config.commandTimeout * 1e9)),
                data: .nanoseconds(Int64(config.dataTimeout * 1e9)),
                session: .nanoseconds(Int64(config.sessionTimeout * 1e9))),
            directory: tenants, committer: committer, spool: spool, threadPool: threadPool, tls: tls, logger: logger)
        server = SMTPServer(group: group, context: ctx)
    }

    /// Starts delivery (pending work resumes by itself) and binds the SMTP listeners.
    public func start() async throws -> [SocketAddress] {
        scheduler.start()
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
            return try await server.start(addresses: addresses)
        } catch {
            throw StartupError("cannot listen on \(config.smtpListen.joined(separator: ", ")): \(error)")
        }
    }

    /// Orderly stop: listeners closed, sessions told `421 4.3.2`, transactions in flight given
    /// `shutdownGrace` to finish, then commits drained, deliveries finished, threads stopped.
    public func shutdown() async {
        logger.notice("shutting down")
        await server.shutdown(grace: .nanoseconds(Int64(config.shutdownGrace * 1e9)))
        committer.shutdown()
        scheduler.shutdown()
        try? await threadPool.shutdownGracefully()
        try? await group.shutdownGracefully()
        logger.notice("stopped")
    }
}
