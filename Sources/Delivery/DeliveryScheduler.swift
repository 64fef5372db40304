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
    let retry: RetrySchedule
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
    /// Abrupt closes by remotes a message may cause before it fails as possibly harmful.
    let maxAbruptCloses: Int
    /// After this long undelivered, the sender gets one delay notice (nil: never).
    let delayNotice: TimeInterval?
    let metricsFactory: any MetricsFactory
    let attemptCounters = Mutex<[String: Counter]>([:])

    public init(
        store: SQLiteQueueStore, spool: Spool, maildir: MaildirDelivery, retry: RetrySchedule = .exchangeLike,
        concurrency: Int = 4, logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
        outbound: OutboundDelivery? = nil,
        connectorFor: @escaping @Sendable (String) -> OutboundConnector? = { _ in nil },
        dsnRoute: (@Sendable (String) -> Route?)? = nil, maxAbruptCloses: Int = 3,
        delayNotice: TimeInterval? = 4 * 3600, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.metricsFactory = metricsFactory
        self.delayNotice = delayNotice
        self.outbound = outbound
        self.connectorFor = connectorFor
        self.dsnRoute = dsnRoute
        self.maxAbruptCloses = maxAbruptCloses
        self.store = store
        self.recorder = AttemptRecorder(store: store)
        self.spool = spool
        self.maildir = maildir
        self.retry = retry
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
    /// blocking-I/O queue, remote domains through `outbound` (one transaction per domain, in
    /// parallel), then one queue transaction for all outcomes, trace events and any DSN.
    public func process(_ id: String) async {
        do {
            guard let m = try await blocking({ try self.store.message(id) }), m.state == .queued, let body = m.body
            else {
                return
            }
            let t = now()
            let expired = retry.isExpired(receivedAt: m.receivedAt, now: t)
            let pending = m.recipients.filter { $0.status == .pending }
            var outcomes: [Int: RecipientOutcome] = [:]
            var remoteInfo: [Int: RemoteOutcome] = [:]

            if m.bounceRequested {
                for r in pending {
                    outcomes[r.index] = .failed(reason: "550 5.3.0 Returned to the sender by an administrator")
                }
            }
            let local = m.bounceRequested ? [] : pending.filter { $0.recipient.route.localDomain != nil }
            if !local.isEmpty {
                let localOutcomes = await blocking {
                    self.deliverLocally(m, body: body, recipients: local, expired: expired)
                }
                outcomes.merge(localOutcomes) { a, _ in a }
            }
            var byDomain: [String: [StoredRecipient]] = [:]
            for r in pending where !m.bounceRequested {
                guard case .relay(let domain) = r.recipient.route else { continue }
                if outbound != nil {
                    byDomain[domain, default: []].append(r)
                } else {
                    outcomes[r.index] = .failed(reason: "550 5.4.4 No route for \(r.recipient.route)")
                }
            }
            if let outbound, !byDomain.isEmpty {
                var prefix = try MessageBodyReader(body: body).prefix(m.stampLength)
                if m.addMessageID, let mid = m.messageID { prefix.append(Data("Message-ID: \(mid)\r\n".utf8)) }
                let outBody = OutboundBody(prefix: prefix, reader: MessageBodyReader(body: body, skip: m.stampLength))
                let size = outBody.size
                let connector = connectorFor(m.sender)
                await withTaskGroup(of: [(Int, RemoteOutcome)].self) { g in
                    for (domain, rcpts) in byDomain {
                        let env = OutboundEnvelope(
                            sender: m.sender,
                            recipients: rcpts.map {
                                OutboundRecipient(
                                    address: $0.recipient.address,
                                    notify: $0.recipient.notify,
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
                        for (idx, o) in batch { remoteInfo[idx] = o }
                    }
                }
            }
            let abrupt = remoteInfo.values.contains { $0.result.reply == ClientSession.abruptClose }
            let abruptSoFar = abrupt ? m.abruptCloses + 1 : m.abruptCloses
            for (idx, o) in remoteInfo {
                let remoteWhere = [o.remoteHost, o.remoteIP.map { "[\($0)]" }, o.tls].compactMap { $0 }.joined(
                    separator: " ")
                let detail = "\(o.result.reply)" + (remoteWhere.isEmpty ? "" : " (remote \(remoteWhere))")
                switch o.result.disposition {
                case .delivered: outcomes[idx] = .delivered(detail: detail)
                case .failed: outcomes[idx] = .failed(reason: detail)
                case .deferred:
                    if o.result.reply == ClientSession.abruptClose && abruptSoFar >= maxAbruptCloses {
                        // Exchange's "poison for remote": the message keeps breaking the remote's sessions.
                        outcomes[idx] = .failed(
                            reason:
                                "554 5.4.300 Message failed after \(abruptSoFar) abrupt disconnects by the remote; it may be harmful to it (SuspiciousRemoteServerError)"
                        )
                    } else if expired {
                        outcomes[idx] = .failed(
                            reason: "450 4.4.7 Message expired after \(Int(retry.expiry)) s, last: \(detail)")
                    } else {
                        outcomes[idx] = .deferred(reason: detail)
                    }
                }
            }
            var rng = SystemRandomNumberGenerator()
            let anyDeferred = outcomes.values.contains { if case .deferred = $0 { return true } else { return false } }
            var delay = retry.delay(afterAttempt: m.attempts + 1, random: &rng)
            // Exchange waits longer after an abrupt close before trying that remote again.
            if abrupt { delay *= 3 }
            let next = anyDeferred ? t.addingTimeInterval(delay) : nil
            var sendDelayNotice = false
            if anyDeferred, let notice = delayNotice, t.timeIntervalSince(m.receivedAt) >= notice {
                sendDelayNotice = m.delayNoticeSentAt == nil
            }
            let notifications = try notificationsFor(
                m, body: body, outcomes: outcomes, remote: remoteInfo, now: t, delayNotice: sendDelayNotice)
            let settled = outcomes
            // Batched with the other attempts finishing now: one transaction, one sync.
            if let spoolPath = try await recorder.record(
                .init(
                    messageID: id, outcomes: settled, nextAttempt: next, now: t, notifications: notifications,
                    abruptClose: abrupt, delayNoticeSent: notifications.contains { $0.subject == Self.delaySubject }))
            {
                spool.remove(path: spoolPath)
            }
            if !notifications.isEmpty { wake.signal() }
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
        } catch {
            logger.error("delivery of \(id) could not be recorded: \(error)", metadata: ["queue_id": "\(id)"])
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

    func deliverLocally(_ m: StoredMessage, body: MessageBody, recipients: [StoredRecipient], expired: Bool)
        -> [Int: RecipientOutcome]
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
                if expired {
                    outcomes[r.index] = .failed(
                        reason: "450 4.4.7 Message expired after \(Int(retry.expiry)) s: \(error)")
                } else {
                    outcomes[r.index] = .deferred(reason: "451 4.3.0 Mailbox delivery failed: \(error)")
                }
            }
        }
        return outcomes
    }

    /// RFC 3461/3464: a failure report to the sender for recipients that failed (unless NOTIFY says
    /// otherwise), never to the null sender, so a bounce is never bounced.
    func notificationsFor(
        _ m: StoredMessage, body: MessageBody, outcomes: [Int: RecipientOutcome], remote: [Int: RemoteOutcome],
        now t: Date, delayNotice: Bool = false
    ) throws -> [NewMessage] {
        guard !m.sender.isEmpty, let dsnRoute, let route = dsnRoute(m.sender) else { return [] }
        var failures: [DeliveryStatusNotification.Recipient] = []
        var delays: [DeliveryStatusNotification.Recipient] = []
        for r in m.recipients {
            let notify = r.recipient.notify
            switch outcomes[r.index] {
            case .failed(let reason)?:
                if let notify, notify.never || !notify.failure { continue }
                failures.append(
                    .init(
                        finalRecipient: r.recipient.address, originalRecipient: r.recipient.originalRecipient?.stored,
                        action: .failed, status: Self.statusCode(in: reason) ?? "5.0.0",
                        remoteMTA: remote[r.index]?.remoteHost, diagnostic: reason, lastAttempt: t))
            case .deferred(let reason)? where delayNotice:
                // RFC 3461 §4.1: without NOTIFY the MTA may send delay notices; with it, only for DELAY.
                if let notify, notify.never || !notify.delay { continue }
                delays.append(
                    .init(
                        finalRecipient: r.recipient.address, originalRecipient: r.recipient.originalRecipient?.stored,
                        action: .delayed, status: Self.statusCode(in: reason) ?? "4.0.0",
                        remoteMTA: remote[r.index]?.remoteHost, diagnostic: reason, lastAttempt: t,
                        willRetryUntil: m.receivedAt.addingTimeInterval(retry.expiry)))
            default:
                continue
            }
        }
        var out: [NewMessage] = []
        if !failures.isEmpty {
            out.append(
                try notification(
                    m, body: body, rows: failures, route: route, now: t, headersOnly: m.ret == .headers,
                    subject: "Undelivered Mail Returned to Sender"))
        }
        if !delays.isEmpty {
            out.append(
                try notification(
                    m, body: body, rows: delays, route: route, now: t.addingTimeInterval(0.000_001), headersOnly: true,
                    subject: Self.delaySubject))
        }
        return out
    }

    static let delaySubject = "Delayed Mail (still being retried)"

    func notification(
        _ m: StoredMessage, body: MessageBody, rows: [DeliveryStatusNotification.Recipient], route: Route, now t: Date,
        headersOnly: Bool, subject: String
    ) throws -> NewMessage {
        var original = Data()
        var chunks = try MessageBodyReader(body: body, skip: m.stampLength).makeIterator()
        while let c = try chunks.next() {
            original.append(c)
            if headersOnly && original.range(of: Data("\r\n\r\n".utf8)) != nil { break }
            // Full returns are capped: a bounce need not carry a 35 MB attachment back.
            if original.count > 1_048_576 { break }
        }
        var rng = SystemRandomNumberGenerator()
        let dsnID = QueueID.generate(now: t, using: &rng)
        let report = DeliveryStatusNotification(
            reportingMTA: maildir.hostname, sender: m.sender, originalEnvelopeID: m.envelopeID,
            arrivalDate: m.receivedAt,
            recipients: rows, original: original, headersOnly: headersOnly)
        let text = report.render(
            date: t, messageID: "<\(dsnID)@\(maildir.hostname)>", boundary: "\(dsnID)/\(maildir.hostname)")
        return NewMessage(
            id: dsnID, receivedAt: t, sender: "", recipients: [EnvelopeRecipient(address: m.sender, route: route)],
            size: text.count, clientAddress: "127.0.0.1", helo: maildir.hostname, protocolName: "DSN",
            messageID: "<\(dsnID)@\(maildir.hostname)>", addMessageID: false, subject: subject, body: .inline(text))
    }

    /// The enhanced status code in a reply text (`550 5.1.1 ...` → `5.1.1`).
    static func statusCode(in text: String) -> String? {
        for word in text.split(separator: " ").prefix(3) where EnhancedStatusCode(parsing: word) != nil {
            return String(word)
        }
        return nil
    }

    /// Blocking wrapper for tests and tools: one attempt, waited for.
    public func attempt(_ id: String) async {
        await process(id)
    }
}
