import NIOCore
import NIOPosix

/// A recursive name server to send queries to: an IP address and a port (normally 53).
public struct DNSServer: Hashable, Sendable, CustomStringConvertible {
    /// The server's socket address.
    public let address: SocketAddress

    /// Wraps a socket address (IPv4 or IPv6).
    public init(address: SocketAddress) {
        self.address = address
    }

    /// A server from an IP literal and a port; host names are refused (a resolver cannot need a resolver).
    public init(ip: String, port: Int = 53) throws(DNSError) {
        guard let parsed = DNSIPAddress(ip), let address = try? parsed.socketAddress(port: port) else {
            throw .network("not an IP address: \(ip)")
        }
        self.address = address
    }

    public var description: String { "\(address)" }
}

/// Sends one query to one server: UDP first, then TCP with a 2-byte length prefix when the UDP answer has TC=1
/// (RFC 1035 §4.2.1, §4.2.2; RFC 7766 §5).
///
/// Each UDP exchange opens a fresh socket on an ephemeral port chosen by the kernel (randomised on Linux and
/// macOS), and only accepts a datagram whose source address, ID and question match the query (RFC 5452 §9.1).
/// Mismatching datagrams are dropped and the wait goes on. Nothing here blocks an event loop.
public struct DNSTransport: Sendable {
    /// The event loops the sockets run on.
    public let group: any EventLoopGroup

    /// A transport on `group` (the shared NIO singleton by default).
    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.group = group
    }

    /// Sends `query` to `server` and returns the matching response, falling back to TCP on truncation.
    ///
    /// - Throws: ``DNSError/timeout`` when nothing valid arrives within `timeout` (per protocol attempt),
    ///   ``DNSError/malformed(_:)`` or ``DNSError/network(_:)``.
    public func exchange(_ query: DNSMessage, with server: DNSServer, timeout: TimeAmount) async throws(DNSError)
        -> DNSMessage
    {
        let response = try await udpExchange(query, with: server, timeout: timeout)
        guard response.header.truncated else { return response }
        return try await tcpExchange(query, with: server, timeout: timeout)
    }

    /// One UDP exchange, no TCP fallback.
    public func udpExchange(_ query: DNSMessage, with server: DNSServer, timeout: TimeAmount) async throws(DNSError)
        -> DNSMessage
    {
        let loop = group.next()
        let promise = loop.makePromise(of: DNSMessage.self)
        let serverAddress = server.address
        let bindHost = serverAddress.protocol == .inet6 ? "::" : "0.0.0.0"
        let timer = loop.scheduleTask(in: timeout) { promise.fail(DNSError.timeout) }
        var channel: (any Channel)?
        do {
            let bound = try await DatagramBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            UDPExchangeHandler(server: serverAddress, query: query, promise: promise)
                        )
                    }
                }
                .bind(host: bindHost, port: 0)
                .get()
            channel = bound
            var buffer = bound.allocator.buffer(capacity: 512)
            buffer.writeBytes(query.encode())
            bound.writeAndFlush(AddressedEnvelope(remoteAddress: serverAddress, data: buffer), promise: nil)
            let response = try await promise.futureResult.get()
            timer.cancel()
            bound.close(promise: nil)
            return response
        } catch {
            timer.cancel()
            promise.fail(error)
            channel?.close(promise: nil)
            throw Self.map(error)
        }
    }

    /// One TCP exchange: connect, send the length-prefixed query, read one length-prefixed response.
    public func tcpExchange(_ query: DNSMessage, with server: DNSServer, timeout: TimeAmount) async throws(DNSError)
        -> DNSMessage
    {
        let loop = group.next()
        let promise = loop.makePromise(of: DNSMessage.self)
        let timer = loop.scheduleTask(in: timeout) { promise.fail(DNSError.timeout) }
        var channel: (any Channel)?
        do {
            let connected = try await ClientBootstrap(group: loop)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            TCPExchangeHandler(query: query, promise: promise))
                    }
                }
                .connect(to: server.address)
                .get()
            channel = connected
            let wire = query.encode()
            var buffer = connected.allocator.buffer(capacity: wire.count + 2)
            buffer.writeInteger(UInt16(truncatingIfNeeded: wire.count))
            buffer.writeBytes(wire)
            connected.writeAndFlush(buffer, promise: nil)
            let response = try await promise.futureResult.get()
            timer.cancel()
            connected.close(promise: nil)
            return response
        } catch {
            timer.cancel()
            promise.fail(error)
            channel?.close(promise: nil)
            throw Self.map(error)
        }
    }

    static func map(_ error: any Error) -> DNSError {
        if let dnsError = error as? DNSError { return dnsError }
        if let channelError = error as? ChannelError, case .connectTimeout = channelError { return .timeout }
        return .network("\(error)")
    }
}

extension DNSMessage {
    /// True when `self` is a response to `query`: QR set, same ID, same single question (RFC 5452 §9.1).
    func isResponse(to query: DNSMessage) -> Bool {
        guard header.isResponse, header.id == query.header.id else { return false }
        // Some servers omit the question on FORMERR/NOTIMP; accept an empty question section then.
        if questions.isEmpty { return responseCode != .noError && responseCode != .nameError }
        return questions == query.questions
    }
}

private final class UDPExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let server: SocketAddress
    private let query: DNSMessage
    private let promise: EventLoopPromise<DNSMessage>

    init(server: SocketAddress, query: DNSMessage, promise: EventLoopPromise<DNSMessage>) {
        self.server = server
        self.query = query
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard envelope.remoteAddress == server else { return }
        let bytes = Array(envelope.data.readableBytesView)
        do {
            let message = try DNSMessage.decode(bytes)
            if message.isResponse(to: query) {
                promise.succeed(message)
            }
        } catch {
            // Only a datagram that carries our ID counts as "the" answer; anything else is noise to ignore.
            if bytes.count >= 2, UInt16(bytes[0]) << 8 | UInt16(bytes[1]) == query.header.id {
                promise.fail(DNSError.malformed("\(error)"))
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(DNSError.network("\(error)"))
    }
}

private final class TCPExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let query: DNSMessage
    private let promise: EventLoopPromise<DNSMessage>
    private var pending = ByteBuffer()

    init(query: DNSMessage, promise: EventLoopPromise<DNSMessage>) {
        self.query = query
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        pending.writeBuffer(&incoming)
        guard let length = pending.getInteger(at: pending.readerIndex, as: UInt16.self),
            pending.readableBytes >= Int(length) + 2,
            let bytes = pending.getBytes(at: pending.readerIndex + 2, length: Int(length))
        else { return }
        do {
            let message = try DNSMessage.decode(bytes)
            if message.isResponse(to: query) {
                promise.succeed(message)
            } else {
                promise.fail(DNSError.malformed("TCP response does not match the query"))
            }
        } catch {
            promise.fail(DNSError.malformed("\(error)"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSError.network("connection closed before a complete response"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(DNSError.network("\(error)"))
        context.close(promise: nil)
    }
}
