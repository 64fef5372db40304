import Foundation
import MailQueue
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SMTPCore
import Synchronization

/// What the client handler reports to the task driving a connection.
enum ClientStep: Sendable {
    case ready
    case needBody(chunked: Bool)
    case finished([RecipientResult])
    case closed([RecipientResult], SMTPReply?)
}

/// The outbound message body: Mailflow's prefix lines, then the stored body from an offset.
public struct OutboundBody: Sendable {
    public var prefix: Data
    public var reader: MessageBodyReader

    public init(prefix: Data, reader: MessageBodyReader) {
        self.prefix = prefix
        self.reader = reader
    }

    /// Octets on the wire before dot-stuffing (the BDAT size, the SIZE= value).
    public var size: Int {
        switch reader.body {
        case .inline(let d): return prefix.count + max(0, d.count - reader.skip)
        case .spooled(let path):
            let attrs = try? FileManager.default.attributesOfItem(atPath: path)
            let total = (attrs?[.size] as? NSNumber)?.intValue ?? 0
            return prefix.count + max(0, total - reader.skip)
        }
    }
}

/// TLS facts of an outbound connection, for the trace.
public struct OutboundTLSInfo: Sendable, Hashable {
    public var version: String
    /// Whether the certificate chain and name were verified (only where a connector requires it).
    public var verified: Bool
}

/// The deadlines of an outbound session, one per thing the remote owes (RFC 5321 §4.5.3.2; Postfix's
/// `smtp_*_timeout`).
///
/// Each is a deadline for a whole reply, not an idle timer: a remote that trickles its reply one
/// byte at a time, each byte well within any per-read timeout, still has only `command` (or the
/// deadline of what it owes) for all of it. A reply that arrives re-arms the deadline for the next
/// one, so a pipelined envelope gets one deadline per reply. The body has `dataBlock` for each chunk
/// the remote must take (a remote that stops reading stalls the write), then `dataTermination` for
/// the reply to the final dot.
public struct OutboundTimeouts: Sendable, Hashable {
    /// TCP connect (Postfix `smtp_connect_timeout`).
    public var connect: TimeAmount
    /// The `220` greeting (RFC 5321 §4.5.3.2.1: 5 minutes).
    public var greeting: TimeAmount
    /// Replies to EHLO/HELO, STARTTLS, MAIL, RCPT and RSET (§4.5.3.2.2-3: 5 minutes).
    public var command: TimeAmount
    /// The TLS handshake after `220` to STARTTLS (Postfix `smtp_starttls_timeout`: 5 minutes).
    public var tlsHandshake: TimeAmount
    /// The `354` to DATA (§4.5.3.2.4: 2 minutes).
    public var dataInitiation: TimeAmount
    /// Each chunk of the body the remote must take (§4.5.3.2.5: 3 minutes).
    public var dataBlock: TimeAmount
    /// The reply to the final dot or `BDAT LAST` (§4.5.3.2.6: 10 minutes).
    public var dataTermination: TimeAmount

    public init(
        connect: TimeAmount = .seconds(30), greeting: TimeAmount = .seconds(300), command: TimeAmount = .seconds(300),
        tlsHandshake: TimeAmount = .seconds(300), dataInitiation: TimeAmount = .seconds(120),
        dataBlock: TimeAmount = .seconds(180), dataTermination: TimeAmount = .seconds(600)
    ) {
        self.connect = connect
        self.greeting = greeting
        self.command = command
        self.tlsHandshake = tlsHandshake
        self.dataInitiation = dataInitiation
        self.dataBlock = dataBlock
        self.dataTermination = dataTermination
    }

    /// The deadline for what the session awaits.
    public func deadline(for awaiting: ClientSession.Awaiting) -> TimeAmount {
        switch awaiting {
        case .greeting: return greeting
        case .hello, .startTLS, .mail, .recipient, .reset, .quit: return command
        case .tlsHandshake: return tlsHandshake
        case .dataInitiation: return dataInitiation
        case .dataTermination: return dataTermination
        }
    }

    /// The longest of them: the backstop of a task waiting on the session, should a deadline be
    /// missing somewhere.
    var longest: TimeAmount {
        [greeting, command, tlsHandshake, dataInitiation, dataBlock, dataTermination].max() ?? .seconds(600)
    }
}

/// The I/O shell around `ClientSession`: parses replies, writes commands, runs STARTTLS, and hands
/// body writing to the task that drives the connection (so a large body streams with backpressure).
///
/// It keeps one deadline running while the remote owes something (`OutboundTimeouts`), re-armed
/// when a whole reply arrives (never by a byte), and ends the session with a precise
/// `SMTPClientFailure.timeout` when it passes.
final class SMTPClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var machine: ClientSession
    var parser = SMTPReplyParser()
    var input = ByteBuffer()
    var waiter: EventLoopPromise<ClientStep>?
    var queued: [ClientStep] = []
    let tlsContext: NIOSSLContext?
    let serverName: String?
    let verify: Bool
    var tlsInfo: OutboundTLSInfo?
    var context: ChannelHandlerContext?
    var inHandshake = false
    /// Why the session closed, readable even after the handler is gone from the pipeline.
    let closeReason: CloseReason
    let timeouts: OutboundTimeouts
    /// The deadline running now, and what for.
    var deadline: Scheduled<Void>?
    /// True while the task driving the connection writes the body: its chunks carry the deadline.
    var writingBody = false

    init(
        machine: ClientSession, tlsContext: NIOSSLContext?, serverName: String?, verify: Bool,
        closeReason: CloseReason, timeouts: OutboundTimeouts = OutboundTimeouts()
    ) {
        self.timeouts = timeouts
        self.closeReason = closeReason
        self.machine = machine
        self.tlsContext = tlsContext
        self.serverName = serverName
        self.verify = verify
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { rearm() }
    }

    /// NIO's context holds its handler strongly and is never told to let go: keeping it after the
    /// handler is removed would keep both (and the session's buffers) alive for good (issue 10).
    func handlerRemoved(context: ChannelHandlerContext) {
        cancelDeadline()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        rearm()
        context.fireChannelActive()
    }

    // MARK: deadlines

    /// Starts the deadline for what the session awaits now (or none), replacing the one running.
    /// While the body is being written the body writer owns the deadline (`bodyChunkStarted`).
    func rearm() {
        guard !writingBody else { return }
        guard let awaiting = machine.awaiting else {
            cancelDeadline()
            return
        }
        arm(timeouts.deadline(for: awaiting), waitingFor: awaiting.rawValue)
    }

    func arm(_ after: TimeAmount, waitingFor what: String) {
        cancelDeadline()
        guard let context else { return }
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: after) { [weak self] in
            self?.deadlinePassed(after: after, waitingFor: what)
        }
    }

    func cancelDeadline() {
        deadline?.cancel()
        deadline = nil
    }

    /// The remote owed a reply (or to take the body) and did not deliver it in time.
    func deadlinePassed(after: TimeAmount, waitingFor what: String) {
        deadline = nil
        var detail = what
        let partial = input.readableBytes + parser.pendingOctets
        if partial > 0 { detail += " (\(partial) octets of a reply had come, not a whole one)" }
        fail(.timeout(after: after, waitingFor: detail))
        context?.close(promise: nil)
    }

    /// The body writer is about to write a chunk the remote must take within `dataBlock`.
    func bodyChunkStarted() {
        writingBody = true
        arm(timeouts.dataBlock, waitingFor: "the remote to take the message body")
    }

    /// The whole body is written: now the reply to its end is owed.
    func bodyWritten() {
        writingBody = false
        rearm()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        input.writeBuffer(&bytes)
        do {
            while let reply = try parser.parse(&input) {
                handle(machine.replyReceived(reply))
                if machine.isClosed { break }
            }
            if machine.isClosed { input.clear() }
            input.discardReadBytes()
        } catch {
            fail(.replyParse("\(error)"))
            // The refused reply is dropped, not kept until the channel is gone.
            input.clear()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        handle(machine.connectionClosed())
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            inHandshake = false
            if let h = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self) {
                let v: String
                switch h.tlsVersion {
                case .tlsv13: v = "TLSv1.3"
                case .tlsv12: v = "TLSv1.2"
                case .tlsv11: v = "TLSv1.1"
                case .tlsv1: v = "TLSv1"
                case nil: v = "TLS"
                }
                tlsInfo = OutboundTLSInfo(version: v, verified: verify)
            }
            handle(machine.tlsEstablished())
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(Self.failure(for: error, inHandshake: inHandshake))
        context.close(promise: nil)
    }

    /// What a pipeline error means: inside the TLS handshake (or a handshake error from NIOSSL) the
    /// handshake failed; anywhere else the connection broke (a reset, or a TLS session cut without
    /// close_notify), which is an abrupt close.
    static func failure(for error: any Error, inHandshake: Bool) -> SMTPClientFailure {
        if inHandshake { return .tlsHandshake("\(error)") }
        if let e = error as? NIOSSLError, case .handshakeFailed = e { return .tlsHandshake("\(error)") }
        return .closed
    }

    /// Ends the session for `failure`: pending recipients are deferred with its reply, and the
    /// connection's `closeReason` keeps the typed failure.
    func fail(_ failure: SMTPClientFailure) {
        guard !machine.isClosed else { return }
        closeReason.fail(failure)
        switch failure {
        case .tlsHandshake(let why):
            handle(machine.tlsFailed(why))
        default:
            // The session state machine settles the transaction as for a dropped connection; the
            // reply says what actually happened.
            let reply = failure.reply
            guard case .close(let results, _) = machine.connectionClosed() else { return }
            handle(
                .close(
                    results: results.map {
                        $0.reply == ClientSession.abruptClose ? RecipientResult.from(reply, index: $0.index) : $0
                    }, reason: reply))
        }
    }

    func handle(_ action: ClientSession.Action) {
        guard let context else { return }
        defer { rearm() }
        switch action {
        case .none:
            if machine.isReady { deliver(.ready) }
        case .send(let commands):
            context.writeAndFlush(wrapOutboundOut(commands), promise: nil)
        case .startTLS:
            guard let tlsContext else {
                fail(.tlsHandshake("no TLS client context"))
                return
            }
            do {
                inHandshake = true
                let h = try NIOSSLClientHandler(context: tlsContext, serverHostname: serverName)
                try context.pipeline.syncOperations.addHandler(h, position: .first)
            } catch {
                fail(.tlsHandshake("\(error)"))
            }
        case .sendData:
            deliver(.needBody(chunked: false))
        case .sendChunk(let bdat):
            context.write(wrapOutboundOut(bdat), promise: nil)
            deliver(.needBody(chunked: true))
        case .finished(let results):
            deliver(.finished(results))
            if machine.isReady { deliver(.ready) }
        case .close(let results, let reason):
            writingBody = false
            if let reason { closeReason.set(reason) }
            deliver(.closed(results, reason))
            context.close(promise: nil)
        }
    }

    func deliver(_ step: ClientStep) {
        if let w = waiter {
            waiter = nil
            w.succeed(step)
        } else {
            queued.append(step)
        }
    }

    func next(_ loop: EventLoop) -> EventLoopFuture<ClientStep> {
        if !queued.isEmpty { return loop.makeSucceededFuture(queued.removeFirst()) }
        if machine.isClosed { return loop.makeSucceededFuture(.closed([], nil)) }
        let p = loop.makePromise(of: ClientStep.self)
        waiter = p
        return p.futureResult
    }
}

/// The reply that ended a session, kept outside the channel so a remote that answers `421` and
/// closes at once still tells us why; and the typed failure when Mailflow ended it.
final class CloseReason: Sendable {
    let reply = Mutex<SMTPReply?>(nil)
    let failure = Mutex<SMTPClientFailure?>(nil)
    func set(_ r: SMTPReply) { reply.withLock { if $0 == nil { $0 = r } } }
    func fail(_ f: SMTPClientFailure) { failure.withLock { if $0 == nil { $0 = f } } }
    var value: SMTPReply? { reply.withLock { $0 } }

    /// Why the session ended, as a typed failure: Mailflow's own, or the remote's reply.
    var asFailure: SMTPClientFailure {
        if let f = failure.withLock({ $0 }) { return f }
        guard let r = value, r != ClientSession.abruptClose else { return .closed }
        return .refused(r)
    }
}

/// Why an outbound SMTP session ended without delivering, one case per kind of failure, each with
/// the reply its recipients are deferred with. Recorded as what happened: a reply that cannot be
/// parsed is a protocol error, not a TLS failure, and a silent remote is a timeout, not an abrupt
/// close (only that counts toward a poison message).
public enum SMTPClientFailure: Error, Hashable, CustomStringConvertible {
    /// The TCP connection could not be made (refused, unreachable, connect timeout).
    case connect(address: String, detail: String)
    /// No address to connect to.
    case noAddress(String)
    /// The address lookup of a host failed; the reply says whether for good.
    case addressLookup(SMTPReply)
    /// The STARTTLS handshake failed (RFC 3207).
    case tlsHandshake(String)
    /// The remote sent something that is not an SMTP reply (RFC 5321 §4.2).
    case replyParse(String)
    /// No (whole) reply within the deadline for what was awaited (RFC 5321 §4.5.3.2), or the remote
    /// did not take the body; `waitingFor` says what (`ClientSession.Awaiting`'s words).
    case timeout(after: TimeAmount, waitingFor: String? = nil)
    /// The remote closed the connection or it broke (Exchange's SuspiciousRemoteServerError).
    case closed
    /// The remote answered and ended the session: a `421` greeting, a refused EHLO, no STARTTLS
    /// where TLS is required.
    case refused(SMTPReply)

    public var reply: SMTPReply {
        switch self {
        case .connect(let address, let detail):
            return SMTPReply(451, .init(4, 4, 1), "Connection to \(address) failed: \(detail)")
        case .noAddress(let hosts): return SMTPReply(451, .init(4, 4, 4), "No address for \(hosts)")
        case .tlsHandshake(let why):
            return SMTPReply(451, .init(4, 7, 5), "TLS handshake with the remote failed: \(why)")
        case .replyParse(let why):
            return SMTPReply(451, .init(4, 5, 0), "Protocol error: the remote's reply could not be parsed: \(why)")
        case .timeout(let after, let what):
            let text = "No reply from the remote within \(Self.seconds(after))"
            return SMTPReply(451, .init(4, 4, 2), what.map { "\(text) waiting for \($0)" } ?? text)
        case .closed: return ClientSession.abruptClose
        case .refused(let reply), .addressLookup(let reply): return reply
        }
    }

    public var description: String { reply.description }

    /// `300 s`, `1.5 s`.
    static func seconds(_ t: TimeAmount) -> String {
        let ns = t.nanoseconds
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000) s" }
        // Milliseconds at most, written without a locale: "1.5 s", "0.25 s".
        let ms = ns / 1_000_000
        var fraction = String(ms % 1000)
        while fraction.count < 3 { fraction = "0" + fraction }
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return fraction.isEmpty ? "\(ms / 1000) s" : "\(ms / 1000).\(fraction) s"
    }
}

/// One outbound SMTP connection: connect, greet, STARTTLS per policy, then any number of messages.
///
/// Every message ends in a result per recipient; a connection that breaks or is refused settles its
/// message with deferrals (`SuspiciousRemoteServerError` for an abrupt close) and is not reused.
public final class SMTPClientConnection: Sendable {
    let channel: Channel
    let handler: NIOLoopBound<SMTPClientHandler>
    let timeouts: OutboundTimeouts
    let closeReason: CloseReason
    public let remoteAddress: SocketAddress

    init(
        channel: Channel, handler: NIOLoopBound<SMTPClientHandler>, timeouts: OutboundTimeouts,
        closeReason: CloseReason, remote: SocketAddress
    ) {
        self.channel = channel
        self.handler = handler
        self.timeouts = timeouts
        self.closeReason = closeReason
        self.remoteAddress = remote
    }

    /// Why Mailflow ended the session (a deadline, a reply it could not parse, a failed handshake),
    /// nil while it runs or when the remote ended it.
    public var failure: SMTPClientFailure? { closeReason.failure.withLock { $0 } }

    /// Connects and runs the greeting, EHLO and STARTTLS. Throws an `SMTPClientFailure` whose reply
    /// is recorded (the remote's own, or Mailflow's for what went wrong).
    public static func connect(
        to address: SocketAddress, group: EventLoopGroup, heloName: String, tls: TLSRequirement,
        tlsContext: NIOSSLContext?, serverName: String?, verify: Bool = false,
        timeouts: OutboundTimeouts = OutboundTimeouts(), protocol clientProtocol: ClientProtocol = .smtp
    ) async throws -> SMTPClientConnection {
        let closeReason = CloseReason()
        var bootstrap = ClientBootstrap(group: group).connectTimeout(timeouts.connect)
        // A UNIX socket (LMTP to a local mailbox server) has no TCP options.
        if address.protocol != .unix {
            bootstrap = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1)
        }
        bootstrap = bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let h = SMTPClientHandler(
                    machine: ClientSession(heloName: heloName, tls: tls, protocol: clientProtocol),
                    tlsContext: tlsContext, serverName: serverName, verify: verify, closeReason: closeReason,
                    timeouts: timeouts)
                try channel.pipeline.syncOperations.addHandler(h)
            }
        }
        let channel: Channel
        do {
            channel = try await bootstrap.connect(to: address).get()
        } catch {
            throw SMTPClientFailure.connect(
                address: address.ipAddress ?? address.pathname ?? "?", detail: "\(error)")
        }
        let handler: NIOLoopBound<SMTPClientHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(
                    try channel.pipeline.syncOperations.handler(type: SMTPClientHandler.self),
                    eventLoop: channel.eventLoop)
            }.get()
        } catch {
            // The remote answered and hung up before we looked (a 421 greeting): give its reply.
            try? await channel.closeFuture.get()
            throw closeReason.asFailure
        }
        let conn = SMTPClientConnection(
            channel: channel, handler: handler, timeouts: timeouts, closeReason: closeReason, remote: address)
        switch await conn.nextStep() {
        case .ready:
            return conn
        case .closed:
            throw closeReason.asFailure
        case .needBody, .finished:
            channel.close(promise: nil)
            throw SMTPClientFailure.refused(SMTPReply(451, .init(4, 5, 0), "unexpected session state"))
        }
    }

    /// The next step. The handler's deadlines end a silent or trickling remote (RFC 5321 §4.5.3.2);
    /// a backstop of twice the longest deadline guards against a wait no deadline covers.
    func nextStep() async -> ClientStep {
        let loop = channel.eventLoop
        let handler = self.handler
        let channel = self.channel
        let timeout = timeouts.longest + timeouts.longest
        let future = loop.flatSubmit { () -> EventLoopFuture<ClientStep> in
            let f = handler.value.next(loop)
            let t = loop.scheduleTask(in: timeout) {
                handler.value.fail(.timeout(after: timeout))
                channel.close(promise: nil)
            }
            f.whenComplete { _ in t.cancel() }
            return f
        }
        return (try? await future.get()) ?? .closed([], ClientSession.abruptClose)
    }

    public var tlsInfo: OutboundTLSInfo? {
        get async { try? await channel.eventLoop.submit { self.handler.value.tlsInfo }.get() }
    }

    public var isUsable: Bool {
        get async { (try? await channel.eventLoop.submit { self.handler.value.machine.isReady }.get()) ?? false }
    }

    /// Sends one message; returns a result per recipient (in envelope order).
    public func send(_ envelope: OutboundEnvelope, body: OutboundBody) async -> [RecipientResult] {
        let handler = self.handler
        let started: Bool =
            (try? await channel.eventLoop.submit {
                handler.value.handle(handler.value.machine.send(envelope))
                return true
            }.get()) ?? false
        if !started { return Self.deferAll(envelope, ClientSession.abruptClose) }
        while true {
            switch await nextStep() {
            case .ready:
                continue
            case .finished(let results):
                return Self.complete(results, envelope)
            case .closed(let results, let reason):
                return Self.complete(results, envelope, fallback: reason ?? ClientSession.abruptClose)
            case .needBody(let chunked):
                await writeBody(body, chunked: chunked)
            }
        }
    }

    /// Writes the body with backpressure; each chunk must be taken within `dataBlock` (a remote that
    /// stops reading would otherwise hold the write, and the destination's slot, for good).
    func writeBody(_ body: OutboundBody, chunked: Bool) async {
        var stuffer = DotStuffer()
        let channel = self.channel
        let handler = self.handler
        func put(_ data: Data) async throws {
            var b = channel.allocator.buffer(capacity: data.count)
            b.writeBytes(data)
            let out = chunked ? b : stuffer.stuff(b)
            channel.eventLoop.execute { handler.value.bodyChunkStarted() }
            try await channel.writeAndFlush(out).get()
        }
        defer { channel.eventLoop.execute { handler.value.bodyWritten() } }
        do {
            try await put(body.prefix)
            // Chunks are read from the spool one at a time, so memory stays at one chunk.
            var chunks = try body.reader.makeIterator()
            while let c = try chunks.next() { try await put(c) }
            if !chunked {
                var t = channel.allocator.buffer(capacity: 5)
                t.writeString(stuffer.terminator)
                channel.eventLoop.execute { handler.value.bodyChunkStarted() }
                try await channel.writeAndFlush(t).get()
            }
        } catch {
            channel.close(promise: nil)
        }
    }

    static func deferAll(_ env: OutboundEnvelope, _ reply: SMTPReply) -> [RecipientResult] {
        env.recipients.indices.map { RecipientResult(index: $0, disposition: .deferred, reply: reply) }
    }

    static func complete(_ results: [RecipientResult], _ env: OutboundEnvelope, fallback: SMTPReply? = nil)
        -> [RecipientResult]
    {
        var byIndex: [Int: RecipientResult] = [:]
        for r in results { byIndex[r.index] = r }
        return env.recipients.indices.map { i in
            byIndex[i]
                ?? RecipientResult(index: i, disposition: .deferred, reply: fallback ?? ClientSession.abruptClose)
        }
    }

    /// QUIT, wait briefly for the server's 221 and the close, then close regardless.
    public func close() async {
        let handler = self.handler
        let channel = self.channel
        _ = try? await channel.eventLoop.submit { handler.value.handle(handler.value.machine.quit()) }.get()
        let guardTask = channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        guardTask.cancel()
    }
}
