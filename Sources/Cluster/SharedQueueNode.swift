import Foundation
import Logging
import MailQueue
import NIOCore
import PostgresNIO
import Synchronization

/// This node's side of the shared queue (`storage.postgres`): the `LeasedQueue` the delivery
/// scheduler and the group committer use. It keeps the leases this node holds and renews them every
/// third of the lease while their deliveries run, and it owns the node's connections: one for
/// acceptance (the group commit's batches go one at a time anyway), one for claims and renewals,
/// the rest for recording attempts. A connection that fails is closed and opened again at its next
/// use; the tables are created at the first connection that works (`SharedQueue.migrate`), so a
/// node can start while the database is away and answer `451 4.3.0` until it is back.
///
/// ```swift
/// let queue = SharedQueueNode(settings: settings, group: group, logger: logger)
/// queue.start()                      // the renewals
/// let committer = GroupCommitter(storage: store.storage) { messages, _ in try queue.acceptBlocking(messages) }
/// ...
/// await queue.stop()
/// ```
public final class SharedQueueNode: LeasedQueue {
    public let node: String
    let queue: SharedQueue
    let lease: Duration
    let logger: Logger
    let acceptance: ConnectionSlot
    let claims: ConnectionSlot
    let records: [ConnectionSlot]
    let nextRecordSlot = Atomic<Int>(0)
    /// The leases this node holds, by queue ID.
    let held = Mutex<[String: SharedLease]>([:])
    let renewals = Mutex<Task<Void, Never>?>(nil)
    /// Attempts whose record was refused, the lease lost (possible duplicates).
    let lost = Atomic<Int>(0)
    /// Set by `beginStop`: a record waiting for the database gives up once its lease has run out.
    let stopping = Atomic<Bool>(false)

    public init(settings: SharedQueueSettings, group: any EventLoopGroup, logger: Logger) {
        node = settings.node
        lease = .milliseconds(Int64(settings.lease * 1000))
        self.logger = logger
        queue = SharedQueue(
            database: settings.database, timeout: .milliseconds(Int64(settings.timeout * 1000)), logger: logger)
        let migrated = MigrationFlag()
        let make = { [queue] (role: String) in
            ConnectionSlot(role: role, queue: queue, group: group, migrated: migrated, logger: logger)
        }
        acceptance = make("acceptance")
        claims = make("claims")
        records = (0..<max(1, settings.pool - 2)).map { make("records \($0 + 1)") }
    }

    /// Starts renewing held leases every third of the lease.
    public func start() {
        let seconds = Double(lease.components.seconds) + Double(lease.components.attoseconds) / 1e18
        logger.notice(
            "queue shared in \(queue.database) as node \(node), leases of \(String(format: "%g", seconds)) s renewed every \(String(format: "%g", seconds / 3)) s"
        )
        let period = lease / 3
        renewals.withLock { task in
            guard task == nil else { return }
            task = Task { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: period)
                    await renew()
                }
            }
        }
    }

    /// Stops the renewals and closes the connections (leases still held run out by themselves).
    public func stop() async {
        let task = renewals.withLock { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        task?.cancel()
        await task?.value
        for slot in [acceptance, claims] + records { await slot.close() }
    }

    /// Attempts whose record was refused because the lease had been lost (another node may deliver
    /// the message again); the scheduler counts the same in `mailflow_delivery_lease_lost_total`.
    public var leasesLost: Int { lost.load(ordering: .relaxed) }

    /// How many leases this node holds now.
    public var leasesHeld: Int { held.withLock { $0.count } }

    func renew() async {
        let leases = held.withLock { Array($0.values) }
        guard !leases.isEmpty else { return }
        do {
            let check = try await claims.use { [queue, node, lease] c throws(SharedQueueError) in
                try await queue.renew(c, node: node, leases: leases, lease: lease)
            }
            if !check.lost.isEmpty {
                logger.warning(
                    "shared queue: \(check.lost.count) leases ran out before they could be renewed; their messages may be delivered by another node as well",
                    metadata: ["queue_ids": "\(check.lost.sorted().joined(separator: ","))"])
            }
        } catch {
            logger.warning("shared queue: leases not renewed: \(error)")
        }
    }

    public func accept(_ messages: [NewMessage]) async throws {
        try await accept(messages, events: [])
    }

    /// Makes `messages` durable with `events` (throttle refusals, for every node's service health)
    /// in one transaction.
    public func accept(_ messages: [NewMessage], events: [TraceEvent]) async throws {
        try await acceptance.use { [queue] c throws(SharedQueueError) in
            try await queue.insert(c, messages, events: events)
        }
    }

    /// `accept` for the group committer's own thread, which may block.
    public func acceptBlocking(_ messages: [NewMessage], events: [TraceEvent] = []) throws {
        try blockingCall { try await self.accept(messages, events: events) }
    }

    public func claim(limit: Int) async throws -> [StoredMessage] {
        guard limit > 0 else { return [] }
        let claimed = try await claims.use { [queue, node, lease] c throws(SharedQueueError) in
            try await queue.claimDue(c, node: node, limit: limit, lease: lease)
        }
        held.withLock { h in for m in claimed { h[m.id] = m.lease } }
        return claimed.map(\.message)
    }

    public func secondsUntilNextClaimable() async throws -> TimeInterval? {
        try await claims.use { [queue, node] c throws(SharedQueueError) in
            try await queue.secondsUntilNextClaimable(c, node: node)
        }
    }

    /// Records under the lease. A database away is waited out, however long: the delivery has been
    /// made, and its record must reach the trace, as a possible duplicate if another node took the
    /// message meanwhile (`.leaseLost` then, and the outcomes traced as such). Only a node that is
    /// stopping (`beginStop`) gives up, once the lease has run out.
    public func record(_ attempt: SQLiteQueueStore.Attempt) async throws -> AttemptRecord {
        guard let lease = held.withLock({ $0[attempt.messageID] }) else { return .leaseLost }
        defer { _ = held.withLock { $0.removeValue(forKey: attempt.messageID) } }
        let slot = records[nextRecordSlot.wrappingAdd(1, ordering: .relaxed).oldValue % records.count]
        let leaseEnds = ContinuousClock.now + self.lease
        var warned = false
        while true {
            do {
                let record = try await slot.use { [queue, node] c throws(SharedQueueError) in
                    try await queue.recordAttempt(c, node: node, lease: lease, attempt: attempt)
                }
                if record == .leaseLost {
                    lost.add(1, ordering: .relaxed)
                    try? await slot.use { [queue, node] c throws(SharedQueueError) in
                        try await queue.traceLostLease(c, node: node, queueID: attempt.messageID, attempt: attempt)
                    }
                }
                return record
            } catch {
                guard Self.isUnavailable(error) else { throw error }
                let late = ContinuousClock.now > leaseEnds
                if late && stopping.load(ordering: .relaxed) { throw error }
                if late && !warned {
                    warned = true
                    logger.warning(
                        "shared queue: an attempt could not be recorded within its lease (the database is away); it is kept and recorded when the database is back, as a possible duplicate if another node took the message",
                        metadata: ["queue_id": "\(attempt.messageID)"])
                }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// A stopping node no longer waits past a lease for the database to record an attempt (see
    /// `record`); called before the scheduler's shutdown waits for its deliveries.
    public func beginStop() {
        stopping.store(true, ordering: .relaxed)
    }

    /// Trace retention in the shared queue: batches until nothing is older than `cutoff` (any node
    /// may run it; two at once only share the work). Returns trace events and messages removed.
    public func prune(before cutoff: Date) async -> (traceEvents: Int, messages: Int) {
        var total = (traceEvents: 0, messages: 0)
        let slot = records[0]
        while true {
            do {
                let r = try await slot.use { [queue] c throws(SharedQueueError) in
                    try await queue.prune(c, before: cutoff)
                }
                total.traceEvents += r.traceEvents
                total.messages += r.messages
                if r.traceEvents < 2000 && r.messages < 2000 { return total }
                try await Task.sleep(for: .milliseconds(50))
            } catch {
                logger.warning("shared queue: trace retention stopped: \(error)")
                return total
            }
        }
    }

    static func isUnavailable(_ error: any Error) -> Bool {
        if case .unavailable = error as? SharedQueueError { return true }
        return false
    }

    public func release(_ id: String) async {
        guard let lease = held.withLock({ $0.removeValue(forKey: id) }) else { return }
        try? await claims.use { [queue, node] c throws(SharedQueueError) in
            try await queue.releaseLease(c, node: node, lease: lease)
        }
    }
}

/// One connection of the node's, used by one call at a time (the shared queue's calls run
/// transactions), opened at first use and again after a failure.
final class ConnectionSlot: Sendable {
    struct State: Sendable {
        var connection: PostgresConnection?
        var busy = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    let role: String
    let queue: SharedQueue
    let group: any EventLoopGroup
    let migrated: MigrationFlag
    let logger: Logger
    let state = Mutex(State())

    init(role: String, queue: SharedQueue, group: any EventLoopGroup, migrated: MigrationFlag, logger: Logger) {
        self.role = role
        self.queue = queue
        self.group = group
        self.migrated = migrated
        self.logger = logger
    }

    func use<T: Sendable>(
        _ body: @Sendable (PostgresConnection) async throws(SharedQueueError) -> T
    ) async throws(SharedQueueError) -> T {
        await acquire()
        defer { releaseTurn() }
        let c: PostgresConnection
        if let open = state.withLock({ $0.connection }), !open.isClosed {
            c = open
        } else {
            c = try await queue.connect(on: group)
            if !migrated.done.withLock({ $0 }) {
                do {
                    try await queue.migrate(c)
                } catch {
                    try? await c.close()
                    throw error
                }
                migrated.done.withLock { $0 = true }
            }
            state.withLock { $0.connection = c }
        }
        do {
            return try await body(c)
        } catch {
            if case .unavailable = error {
                state.withLock { $0.connection = nil }
                try? await c.close()
            }
            throw error
        }
    }

    func close() async {
        await acquire()
        let c = state.withLock { s -> PostgresConnection? in
            defer { s.connection = nil }
            return s.connection
        }
        try? await c?.close()
        releaseTurn()
    }

    private func acquire() async {
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.busy {
                    s.waiters.append(k)
                    return false
                }
                s.busy = true
                return true
            }
            if now { k.resume() }
        }
    }

    private func releaseTurn() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.busy = false
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// Whether the node's connections have created the tables yet (once per process).
final class MigrationFlag: Sendable {
    let done = Mutex(false)
}

extension SharedQueueError: QueueWriteError {}

extension SharedQueueError: WholeBatchFailure {
    /// A database that is away fails a whole acceptance batch at once (each session answers
    /// `451 4.3.0`); a refusal (a duplicate queue ID) is isolated to its message by halving.
    public var failsEveryItem: Bool {
        if case .unavailable = self { return true }
        return false
    }
}
