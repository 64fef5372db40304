import Foundation
import Logging
import MailMessage
import MailQueue
import Metrics
import NIOCore
import NIOPosix
import SMTPCore
import Synchronization

/// Finds due messages through the queue's `next_attempt` index, delivers them (at most
/// `concurrency` at a time) and carries out the `DeliveryPlanner`'s decisions. For delivery it is the
/// only writer of `next_attempt`; queue control (CLI, admin API) only makes messages due and wakes it.
///
/// One owner of scheduling state, woken by triggers, like Postfix's qmgr: `run()` is one loop in a
/// task group (the deliveries in flight are its child tasks) that sleeps on the injected `Clock`
/// until the earliest deferred message falls due, unless a wake-up comes first: a commit batch
/// (`wakeUp()` from the group committer), a delivery finishing, the admin API (`wakeUp()`), or
/// another process poking the `DeliveryTrigger` FIFO in the data directory (`mailflow queue release`,
/// `retry`, `bounce`). With nothing due it sleeps, so a large deferred queue costs nothing. A safety
/// poll (`safetyPoll`, 60 s) is only a fallback should a wake-up be lost (the trigger could not be
/// created, say); nothing relies on it.
///
/// Blocking work runs on dedicated `NIOThreadPool`s through their async `runIfActive`: never on the
/// cooperative pool or an event loop, a few threads however many deliveries wait on remote servers,
/// and `shutdown()` can wait for what is running. SQLite reads go to `workers`; Maildir writes and
/// their fsyncs to `mailboxWriters`, two threads, because every fsync shares the disk with the WAL
/// sync that acknowledges incoming mail (see `mailboxWriters`).
/// NIO's pool rather than an `OperationQueue` because the rest of the I/O is NIO already and it
/// needs no hand-written continuation bridge.
///
/// ```swift
/// let scheduler = DeliveryScheduler(store: store, spool: spool, maildir: maildir, logger: logger)
/// scheduler.start()            // or `await scheduler.run()` in a task of your own
/// scheduler.wakeUp()           // new work may be due
/// await scheduler.shutdown()   // waits for deliveries in flight
/// ```
public final class DeliveryScheduler: Sendable {
    struct State: Sendable {
        var inFlight: Set<String> = []
        var stopping = false
        var delivered = 0
        var deferred = 0
        var failed = 0
        /// The loop started by `start()`.
        var loop: Task<Void, Never>?
        /// A mailbox write found the mailbox filesystem full: its free bytes then (`MailboxSpace`).
        var mailboxFullAt: Int64?
        /// Messages claimed from the shared queue and not yet delivered (`leased` only).
        var claimed: [String: StoredMessage] = [:]
        /// Attempts whose record the shared queue refused, the lease lost (possible duplicates).
        var leasesLost = 0
    }

    /// Where the scheduler listens for wake-ups from other processes.
    public enum TriggerLocation: Sendable, Equatable {
        /// `DeliveryTrigger.path(dataDirectory:)` of the folder that holds the queue database.
        case besideQueue
        case path(String)
        /// None (tests that drive the scheduler themselves).
        case disabled
    }

    /// The fallback wait when nothing is due sooner: wake-ups are what the scheduler relies on.
    public static let safetyPoll: Duration = .seconds(60)

    let store: SQLiteQueueStore
    /// The shared queue (cluster mode, `storage.postgres`): work is claimed from it under leases and
    /// recorded there; `store` then keeps only what stays per node. Nil: `store` is the queue.
    let leased: (any LeasedQueue)?
    /// Attempts recorded too late, their lease lost: the message may be delivered twice.
    let leaseLostCounter: Counter
    /// Writes attempt outcomes in batches (group commit for delivery).
    public let recorder: AttemptRecorder
    let spool: Spool
    let maildir: MaildirDelivery
    /// Retry, expiry, poison-message and DSN policy, as a pure function of each attempt.
    let planner: DeliveryPlanner
    /// Jitter and DSN queue IDs; injected so tests are deterministic.
    let random: Mutex<any RandomNumberGenerator & Sendable>
    let concurrency: Int
    /// Wall-clock time, as the queue stores it.
    let now: @Sendable () -> Date
    /// What the loop sleeps on until the next due time; tests inject a manual clock.
    let clock: any Clock<Duration>
    let logger: Logger
    let state = Mutex(State())
    let wakeUps: AsyncStream<Void>
    let wakeUpSource: AsyncStream<Void>.Continuation
    /// Blocking reads (the message and its body); see the type's comment.
    let workers: NIOThreadPool
    /// Maildir writes and their fsyncs, two at a time. Measured with `scripts/bench` (a10r, a50r): with
    /// up to eight of them at once beside the ingress group commit, each WAL sync waited behind them
    /// and durable acceptance fell by a fifth to a quarter; the pre-NIO `OperationQueue` had run about
    /// two. Kept apart from `workers` so that reading the next message never queues behind a sync
    /// (which had spread delivery outcomes over 6-9x more transactions).
    let mailboxWriters: NIOThreadPool
    static let mailboxWriterThreads = 2
    /// Mailbox writes wait here for the acceptance group commit's syncs to go first (bounded; see
    /// `SyncPriority`): two writers alone still cost acceptance 20-45% on a quiet machine.
    let syncPriority: SyncPriority?
    /// The loop's own reads (what is due, when next): a thread of their own, so finding work never
    /// waits behind the Maildir writes and fsyncs that fill `workers` (measured: with the queries
    /// queued there, fewer deliveries ran at once, their outcomes went in 2.5x more transactions,
    /// and the extra syncs slowed acceptance by a quarter).
    let planningPool: NIOThreadPool
    let startedAt: Date
    let outbound: OutboundDelivery?
    /// Local routes go here instead of Maildir when set (`delivery.lmtp`).
    let lmtp: LMTPDelivery?

    /// The mailbox server, when local routes go over LMTP, as a destination (`queue destinations`).
    public func localDestinations() async -> [DestinationStatus] {
        guard let lmtp else { return [] }
        return [await lmtp.status()]
    }
    let connectorFor: @Sendable (String) -> OutboundConnector?
    let signingFor: @Sendable (String) -> OutboundSigning?
    let dsnRoute: (@Sendable (String) -> Route?)?
    let triggerPath: String?
    let eventLoopGroup: any EventLoopGroup
    let metricsFactory: any MetricsFactory
    let attemptCounters = Mutex<[String: Counter]>([:])
    /// Free space of the mailbox root, read while mailbox deliveries wait for space; tests inject it.
    let mailboxFreeSpace: StorageGuard.FreeSpace

    public init(
        store: SQLiteQueueStore, spool: Spool, maildir: MaildirDelivery, retry: RetrySchedule = .exchangeLike,
        concurrency: Int = 4, logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
        outbound: OutboundDelivery? = nil,
        connectorFor: @escaping @Sendable (String) -> OutboundConnector? = { _ in nil },
        signingFor: @escaping @Sendable (String) -> OutboundSigning? = { _ in nil },
        dsnRoute: (@Sendable (String) -> Route?)? = nil, maxAbruptCloses: Int = DeliveryPolicy.defaultMaxAbruptCloses,
        delayNotice: TimeInterval? = DeliveryPolicy.defaultDelayNotice,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        random: any RandomNumberGenerator & Sendable = SystemRandomNumberGenerator(),
        clock: any Clock<Duration> = ContinuousClock(), trigger: TriggerLocation = .besideQueue,
        eventLoopGroup: (any EventLoopGroup)? = nil, syncPriority: SyncPriority? = nil, lmtp: LMTPDelivery? = nil,
        mailboxFreeSpace: @escaping StorageGuard.FreeSpace = { StorageGuard.statvfsFreeSpace($0) },
        leased: (any LeasedQueue)? = nil
    ) {
        self.leased = leased
        self.leaseLostCounter = Counter(label: "mailflow_delivery_lease_lost_total", factory: metricsFactory)
        self.lmtp = lmtp
        self.mailboxFreeSpace = mailboxFreeSpace
        self.syncPriority = syncPriority
        self.metricsFactory = metricsFactory
        self.outbound = outbound
        self.connectorFor = connectorFor
        self.signingFor = signingFor
        self.dsnRoute = dsnRoute
        self.store = store
        self.recorder = AttemptRecorder(store: store)
        self.spool = spool
        self.maildir = maildir
        self.planner = DeliveryPlanner(
            policy: DeliveryPolicy(retry: retry, maxAbruptCloses: maxAbruptCloses, delayNotice: delayNotice))
        self.random = Mutex(random)
        self.concurrency = max(1, concurrency)
        self.logger = logger
        self.now = now
        self.clock = clock
        self.startedAt = now()
        // Newest only: a burst of wake-ups (one commit batch, many completions) is one pass of the loop.
        (wakeUps, wakeUpSource) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        workers = NIOThreadPool(numberOfThreads: min(8, max(2, concurrency)))
        workers.start()
        mailboxWriters = NIOThreadPool(numberOfThreads: Self.mailboxWriterThreads)
        mailboxWriters.start()
        planningPool = NIOThreadPool(numberOfThreads: 1)
        planningPool.start()
        switch trigger {
        case .besideQueue:
            triggerPath = DeliveryTrigger.path(
                dataDirectory: URL(fileURLWithPath: store.path).deletingLastPathComponent().path)
        case .path(let p): triggerPath = p
        case .disabled: triggerPath = nil
        }
        self.eventLoopGroup = eventLoopGroup ?? outbound?.group ?? MultiThreadedEventLoopGroup.singleton
    }

    /// Runs the scheduling loop in a task of its own (pending work resumes by itself).
    public func start() {
        state.withLock { s in
            guard s.loop == nil, !s.stopping else { return }
            s.loop = Task { await self.run() }
        }
    }

    /// New work may be due (a commit batch landed, an administrator released a message).
    public func wakeUp() { wakeUpSource.yield() }

    /// Stops taking new work, waits for deliveries in flight and the last outcomes to be written.
    public func shutdown() async {
        let (first, loop) = state.withLock { s -> (Bool, Task<Void, Never>?) in
            defer { s.stopping = true }
            return (!s.stopping, s.loop)
        }
        guard first else { return }
        wakeUpSource.finish()
        await loop?.value
        await recorder.shutdownGracefully()
        try? await workers.shutdownGracefully()
        try? await mailboxWriters.shutdownGracefully()
        await lmtp?.shutdown()
        try? await planningPool.shutdownGracefully()
    }

    public var statistics: (delivered: Int, deferred: Int, failed: Int) {
        state.withLock { ($0.delivered, $0.deferred, $0.failed) }
    }

    /// Attempts recorded too late in the shared queue, their lease lost (`mailflow_delivery_lease_lost_total`).
    public var leasesLost: Int { state.withLock { $0.leasesLost } }

    /// One delivery attempt for every pending recipient of a message: local mailboxes on the
    /// mailbox writers, remote domains through `outbound` (one transaction per domain, in
    /// parallel); then the planner decides and one queue transaction records its decisions, trace
    /// events and any DSN.
    ///
    /// `onlyIfDue` (the loop's case): skipped unless still due. The loop may read a message as due
    /// just before an attempt on it finishes and sets a later next attempt (in flight, then not):
    /// taking it again would be a second attempt at once.
    public func process(_ id: String, onlyIfDue: Bool = false) async {
        do {
            let m: StoredMessage?
            if leased != nil {
                // Claimed just now, under a lease: due by the queue's clock.
                m = state.withLock { $0.claimed.removeValue(forKey: id) }
            } else {
                m = try await blocking({ try self.store.message(id) })
                guard !onlyIfDue || (m?.nextAttempt.map { $0 <= now() } ?? false) else { return }
            }
            guard let m, m.state == .queued, let body = m.body else {
                if let leased { await leased.release(id) }
                return
            }
            let work = planner.work(for: m, relayAvailable: outbound != nil)
            var results = AttemptResults(unroutable: work.unroutable)
            if !work.local.isEmpty, let lmtp {
                results.local = await deliverByLMTP(m, body: body, recipients: work.local, through: lmtp)
            } else if !work.local.isEmpty {
                results.local = try await mailboxWriters.runIfActive {
                    self.syncPriority?.waitForTurn()
                    return self.deliverLocally(m, body: body, recipients: work.local)
                }
            }
            if let outbound, !work.remote.isEmpty {
                results.remote = await deliverRemotely(m, body: body, work.remote, through: outbound)
            }
            let t = now()
            let planner = self.planner
            let decision = random.withLock { rng in planner.decide(m, results: results, now: t, using: &rng) }
            try await carryOut(decision, for: m, body: body, now: t)
        } catch {
            logger.error("delivery of \(id) could not be recorded: \(error)", metadata: ["queue_id": "\(id)"])
            // The queue cannot write (a full disk): the message is still due, so hold its slot a
            // while, or the loop would take it again at once and spin (and resend it to a remote).
            if StorageFault(error) != nil { try? await clock.sleep(for: .seconds(5)) }
        }
    }

    /// The remote recipients of `m`, one SMTP transaction per destination domain, in parallel.
    func deliverRemotely(
        _ m: StoredMessage, body: MessageBody, _ byDomain: [String: [StoredRecipient]],
        through outbound: OutboundDelivery
    ) async -> [Int: RemoteOutcome] {
        let outBody: OutboundBody
        do {
            // Sender authentication's result goes above this server's Received stamp (RFC 8601 §5).
            var prefix = Data((m.authentication?.field ?? "").utf8)
            prefix.append(try MessageBodyReader(body: body).prefix(m.stampLength))
            if m.addMessageID, let mid = m.messageID { prefix.append(Data("Message-ID: \(mid)\r\n".utf8)) }
            if m.addDate { prefix.append(Data("Date: \(HeaderStamps.rfc5322Date(m.receivedAt))\r\n".utf8)) }
            let unsigned = OutboundBody(prefix: prefix, reader: MessageBodyReader(body: body, skip: m.stampLength))
            // DKIM-signed over the body as sent, when the sender's tenant has a key (docs/dkim.md).
            if let signing = signingFor(m.sender) {
                outBody = await signed(unsigned, with: signing, queueID: m.id)
            } else {
                outBody = unsigned
            }
        } catch {
            let reply = SMTPReply(451, .init(4, 3, 0), "Cannot read the stored message: \(error)")
            var out: [Int: RemoteOutcome] = [:]
            for r in byDomain.values.joined() {
                out[r.index] = RemoteOutcome(
                    result: RecipientResult(index: r.index, disposition: .deferred, reply: reply))
            }
            return out
        }
        let size = outBody.size
        let connector = connectorFor(m.sender)
        var remote: [Int: RemoteOutcome] = [:]
        await withTaskGroup(of: [(Int, RemoteOutcome)].self) { g in
            for (domain, rcpts) in byDomain {
                let env = OutboundEnvelope(
                    sender: m.sender,
                    recipients: rcpts.map {
                        OutboundRecipient(
                            address: $0.recipient.address, notify: $0.recipient.notify,
                            originalRecipient: $0.recipient.originalRecipient)
                    }, size: size, eightBit: m.bodyType == .eightBitMIME, smtpUTF8: m.smtpUTF8,
                    ret: m.ret, envelopeID: m.envelopeID)
                g.addTask {
                    let results = await outbound.deliver(
                        domain: domain, envelope: env, body: outBody, connector: connector)
                    return results.map { (rcpts[$0.result.index].index, $0) }
                }
            }
            for await batch in g {
                for (idx, o) in batch { remote[idx] = o }
            }
        }
        return remote
    }

    /// Records the planner's decisions in one batched transaction (with the DSNs rendered), then
    /// counts and logs them.
    func carryOut(_ decision: DeliveryDecision, for m: StoredMessage, body: MessageBody, now t: Date) async throws {
        let id = m.id
        var notifications: [NewMessage] = []
        var delayNoticeSent = false
        if let dsnRoute, let route = dsnRoute(m.sender) {
            for report in decision.reports {
                notifications.append(try render(report, of: m, body: body, route: route, now: t))
                if report.kind == .delay { delayNoticeSent = true }
            }
        }
        let attempt = SQLiteQueueStore.Attempt(
            messageID: id, outcomes: decision.outcomes, nextAttempt: decision.nextAttempt, now: t,
            notifications: notifications, abruptClose: decision.abruptClose, delayNoticeSent: delayNoticeSent)
        if let leased {
            if try await leased.record(attempt) == .leaseLost {
                state.withLock { $0.leasesLost += 1 }
                leaseLostCounter.increment()
                logger.error(
                    "the lease on this message ran out before its attempt was recorded: another node may deliver it again (possible duplicate)",
                    metadata: ["queue_id": "\(id)"])
            }
        } else if let spoolPath = try await recorder.record(attempt) {
            // Batched with the other attempts finishing now: one transaction, one sync.
            spool.remove(path: spoolPath)
        }
        if !notifications.isEmpty { wakeUp() }
        let outcomes = decision.outcomes
        state.withLock { s in
            for o in outcomes.values {
                switch o {
                case .delivered: s.delivered += 1
                case .deferred: s.deferred += 1
                case .failed: s.failed += 1
                }
            }
        }
        for (idx, o) in outcomes {
            let stored = m.recipients.first { $0.index == idx }?.recipient
            let rcpt = stored?.address ?? "?"
            let destination = stored?.route.relayDomain ?? "local"
            let outcome: String
            switch o {
            case .delivered: outcome = "delivered"
            case .deferred: outcome = "deferred"
            case .failed: outcome = "failed"
            }
            attemptCounter(outcome: outcome, destination: destination).increment()
            switch o {
            case .delivered:
                logger.info("delivered", metadata: ["queue_id": "\(id)", "to": "\(rcpt)"])
            case .deferred(let why):
                logger.warning("deferred", metadata: ["queue_id": "\(id)", "to": "\(rcpt)", "reason": "\(why)"])
            case .failed(let why):
                logger.error("failed", metadata: ["queue_id": "\(id)", "to": "\(rcpt)", "reason": "\(why)"])
            }
        }
    }

    /// The attempts counter for one outcome and destination, made once (the factory's lookup and
    /// allocation stay off the per-message path).
    func attemptCounter(outcome: String, destination: String) -> Counter {
        attemptCounters.withLock { counters in
            let key = outcome + " " + destination
            if let c = counters[key] { return c }
            let c = Counter(
                label: "mailflow_delivery_attempts_total",
                dimensions: [("outcome", outcome), ("destination", destination)], factory: metricsFactory)
            counters[key] = c
            return c
        }
    }

    /// Runs a blocking read (SQLite, the spool) on the scheduler's thread pool, not on the concurrency
    /// pool.
    func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await workers.runIfActive(work)
    }

    /// What a mailbox copy carries above the stored message (Maildir and LMTP alike): the
    /// `Authentication-Results` field, the stored stamps (`Received:`), and the `Message-ID` and
    /// `Date` the message was accepted without.
    func deliveryStamps(_ m: StoredMessage, body: MessageBody) throws -> Data {
        var stamps = Data((m.authentication?.field ?? "").utf8)
        stamps.append(try MessageBodyReader(body: body).prefix(m.stampLength))
        if m.addMessageID, let mid = m.messageID { stamps.append(Data("Message-ID: \(mid)\r\n".utf8)) }
        if m.addDate { stamps.append(Data("Date: \(HeaderStamps.rfc5322Date(m.receivedAt))\r\n".utf8)) }
        return stamps
    }

    /// Mailbox deliveries: `.delivered`, or `.deferred` with the error (the planner decides about
    /// expiry).
    func deliverLocally(_ m: StoredMessage, body: MessageBody, recipients: [StoredRecipient]) -> [Int: RecipientOutcome]
    {
        var outcomes: [Int: RecipientOutcome] = [:]
        let reader = MessageBodyReader(body: body, skip: m.stampLength)
        var prefix = Data("Return-Path: <\(m.sender)>\r\n".utf8)
        do {
            prefix.append(try deliveryStamps(m, body: body))
        } catch {
            for r in recipients {
                outcomes[r.index] = .deferred(reason: "451 4.3.0 Cannot read the stored message: \(error)")
            }
            return outcomes
        }
        let scanCur = m.attempts > 0 || m.receivedAt < startedAt
        for r in recipients {
            guard case .local(let domain, let mailbox) = r.recipient.route else { continue }
            do {
                let path = try maildir.deliver(
                    message: m, recipientIndex: r.index, domain: domain, localPart: mailbox,
                    bodyPrefix: prefix, body: reader, scanCur: scanCur)
                outcomes[r.index] = .delivered(detail: "250 2.0.0 Delivered to maildir \(path)")
            } catch {
                outcomes[r.index] = .deferred(reason: MaildirDelivery.deferral(for: error))
                if MaildirDelivery.fault(for: error) == .full { noteMailboxFull() }
            }
        }
        return outcomes
    }

    static let delaySubject = "Delayed Mail (still being retried)"
    static let failureSubject = "Undelivered Mail Returned to Sender"

    /// A planner's report as the DSN message queued to the sender (RFC 3464): the original message
    /// or, for a delay notice and for RET=HDRS, its header section.
    func render(_ report: DeliveryReport, of m: StoredMessage, body: MessageBody, route: Route, now t: Date) throws
        -> NewMessage
    {
        let headersOnly = report.kind == .delay || m.ret == .headers
        var original = Data()
        var chunks = try MessageBodyReader(body: body, skip: m.stampLength).makeIterator()
        while let c = try chunks.next() {
            original.append(c)
            if headersOnly && original.range(of: Data("\r\n\r\n".utf8)) != nil { break }
            // Full returns are capped: a bounce need not carry a 35 MB attachment back.
            if original.count > 1_048_576 { break }
        }
        // A delay notice generated with a failure report sorts after it.
        let at = report.kind == .delay ? t.addingTimeInterval(0.000_001) : t
        let dsnID = random.withLock { QueueID.generate(now: at, using: &$0) }
        let rows = report.rows.map { row in
            let rcpt = m.recipients.first { $0.index == row.recipientIndex }?.recipient
            return DeliveryStatusNotification.Recipient(
                finalRecipient: rcpt?.address ?? "", originalRecipient: rcpt?.originalRecipient?.stored,
                action: report.kind == .delay ? .delayed : .failed, status: row.status, remoteMTA: row.remoteMTA,
                diagnostic: row.diagnostic, lastAttempt: report.lastAttempt, willRetryUntil: report.willRetryUntil)
        }
        let dsn = DeliveryStatusNotification(
            reportingMTA: maildir.hostname, sender: m.sender, originalEnvelopeID: m.envelopeID,
            arrivalDate: m.receivedAt, recipients: rows, original: original, headersOnly: headersOnly)
        let text = dsn.render(
            date: at, messageID: "<\(dsnID)@\(maildir.hostname)>", boundary: "\(dsnID)/\(maildir.hostname)")
        return NewMessage(
            id: dsnID, receivedAt: at, sender: "", recipients: [EnvelopeRecipient(address: m.sender, route: route)],
            size: text.count, clientAddress: "127.0.0.1", helo: maildir.hostname, protocolName: "DSN",
            messageID: "<\(dsnID)@\(maildir.hostname)>", addMessageID: false,
            subject: report.kind == .delay ? Self.delaySubject : Self.failureSubject, body: .inline(text))
    }

    /// Blocking wrapper for tests and tools: one attempt, waited for.
    public func attempt(_ id: String) async {
        await process(id)
    }
}
