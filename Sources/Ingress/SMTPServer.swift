import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

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
        var bound: [SocketAddress] = []
        for address in addresses {
            let ctx = self.context
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
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
