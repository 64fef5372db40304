import Dispatch
import Foundation
import Logging
import MailQueue
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
    let spool: Spool
    let maildir: MaildirDelivery
    let retry: RetrySchedule
    let concurrency: Int
    let now: @Sendable () -> Date
    let logger: Logger
    let state = Mutex(State())
    let wake = DispatchSemaphore(value: 0)
    let stopped = DispatchSemaphore(value: 0)
    let workers = DispatchQueue(label: "mailflow.delivery", attributes: .concurrent)
    let group = DispatchGroup()
    let startedAt: Date

    public init(
        store: SQLiteQueueStore, spool: Spool, maildir: MaildirDelivery, retry: RetrySchedule = .exchangeLike,
        concurrency: Int = 4, logger: Logger, now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.store = store
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
    }

    public var statistics: (delivered: Int, deferred: Int, failed: Int) {
        state.withLock { ($0.delivered, $0.deferred, $0.failed) }
    }

    func loop() {
        while true {
            if state.withLock({ $0.stopping }) { break }
            let t = now()
            var waitSeconds = 30.0
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
                        workers.async { [self] in
                            self.attempt(id)
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
        }
        stopped.signal()
    }

    /// One delivery attempt for every pending recipient of a message.
    public func attempt(_ id: String) {
        do {
            guard let m = try store.message(id), m.state == .queued, let body = m.body else { return }
            let t = now()
            let reader = MessageBodyReader(body: body, skip: m.stampLength)
            var prefix = Data("Return-Path: <\(m.sender)>\r\n".utf8)
            prefix.append(try MessageBodyReader(body: body).prefix(m.stampLength))
            if m.addMessageID, let mid = m.messageID {
                prefix.append(Data("Message-ID: \(mid)\r\n".utf8))
            }
            let expired = retry.isExpired(receivedAt: m.receivedAt, now: t)
            let scanCur = m.attempts > 0 || m.receivedAt < startedAt
            var outcomes: [Int: RecipientOutcome] = [:]
            for r in m.recipients where r.status == .pending {
                guard let route = LocalRoute(r.recipient.route) else {
                    outcomes[r.index] = .failed(reason: "550 5.4.4 No route for \(r.recipient.route)")
                    continue
                }
                do {
                    let path = try maildir.deliver(
                        message: m, recipientIndex: r.index, domain: route.domain, localPart: route.mailbox,
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
            var rng = SystemRandomNumberGenerator()
            let anyDeferred = outcomes.values.contains { if case .deferred = $0 { return true } else { return false } }
            let next = anyDeferred ? t.addingTimeInterval(retry.delay(afterAttempt: m.attempts + 1, random: &rng)) : nil
            if let spoolPath = try store.recordAttempt(messageID: id, outcomes: outcomes, nextAttempt: next, now: t) {
                spool.remove(path: spoolPath)
            }
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
                let rcpt = m.recipients.first { $0.index == idx }?.recipient.address ?? "?"
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
}

/// A `local:<domain>/<mailbox>` route chosen at RCPT time.
public struct LocalRoute: Sendable, Hashable {
    public var domain: String
    public var mailbox: String

    public init(domain: String, mailbox: String) {
        self.domain = domain
        self.mailbox = mailbox
    }

    public init?(_ route: String) {
        guard route.hasPrefix("local:") else { return nil }
        let rest = route.dropFirst(6)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        domain = String(rest[..<slash])
        mailbox = String(rest[rest.index(after: slash)...])
        guard !domain.isEmpty, !mailbox.isEmpty else { return nil }
    }

    public var route: String { "local:\(domain)/\(mailbox)" }
}
