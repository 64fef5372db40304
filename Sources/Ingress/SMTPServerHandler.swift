import Accounts
import Foundation
import Logging
import MailMessage
import MailQueue
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SMTPCore
import Synchronization

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
        /// Waiting for an asynchronous answer (commit) or a tarpit delay; input stays buffered.
        case waiting
        /// Before the greeting (greet pause): a client that talks now is refused.
        case greetPause
        case tlsHandshake
        case closed
    }

    let ctx: IngressContext
    let policy: IngressPolicy
    let listener: SMTPListener
    var session: ServerSession
    /// The SASL exchange in progress (between AUTH and its final reply).
    var sasl: SASLExchange?
    /// The user this session authenticated as: mail may come from its tenant's addresses only, and
    /// may go to any domain.
    var authenticatedAccount: UserAccount?
    /// Admission grants this session holds, released when it closes: its connection, and the
    /// forest slots its recipients took.
    var admitted = false
    var recipients = RecipientAdmission()
    /// The client is in `trustedNetworks` and may relay.
    var clientTrusted = false
    var mode: Mode = .commands
    var input = ByteBuffer()
    var context: ChannelHandlerContext?
    var clientAddress = "unknown"
    var tlsInfo: HeaderStamps.TLSInfo?
    var sink: BodySink?
    /// The message whose body is streaming in (from its first body byte to its commit's answer).
    var assembly: MessageAssembly?
    var headerScanner = HeaderScanner()
    var chunkChecker: ChunkBodyChecker?
    var timeoutTask: Scheduled<Void>?
    var sessionDeadline: Scheduled<Void>?
    /// When the body being read must be complete (request deadlines only).
    var bodyDeadline: NIODeadline?
    var logger: Logger
    var pendingFlush = false
    var readPaused = false
    /// The line limit the last line read was held to (for the reply that refuses it).
    var limitOfLastLine = SMTPLimits.commandLineLength
    /// Reading stopped because too much arrived while the session waited (not because of the sink).
    var pausedWhileWaiting = false
    var chunkIsLast = false
    /// The client is not reading its replies (the channel is above its write high-water mark): no
    /// command is taken, and nothing read, until it does; the command deadline still runs.
    var outputBlocked = false
    /// Reply octets written since the last flush: flushed every `flushEvery`, so a long pipeline's
    /// replies reach the socket (and its writability) as they are made, also through TLS, which
    /// holds writes until a flush.
    var unflushedBytes = 0
    static let flushEvery = 16 * 1024
    /// Closes a TLS handshake (STARTTLS or implicit TLS) not finished in `timeouts.tlsHandshake`.
    var handshakeDeadline: Scheduled<Void>?

    init(context: IngressContext, listener: SMTPListener = .mx) {
        self.ctx = context
        self.listener = listener
        let policy = context.policy.current
        self.policy = policy
        var configuration = policy.session
        if listener != .mx { configuration.authentication = policy.submission.offer }
        configuration.implicitTLS = listener == .submissionImplicitTLS
        self.session = ServerSession(configuration: configuration)
        self.logger = context.logger
        if listener != .mx { logger[metadataKey: "listener"] = "submission" }
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.input = context.channel.allocator.buffer(capacity: 1024)
    }

    /// Breaks the handler <-> context cycle. NIO's `ChannelHandlerContext` holds its handler
    /// strongly and is never told to let go; a handler that keeps its context must drop it here, or
    /// the two (with the session, its input buffer and a partial body) outlive the connection.
    func handlerRemoved(context: ChannelHandlerContext) {
        timeoutTask?.cancel()
        timeoutTask = nil
        sessionDeadline?.cancel()
        sessionDeadline = nil
        handshakeDeadline?.cancel()
        handshakeDeadline = nil
        if !committing { sink?.discard() }
        sink = nil
        mode = .closed
        releaseGrants()
        input = ByteBuffer()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        clientAddress = context.remoteAddress?.ipAddress ?? "unknown"
        clientTrusted = policy.trustedNetworks.contains(clientAddress)
        logger[metadataKey: "client"] = "\(clientAddress)"
        ctx.metrics.sessions.increment()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        switch ctx.admission.admitConnection(source: clientAddress) {
        case .refuseAndClose(let r), .refuse(let r):
            // Refused before the greeting (RFC 5321 §3.1 allows 421 in place of 220).
            perform(.sendAndClose(r))
            context.fireChannelActive()
            return
        case .admit:
            admitted = true
        }
        sessionDeadline = context.eventLoop.scheduleTask(in: policy.timeouts.session) {
            bound.value.fireTimeout()
        }
        armTimeout()
        if listener == .submissionImplicitTLS { armHandshakeDeadline(context) }
        if policy.greetPause > .zero, listener == .mx {
            mode = .greetPause
            context.eventLoop.scheduleTask(in: policy.greetPause) { bound.value.greetPauseEnded() }
        } else {
            perform(session.greeting())
            flushIfNeeded()
        }
        context.fireChannelActive()
    }

    func greetPauseEnded() {
        guard case .greetPause = mode else { return }
        mode = .commands
        perform(session.greeting())
        flushIfNeeded()
    }

    /// Gives back every admission grant; runs once, on close, whatever closed the session.
    func releaseGrants() {
        if admitted {
            admitted = false
            ctx.admission.releaseConnection(source: clientAddress)
        }
        recipients.releaseAll(to: ctx.admission)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeoutTask?.cancel()
        sessionDeadline?.cancel()
        handshakeDeadline?.cancel()
        session.connectionClosed()
        if !committing {
            // A commit in flight completes on its own and its reply goes nowhere.
            sink?.discard()
        }
        sink = nil
        mode = .closed
        releaseGrants()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if case .closed = mode { return }
        if case .tlsHandshake = mode {
            // Anything here arrived in plaintext after STARTTLS: never interpret it (CVE-2011-0411).
            return
        }
        if case .greetPause = mode {
            // RFC 5321 §3.1: the client waits for the greeting. Spamware that does not is refused.
            let r = SMTPReply(554, .init(5, 5, 1), "Protocol error: data received before the greeting")
            ctx.admission.recordRefusal(kind: "pregreet", reply: r, source: clientAddress)
            mode = .commands
            perform(.sendAndClose(r))
            return
        }
        let received = bytes.readableBytes
        input.writeBuffer(&bytes)
        if !policy.timeouts.requestDeadline {
            armTimeout()
        } else {
            extendBodyDeadline(by: received)
        }
        process()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    /// The client has read enough of its replies for the channel to take more: take its commands
    /// again.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if outputBlocked, context.channel.isWritable {
            outputBlocked = false
            logger.debug("client reads its replies again")
            resumeReading()
            process()
            flushIfNeeded()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted = tlsEvent {
            handshakeDeadline?.cancel()
            handshakeDeadline = nil
            if let h = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self) {
                tlsInfo = HeaderStamps.TLSInfo(version: Self.name(of: h.tlsVersion))
            }
            logger.debug("TLS established", metadata: ["tls": "\(tlsInfo?.version ?? "?")"])
            // RFC 3207 §4.2 and RFC 4954 §4: nothing learnt before TLS survives it, a login included.
            authenticatedAccount = nil
            sasl = nil
            perform(session.tlsEstablished())
            mode = .commands
            armTimeout()
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
            case .closed, .waiting, .tlsHandshake, .greetPause:
                break loop
            case .discardingLine:
                guard let lf = input.readableBytesView.firstIndex(of: 0x0A) else {
                    input.clear()
                    break loop
                }
                input.moveReaderIndex(to: lf + 1)
                mode = .commands
            case .commands:
                // A client that pipelines commands and never reads the replies would otherwise have
                // them pile up here without bound: stop until it reads (or its deadline passes).
                if outputStalled() { break loop }
                guard let line = nextCommandLine() else { break loop }
                switch line {
                case .tooLong(let restOfLineFollows):
                    // Only skip ahead when the line's end has not arrived yet; a whole long line is
                    // already consumed, and what follows it is the next command.
                    if restOfLineFollows { mode = .discardingLine }
                    rejectLine(
                        SMTPReply(
                            500, .init(5, 5, 2), "Line too long, the limit is \(limitOfLastLine) octets"))
                case .bad(let reply):
                    rejectLine(reply)
                case .line(let text) where session.isAuthenticating:
                    // A SASL response, not a command: never parsed, never logged.
                    armTimeout()
                    perform(session.authenticationResponse(text))
                    if !session.isAuthenticating, case .commands = mode { sasl = nil }
                case .line(let text):
                    // A new request: its own deadline (a body's is set when the body starts).
                    armTimeout()
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
        // Give back what has been read, so the input buffer stays the size of one read, not one body.
        if input.readableBytes == 0 {
            input.clear()
        } else if input.readerIndex > 16 * 1024 {
            input.discardReadBytes()
        }
        applyBackpressure()
    }

    enum LineResult {
        case line(String)
        case tooLong(restOfLineFollows: Bool)
        case bad(SMTPReply)
    }

    /// The longest line the next one may be: 512 octets for a command (RFC 5321 §4.5.3.1.4), 12,288
    /// for `AUTH` and the SASL responses that follow it on a listener that offers AUTH (RFC 4954 §4).
    var lineLimit: Int {
        guard session.configuration.authentication != nil else { return SMTPLimits.commandLineLength }
        if session.isAuthenticating { return SMTPLimits.authLineLength }
        let view = input.readableBytesView
        let start = view.prefix(5).map { $0 | 0x20 }  // ASCII lower case
        return start == Array("auth ".utf8) ? SMTPLimits.authLineLength : SMTPLimits.commandLineLength
    }

    /// The next CRLF-terminated command line. A bare CR or LF inside a command line is refused
    /// rather than taken as a line end.
    func nextCommandLine() -> LineResult? {
        let view = input.readableBytesView
        guard let lfIndex = view.firstIndex(of: 0x0A) else {
            limitOfLastLine = lineLimit
            if view.count > limitOfLastLine {
                input.clear()
                return .tooLong(restOfLineFollows: true)
            }
            return nil
        }
        let lineLength = lfIndex - view.startIndex + 1
        limitOfLastLine = lineLimit
        let line = input.readSlice(length: lineLength)!
        if lineLength > limitOfLastLine { return .tooLong(restOfLineFollows: false) }
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

    /// Input buffered while the session waits (a commit, a password check, a tarpit or failure delay)
    /// beyond which reading stops until the wait is over: pipelining needs a few commands, not more.
    static let maxBufferedWhileWaiting = 64 * 1024

    /// Stops reading from the socket while the spool writer is behind, so a fast sender cannot fill
    /// memory with a large body (the sink calls back when it has drained), and while the session
    /// waits with more than `maxBufferedWhileWaiting` octets already buffered.
    func applyBackpressure() {
        guard let context else { return }
        if case .waiting = mode {
            if !readPaused, input.readableBytes > Self.maxBufferedWhileWaiting {
                readPaused = true
                pausedWhileWaiting = true
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            }
            return
        }
        if pausedWhileWaiting {
            pausedWhileWaiting = false
            resumeReading()
        }
        guard !readPaused, let sink, sink.isBehind else { return }
        readPaused = true
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        sink.whenDrained { bound.value.resumeReading() }
    }

    func resumeReading() {
        guard readPaused, !outputBlocked, let context else { return }
        readPaused = false
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
    }

    /// True when the replies already written are more than the channel takes (its write high-water
    /// mark, 64 KiB): the client is not reading them. Reading stops until `channelWritabilityChanged`
    /// says it does; the command deadline armed by the last command closes it if it never does.
    func outputStalled() -> Bool {
        guard let context, !context.channel.isWritable else { return false }
        if !outputBlocked {
            // What is written but not flushed may yet go (a flush can make the channel writable at
            // once): flush before deciding, while a writability change here still means nothing.
            flushIfNeeded()
            guard !context.channel.isWritable else { return false }
            outputBlocked = true
            ctx.metrics.outputStalls.increment()
            logger.info("client does not read its replies, reading stops until it does")
            if !readPaused {
                readPaused = true
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            }
        }
        return true
    }

    // MARK: actions

    func perform(_ action: ServerSession.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .send(let reply, let refusal):
            noteRefusal(refusal, reply)
            if reply.code >= 400, policy.tarpit > .zero, case .commands = mode {
                // Tarpit: hold the error reply (and the rest of the pipeline) for a while.
                mode = .waiting
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(in: policy.tarpit) { bound.value.tarpitEnded(reply) }
            } else {
                write(reply, context)
            }
        case .sendAndClose(let reply, let refusal):
            noteRefusal(refusal, reply)
            mode = .closed
            sink?.discard()
            sink = nil
            var buf = context.channel.allocator.buffer(capacity: 64)
            reply.write(into: &buf)
            ctx.metrics.reply(code: reply.code)
            logger.info("closing", metadata: ["reply": "\(reply)"])
            pendingFlush = false
            unflushedBytes = 0
            let channel = context.channel
            if channel.isWritable {
                context.writeAndFlush(wrapOutboundOut(buf)).whenComplete { _ in
                    channel.close(promise: nil)
                }
                // A last reply the client does not take in `closeGrace` is not waited for.
                let forced = context.eventLoop.scheduleTask(in: Self.closeGrace) { channel.close(promise: nil) }
                channel.closeFuture.whenComplete { _ in forced.cancel() }
            } else {
                // The client has not read what it was sent: this reply would wait behind that for
                // ever. Close now (the pending writes are dropped).
                context.writeAndFlush(wrapOutboundOut(buf), promise: nil)
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
            armHandshakeDeadline(context)
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
            } catch {
                logger.error("could not start TLS: \(error)")
                mode = .closed
                context.close(promise: nil)
            }
        case .checkSender(let sender, let params):
            if let refusal = senderRefusal(sender) {
                perform(session.senderChecked(sender, params, .reject(refusal)))
                return
            }
            let decision: ServerSession.SenderDecision
            // No room in the queue's filesystem: 452 4.3.1 before the client sends a body (StorageGuard).
            if let full = ctx.committer.storageRefusal(declaredSize: params.size) {
                decision = .reject(full)
            } else {
                switch ctx.admission.admitMessage(source: clientAddress) {
                case .admit: decision = .accept
                case .refuse(let r): decision = .reject(r)
                case .refuseAndClose(let r): decision = .rejectAndClose(r)
                }
            }
            // A refused MAIL does not spend the user's message budget.
            if decision != .accept, let account = authenticatedAccount {
                ctx.submissionQuota.refundMessage(user: account.username)
            }
            perform(session.senderChecked(sender, params, decision))
        case .checkRecipient(let path, let params):
            checkRecipient(path, params)
        case .receiveData(let reply):
            write(reply, context)
            startBody(context)
            mode = .data(DataBodyDecoder(maxSize: transactionSizeLimit))
            armTimeout()
        case .receiveChunk(let size, let last, let store):
            chunkIsLast = last
            if store && sink == nil { startBody(context) }
            mode = .chunk(
                remaining: size,
                checker: store ? (chunkChecker ?? ChunkBodyChecker(maxSize: transactionSizeLimit)) : nil)
            if !store { chunkChecker = nil }
            armTimeout()
        case .commit(let tx):
            commit(tx, context)
        case .authenticate(let mechanism, let initialResponse):
            startAuthentication(mechanism, initialResponse)
        case .continueAuthentication(let line):
            continueAuthentication(line)
        }
        // A refused body or a reset transaction leaves no sink behind.
        if session.transaction == nil, !isCommitting {
            if sink != nil {
                sink?.discard()
                sink = nil
                chunkChecker = nil
            }
            recipients.transactionEnded()
        }
    }

    func tarpitEnded(_ reply: SMTPReply) {
        guard let context, case .waiting = mode else { return }
        write(reply, context)
        mode = .commands
        armTimeout()
        process()
        flushIfNeeded()
    }

    /// Session-level refusals that admission control did not make itself become throttle events too.
    func noteRefusal(_ kind: ServerSession.RefusalKind?, _ reply: SMTPReply) {
        guard let kind else { return }
        ctx.admission.recordRefusal(kind: kind.throttleKind, reply: reply, source: clientAddress)
    }

    /// The message size limit of the current transaction: the smallest of its tenants' limits.
    var transactionSizeLimit: Int {
        policy.directory.sizeLimit(
            for: session.transaction?.recipients ?? [], serverLimit: policy.session.maxMessageSize)
    }

    func checkRecipient(_ path: ForwardPath, _ params: RecipientParameters) {
        if let refusal = recipientRefusal() {
            perform(session.recipientChecked(path, params, .reject(refusal)))
            return
        }
        let request = RecipientAdmission.Request(
            path: path, sender: session.transaction?.sender.address ?? "",
            declaredSize: session.transaction?.parameters.size,
            relayAllowed: clientTrusted || authenticatedAccount != nil, source: clientAddress)
        let verdict = recipients.decide(request, directory: policy.directory, admission: ctx.admission)
        recipients.apply(verdict)
        // Only accepted recipients spend the user's day budget.
        if let account = authenticatedAccount, !verdict.decision.isAccept {
            ctx.submissionQuota.refundRecipient(user: account.username)
        }
        perform(session.recipientChecked(path, params, verdict.decision))
    }

    /// A message is on its way to the queue: its sink belongs to the commit now.
    var committing = false
    var commitStarted = NIODeadline.uptimeNanoseconds(0)
    var isCommitting: Bool { committing }

    func write(_ reply: SMTPReply, _ context: ChannelHandlerContext) {
        var buf = context.channel.allocator.buffer(capacity: 64)
        reply.write(into: &buf)
        unflushedBytes += buf.readableBytes
        context.write(wrapOutboundOut(buf), promise: nil)
        ctx.metrics.reply(code: reply.code)
        pendingFlush = true
        if reply.code >= 400 {
            logger.info("reply", metadata: ["reply": "\(reply)"])
        }
        if unflushedBytes >= Self.flushEvery { flushIfNeeded() }
    }

    func flushIfNeeded() {
        guard pendingFlush, let context else { return }
        pendingFlush = false
        unflushedBytes = 0
        context.flush()
    }

    /// How long the last reply before a close (`421`, `221`, a refusal at connect) may take to reach
    /// a client that has stopped reading, before the connection is closed without it.
    static let closeGrace = TimeAmount.seconds(10)

    func startBody(_ context: ChannelHandlerContext) {
        guard let tx = session.transaction else { return }
        let now = ctx.now()
        let id = ctx.queueID(now)
        logger[metadataKey: "queue_id"] = "\(id)"
        headerScanner = HeaderScanner()
        chunkChecker = nil
        var assembly = MessageAssembly(
            queueID: id, transaction: tx, hostname: policy.session.hostname, clientAddress: clientAddress,
            helo: session.helloName, protocolName: session.receivedProtocol, tls: tlsInfo, startedAt: now)
        if let account = authenticatedAccount {
            assembly.hideClient =
                policy.directory.tenants.first { $0.name == account.tenant }?.hideClientInReceived ?? false
        }
        let sink = BodySink(
            spool: ctx.spool, queueID: id, threadPool: ctx.threadPool, eventLoop: context.eventLoop,
            allocator: context.channel.allocator)
        let stamp = assembly.stamp
        var buf = context.channel.allocator.buffer(capacity: stamp.utf8.count)
        buf.writeString(stamp)
        sink.append(buf)
        self.sink = sink
        self.assembly = assembly
    }

    // MARK: timeouts

    /// Starts the timer of a new request: a command, or a body (DATA or one BDAT chunk).
    func armTimeout() {
        guard let context else { return }
        let now = context.eventLoop.now
        switch mode {
        case .data, .chunk:
            bodyDeadline = now + policy.timeouts.data
            schedule(at: now + policy.timeouts.data)
        default:
            bodyDeadline = nil
            schedule(at: now + policy.timeouts.command)
        }
    }

    /// A body's deadline moves out by one second per `minDataRate` octets received, never further
    /// than a fresh `data` timeout (Postfix's `smtpd_min_data_rate`). Command lines earn nothing.
    func extendBodyDeadline(by octets: Int) {
        guard let context, let deadline = bodyDeadline, octets > 0 else { return }
        let rate = Int64(max(1, policy.timeouts.minDataRate))
        let earned = TimeAmount.nanoseconds(Int64(octets) * 1_000_000_000 / rate)
        let cap = context.eventLoop.now + policy.timeouts.data
        let next = min(deadline + earned, cap)
        guard next > deadline else { return }
        bodyDeadline = next
        schedule(at: next)
    }

    func schedule(at deadline: NIODeadline) {
        guard let context else { return }
        timeoutTask?.cancel()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timeoutTask = context.eventLoop.scheduleTask(deadline: deadline) { bound.value.fireTimeout() }
    }

    func armHandshakeDeadline(_ context: ChannelHandlerContext) {
        handshakeDeadline?.cancel()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        handshakeDeadline = context.eventLoop.scheduleTask(in: policy.timeouts.tlsHandshake) {
            bound.value.handshakeTimedOut()
        }
    }

    /// A TLS handshake that did not finish in time (a stalled or partial ClientHello, or silence on
    /// an implicit-TLS port): no reply can reach the client, so the connection is just closed.
    func handshakeTimedOut() {
        handshakeDeadline = nil
        guard let context else { return }
        if case .closed = mode { return }
        logger.info("TLS handshake timed out")
        ctx.metrics.tlsHandshakeTimeouts.increment()
        mode = .closed
        session.connectionClosed()
        context.close(promise: nil)
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

extension ServerSession.RefusalKind {
    /// The kind a throttle event is counted under (`mailflow limits`, docs/admission.md).
    var throttleKind: String {
        switch self {
        case .messageSize: return "message_size"
        case .recipientsPerTransaction, .recipientsPerDomain: return "recipients_per_transaction"
        case .tooManyErrors: return "errors"
        }
    }
}

extension Spool {
    static func unlinkQuietly(_ path: String) {
        _ = unlink(path)
    }
}

extension ServerSession.RecipientDecision {
    var isAccept: Bool {
        if case .accept = self { return true }
        return false
    }
}
