import Foundation
import Logging
import MailQueue
import NIOPosix
import ServiceHealth
import Synchronization

/// Where a tenant's mail lands: its resource forest and that forest's region.
public struct TenantPlacement: Sendable {
    public var forest: String
    public var region: String

    public init(forest: String, region: String) {
        self.forest = forest
        self.region = region
    }
}

/// Turns trace rows into the signals service health reads. The same mapping serves the live
/// monitor and `mailflow health export`, so a replay of an export sees what the server saw.
///
/// - `received`: an inbound `250` for the message's tenant and client.
/// - `throttled`: an inbound refusal (admission control's reply) for its forest, tenant and client.
/// - `delivered`, `deferred`, `failed`: one outbound outcome per recipient and attempt, with the
///   remote's reply or connection error, the recipient domain as destination (`mailbox` for local
///   delivery) and the time since acceptance as latency.
public enum HealthTraceMapping {
    public static func signal(
        _ row: SQLiteQueueStore.HealthTraceRow, placement: (String) -> TenantPlacement
    ) -> HealthSignal? {
        switch row.kind {
        case .received:
            let tenant = row.messageTenant ?? ""
            let p = placement(tenant)
            return HealthSignal(
                time: row.time,
                kind: .smtp(
                    SMTPOutcome(
                        direction: .inbound, forest: p.forest, region: p.region, tenant: tenant,
                        clientIP: row.messageClient, reply: "250 2.0.0 Ok")))
        case .throttled:
            let tenant = row.tenant ?? ""
            let p = placement(tenant)
            return HealthSignal(
                time: row.time,
                kind: .smtp(
                    SMTPOutcome(
                        direction: .inbound, forest: row.forest ?? p.forest, region: row.region ?? p.region,
                        tenant: tenant, clientIP: row.clientAddress, reply: row.reply ?? "421 4.7.0 Refused")))
        case .delivered, .deferred, .failed:
            let tenant = row.messageTenant ?? ""
            let p = placement(tenant)
            let detail = row.detail ?? ""
            let local = detail.hasPrefix("250 2.0.0 Delivered to maildir") || detail.contains("Mailbox delivery")
            let domain = row.recipient.flatMap { $0.split(separator: "@").last.map { $0.lowercased() } }
            return HealthSignal(
                time: row.time,
                kind: .smtp(
                    SMTPOutcome(
                        direction: .outbound, forest: p.forest, region: p.region, tenant: tenant,
                        destination: local ? "mailbox" : (domain ?? "unknown"), reply: detail,
                        latencyMilliseconds: row.messageReceivedAt.map { row.time.timeIntervalSince($0) * 1000 })))
        default:
            return nil
        }
    }

    public static func signal(_ r: SQLiteQueueStore.StoredProblemReport) -> HealthSignal {
        HealthSignal(
            time: r.time,
            kind: .report(ProblemReport(tenant: r.tenant, region: r.region, text: r.text, errorText: r.error))
        )
    }
}

/// The live service-health monitor: every few seconds it reads the trace stream and new problem
/// reports from its `HealthStore`, feeds them to a `HealthMonitor` in time order, applies admin
/// actions left by the CLI (or by other nodes), stores changed issues and sends notifications.
///
/// On start it reloads stored issues and replays the last `warmUp` of the trace into a scratch
/// monitor, so baselines are back at once; that replay opens nothing.
///
/// **In a cluster** (`leadership` given, the store the shared queue's database) every node runs a
/// `HealthService` but only the **leader** runs the monitor, over every node's trace: it takes the
/// leadership when nobody holds it (or its holder's lease ran out), warms up, and goes on reading
/// where the previous leader stopped (the positions it saved at each pass), so an issue is opened,
/// stored and notified once for the cluster. The others show the stored issues (read at each pass)
/// and queue their admins' actions for the leader, waiting for it to apply them.
public final class HealthService: Sendable {
    struct Cursor: Sendable {
        var trace: Int64 = 0
        var reports: Int64 = 0
    }

    struct Role: Sendable {
        /// This node runs the monitor (always, without `leadership`).
        var leading = false
        /// The leadership's term the monitor was warmed up under.
        var term: Int64?
        var warmUp: TimeInterval = HealthService.defaultWarmUp
        /// The stored issues, as a node that does not lead shows them.
        var stored: [HealthIssue] = []
    }

    let store: any HealthStore
    let leadership: (any HealthLeadership)?
    let placement: @Sendable (String) -> TenantPlacement
    let monitor: Mutex<HealthMonitor>
    let cursor = Mutex(Cursor())
    let role = Mutex(Role())
    /// What the last pass changed or applied but could not store: stored, finished and notified
    /// at the next pass (a database that did not answer loses no notification, applies no action
    /// twice).
    let unsaved = Mutex(Unsaved())

    struct Unsaved: Sendable {
        var changes: [HealthChange] = []
        var actions: [(id: Int64, applied: Bool)] = []
    }
    let notifier: HealthNotifier?
    let logger: Logger
    let interval: Duration
    /// Trace events are written by group commit a little after their time: buckets close this late.
    let lag: TimeInterval = 5
    let task = Mutex<Task<Void, Never>?>(nil)
    /// The blocking pool the rounds run on (`start`).
    let pool = Mutex<NIOThreadPool?>(nil)

    public init(
        store: any HealthStore, leadership: (any HealthLeadership)? = nil,
        placement: @escaping @Sendable (String) -> TenantPlacement, notifier: HealthNotifier?, logger: Logger,
        interval: Duration = .seconds(5), policy: HealthDetectionPolicy = HealthDetectionPolicy()
    ) {
        self.store = store
        self.leadership = leadership
        self.placement = placement
        self.notifier = notifier
        self.logger = logger
        self.interval = interval
        self.monitor = Mutex(HealthMonitor(policy: policy))
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    /// Stored issues, decoded.
    public static func storedIssues(_ store: any HealthStore) throws -> [HealthIssue] {
        try store.healthIssueDocuments().compactMap { try? JSONDecoder().decode(HealthIssue.self, from: Data($0.utf8)) }
            .sorted { (Int($0.id.dropFirst(2)) ?? 0) < (Int($1.id.dropFirst(2)) ?? 0) }
    }

    /// Reloads issues and warms the baselines up from the trace of the last `warmUp`.
    /// A week of trace: weekly traffic patterns are in the baselines from the start.
    public static let defaultWarmUp: TimeInterval = 7 * 86400

    /// Gets ready to run. Alone: reloads the issues and warms up (`warm`). In a cluster: remembers
    /// `warmUp` for when this node takes the leadership, and reads the stored issues.
    public func prepare(now: Date = Date(), warmUp: TimeInterval = defaultWarmUp, maximumRows: Int = 2_000_000) throws {
        guard leadership != nil else {
            try warm(now: now, warmUp: warmUp, maximumRows: maximumRows, resume: nil)
            return
        }
        let stored = try Self.storedIssues(store)
        role.withLock {
            $0.warmUp = warmUp
            $0.stored = stored
        }
    }

    /// Reloads the stored issues and replays the trace from `now - warmUp` into a scratch monitor;
    /// the live monitor then reads from `resume` (where a previous leader stopped), or from the end
    /// when there is none or it is older than the warm-up (history is not replayed as live).
    /// `keepLeading` runs between batches: a warm-up that outlasts the lease renews it, and stops
    /// if it was lost.
    func warm(
        now: Date, warmUp: TimeInterval, maximumRows: Int = 2_000_000, resume: HealthLead?,
        keepLeading: () throws -> Void = {}
    ) throws {
        let existing = try Self.storedIssues(store)
        var warm = HealthMonitor(policy: monitor.withLock { $0.policy })
        let start = try store.healthTraceStart(atOrAfter: now.addingTimeInterval(-warmUp))
        var position = start
        var rows = 0
        while rows < maximumRows {
            let batch = try store.healthTrace(from: position, limit: 50_000)
            for r in batch.rows { if let s = HealthTraceMapping.signal(r, placement: placement) { warm.ingest(s) } }
            position = batch.next
            rows += batch.rows.count
            if !batch.more { break }
            try keepLeading()
        }
        let next = (existing.compactMap { Int($0.id.dropFirst(2)) }.max() ?? 0) + 1
        monitor.withLock { $0 = HealthMonitor(existing: existing, nextNumber: next, learntFrom: warm) }
        let reports = try resume?.reports ?? store.problemReportsEnd()
        let live = resume?.trace.flatMap { $0 >= start ? $0 : nil } ?? position
        cursor.withLock { $0 = Cursor(trace: live, reports: reports) }
        unsaved.withLock { $0 = Unsaved() }
        logger.info(
            "service health ready",
            metadata: ["issues": "\(existing.count)", "warm_up_events": "\(rows)"])
    }

    /// Runs a round every `interval` until `stop()`. A round reads the store, which blocks, so it
    /// runs on `threadPool`, never on the cooperative pool the async code shares.
    public func start(threadPool: NIOThreadPool) {
        pool.withLock { $0 = threadPool }
        let t = Task.detached { [self] in
            while !Task.isCancelled {
                do {
                    try await threadPool.runIfActive { try self.round(now: Date()) }
                } catch {
                    self.logger.error("service health pass failed: \(error)")
                }
                try? await Task.sleep(for: self.interval)
            }
        }
        task.withLock { $0 = t }
    }

    /// Stops the rounds; a leader gives the leadership up so that another node takes it at once.
    public func stop() async {
        let t = task.withLock { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        t?.cancel()
        await t?.value
        guard let leadership, let pool = pool.withLock({ $0 }), role.withLock({ $0.leading }) else { return }
        try? await pool.runIfActive { leadership.resign() }
        logger.notice("service health: leadership given up")
    }

    /// Whether this node runs the monitor now.
    public var leads: Bool { leadership == nil || role.withLock { $0.leading } }

    /// One round: alone, a pass; in a cluster, the leadership taken or renewed first, and a pass
    /// only as the leader (then its positions saved); otherwise the stored issues read.
    public func round(now: Date) throws {
        guard let leadership else { return try pass(now: now) }
        guard let lead = try leadership.lead() else {
            let was = role.withLock { r -> Bool in
                defer { r.leading = false }
                return r.leading
            }
            if was { logger.warning("service health: another node leads now; this one only shows its issues") }
            let stored = try Self.storedIssues(store)
            role.withLock { $0.stored = stored }
            return
        }
        let (was, term, warmUp) = role.withLock { ($0.leading, $0.term, $0.warmUp) }
        if !was || term != lead.term {
            // Taken, or taken back after another node led meanwhile: start from the stored state.
            role.withLock { $0.leading = false }
            try warm(now: now, warmUp: warmUp, resume: lead) {
                guard try leadership.lead()?.term == lead.term else { throw HealthLeadershipLost() }
            }
            role.withLock {
                $0.leading = true
                $0.term = lead.term
            }
            logger.notice(
                "service health: this node leads (runs the monitor for the cluster)",
                metadata: ["resumed": "\(lead.trace != nil)", "term": "\(lead.term)"])
        }
        try pass(now: now)
        let c = cursor.withLock { $0 }
        try leadership.saveProgress(trace: c.trace, reports: c.reports)
    }

    /// One pass of the monitor: new trace events and reports in time order, pending admin actions,
    /// the clock.
    public func pass(now: Date) throws {
        let c = cursor.withLock { $0 }
        var signals: [(Date, Int, HealthSignal)] = []
        var position = c.trace
        var n = 0
        while true {
            let batch = try store.healthTrace(from: position, limit: 50_000)
            for r in batch.rows {
                if let s = HealthTraceMapping.signal(r, placement: placement) { signals.append((s.time, n, s)) }
                n += 1
            }
            position = batch.next
            if !batch.more { break }
        }
        let reports = try store.problemReports(from: c.reports, limit: 10_000)
        for (i, r) in reports.reports.enumerated() {
            signals.append((r.time, 1_000_000_000 + i, HealthTraceMapping.signal(r)))
        }
        signals.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        let held = unsaved.withLock { $0 }
        let finished = Set(held.actions.map(\.id))
        let actions = try store.pendingHealthActions().filter { !finished.contains($0.id) }
        var changes: [HealthChange] = held.changes
        var applied: [(id: Int64, applied: Bool)] = held.actions
        monitor.withLock { m in
            // A signal older than the bucket being filled still counts, in that bucket.
            for (_, _, s) in signals {
                var s = s
                if let clock = m.clock, s.time < clock { s.time = clock }
                changes += m.ingest(s)
            }
            changes += m.advance(to: now.addingTimeInterval(-lag))
            for a in actions {
                do {
                    let issue = try m.apply(Self.action(a), to: a.issue, by: a.actor, at: now)
                    changes.append(HealthChange(kind: .statusChanged, issue: issue))
                    applied.append((a.id, true))
                } catch {
                    logger.warning("health action refused", metadata: ["issue": "\(a.issue)", "reason": "\(error)"])
                    applied.append((a.id, false))
                }
            }
        }
        cursor.withLock {
            $0.trace = position
            $0.reports = reports.next
        }
        do {
            try persist(changes)
            for (id, ok) in applied { try store.finishHealthAction(id, applied: ok) }
            unsaved.withLock { $0 = Unsaved() }
        } catch {
            unsaved.withLock { $0 = Unsaved(changes: changes, actions: applied) }
            throw error
        }
        for change in changes where [.opened, .classificationChanged, .restored].contains(change.kind) {
            logger.notice(
                "service health: \(change.kind.rawValue)",
                metadata: [
                    "issue": "\(change.issue.id)", "classification": "\(change.issue.classification.rawValue)",
                    "status": "\(change.issue.status.rawValue)",
                ])
            notifier?.send(change)
        }
    }

    static func action(_ a: SQLiteQueueStore.HealthAction) throws(HealthActionError) -> HealthAdminAction {
        switch a.kind {
        case "post": return .post(a.value)
        case "review": return .postIncidentReview(a.value)
        case "status":
            guard let s = IssueStatus(rawValue: a.value) else { throw .notApplicable("unknown status \(a.value)") }
            return .status(s)
        default: throw .notApplicable("unknown action \(a.kind)")
        }
    }

    func persist(_ changes: [HealthChange]) throws {
        var latest: [String: HealthIssue] = [:]
        for c in changes { latest[c.issue.id] = c.issue }
        for issue in latest.values {
            let json = String(decoding: try Self.encoder.encode(issue), as: UTF8.self)
            try store.saveHealthIssue(
                id: issue.id, number: Int(issue.id.dropFirst(2)) ?? 0, resolved: issue.isResolved,
                lastModified: issue.lastModifiedDateTime, document: json)
        }
    }

    // MARK: reads and actions for the admin listener

    /// Every issue: the monitor's, or, on a node that does not lead, the stored ones as of the last
    /// round.
    public var issues: [HealthIssue] {
        leads ? monitor.withLock { $0.issues } : role.withLock { $0.stored }
    }

    /// An admin's action, applied at once and stored; on a node that does not lead, queued for the
    /// leader and waited for (blocks up to `HealthActionQueue.wait`).
    public func apply(_ action: HealthAdminAction, to id: String, by actor: String) throws -> HealthIssue {
        guard leads else {
            let issue = try HealthActionQueue(store: store).apply(
                action, to: id, by: actor, issues: Self.storedIssues(store))
            role.withLock { r in
                if let i = r.stored.firstIndex(where: { $0.id == issue.id }) { r.stored[i] = issue }
            }
            return issue
        }
        let issue = try monitor.withLock { m throws(HealthActionError) in
            try m.apply(action, to: id, by: actor, at: Date())
        }
        try persist([HealthChange(kind: .statusChanged, issue: issue)])
        return issue
    }

    /// A tenant admin's problem report; the next pass (the leader's, in a cluster) reads it.
    public func report(_ r: ProblemReport, by reporter: String) throws {
        try store.addProblemReport(
            time: Date(), tenant: r.tenant, region: r.region, text: r.text, error: r.errorText, reporter: reporter)
    }
}

/// The leadership ran out while this node was warming up (another node may lead now).
struct HealthLeadershipLost: Error, CustomStringConvertible {
    var description: String { "the service-health leadership was lost during the warm-up" }
}
