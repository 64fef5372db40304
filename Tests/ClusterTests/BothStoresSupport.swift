import Cluster
import Foundation
import Logging
import MailQueue
import NIOPosix
import SMTPCore
import Synchronization
import Testing

/// The two queue stores (issue 16: one queue-store interface, two implementations), for tests
/// parameterised over both with `@Test(arguments: QueueStoreKind.allCases)`. Each case makes a
/// fresh, empty queue: a `SQLiteQueueStore` in a temporary folder, or a database of its own on the
/// test process's throw-away PostgreSQL (`ThrowawayPostgres`).
enum QueueStoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    func make() async throws -> QueueUnderTest {
        switch self {
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mf-both-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let store = try SQLiteQueueStore(path: dir.appendingPathComponent("queue.sqlite").path)
            return QueueUnderTest(
                kind: self, leased: SQLiteLeasedQueue(store), control: LocalQueueControl(store),
                committer: { GroupCommitter(store: store) },
                prune: { cutoff in
                    var total = (traceEvents: 0, messages: 0)
                    while true {
                        let r = try store.prune(before: cutoff)
                        total.traceEvents += r.traceEvents
                        total.messages += r.messages
                        if r.total == 0 { return total }
                    }
                }, stop: { try? FileManager.default.removeItem(at: dir) })
        case .postgres:
            let db = try await ThrowawayPostgres.freshDatabase()
            let node = SharedQueueNodeTests.node("node-a", database: db)
            let control = SharedQueueControl(
                queue: SharedQueue(database: db, timeout: .seconds(5), logger: SharedQueueTests.logger))
            // The node's data folder still holds a SQLite file: the committer's filesystem watch.
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mf-both-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let local = try SQLiteQueueStore(path: dir.appendingPathComponent("queue.sqlite").path)
            return QueueUnderTest(
                kind: self, leased: node, control: control,
                committer: {
                    GroupCommitter(storage: local.storage) { messages, events in
                        try node.acceptBlocking(messages, events: events)
                    }
                },
                prune: { cutoff in await node.prune(before: cutoff) },
                stop: {
                    await node.stop()
                    try? FileManager.default.removeItem(at: dir)
                })
        }
    }
}

/// One queue, seen the two ways the server uses it: as the delivery side takes work from it
/// (`LeasedQueue`: accept, claim, record, release) and as an administrator sees it
/// (`QueueControl`: list, trace, hold, release, retry, bounce, delete, shape, counts).
struct QueueUnderTest: Sendable {
    let kind: QueueStoreKind
    let leased: any LeasedQueue
    let control: any QueueControl
    /// A group committer writing its batches into this queue, as `mailflow serve` makes one.
    let committer: @Sendable () -> GroupCommitter
    /// Trace retention down to `cutoff` (`trace.retention`): trace events and finished messages
    /// removed, in batches until none is left.
    let prune: @Sendable (Date) async throws -> (traceEvents: Int, messages: Int)
    let stop: @Sendable () async -> Void

    /// Accepts, then claims and records `outcomes` for each message in turn.
    func accept(_ messages: [NewMessage]) async throws { try await leased.accept(messages) }

    func claimIDs(limit: Int = 100) async throws -> [String] { try await leased.claim(limit: limit).map(\.id) }

    func record(
        _ id: String, _ outcomes: [Int: RecipientOutcome], next: Date? = nil, notifications: [NewMessage] = [],
        abruptClose: Bool = false, delayNoticeSent: Bool = false
    ) async throws -> AttemptRecord {
        try await leased.record(
            SQLiteQueueStore.Attempt(
                messageID: id, outcomes: outcomes, nextAttempt: next, now: Date(), notifications: notifications,
                abruptClose: abruptClose, delayNoticeSent: delayNoticeSent))
    }

    func stored(_ id: String) async throws -> StoredMessage { try #require(try await control.message(id)) }

    func adminDetails(_ id: String) async throws -> [String] {
        try await control.traceEvents(queueID: id).filter { $0.kind == .admin }.compactMap(\.detail)
    }
}

/// `LeasedQueue` over the SQLite store, as the delivery scheduler works it in single-node mode
/// (`DeliveryScheduler.dueWork`): due messages through the `next_attempt` index, earliest first,
/// those in flight (claimed, not yet recorded or released) left out of further claims and of the
/// next due time; attempts through `recordAttempts`. SQLite has no leases: one node owns the file,
/// so a record is never refused.
final class SQLiteLeasedQueue: LeasedQueue {
    let store: SQLiteQueueStore
    let inFlight = Mutex<Set<String>>([])

    init(_ store: SQLiteQueueStore) { self.store = store }

    var node: String { "local" }

    func accept(_ messages: [NewMessage]) async throws { try store.insert(messages) }

    func claim(limit: Int) async throws -> [StoredMessage] {
        let busy = inFlight.withLock { $0 }
        let due = try store.dueMessageIDs(now: Date(), limit: limit + busy.count).filter { !busy.contains($0) }
        let taken = Array(due.prefix(limit))
        inFlight.withLock { $0.formUnion(taken) }
        return try taken.map { try #require(try store.message($0)) }
    }

    func secondsUntilNextClaimable() async throws -> TimeInterval? {
        let busy = inFlight.withLock { $0 }
        return try store.nextDueTime(excluding: busy).map { max(0, $0.timeIntervalSinceNow) }
    }

    func record(_ attempt: SQLiteQueueStore.Attempt) async throws -> AttemptRecord {
        defer { _ = inFlight.withLock { $0.remove(attempt.messageID) } }
        _ = try store.recordAttempts([attempt])
        let pending = try store.message(attempt.messageID)?.recipients.contains { $0.status == .pending } ?? false
        return .recorded(finished: !pending)
    }

    func release(_ id: String) async { _ = inFlight.withLock { $0.remove(id) } }
}

/// Messages for the both-stores tests: `n` names it (`B000000000000<n>`), received `age` seconds
/// ago, to relayed recipients at example.net unless `to` says otherwise (`local:domain/box` routes
/// a recipient to a mailbox).
func bothStoresMessage(
    _ n: Int, age: TimeInterval = 0, to: [String] = ["r0@example.net"], tenant: String? = nil,
    sender: String = "a@example.org", body: String? = nil
) -> NewMessage {
    let recipients = to.map { spec -> EnvelopeRecipient in
        if spec.hasPrefix("local:"), let route = Route(stored: spec) {
            let box = spec.split(separator: "/").last.map(String.init) ?? ""
            let domain = String(spec.dropFirst("local:".count).split(separator: "/")[0])
            return EnvelopeRecipient(address: "\(box)@\(domain)", route: route)
        }
        return EnvelopeRecipient(
            address: spec, route: .relay(domain: String(spec.split(separator: "@")[1])),
            notify: DSNNotify(failure: true), originalRecipient: nil)
    }
    let text = body ?? "Subject: both \(n)\r\n\r\nbody \(n)\r\n"
    return NewMessage(
        id: String(format: "B%015d", n), receivedAt: Date().addingTimeInterval(-age), sender: sender,
        recipients: recipients, size: text.utf8.count, clientAddress: "192.0.2.\(n % 250)", helo: "client.test",
        protocolName: "ESMTP", tenant: tenant, messageID: "<\(n)@client.test>", subject: "both \(n)",
        body: .inline(Data(text.utf8)))
}
