import Foundation
import Logging
import MailMessage
import MailQueue
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SMTPCore

/// Timeouts of an inbound session (RFC 5321 §4.5.3.2).
public struct SessionTimeouts: Sendable, Equatable {
    /// Waiting for the next command (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    public var command: TimeAmount
    /// Silence allowed while a body streams in.
    public var data: TimeAmount
    /// A hard cap on one session's whole life, whatever it does.
    public var session: TimeAmount

    public init(
        command: TimeAmount = .seconds(300), data: TimeAmount = .seconds(180), session: TimeAmount = .seconds(3600)
    ) {
        self.command = command
        self.data = data
        self.session = session
    }
}

/// Everything a session handler shares with its server.
public struct IngressContext: Sendable {
    public var session: ServerSessionConfiguration
    public var timeouts: SessionTimeouts
    public var directory: TenantDirectory
    public var committer: GroupCommitter
    public var spool: Spool
    public var threadPool: NIOThreadPool
    public var tls: NIOSSLContext?
    public var logger: Logger

    public init(
        session: ServerSessionConfiguration, timeouts: SessionTimeouts, directory: TenantDirectory,
        committer: GroupCommitter, spool: Spool, threadPool: NIOThreadPool, tls: NIOSSLContext?, logger: Logger
    ) {
        self.session = session
        self.timeouts = timeouts
        self.directory = directory
        self.committer = committer
        self.spool = spool
        self.threadPool = threadPool
        self.tls = tls
        self.logger = logger
    }
}

/// Sent down a session's pipeline when the server begins to stop.
public struct ShutdownRequestedEvent: Sendable {}

/// The I/O shell around `ServerSession`: frames the byte stream (command lines, dot-terminated DATA,
/// counted BDAT chunks), asks the state machine, and carries out its actions.
///
/// The framing lives here, not in a separate decoder, because STARTTLS and BDAT switch framing and
/// must see (or discard) the bytes already buffered.
final class SMTPServerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Mode {
        case commands
        /// A command line longer than the limit: skip to its CRLF.
        case discardingLine
        case data(DataBodyDecoder)
        case chunk(remaining: Int, checker: ChunkBodyChecker?)
        /// Waiting for an asynchronous answer (commit); input stays buffered.
        case waiting
        case tlsHandshake
        case closed
    }

    let ctx: IngressContext
    var session: ServerSession
    var mode: Mode = .commands
    var input = ByteBuffer()
    var context: ChannelHandlerContext?
    var clientAddress = "unknown"
    var tlsInfo: HeaderStamps.TLSInfo?
    var sink: BodySink?
    var queueID: String?
    var stamp = ""
    var headerScanner = HeaderScanner()
    var chunkChecker: ChunkBodyChecker?
    var timeoutTask: Scheduled<Void>?
    var sessionDeadline: Scheduled<Void>?
    var logger: Logger
    var pendingFlush = false
    var readPaused = false
    var chunkIsLast = false

    init(context: IngressContext) {
        self.ctx = context
        self.session = ServerSession(configuration: context.session)
        self.logger = context.logger
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.input = context.channel.allocator.buffer(capacity: 1024)
    }

    func channelActive(context: ChannelHandlerContext) {
        clientAddress = context.remoteAddress?.ipAddress ?? "unknown"
        logger[metadataKey: "client"] = "\(clientAddress)"
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sessionDeadline = context.eventLoop.scheduleTask(in: ctx.timeouts.session) {
            bound.value.fireTimeout()
        }
        armTimeout()
        perform(session.greeting())
        flushIfNeeded()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeoutTask?.cancel()
        sessionDeadline?.cancel()
        session.connectionClosed()
        if case .waiting = mode {
            // A commit is in flight; it completes on its own and its reply goes nowhere.
        } else {
            sink?.discard()
        }
        sink = nil
        mode = .closed
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if case .closed = mode { return }
        if case .tlsHandshake = mode {
            // Anything here arrived in plaintext after STARTTLS: never interpret it (CVE-2011-0411).
            return
        }
        input.writeBuffer(&bytes)
        armTimeout()
        process()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted = tlsEvent {
            if let h = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self) {
                tlsInfo = HeaderStamps.TLSInfo(version: Self.name(of: h.tlsVersion), cipher: "")
            }
            logger.debug("TLS established", metadata: ["tls": "\(tlsInfo?.version ?? "?")"])
            perform(session.tlsEstablished())
            mode = .commands
            process()
            flushIfNeeded()
            return
        }
        if event is ShutdownRequestedEvent {
            perform(session.shutdownRequested())
            flushIfNeeded()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("session error: \(error)")
        mode = .closed
        context.close(promise: nil)
    }

    static func name(of v: TLSVersion?) -> String {
        switch v {
        case .tlsv13: return "TLSv1.3"
        case .tlsv12: return "TLSv1.2"
        case .tlsv11: return "TLSv1.1"
        case .tlsv1: return "TLSv1"
        case nil: return "TLS"
        }
    }

    // MARK: framing

    func process() {
        loop: while true {
            switch mode {
            case .closed, .waiting, .tlsHandshake:
                break loop
            case .discardingLine:
                guard let lf = input.readableBytesView.firstIndex(of: 0x0A) else {
                    input.clear()
                    break loop
                }
                input.moveReaderIndex(to: lf + 1)
                mode = .commands
            case .commands:
                guard let line = nextCommandLine() else { break loop }
                switch line {
                case .tooLong:
                    mode = .discardingLine
                    perform(
                        session.commandRejected(
                            SMTPCommandError(
                                SMTPReply(
                                    500, .init(5, 5, 2),
                                    "Line too long, the limit is \(SMTPLimits.commandLineLength) octets"))))
                case .bad(let reply):
                    perform(session.commandRejected(SMTPCommandError(reply)))
                case .line(let text):
                    do {
                        let command = try SMTPCommandParser.parse(text[...])
                        perform(session.commandReceived(command))
                    } catch {
                        perform(session.commandRejected(error))
                    }
                }
            case .data(var decoder):
                var out = ByteBuffer()
                let progress = decoder.decode(&input, into: &out)
                mode = .data(decoder)
                if out.readableBytes > 0 { feedBody(out) }
                if progress == .finished {
                    mode = .commands
                    armTimeout()
                    perform(session.dataReceived(violation: decoder.violation))
                } else {
                    break loop
                }
            case .chunk(let remaining, var checker):
                let n = min(remaining, input.readableBytes)
                if n > 0 {
                    let slice = input.readSlice(length: n)!
                    if checker != nil {
                        _ = checker!.check(slice.readableBytesView)
                        if checker!.violations.isEmpty { feedBody(slice) }
                    }
                }
                if remaining - n > 0 {
                    mode = .chunk(remaining: remaining - n, checker: checker)
                    break loop
                }
                mode = .commands
                armTimeout()
                if checker != nil {
                    if chunkIsLast { checker!.finish() }
                    chunkChecker = checker
                }
                perform(session.chunkReceived(violation: checker?.violation))
            }
        }
        applyBackpressure()
    }

    enum LineResult {
        case line(String)
        case tooLong
        case bad(SMTPReply)
    }

    /// The next CRLF-terminated command line. A bare CR or LF inside a command line is refused
    /// rather than taken as a line end.
    func nextCommandLine() -> LineResult? {
        let view = input.readableBytesView
        guard let lfIndex = view.firstIndex(of: 0x0A) else {
            if view.count > SMTPLimits.commandLineLength {
                input.clear()
                return .tooLong
            }
            return nil
        }
        let lineLength = lfIndex - view.startIndex + 1
        let line = input.readSlice(length: lineLength)!
        if lineLength > SMTPLimits.commandLineLength { return .tooLong }
        let lv = line.readableBytesView
        guard lv.count >= 2, lv[lv.endIndex - 2] == 0x0D else {
            return .bad(SMTPReply(500, .init(5, 5, 2), "Bare LF in command, lines must end with CRLF"))
        }
        let body = lv[lv.startIndex..<(lv.endIndex - 2)]
        if body.contains(0x0D) {
            return .bad(SMTPReply(500, .init(5, 5, 2), "Bare CR in command, lines must end with CRLF"))
        }
        if body.contains(where: { $0 == 0 }) {
            return .bad(SMTPReply(500, .init(5, 5, 2), "NUL in command"))
        }
        guard let text = String(validating: body, as: UTF8.self) else {
            return .bad(SMTPReply(500, .init(5, 5, 2), "Command is not valid UTF-8"))
        }
        return .line(text)
    }

    func feedBody(_ bytes: ByteBuffer) {
        headerScanner.feed(bytes.readableBytesView)
        sink?.append(bytes)
    }

    /// Stops reading from the socket while the spool writer is behind, so a fast sender cannot fill
    /// memory with a large body.
    func applyBackpressure() {
        guard let context else { return }
        let behind = (sink?.outstanding ?? 0) > 4 * 1024 * 1024
        if behind && !readPaused {
            readPaused = true
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(5)) { bound.value.applyBackpressure() }
        } else if behind {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .milliseconds(5)) { bound.value.applyBackpressure() }
        } else if readPaused {
            readPaused = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        }
    }

    // MARK: actions

    func perform(_ action: ServerSession.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .send(let reply):
            write(reply, context)
        case .sendAndClose(let reply):
            mode = .closed
            sink?.discard()
            sink = nil
            var buf = context.channel.allocator.buffer(capacity: 64)
            reply.write(into: &buf)
            logger.info("closing", metadata: ["reply": "\(reply)"])
            pendingFlush = false
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(buf)).whenComplete { _ in
                channel.close(promise: nil)
            }
        case .startTLS(let reply):
            guard let tls = ctx.tls else {
                perform(session.commandRejected(SMTPCommandError(SMTPReply(454, .init(4, 7, 0), "TLS not available"))))
                return
            }
            write(reply, context)
            context.flush()
            pendingFlush = false
            // Whatever the client sent after STARTTLS in plaintext is dropped, never interpreted.
            input.clear()
            mode = .tlsHandshake
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
            } catch {
                logger.error("could not start TLS: \(error)")
                mode = .closed
                context.close(promise: nil)
            }
        case .checkRecipient(let path, let params):
            perform(session.recipientChecked(path, params, ctx.directory.decide(path)))
        case .receiveData(let reply):
            write(reply, context)
            startBody(context)
            mode = .data(DataBodyDecoder(maxSize: ctx.session.maxMessageSize))
        case .receiveChunk(let size, let last, let store):
            chunkIsLast = last
            if store && sink == nil { startBody(context) }
            mode = .chunk(
                remaining: size,
                checker: store ? (chunkChecker ?? ChunkBodyChecker(maxSize: ctx.session.maxMessageSize)) : nil)
            if !store { chunkChecker = nil }
        case .commit(let tx):
            commit(tx, context)
        }
        // A refused body or a reset transaction leaves no sink behind.
        if session.transaction == nil, sink != nil, !isCommitting {
            sink?.discard()
            sink = nil
            chunkChecker = nil
        }
    }

    var isCommitting: Bool {
        if case .waiting = mode { return true }
        return false
    }

    func write(_ reply: SMTPReply, _ context: ChannelHandlerContext) {
        var buf = context.channel.allocator.buffer(capacity: 64)
        reply.write(into: &buf)
        context.write(wrapOutboundOut(buf), promise: nil)
        pendingFlush = true
        if reply.code >= 400 {
            logger.info("reply", metadata: ["reply": "\(reply)"])
        }
    }

    func flushIfNeeded() {
        guard pendingFlush, let context else { return }
        pendingFlush = false
        context.flush()
    }

    func startBody(_ context: ChannelHandlerContext) {
        var rng = SystemRandomNumberGenerator()
        let now = Date()
        let id = QueueID.generate(now: now, using: &rng)
        queueID = id
        headerScanner = HeaderScanner()
        chunkChecker = nil
        let sink = BodySink(
            spool: ctx.spool, queueID: id, threadPool: ctx.threadPool, eventLoop: context.eventLoop,
            allocator: context.channel.allocator)
        let single: String? = session.transaction.flatMap { tx in
            tx.recipients.count == 1 ? tx.recipients[0].path.description.trimmingCharacters(in: ["<", ">"]) : nil
        }
        stamp = HeaderStamps.received(
            helo: session.helloName ?? "unknown", clientAddress: clientAddress, by: ctx.session.hostname,
            protocolName: session.receivedProtocol, tls: tlsInfo, queueID: id, singleRecipient: single, date: now)
        var buf = context.channel.allocator.buffer(capacity: stamp.utf8.count)
        buf.writeString(stamp)
        sink.append(buf)
        self.sink = sink
    }

    func commit(_ tx: MailTransaction, _ context: ChannelHandlerContext) {
        guard let sink, let id = queueID else {
            perform(session.commitFailed())
            return
        }
        mode = .waiting
        flushIfNeeded()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let committer = ctx.committer
        let hostname = ctx.session.hostname
        let messageID = headerScanner.messageID
        let message = NewMessage(
            id: id, receivedAt: Date(), sender: tx.sender.address,
            recipients: tx.recipients.map { r in
                EnvelopeRecipient(
                    address: Self.address(r.path), route: r.route, notify: r.parameters.notify?.description,
                    originalRecipient: r.parameters.originalRecipient.map { "\($0.addressType);\($0.address)" })
            },
            size: sink.size, bodyType: tx.parameters.body?.rawValue, smtpUTF8: tx.parameters.smtpUTF8,
            ret: tx.parameters.ret?.rawValue, envelopeID: tx.parameters.envelopeID, clientAddress: clientAddress,
            helo: session.helloName ?? "", protocolName: session.receivedProtocol,
            tls: tlsInfo?.version,
            tenant: tx.recipients.first.flatMap { r in
                localRouteDomain(r.route).flatMap { ctx.directory.tenant(forDomain: $0)?.name }
            },
            messageID: messageID ?? HeaderStamps.messageID(queueID: id, host: hostname),
            addMessageID: messageID == nil, subject: headerScanner.subject.map { String($0.prefix(998)) },
            stampLength: stamp.utf8.count, body: .inline(Data()))
        self.sink = nil
        let logger = self.logger
        let boundSink = NIOLoopBound(sink, eventLoop: context.eventLoop)
        sink.finish().whenComplete { result in
            switch result {
            case .failure(let error):
                logger.error("spool write failed: \(error)", metadata: ["queue_id": "\(id)"])
                boundSink.value.discard()
                bound.value.commitFinished(id: id, error: error)
            case .success(let body):
                var message = message
                message.body = body
                committer.commit(message) { error in
                    bound.eventLoop.execute {
                        if error != nil, case .spooled(let path) = body { Spool.unlinkQuietly(path) }
                        bound.value.commitFinished(id: id, error: error)
                    }
                }
            }
        }
    }

    func commitFinished(id: String, error: Error?) {
        if let error {
            logger.error("commit failed: \(error)", metadata: ["queue_id": "\(id)"])
            perform(session.commitFailed())
        } else {
            logger.info("queued", metadata: ["queue_id": "\(id)"])
            perform(session.messageCommitted(queueID: id))
        }
        if case .waiting = mode { mode = .commands }
        queueID = nil
        // Stopping: the transaction that was allowed to finish has finished.
        if session.shuttingDown { perform(session.shutdownRequested()) }
        armTimeout()
        process()
        flushIfNeeded()
    }

    static func address(_ path: ForwardPath) -> String {
        switch path {
        case .postmaster: return "postmaster"
        case .mailbox(let m): return m.description
        }
    }

    // MARK: timeouts

    func armTimeout() {
        guard let context else { return }
        timeoutTask?.cancel()
        let amount: TimeAmount
        switch mode {
        case .data, .chunk: amount = ctx.timeouts.data
        default: amount = ctx.timeouts.command
        }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timeoutTask = context.eventLoop.scheduleTask(in: amount) { bound.value.fireTimeout() }
    }

    func fireTimeout() {
        if case .closed = mode { return }
        if case .waiting = mode {
            // Our own commit is slow, not the client: wait on.
            armTimeout()
            return
        }
        logger.info("session timed out")
        perform(session.timeoutFired())
        flushIfNeeded()
    }
}

/// The domain part of a `local:<domain>/<mailbox>` route.
func localRouteDomain(_ route: String) -> String? {
    guard route.hasPrefix("local:") else { return nil }
    return route.dropFirst(6).split(separator: "/").first.map(String.init)
}

extension Spool {
    static func unlinkQuietly(_ path: String) {
        _ = unlink(path)
    }
}
