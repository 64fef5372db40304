import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What a listening socket serves.
public enum SMTPListener: Sendable, Equatable {
    /// Mail exchange (port 25): no AUTH.
    case mx
    /// Submission with STARTTLS (RFC 6409, port 587): AUTH inside TLS, then mail.
    case submission
    /// Submission inside TLS from the first byte (RFC 8314 §3, port 465).
    case submissionImplicitTLS
}

/// The SMTP listener: binds each configured address, runs one `SMTPServerHandler` per connection,
/// and stops in order (stop accepting, tell sessions, let transactions finish, close the rest).
///
/// Out of descriptors, `accept` fails (`EMFILE`) while the connection waits in the backlog; the
/// listening socket stays readable, and without a pause the event loop would call `accept` again at
/// once, for ever (one core at 100%: NIO keeps the failed read pending, so its `AcceptBackoffHandler`
/// alone does not stop it). `AcceptPause` stops reading the listener for `acceptBackoff` after such a
/// failure and logs it; admission control's descriptor reserve refuses sessions with `421 4.3.2`
/// before it comes to that.
public final class SMTPServer: Sendable {
    let group: EventLoopGroup
    let context: IngressContext
    let channels = Mutex<[ObjectIdentifier: Channel]>([:])
    let listeners = Mutex<[Channel]>([])

    public init(group: EventLoopGroup, context: IngressContext) {
        self.group = group
        self.context = context
    }

    public struct ListenerError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Binds every address; returns the bound addresses (port 0 becomes the real port). Implicit TLS
    /// needs the context's certificate.
    public func start(addresses: [SocketAddress], listener: SMTPListener = .mx) async throws -> [SocketAddress] {
        if listener == .submissionImplicitTLS, context.tls == nil {
            throw ListenerError(description: "implicit TLS needs a certificate")
        }
        if let limit = DescriptorTable.raiseSoftLimit() {
            context.logger.debug("descriptor limit \(limit)")
        }
        var bound: [SocketAddress] = []
        for address in addresses {
            let ctx = self.context
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            AcceptPause(logger: ctx.logger, metrics: ctx.metrics))
                    }
                }
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        if listener == .submissionImplicitTLS, let tls = ctx.tls {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            SMTPServerHandler(context: ctx, listener: listener))
                        self.track(channel)
                    }
                }
            let channel = try await bootstrap.bind(to: address).get()
            listeners.withLock { $0.append(channel) }
            if let local = channel.localAddress { bound.append(local) }
        }
        return bound
    }

    func track(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in
            _ = self.channels.withLock { $0.removeValue(forKey: id) }
        }
    }

    public var activeSessions: Int { channels.withLock { $0.count } }

    /// How long a listener stops accepting after `accept` failed (descriptors or memory exhausted).
    static let acceptBackoff = TimeAmount.milliseconds(250)

    /// Stops accepting, asks every session to finish (idle ones get `421 4.3.2` at once), waits up
    /// to `grace` for transactions in flight, then closes what is left.
    public func shutdown(grace: TimeAmount) async {
        let ls = listeners.withLock { l -> [Channel] in
            defer { l = [] }
            return l
        }
        for l in ls { try? await l.close() }
        for c in channels.withLock({ Array($0.values) }) {
            c.pipeline.fireUserInboundEventTriggered(ShutdownRequestedEvent())
        }
        let deadline = NIODeadline.now() + grace
        while activeSessions > 0 && NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let rest = channels.withLock { Array($0.values) }
        if !rest.isEmpty {
            context.logger.warning("closing \(rest.count) sessions still open after the grace period")
        }
        for c in rest { try? await c.close() }
    }
}

/// Pauses a listener whose `accept` failed for want of descriptors or memory (`EMFILE`, `ENFILE`,
/// `ENOBUFS`, `ENOMEM`): reading the listening socket stops (`autoRead` off takes it out of the
/// event loop's poll set) and resumes `SMTPServer.acceptBackoff` later. The connections wait in the
/// backlog meanwhile. Counts every failure; logs at most one line every 10 s.
final class AcceptPause: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    let logger: Logger
    let metrics: IngressMetrics
    var paused = false
    var lastLogged: NIODeadline?
    var unlogged = 0

    init(logger: Logger, metrics: IngressMetrics) {
        self.logger = logger
        self.metrics = metrics
    }

    static func isExhaustion(_ error: Error) -> Bool {
        guard let e = error as? IOError else { return false }
        return [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(e.errnoCode)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard Self.isExhaustion(error) else {
            context.fireErrorCaught(error)
            return
        }
        metrics.acceptErrors.increment()
        report(error)
        guard !paused else { return }
        paused = true
        let channel = context.channel
        channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: SMTPServer.acceptBackoff) {
            bound.value.paused = false
            channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        }
    }

    func report(_ error: Error) {
        let now = NIODeadline.now()
        if let last = lastLogged, now - last < .seconds(10) {
            unlogged += 1
            return
        }
        let more = unlogged > 0 ? " (\(unlogged) more since the last report)" : ""
        let open = DescriptorTable.openCount().map { "\($0)" } ?? "?"
        let limit = DescriptorTable.limit().map { "\($0)" } ?? "unlimited"
        let pause = SMTPServer.acceptBackoff.nanoseconds / 1_000_000
        let text =
            "cannot accept connections: \(error)\(more); accepting again in \(pause) ms; "
            + "\(open) of \(limit) descriptors open"
        logger.warning("\(text)")
        lastLogged = now
        unlogged = 0
    }
}
