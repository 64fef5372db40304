import Logging
import NIOCore
import NIOPosix
import Synchronization

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

    /// Binds every address; returns the bound addresses (port 0 becomes the real port).
    public func start(addresses: [SocketAddress]) async throws -> [SocketAddress] {
        var bound: [SocketAddress] = []
        for address in addresses {
            let ctx = self.context
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(SMTPServerHandler(context: ctx))
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
