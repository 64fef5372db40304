import DNSClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A clock the test moves by hand, so cache expiry is tested without sleeping.
final class ManualClock: Sendable {
    private let current = NIOLockedValueBox(NIODeadline.uptimeNanoseconds(1_000_000_000_000))

    func now() -> NIODeadline { current.withLockedValue { $0 } }

    func advance(seconds: Int64) {
        current.withLockedValue { $0 = $0 + .seconds(seconds) }
    }

    var source: @Sendable () -> NIODeadline { { self.now() } }
}

/// A deterministic random source (SplitMix64).
func seededRandom(_ seed: UInt64) -> DNSRandomSource {
    let state = NIOLockedValueBox(seed)
    return DNSRandomSource {
        state.withLockedValue { value in
            value &+= 0x9E37_79B9_7F4A_7C15
            var mixed = value
            mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
            mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
            return mixed ^ (mixed >> 31)
        }
    }
}

func name(_ text: String) -> DNSName {
    // Test literals are valid names; a bad one fails the test through the root fallback never matching.
    (try? DNSName(text)) ?? .root
}

func ip(_ text: String) -> DNSIPAddress {
    DNSIPAddress(text) ?? DNSIPAddress(bytes: [0, 0, 0, 0])!
}

/// Builds a response echoing `query`'s ID and question.
func response(
    to query: DNSMessage, rcode: UInt8 = 0, truncated: Bool = false, authenticData: Bool = false,
    answers: [DNSResourceRecord] = [], authority: [DNSResourceRecord] = []
) -> DNSMessage {
    DNSMessage(
        header: DNSHeader(
            id: query.header.id, isResponse: true, truncated: truncated, recursionDesired: true,
            recursionAvailable: true, authenticData: authenticData, rcode: rcode
        ),
        questions: query.questions, answers: answers, authority: authority
    )
}

/// What a fake server received, for assertions.
struct FakeServerLog: Sendable {
    var udp: [DNSMessage] = []
    var tcp: [DNSMessage] = []
    var udpClients: [SocketAddress] = []
}

/// A tiny DNS server on 127.0.0.1 (UDP and TCP on one port) whose answers come from a closure.
/// The closure returns the raw datagrams to send back (none = stay silent).
final class FakeDNSServer: Sendable {
    typealias Handler = @Sendable (_ query: DNSMessage, _ overTCP: Bool) -> [[UInt8]]

    let port: Int
    private let log: NIOLockedValueBox<FakeServerLog>
    private let channels: [any Channel]

    private init(port: Int, log: NIOLockedValueBox<FakeServerLog>, channels: [any Channel]) {
        self.port = port
        self.log = log
        self.channels = channels
    }

    var server: DNSServer { DNSServer(address: try! SocketAddress(ipAddress: "127.0.0.1", port: port)) }
    var received: FakeServerLog { log.withLockedValue { $0 } }

    static func start(_ handler: @escaping Handler) async throws -> FakeDNSServer {
        let log = NIOLockedValueBox(FakeServerLog())
        let group = MultiThreadedEventLoopGroup.singleton
        var lastError: (any Error)?
        for _ in 0..<10 {
            let udp = try await DatagramBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(FakeUDPHandler(handler: handler, log: log))
                    }
                }
                .bind(host: "127.0.0.1", port: 0).get()
            guard let port = udp.localAddress?.port else { throw ChannelError.unknownLocalAddress }
            do {
                let tcp = try await ServerBootstrap(group: group)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(FakeTCPHandler(handler: handler, log: log))
                        }
                    }
                    .bind(host: "127.0.0.1", port: port).get()
                return FakeDNSServer(port: port, log: log, channels: [udp, tcp])
            } catch {
                lastError = error
                try? await udp.close()
            }
        }
        throw lastError ?? ChannelError.unknownLocalAddress
    }

    /// Runs `body`, then closes the sockets, even when `body` throws.
    func use<T>(_ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            await stop()
            return result
        } catch {
            await stop()
            throw error
        }
    }

    /// Sends a raw datagram from this server's UDP socket.
    func sendUDP(_ bytes: [UInt8], to address: SocketAddress) async throws {
        let buffer = ByteBuffer(bytes: bytes)
        try await channels[0].writeAndFlush(AddressedEnvelope(remoteAddress: address, data: buffer))
    }

    func stop() async {
        for channel in channels {
            try? await channel.close()
        }
    }
}

private final class FakeUDPHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    let handler: FakeDNSServer.Handler
    let log: NIOLockedValueBox<FakeServerLog>

    init(handler: @escaping FakeDNSServer.Handler, log: NIOLockedValueBox<FakeServerLog>) {
        self.handler = handler
        self.log = log
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let query = try? DNSMessage.decode(Array(envelope.data.readableBytesView)) else { return }
        log.withLockedValue {
            $0.udp.append(query)
            $0.udpClients.append(envelope.remoteAddress)
        }
        for reply in handler(query, false) {
            let buffer = context.channel.allocator.buffer(bytes: reply)
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: buffer)))
                .whenFailure { _ in }
        }
        context.flush()
    }
}

private final class FakeTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let handler: FakeDNSServer.Handler
    let log: NIOLockedValueBox<FakeServerLog>
    var pending = ByteBuffer()

    init(handler: @escaping FakeDNSServer.Handler, log: NIOLockedValueBox<FakeServerLog>) {
        self.handler = handler
        self.log = log
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        pending.writeBuffer(&incoming)
        while let length = pending.getInteger(at: pending.readerIndex, as: UInt16.self),
            pending.readableBytes >= Int(length) + 2
        {
            pending.moveReaderIndex(forwardBy: 2)
            guard let bytes = pending.readBytes(length: Int(length)),
                let query = try? DNSMessage.decode(bytes)
            else { continue }
            log.withLockedValue { $0.tcp.append(query) }
            for reply in handler(query, true) {
                var buffer = context.channel.allocator.buffer(capacity: reply.count + 2)
                buffer.writeInteger(UInt16(reply.count))
                buffer.writeBytes(reply)
                context.write(wrapOutboundOut(buffer)).whenFailure { _ in }
            }
            context.flush()
        }
    }
}

/// dnsmasq run as a child process on a loopback port, authoritative for the zone `test.` so that negative
/// answers carry an SOA (RFC 2308). Needs the Debian `dnsmasq` package.
///
/// Started with posix_spawn and an emptied signal mask: the test runner's threads block most signals, and a
/// child that inherits that mask would never act on SIGTERM.
final class Dnsmasq {
    static let path = "/usr/sbin/dnsmasq"
    static let ttl = 300

    /// The data served, in dnsmasq flags.
    static let zoneFlags = [
        "--auth-server=ns.test,127.0.0.1", "--auth-zone=test", "--auth-ttl=\(ttl)", "--auth-soa=1,hostmaster.test",
        "--local=/test/", "--local-ttl=\(ttl)",
        "--mx-host=remote.test,mx1.remote.test,10", "--mx-host=remote.test,mx2.remote.test,20",
        "--host-record=mx1.remote.test,127.0.0.2", "--host-record=mx2.remote.test,127.0.0.3,::3",
        "--txt-record=remote.test,v=spf1 -all,second string",
        "--cname=alias.remote.test,mx1.remote.test",
        "--host-record=onlya.test,127.0.0.5",
        "--mx-host=nullmx.test,.,0", "--host-record=nullmx.test,127.0.0.6",
        "--host-record=dual.test,127.0.0.7,::7",
    ]

    let port: Int
    private let pid: pid_t
    private var exited = false

    private init(port: Int, pid: pid_t) {
        self.port = port
        self.pid = pid
    }

    var server: DNSServer { DNSServer(address: try! SocketAddress(ipAddress: "127.0.0.1", port: port)) }

    static func start() async throws -> Dnsmasq {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            Issue.record("dnsmasq is not installed (apt-get install -y dnsmasq)")
            throw DnsmasqError.notInstalled
        }
        for _ in 0..<10 {
            let port = Int.random(in: 20_000..<60_000)
            let arguments =
                [
                    path, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--conf-file=/dev/null",
                    "--pid-file=", "--port=\(port)", "--listen-address=127.0.0.1", "--bind-interfaces",
                    "--user=root", "--log-facility=/dev/null",
                ] + zoneFlags
            let instance = Dnsmasq(port: port, pid: try spawn(arguments))
            if await instance.waitUntilServing() {
                return instance
            }
            instance.stop()
        }
        throw DnsmasqError.didNotStart
    }

    private static func spawn(_ arguments: [String]) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = arguments.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard result == 0 else { throw DnsmasqError.spawnFailed(result) }
        return pid
    }

    /// Polls with a real query until dnsmasq answers (or exits, e.g. because the port was taken).
    private func waitUntilServing() async -> Bool {
        let transport = DNSTransport()
        let probe = DNSMessage.query(id: 1, name: name("remote.test"), type: .mx)
        for _ in 0..<50 {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                exited = true
                return false
            }
            if (try? await transport.udpExchange(probe, with: server, timeout: .milliseconds(100))) != nil {
                return true
            }
        }
        return false
    }

    /// Kills dnsmasq and reaps it; safe to call twice.
    func stop() {
        guard !exited else { return }
        exited = true
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
    }

    /// Runs `body` with a fresh dnsmasq, stopping it afterwards even when `body` throws.
    static func with<T>(_ body: (Dnsmasq) async throws -> T) async throws -> T {
        let dnsmasq = try await start()
        do {
            let result = try await body(dnsmasq)
            dnsmasq.stop()
            return result
        } catch {
            dnsmasq.stop()
            throw error
        }
    }
}

enum DnsmasqError: Error {
    case notInstalled
    case didNotStart
    case spawnFailed(Int32)
}
