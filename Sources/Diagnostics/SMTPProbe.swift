import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SMTPCore
import Synchronization

// The SMTP side of a host probe: connect, banner, EHLO, STARTTLS (RFC 3207), and the two ways a
// server can get STARTTLS wrong that an admin should hear about: dropping the session when it is
// asked to start TLS, and answering commands that were pipelined behind STARTTLS (CVE-2011-0411,
// RFC 3207 §4.2: the client must discard what it knew before TLS; the server must too).
//
// Every connection is bounded as a whole by `ProbeOptions.probeTimeout` (one deadline for connect,
// every reply and the handshake), and every reply by `SMTPReplyParser`'s line and line-count limits.

/// What a probe connection reports, one event at a time, to the task that drives it.
enum ProbeEvent: Sendable, Equatable {
    case reply(SMTPReply)
    /// A reply that `SMTPReplyParser` refused (malformed, a line over its limit, too many lines), or
    /// more replies than commands.
    case protocolError(String)
    case tlsEstablished
    case tlsFailed(String)
    /// The server's first answer to a hand-made ClientHello (`TLSClientHello`).
    case tlsAnswer(TLSServerAnswer)
    case closed
    case timedOut
}

/// What the probe needs to start TLS on a connection: a context made for this probe (its versions
/// and ciphers) and the SNI name (none for an address).
struct ProbeTLSSetup: Sendable {
    var context: NIOSSLContext
    var serverHostname: String?
}

/// The channel handler of a probe connection: parses replies, and starts TLS itself the moment the
/// 220 to STARTTLS arrives (on the event loop, so no plaintext byte after it can slip past), noting
/// any bytes that came with that reply.
final class ProbeChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The probe sends at most two commands at once; more queued replies than this is a server
    /// talking to itself.
    static let maxQueuedEvents = 8

    private var parser = SMTPReplyParser()
    private var input = ByteBuffer()
    private var events: [ProbeEvent] = []
    private var waiter: EventLoopPromise<ProbeEvent>?
    private var context: ChannelHandlerContext?
    private var isClosed = false
    private var pendingTLS: ProbeTLSSetup?
    /// A hand-made ClientHello to send instead of starting swift-nio-ssl when the 220 arrives.
    private var pendingHello: [UInt8]?
    /// After a hand-made ClientHello: the server's bytes go to this decoder, not to the reply parser.
    private var helloAnswer: HelloAnswerState?

    private enum HelloAnswerState {
        case waiting(TLSServerAnswerDecoder)
        case decided
    }

    /// The raw-bytes observer put in front of TLS, once TLS has started.
    private(set) var sniffer: ServerHelloSniffer?
    /// The certificates the server presented, DER, in its order (leaf first).
    private(set) var presentedChain: [[UInt8]] = []
    /// Bytes that arrived in the same read as the 220 to STARTTLS, after it: a reply to a command
    /// pipelined behind STARTTLS, answered in plaintext.
    private(set) var plaintextAfterSTARTTLSReply: [UInt8] = []
    private(set) var negotiatedVersion: TLSVersion?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// Drops the context when the channel goes: NIO's context holds its handler strongly, so keeping
    /// it would keep both alive for good.
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if helloAnswer != nil {
            answerBytes(bytes.readableBytesView, context: context)
            return
        }
        input.writeBuffer(&bytes)
        do {
            while let reply = try parser.parse(&input) {
                push(.reply(reply))
                if let hello = pendingHello {
                    pendingHello = nil
                    if reply.code == 220 {
                        sendHello(hello, context: context)
                        return
                    }
                }
                if let tls = pendingTLS {
                    pendingTLS = nil
                    if reply.code == 220 {
                        beginTLS(tls, context: context)
                        return
                    }
                }
            }
            input.discardReadBytes()
        } catch {
            push(.protocolError(error.description))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A hand-made ClientHello's answer cut short by the close (a ServerHello whose DH group did
        // not follow) is still an answer.
        if case .waiting(let decoder) = helloAnswer, let answer = decoder.finish() {
            helloAnswer = .decided
            push(.tlsAnswer(answer))
        }
        isClosed = true
        push(.closed)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            negotiatedVersion = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).tlsVersion
            push(.tlsEstablished)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let e = error as? NIOSSLError, e == .uncleanShutdown {
            // A peer that closes without close_notify: the close itself is the event.
            context.close(promise: nil)
            return
        }
        if sniffer != nil {
            push(.tlsFailed(String(describing: error)))
        } else {
            push(.protocolError(String(describing: error)))
        }
        context.close(promise: nil)
    }

    /// Arms TLS for the next reply: a 220 starts it at once.
    func armTLS(_ setup: ProbeTLSSetup) { pendingTLS = setup }

    /// Arms a hand-made ClientHello for the next reply: a 220 sends it at once, and what the server
    /// sends next is decoded as its first TLS answer (`ProbeEvent.tlsAnswer`), then the connection
    /// is closed (no handshake is finished).
    func armHello(_ record: [UInt8]) { pendingHello = record }

    private func sendHello(_ record: [UInt8], context: ChannelHandlerContext) {
        plaintextAfterSTARTTLSReply = Array(input.readableBytesView.prefix(ServerHelloSniffer.keptBytes))
        let early = Array(input.readableBytesView)
        input.clear()
        helloAnswer = .waiting(TLSServerAnswerDecoder())
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: record)), promise: nil)
        if !early.isEmpty { answerBytes(early[...], context: context) }
    }

    private func answerBytes(_ bytes: some Sequence<UInt8>, context: ChannelHandlerContext) {
        guard case .waiting(var decoder) = helloAnswer else { return }
        if let answer = decoder.feed(bytes) {
            helloAnswer = .decided
            push(.tlsAnswer(answer))
            context.close(promise: nil)
        } else {
            helloAnswer = .waiting(decoder)
        }
    }

    private func beginTLS(_ setup: ProbeTLSSetup, context: ChannelHandlerContext) {
        plaintextAfterSTARTTLSReply = Array(input.readableBytesView.prefix(ServerHelloSniffer.keptBytes))
        input.clear()
        parser = SMTPReplyParser()
        let sniffer = ServerHelloSniffer()
        self.sniffer = sniffer
        do {
            // Trust is judged later, on the whole presented chain, by `CertificateCheck`; here every
            // chain is accepted so that a bad certificate still lets the probe see the rest.
            let tls = try NIOSSLClientHandler(
                context: setup.context, serverHostname: setup.serverHostname,
                customVerificationCallback: { [weak self] certificates, promise in
                    self?.presentedChain = certificates.compactMap { try? $0.toDERBytes() }
                    promise.succeed(.certificateVerified)
                })
            try context.pipeline.syncOperations.addHandler(tls, position: .first)
            try context.pipeline.syncOperations.addHandler(sniffer, position: .first)
        } catch {
            push(.tlsFailed(String(describing: error)))
            context.close(promise: nil)
        }
    }

    private func push(_ event: ProbeEvent) {
        if let w = waiter {
            waiter = nil
            w.succeed(event)
            return
        }
        guard events.count < Self.maxQueuedEvents else {
            if events.last != .protocolError("more replies than commands") {
                events.append(.protocolError("more replies than commands"))
            }
            context?.close(promise: nil)
            return
        }
        events.append(event)
    }

    func next(_ loop: EventLoop) -> EventLoopFuture<ProbeEvent> {
        if !events.isEmpty { return loop.makeSucceededFuture(events.removeFirst()) }
        if isClosed { return loop.makeSucceededFuture(.closed) }
        let p = loop.makePromise(of: ProbeEvent.self)
        waiter = p
        return p.futureResult
    }

    /// Stops waiting without closing (the waiter hears `.timedOut`).
    func cancelWait() {
        if let w = waiter {
            waiter = nil
            w.succeed(.timedOut)
        }
    }

    func timeOut() {
        if let w = waiter {
            waiter = nil
            w.succeed(.timedOut)
        }
        context?.close(promise: nil)
    }
}

/// One probe connection to one server, every wait on it bounded by one deadline.
final class SMTPProbeConnection: Sendable {
    let channel: Channel
    let handler: NIOLoopBound<ProbeChannelHandler>
    let deadline: NIODeadline

    private init(channel: Channel, handler: NIOLoopBound<ProbeChannelHandler>, deadline: NIODeadline) {
        self.channel = channel
        self.handler = handler
        self.deadline = deadline
    }

    /// Why a connection was not made.
    enum OpenFailure: Error, Sendable, Equatable {
        case badAddress(String)
        case timedOut
        case refused(String)
    }

    /// Connects to `address:port`; returns the connection and how long the TCP connect took.
    static func open(
        address: String, port: Int, deadline: NIODeadline, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async -> Result<(SMTPProbeConnection, Duration), OpenFailure> {
        let socketAddress: SocketAddress
        do {
            socketAddress = try SocketAddress(ipAddress: address, port: port)
        } catch {
            return .failure(.badAddress("\(address) is not an IP address"))
        }
        let remaining = deadline - .now()
        guard remaining > .zero else { return .failure(.timedOut) }
        // The handler is kept from the initializer on: a server that sends garbage and is closed
        // at once still leaves its events (the protocol error) to read.
        let slot = HandlerSlot()
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(remaining)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = ProbeChannelHandler()
                    try channel.pipeline.syncOperations.addHandler(handler)
                    slot.set(NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
        let started = ContinuousClock.now
        let channel: Channel
        do {
            channel = try await bootstrap.connect(to: socketAddress).get()
        } catch {
            if case ChannelError.connectTimeout = error { return .failure(.timedOut) }
            return .failure(.refused(String(describing: error)))
        }
        let connectTime = ContinuousClock.now - started
        guard let handler = slot.value else {
            channel.close(promise: nil)
            return .failure(.refused("the connection closed at once"))
        }
        return .success((SMTPProbeConnection(channel: channel, handler: handler, deadline: deadline), connectTime))
    }

    /// The next event, or `.timedOut` (and the connection closed) when the deadline passes first.
    func next() async -> ProbeEvent {
        let loop = channel.eventLoop
        let handler = self.handler
        let deadline = self.deadline
        let future = loop.flatSubmit { () -> EventLoopFuture<ProbeEvent> in
            let f = handler.value.next(loop)
            let t = loop.scheduleTask(deadline: deadline) { handler.value.timeOut() }
            f.whenComplete { _ in t.cancel() }
            return f
        }
        return (try? await future.get()) ?? .closed
    }

    /// The next event if one arrives within `window` (and before the deadline); nil otherwise.
    func event(within window: TimeAmount) async -> ProbeEvent? {
        let loop = channel.eventLoop
        let handler = self.handler
        let until = min(deadline, .now() + window)
        let future = loop.flatSubmit { () -> EventLoopFuture<ProbeEvent?> in
            let p = loop.makePromise(of: ProbeEvent?.self)
            let timer = loop.scheduleTask(deadline: until) {
                p.succeed(nil)
                handler.value.cancelWait()
            }
            handler.value.next(loop).whenSuccess { event in
                timer.cancel()
                p.succeed(event)
            }
            return p.futureResult
        }
        return (try? await future.get()) ?? nil
    }

    /// Writes `commands` in one write (so pipelined commands share a segment), encoded by
    /// `SMTPCommandEncoder`; with `tls`, a 220 to the first of them starts TLS.
    /// With `hello` (a `TLSClientHello` record), a 220 to the first of them sends it instead.
    func send(
        _ commands: [SMTPCommand], startingTLS tls: ProbeTLSSetup? = nil, hello: [UInt8]? = nil
    ) async throws(SMTPCommandEncodingError) {
        var buffer = channel.allocator.buffer(capacity: 64)
        for c in commands { try SMTPCommandEncoder.encode(c, into: &buffer) }
        let handler = self.handler
        let channel = self.channel
        let bytes = buffer
        _ = try? await channel.eventLoop.submit {
            if let tls { handler.value.armTLS(tls) }
            if let hello { handler.value.armHello(hello) }
            channel.writeAndFlush(bytes, promise: nil)
        }.get()
    }

    /// Facts the handler gathered; read on the event loop.
    func read<T: Sendable>(_ body: @escaping @Sendable (ProbeChannelHandler) -> T) async -> T? {
        let handler = self.handler
        return try? await channel.eventLoop.submit { body(handler.value) }.get()
    }

    /// QUIT (best effort, not waited for) and close.
    func close(quit: Bool = true) async {
        if quit { try? await send([.quit]) }
        try? await channel.close()
    }
}

/// Hands the channel handler from the channel initializer (on the event loop) to the connecting task.
final class HandlerSlot: Sendable {
    private let handler = Mutex<NIOLoopBound<ProbeChannelHandler>?>(nil)
    func set(_ h: NIOLoopBound<ProbeChannelHandler>) { handler.withLock { $0 = h } }
    var value: NIOLoopBound<ProbeChannelHandler>? { handler.withLock { $0 } }
}

/// What the server said before TLS.
struct SMTPGreeting: Sendable, Equatable {
    var connectTime: Duration
    var banner: SMTPReply
    var ehlo: SMTPReply
    /// EHLO keywords, upper-cased, each with its parameters (`SIZE 10240000`).
    var extensions: [String]

    var startTLSOffered: Bool { extensions.contains { $0.split(separator: " ").first == "STARTTLS" } }
}

/// Where and why a conversation stopped before it got what it asked for.
struct SMTPProbeStop: Error, Sendable, Equatable {
    enum Step: String, Sendable {
        case connect, banner, ehlo, starttls
        case ehloAfterTLS = "EHLO after TLS"
    }
    enum Reason: Sendable, Equatable {
        case connectFailed(SMTPProbeConnection.OpenFailure)
        case timedOut
        case closed
        case protocolError(String)
        case refused(SMTPReply)
        case cannotEncode(String)
    }
    var step: Step
    var reason: Reason

    var text: String {
        switch reason {
        case .connectFailed(.badAddress(let why)): "cannot connect: \(why)"
        case .connectFailed(.timedOut): "the connection timed out"
        case .connectFailed(.refused(let why)): "the connection failed: \(why)"
        case .timedOut: "no reply to the \(step.rawValue) within the probe timeout"
        case .closed: "the server closed the connection at the \(step.rawValue)"
        case .protocolError(let why): "the reply to the \(step.rawValue) is not SMTP: \(why)"
        case .refused(let reply): "the \(step.rawValue) was answered \(reply.description)"
        case .cannotEncode(let why): "the probe could not send the \(step.rawValue): \(why)"
        }
    }
}

enum SMTPProbe {
    /// Connects, reads the banner and says EHLO.
    static func greet(
        address: String, port: Int, heloName: String, deadline: NIODeadline
    ) async -> Result<(SMTPProbeConnection, SMTPGreeting), SMTPProbeStop> {
        let opened = await SMTPProbeConnection.open(address: address, port: port, deadline: deadline)
        let connection: SMTPProbeConnection
        let connectTime: Duration
        switch opened {
        case .failure(let f): return .failure(SMTPProbeStop(step: .connect, reason: .connectFailed(f)))
        case .success(let (c, t)): (connection, connectTime) = (c, t)
        }
        let banner: SMTPReply
        switch await expectReply(connection, step: .banner, code: 220) {
        case .failure(let stop):
            await connection.close(quit: false)
            return .failure(stop)
        case .success(let r): banner = r
        }
        let ehlo: SMTPReply
        switch await command(.ehlo(heloName), on: connection, step: .ehlo) {
        case .failure(let stop):
            await connection.close()
            return .failure(stop)
        case .success(let r): ehlo = r
        }
        let greeting = SMTPGreeting(
            connectTime: connectTime, banner: banner, ehlo: ehlo, extensions: extensions(of: ehlo))
        return .success((connection, greeting))
    }

    /// The EHLO keywords: every line after the first (RFC 5321 §4.1.1.1), upper-cased keyword.
    static func extensions(of ehlo: SMTPReply) -> [String] {
        ehlo.lines.dropFirst().map { line in
            let parts = line.split(separator: " ", maxSplits: 1)
            guard let keyword = parts.first else { return "" }
            return parts.count > 1 ? keyword.uppercased() + " " + parts[1] : keyword.uppercased()
        }.filter { !$0.isEmpty }
    }

    static func command(
        _ c: SMTPCommand, on connection: SMTPProbeConnection, step: SMTPProbeStop.Step
    ) async -> Result<SMTPReply, SMTPProbeStop> {
        do {
            try await connection.send([c])
        } catch {
            return .failure(SMTPProbeStop(step: step, reason: .cannotEncode(error.description)))
        }
        return await expectReply(connection, step: step, code: 250)
    }

    static func expectReply(
        _ connection: SMTPProbeConnection, step: SMTPProbeStop.Step, code: Int
    ) async -> Result<SMTPReply, SMTPProbeStop> {
        switch await connection.next() {
        case .reply(let r) where r.code == code: .success(r)
        case .reply(let r): .failure(SMTPProbeStop(step: step, reason: .refused(r)))
        case .protocolError(let why), .tlsFailed(let why):
            .failure(SMTPProbeStop(step: step, reason: .protocolError(why)))
        case .tlsEstablished, .tlsAnswer:
            .failure(SMTPProbeStop(step: step, reason: .protocolError("unexpected TLS event")))
        case .closed: .failure(SMTPProbeStop(step: step, reason: .closed))
        case .timedOut: .failure(SMTPProbeStop(step: step, reason: .timedOut))
        }
    }

    /// Findings for the plaintext part of the main connection.
    static func findings(for greeting: SMTPGreeting, subject: String) -> [CheckFinding] {
        var out: [CheckFinding] = []
        let ms = Int((greeting.connectTime / .milliseconds(1)).rounded())
        out.append(
            CheckFinding(
                category: .smtp, subject: subject, check: "smtp.connect", severity: .ok,
                summary: "connected in \(ms) ms"))
        out.append(
            CheckFinding(
                category: .smtp, subject: subject, check: "smtp.banner", severity: .ok,
                summary: "banner: 220 \(greeting.banner.lines.first ?? "")",
                detail: greeting.banner.lines.count > 1 ? greeting.banner.description : nil))
        out.append(
            CheckFinding(
                category: .smtp, subject: subject, check: "smtp.ehlo", severity: .ok,
                summary: "EHLO accepted; \(greeting.extensions.count) extensions",
                detail: greeting.extensions.isEmpty ? nil : "extensions: " + greeting.extensions.joined(separator: ", ")
            ))
        if greeting.startTLSOffered {
            out.append(
                CheckFinding(
                    category: .starttls, subject: subject, check: "starttls.offered", severity: .ok,
                    summary: "STARTTLS offered"))
        } else {
            out.append(
                CheckFinding(
                    category: .starttls, subject: subject, check: "starttls.offered", severity: .failure,
                    summary: "STARTTLS not offered: mail to this server travels in plaintext",
                    detail: "the EHLO reply does not list STARTTLS (RFC 3207)"))
        }
        return out
    }

    /// The finding for a conversation that stopped before STARTTLS could be tried.
    static func stopFinding(_ stop: SMTPProbeStop, subject: String) -> CheckFinding {
        let check: String
        switch stop.step {
        case .connect: check = "smtp.connect"
        case .banner: check = "smtp.banner"
        case .ehlo: check = "smtp.ehlo"
        case .starttls: check = "starttls.reply"
        case .ehloAfterTLS: check = "starttls.ehlo"
        }
        return CheckFinding(
            category: stop.step == .starttls || stop.step == .ehloAfterTLS ? .starttls : .smtp, subject: subject,
            check: check, severity: .failure, summary: stop.text)
    }

    /// CVE-2011-0411: `STARTTLS` and `NOOP` in one write; a server that answers the NOOP, before
    /// the handshake in plaintext or after it inside TLS, read bytes that were sent before TLS as if
    /// they came through it, which lets a man in the middle inject commands into the TLS session.
    static func pipeliningFinding(
        address: String, port: Int, host: String, options: ProbeOptions, tls: ProbeTLSSetup, subject: String
    ) async -> CheckFinding {
        let deadline = NIODeadline.now() + TimeAmount(options.probeTimeout)
        let connection: SMTPProbeConnection
        switch await greet(address: address, port: port, heloName: options.heloName, deadline: deadline) {
        case .failure(let stop):
            return CheckFinding(
                category: .starttls, subject: subject, check: "starttls.pipelining", severity: .info,
                summary: "not tested: \(stop.text)")
        case .success(let (c, _)): connection = c
        }
        let result = await pipelinedSTARTTLS(on: connection, options: options, tls: tls, subject: subject)
        await connection.close(quit: false)
        return result
    }

    private static func pipelinedSTARTTLS(
        on connection: SMTPProbeConnection, options: ProbeOptions, tls: ProbeTLSSetup, subject: String
    ) async -> CheckFinding {
        func finding(_ severity: CheckSeverity, _ summary: String, _ detail: String? = nil) -> CheckFinding {
            CheckFinding(
                category: .starttls, subject: subject, check: "starttls.pipelining", severity: severity,
                summary: summary, detail: detail)
        }
        do {
            try await connection.send([.startTLS, .noop], startingTLS: tls)
        } catch {
            return finding(.info, "not tested: \(error.description)")
        }
        let first = await connection.next()
        guard case .reply(let reply) = first else {
            return finding(.info, "not tested: no reply to STARTTLS (\(first))")
        }
        guard reply.code == 220 else {
            return finding(.ok, "STARTTLS with a pipelined NOOP was refused: \(reply.description)")
        }
        let earlyBytes = await connection.read { $0.plaintextAfterSTARTTLSReply } ?? []
        if !earlyBytes.isEmpty {
            return finding(
                .failure, "answered a command pipelined after STARTTLS in plaintext (CVE-2011-0411 class)",
                "bytes after the 220: " + printable(earlyBytes))
        }
        switch await connection.next() {
        case .tlsEstablished:
            break
        case .tlsFailed(let why):
            let first = await connection.read { $0.sniffer?.firstBytes } ?? nil
            if let first, !first.isEmpty, !ServerHelloSniffer.looksLikeTLS(first) {
                return finding(
                    .failure, "answered a command pipelined after STARTTLS in plaintext (CVE-2011-0411 class)",
                    "bytes after the 220: " + printable(first))
            }
            return finding(.info, "not tested: the TLS handshake failed (\(why))")
        case .closed:
            return finding(.ok, "closed the session when a command was pipelined after STARTTLS")
        case .timedOut:
            return finding(.info, "not tested: the TLS handshake timed out")
        case .reply, .protocolError, .tlsAnswer:
            return finding(.info, "not tested: unexpected event before the handshake")
        }
        // A vulnerable server answers the buffered NOOP as soon as TLS is up, unasked.
        let window = min(
            TimeAmount.milliseconds(700), TimeAmount.nanoseconds(TimeAmount(options.probeTimeout).nanoseconds / 4))
        if case .reply(let r) = await connection.event(within: window) {
            return finding(
                .failure,
                "accepts commands pipelined after STARTTLS (CVE-2011-0411): the NOOP sent before TLS "
                    + "was answered inside TLS",
                "unsolicited reply after the handshake: \(r.description)")
        }
        return finding(.ok, "does not answer commands pipelined after STARTTLS (CVE-2011-0411)")
    }

    static func printable(_ bytes: [UInt8]) -> String {
        String(
            bytes.prefix(80).map { b -> Character in
                (0x20..<0x7F).contains(b) ? Character(Unicode.Scalar(b)) : (b == 0x0D || b == 0x0A ? " " : ".")
            })
    }
}
