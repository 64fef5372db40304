import Foundation
import Logging
import MailQueue
import Synchronization
import Testing

@testable import Delivery

/// A shared queue in memory, for what the scheduler does with one: claims, records, and the faults
/// a real one has (a lease lost before the record, a database away). The PostgreSQL side is tested
/// against a real server in ClusterTests and tests/e2e/test_shared_queue.py.
final class FakeLeasedQueue: LeasedQueue {
    struct State {
        var due: [StoredMessage] = []
        var recorded: [SQLiteQueueStore.Attempt] = []
        var released: [String] = []
        var loseLeases = false
        var unavailable = false
        /// The next-claimable query fails (a connection broken just after a claim).
        var nextClaimableFails = false
        var nextClaimable: TimeInterval?
        var claimLimits: [Int] = []
    }

    struct Unavailable: Error {}

    let node = "node-a"
    let state = Mutex(State())

    func accept(_ messages: [NewMessage]) async throws {}

    func claim(limit: Int) async throws -> [StoredMessage] {
        try state.withLock { s in
            if s.unavailable { throw Unavailable() }
            s.claimLimits.append(limit)
            let out = Array(s.due.prefix(limit))
            s.due.removeFirst(out.count)
            return out
        }
    }

    func secondsUntilNextClaimable() async throws -> TimeInterval? {
        try state.withLock { s in
            if s.unavailable || s.nextClaimableFails { throw Unavailable() }
            return s.nextClaimable
        }
    }

    func record(_ attempt: SQLiteQueueStore.Attempt) async throws -> AttemptRecord {
        state.withLock { s in
            s.recorded.append(attempt)
            return s.loseLeases ? .leaseLost : .recorded(finished: true)
        }
    }

    func release(_ id: String) async { state.withLock { $0.released.append(id) } }
}

struct LeasedDeliveryTests {
    struct Fixture {
        let dir: String
        let store: SQLiteQueueStore
        let queue = FakeLeasedQueue()
        let scheduler: DeliveryScheduler
        let now = Date(timeIntervalSince1970: 1_800_000_000)

        init() throws {
            dir =
                FileManager.default.temporaryDirectory.appendingPathComponent("mailflow-leased-\(UUID().uuidString)")
                .path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            store = try SQLiteQueueStore(path: "\(dir)/queue.sqlite")
            let now = self.now
            scheduler = DeliveryScheduler(
                store: store, spool: try Spool(directory: "\(dir)/spool"),
                maildir: MaildirDelivery(root: "\(dir)/mailboxes", hostname: "mx.test"),
                retry: RetrySchedule(intervals: [60], expiry: 86_400, jitter: 0), concurrency: 2,
                logger: Logger(label: "t"), now: { now }, random: SeededRandom(seed: 1), trigger: .disabled,
                leased: queue)
        }

        /// A claimable message for alice's mailbox, as the shared queue hands it out.
        func message(_ id: String) -> StoredMessage {
            StoredMessage(
                id: id, receivedAt: now, sender: "s@x.test", size: 10, bodyType: nil, smtpUTF8: false, ret: nil,
                envelopeID: nil, clientAddress: "192.0.2.7", helo: "c", protocolName: "ESMTP", tls: nil,
                tenant: "contoso", messageID: nil, addMessageID: false, subject: "t", stampLength: 0, state: .queued,
                nextAttempt: now, attempts: 0,
                recipients: [
                    StoredRecipient(
                        index: 0,
                        recipient: EnvelopeRecipient(
                            address: "alice@contoso.test", route: .local(domain: "contoso.test", mailbox: "alice")),
                        status: .pending, attempts: 0, lastReply: nil)
                ], body: .inline(Data("Subject: t\r\n\r\nhi\r\n".utf8)))
        }

        func mailboxFiles() -> [String] {
            (try? FileManager.default.contentsOfDirectory(atPath: "\(dir)/mailboxes/contoso.test/alice/new")) ?? []
        }
    }

    /// Claimed work is delivered from the claim (the local store holds no such message) and recorded
    /// in the shared queue, whose trace every node's service health reads: none is kept locally.
    @Test func claimedWorkIsDeliveredAndRecordedInTheSharedQueue() async throws {
        let f = try Fixture()
        f.queue.state.withLock { $0.due = [f.message("A"), f.message("B"), f.message("C")] }
        let (taken, _) = await f.scheduler.dueWork()
        #expect(taken == ["A", "B"], "claims up to the concurrency")
        #expect(f.queue.state.withLock { $0.claimLimits } == [2])
        for id in taken { await f.scheduler.process(id, onlyIfDue: true) }
        let recorded = f.queue.state.withLock { $0.recorded }
        #expect(recorded.map(\.messageID) == ["A", "B"])
        #expect(recorded.allSatisfy { if case .delivered = $0.outcomes[0] { true } else { false } })
        #expect(f.mailboxFiles().count == 2)
        #expect(try f.store.message("A") == nil, "the shared queue is the queue")
        #expect(try f.store.healthTrace(after: 0).isEmpty, "the shared queue's trace is the only one")
        #expect(f.scheduler.leasesLost == 0)
    }

    /// A record refused because the lease ran out meanwhile is counted: the message may be
    /// delivered again by the node that took it over.
    @Test func aRecordRefusedForALostLeaseIsCounted() async throws {
        let f = try Fixture()
        f.queue.state.withLock {
            $0.due = [f.message("A")]
            $0.loseLeases = true
        }
        let (taken, _) = await f.scheduler.dueWork()
        for id in taken { await f.scheduler.process(id, onlyIfDue: true) }
        #expect(f.scheduler.leasesLost == 1)
        #expect(f.mailboxFiles().count == 1)
    }

    /// A claim that succeeded is delivered even when the query after it fails: its messages are
    /// taken, not left leased (and renewed) with nobody delivering them.
    @Test func aClaimIsDeliveredWhenTheQueryAfterItFails() async throws {
        let f = try Fixture()
        f.queue.state.withLock {
            $0.due = [f.message("A")]
            $0.nextClaimableFails = true
        }
        let (taken, wait) = await f.scheduler.dueWork()
        #expect(taken == ["A"])
        #expect(wait == .seconds(1))
        for id in taken { await f.scheduler.process(id, onlyIfDue: true) }
        #expect(f.queue.state.withLock { $0.recorded.map(\.messageID) } == ["A"])
    }

    /// The loop sleeps until the shared queue says the next message is claimable, at most
    /// `sharedPoll`; due work another node was claiming at that moment is looked at again soon; a
    /// database away is retried after a second.
    @Test func theLoopSleepsUntilTheNextClaimableMessage() async throws {
        let f = try Fixture()
        f.queue.state.withLock { $0.nextClaimable = 0.75 }
        var (taken, wait) = await f.scheduler.dueWork()
        #expect(taken.isEmpty)
        #expect(wait == .milliseconds(750))
        f.queue.state.withLock { $0.nextClaimable = nil }
        (_, wait) = await f.scheduler.dueWork()
        #expect(wait == DeliveryScheduler.sharedPoll)
        f.queue.state.withLock { $0.nextClaimable = 0 }
        (_, wait) = await f.scheduler.dueWork()
        #expect(wait == .milliseconds(100), "due, not claimed: another node had it locked")
        f.queue.state.withLock { $0.unavailable = true }
        (taken, wait) = await f.scheduler.dueWork()
        #expect(taken.isEmpty)
        #expect(wait == .seconds(1))
    }
}
