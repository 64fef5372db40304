import Dispatch
import Foundation
import Logging
import MailMessage
import MailQueue
import Metrics
import SMTPCore
import Synchronization

/// Finds due messages through the queue's `next_attempt` index and delivers them, at most
/// `concurrency` at a time, off the network event loops (delivery does blocking file I/O and fsync).
///
/// Wakes when the group committer reports a batch, when a delivery finishes, or when the earliest
/// deferred message falls due; with nothing due it sleeps, so a large deferred queue costs nothing.
public final class DeliveryScheduler: Sendable {
    struct State: Sendable {
        var inFlight: Set<String> = []
        var stopping = false
        var delivered = 0
        var deferred = 0
        var failed = 0
    }

    let store: SQLiteQueueStore
    /// Writes attempt outcomes in batches (group commit for delivery).
    public let recorder: AttemptRecorder
    let spool: Spool
    let maildir: MaildirDelivery
    /// Retry, expiry, poison-message and DSN policy, as a pure function of each attempt.
    let planner: DeliveryPlanner
    /// Jitter and DSN queue IDs; injected so tests are deterministic.
    let random: Mutex<any RandomNumberGenerator & Sendable>
    let concurrency: Int
    let now: @Sendable () -> Date
    let logger: Logger
    let state = Mutex(State())
    let wake = DispatchSemaphore(value: 0)
    let stopped = DispatchSemaphore(value: 0)
    /// Blocking work (SQLite, Maildir writes and fsync) runs here, a few at a time, however many
    /// messages are in flight waiting on remote servers.
    let workers: OperationQueue = {
        let q = OperationQueue()
        q.name = "mailflow.delivery-io"
        q.maxConcurrentOperationCount = 8
        return q
    }()
    let group = DispatchGroup()
    let startedAt: Date
    let outbound: OutboundDelivery?
    let connectorFor: @Sendable (String) -> OutboundConnector?
    let dsnRoute: (@Sendable (String) -> Route?)?
    let metricsFactory: any MetricsFactory
    let attemptCounters = Mutex<[String: Counter]>([:])

    public init(
        store: SQLiteQueueStore, spool: Spool, maildir: MaildirDelivery, retry: RetrySchedule = .exchangeLike,
        concurrency: Int = 4, logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
        outbound: OutboundDelivery? = nil,
        connectorFor: @escaping @Sendable (String) -> OutboundConnector? = { _ in nil },
        dsnRoute: (@Sendable (String) -> Route?)? = nil, maxAbruptCloses: Int = 3,
        delayNotice: TimeInterval? = 4 * 3600, metricsFactory: any MetricsFactory = MetricsSystem.factory,
        random: any RandomNumberGenerator & Sendable = SystemRandomNumberGenerator()
    ) {
        self.metricsFactory = metricsFactory
        self.outbound = outbound
        self.connectorFor = connectorFor
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
        self.startedAt = now()
    }

    public func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "mailflow-scheduler"
        t.start()
    }

    /// New work may be due (a commit batch landed).
    public func wakeUp() { wake.signal() }

    /// Stops taking new work and waits for deliveries in flight.
    public func shutdown() {
        let first = state.withLock { s -> Bool in
            defer { s.stopping = true }
            return !s.stopping
        }
        guard first else { return }
        wake.signal()
        stopped.wait()
        group.wait()
        recorder.shutdown()
    }

    public var statistics: (delivered: Int, deferred: Int, failed: Int) {
        state.withLock { ($0.delivered, $0.deferred, $0.failed) }
    }

    func loop() {
        while true {
            if state.withLock({ $0.stopping }) { break }
            let t = now()
            // Also picks up `mailflow queue release/retry/bounce` made from another process.
            var waitSeconds = 5.0
            do {
                let capacity = concurrency - state.withLock { $0.inFlight.count }
                if capacity > 0 {
                    let due = try store.dueMessageIDs(now: t, limit: capacity + concurrency)
                    let taken = state.withLock { s -> [String] in
                        var out: [String] = []
                        for id in due where !s.inFlight.contains(id) && out.count < capacity {
                            s.inFlight.insert(id)
                            out.append(id)
                        }
                        return out
                    }
                    for id in taken {
                        group.enter()
                        Task { [self] in
                            await self.process(id)
                            _ = self.state.withLock { $0.inFlight.remove(id) }
                            self.group.leave()
                            self.wake.signal()
                        }
                    }
                }
                if let next = try store.nextDueTime() {
                    let dt = next.timeIntervalSince(now())
                    // Due work still in flight or over capacity: a finishing delivery wakes us.
                    if dt > 0 { waitSeconds = min(waitSeconds, dt) }
                }
            } catch {
                logger.error("delivery scheduler: \(error)")
                waitSeconds = 1
            }
            _ = wake.wait(timeout: .now() + waitSeconds)
            // Completions arrive in bursts (one batch of outcomes): one pass of the loop for all.
            while wake.wait(timeout: .now()) == .success {}
        }
        stopped.signal()
    }

    /// One delivery attempt for every pending recipient of a message: local mailboxes on the
    /// blocking-I/O pool, remote domains through `outbound` (one transaction per domain, in
    /// parallel); then the planner decides and one queue transaction records its decisions, trace
    /// events and any DSN.
    public func process(_ id: String) async {
        do {
            guard let m = try await blocking({ try self.store.message(id) }), m.state == .queued, let body = m.body
            else {
                return
            }
            let work = planner.work(for: m, relayAvailable: outbound != nil)
            var results = AttemptResults(unroutable: work.unroutable)
            if !work.local.isEmpty {
                results.local = try await blocking { self.deliverLocally(m, body: body, recipients: work.local) }
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
        }
    }

    /// The remote recipients of `m`, one SMTP transaction per destination domain, in parallel.
    func deliverRemotely(
        _ m: StoredMessage, body: MessageBody, _ byDomain: [String: [StoredRecipient]],
        through outbound: OutboundDelivery
    ) async -> [Int: RemoteOutcome] {
        let outBody: OutboundBody
        do {
            var prefix = try MessageBodyReader(body: body).prefix(m.stampLength)
            if m.addMessageID, let mid = m.messageID { prefix.append(Data("Message-ID: \(mid)\r\n".utf8)) }
            outBody = OutboundBody(prefix: prefix, reader: MessageBodyReader(body: body, skip: m.stampLength))
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
                            originalRecipient: $0.recipient.originalRecipient?.stored)
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
        // Batched with the other attempts finishing now: one transaction, one sync.
        if let spoolPath = try await recorder.record(
            .init(
                messageID: id, outcomes: decision.outcomes, nextAttempt: decision.nextAttempt, now: t,
                notifications: notifications, abruptClose: decision.abruptClose, delayNoticeSent: delayNoticeSent))
        {
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

    /// Runs blocking work (SQLite, fsync) on the delivery queue, not on the concurrency pool.
    func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            workers.addOperation { c.resume(with: Result { try work() }) }
        }
    }

    func blocking<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in workers.addOperation { c.resume(returning: work()) } }
    }

    /// Mailbox deliveries: `.delivered`, or `.deferred` with the error (the planner decides about
    /// expiry).
    func deliverLocally(_ m: StoredMessage, body: MessageBody, recipients: [StoredRecipient]) -> [Int: RecipientOutcome]
    {
        var outcomes: [Int: RecipientOutcome] = [:]
        let reader = MessageBodyReader(body: body, skip: m.stampLength)
        var prefix = Data("Return-Path: <\(m.sender)>\r\n".utf8)
        do {
            prefix.append(try MessageBodyReader(body: body).prefix(m.stampLength))
        } catch {
            for r in recipients {
                outcomes[r.index] = .deferred(reason: "451 4.3.0 Cannot read the stored message: \(error)")
            }
            return outcomes
        }
        if m.addMessageID, let mid = m.messageID { prefix.append(Data("Message-ID: \(mid)\r\n".utf8)) }
        let scanCur = m.attempts > 0 || m.receivedAt < startedAt
        for r in recipients {
            guard case .local(let domain, let mailbox) = r.recipient.route else { continue }
            do {
                let path = try maildir.deliver(
                    message: m, recipientIndex: r.index, domain: domain, localPart: mailbox,
                    bodyPrefix: prefix, body: reader, scanCur: scanCur)
                outcomes[r.index] = .delivered(detail: "250 2.0.0 Delivered to maildir \(path)")
            } catch {
                outcomes[r.index] = .deferred(reason: "451 4.3.0 Mailbox delivery failed: \(error)")
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
