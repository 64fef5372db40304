import Foundation
import Logging
import MailQueue
import Synchronization
import Testing

@testable import Delivery

/// A clock that moves only when a test says so; sleepers wake when it passes their deadline.
final class ManualClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by d: Duration) -> Instant { Instant(offset: offset + d) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    struct Sleeper {
        var id: Int
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var cancelled: Set<Int> = []
        var nextID = 0
    }

    let state = Mutex(State())
    let start: Date

    init(start: Date) { self.start = start }

    var now: Instant { state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }

    /// The wall-clock time this clock stands for (the scheduler's `now`).
    var date: Date {
        let c = state.withLock { $0.now.offset }.components
        return start.addingTimeInterval(Double(c.seconds) + Double(c.attoseconds) / 1e18)
    }

    /// How far ahead each sleeper waits, from the current time.
    var sleeping: [Duration] { state.withLock { s in s.sleepers.map { s.now.duration(to: $0.deadline) } } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let now = state.withLock { s -> Bool? in
                    if s.cancelled.contains(id) { return false }
                    if deadline <= s.now { return true }
                    s.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: c))
                    return nil
                }
                switch now {
                case true?: c.resume()
                case false?: c.resume(throwing: CancellationError())
                case nil: break
                }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let i = s.sleepers.firstIndex(where: { $0.id == id }) else {
                    s.cancelled.insert(id)
                    return nil
                }
                return s.sleepers.remove(at: i).continuation
            }
            c?.resume(throwing: CancellationError())
        }
    }

    func advance(by d: Duration) {
        let due = state.withLock { s -> [Sleeper] in
            s.now = s.now.advanced(by: d)
            let now = s.now
            let due = s.sleepers.filter { $0.deadline <= now }
            s.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for s in due { s.continuation.resume() }
    }
}

/// Free bytes a test sets by hand (the scheduler's reading of the mailbox filesystem).
final class FakeFreeSpace: Sendable {
    let bytes = Mutex<Int64>(0)
}

/// Polls `condition` in real time (the scheduler's work runs on threads) for up to five seconds.
func eventually(_ condition: () throws -> Bool) async throws -> Bool {
    for _ in 0..<500 {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try condition()
}

struct DeliverySchedulerTests {
    struct Fixture {
        let dir: String
        let store: SQLiteQueueStore
        let clock: ManualClock
        let scheduler: DeliveryScheduler

        /// `now` replaces the manual clock's date as the scheduler's wall clock (the loop still sleeps
        /// on the manual clock).
        init(
            trigger: DeliveryScheduler.TriggerLocation = .disabled, now: (@Sendable () -> Date)? = nil,
            mailboxFree: FakeFreeSpace? = nil
        ) throws {
            dir =
                FileManager.default.temporaryDirectory.appendingPathComponent("mailflow-sched-\(UUID().uuidString)")
                .path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            store = try SQLiteQueueStore(path: "\(dir)/queue.sqlite")
            let clock = ManualClock(start: Date(timeIntervalSince1970: 1_800_000_000))
            self.clock = clock
            scheduler = DeliveryScheduler(
                store: store, spool: try Spool(directory: "\(dir)/spool"),
                maildir: MaildirDelivery(root: "\(dir)/mailboxes", hostname: "mx.test"),
                retry: RetrySchedule(intervals: [60], expiry: 86_400, jitter: 0), logger: Logger(label: "t"),
                now: now ?? { clock.date }, random: SeededRandom(seed: 1), clock: clock, trigger: trigger,
                mailboxFreeSpace: { path in
                    mailboxFree.map { ($0.bytes.withLock { $0 }, 1 << 30) } ?? StorageGuard.statvfsFreeSpace(path)
                })
        }

        func insert(_ id: String) throws {
            try store.insert([
                NewMessage(
                    id: id, receivedAt: clock.date, sender: "s@x.test",
                    recipients: [
                        EnvelopeRecipient(
                            address: "alice@contoso.test", route: .local(domain: "contoso.test", mailbox: "alice"))
                    ], size: 10, clientAddress: "127.0.0.1", helo: "c", protocolName: "ESMTP",
                    body: .inline(Data("Subject: t\r\n\r\nhi\r\n".utf8)))
            ])
        }

        func state(_ id: String) throws -> MessageState? { try store.message(id)?.state }

        /// Whether the loop is asleep on the clock (waiting for a wake-up or its deadline).
        func asleep() async throws -> Bool { try await eventually { !clock.sleeping.isEmpty } }

        /// A file where the mailbox folder should be: delivery fails until it is removed.
        func blockMailbox(_ blocked: Bool) throws {
            let path = "\(dir)/mailboxes/contoso.test/alice"
            if blocked {
                try FileManager.default.createDirectory(
                    atPath: "\(dir)/mailboxes/contoso.test", withIntermediateDirectories: true)
                _ = FileManager.default.createFile(atPath: path, contents: Data())
            } else {
                try FileManager.default.removeItem(atPath: path)
            }
        }
    }

    @Test func aWakeUpNotTheClockStartsDelivery() async throws {
        let f = try Fixture()
        f.scheduler.start()
        #expect(try await f.asleep())
        #expect(f.clock.sleeping == [DeliveryScheduler.safetyPoll], "an empty queue sleeps only the safety poll")
        try f.insert("A")
        f.scheduler.wakeUp()
        // The clock never moves: only the wake-up can have started this delivery.
        #expect(try await eventually { try f.state("A") == .done })
        await f.scheduler.shutdown()
    }

    @Test func aDeferredMessageIsTriedAgainWhenTheClockReachesItsNextAttempt() async throws {
        let f = try Fixture()
        try f.blockMailbox(true)
        try f.insert("A")
        f.scheduler.start()
        #expect(try await eventually { try f.store.message("A")?.attempts == 1 })
        // Deferred with the schedule's 60 s: the loop sleeps until then (not the 60 s poll by chance:
        // after 30 s the deadline is 30 s away).
        #expect(try await eventually { f.clock.sleeping == [.seconds(60)] })
        try f.blockMailbox(false)
        f.clock.advance(by: .seconds(30))
        #expect(try await eventually { f.clock.sleeping == [.seconds(30)] })
        #expect(try f.state("A") == .queued)
        f.clock.advance(by: .seconds(30))
        #expect(try await eventually { try f.state("A") == .done })
        await f.scheduler.shutdown()
    }

    /// A delivery in flight still carries the past next attempt it was taken at. Counted, it made
    /// every later message look due, so the loop slept the 60 s safety poll until the slow delivery
    /// ended: CI saw a throttling remote's queue go untried for 15-60 s while four deliveries waited
    /// for a session.
    @Test func aDeliveryInFlightDoesNotHoldBackTheNextDueMessage() async throws {
        let f = try Fixture()
        try f.insert("SLOW")
        try f.insert("LATER")
        try f.store.recordAttempt(
            messageID: "LATER", outcomes: [:], nextAttempt: f.clock.date.addingTimeInterval(30), now: f.clock.date)
        _ = f.scheduler.state.withLock { $0.inFlight.insert("SLOW") }
        let (taken, wait) = await f.scheduler.dueWork()
        #expect(taken.isEmpty, "SLOW is in flight, LATER is not due")
        #expect(wait == .seconds(30), "sleeps until LATER falls due, not the safety poll")
        _ = f.scheduler.state.withLock { $0.inFlight.remove("SLOW") }
        let again = await f.scheduler.dueWork()
        #expect(again.taken == ["SLOW"])
        #expect(again.wait == .seconds(30))
    }

    /// A message that falls due between the loop's query and its reading of the clock (the
    /// monotonic timer and the wall clock drift apart by microseconds) was slept on for the safety
    /// poll, not taken and not waited for: in CI a whole throttled queue sat overdue for 15-60 s.
    @Test func aMessageFallingDueJustAfterTheQueryIsNotLeftForTheSafetyPoll() async throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let reads = Mutex(0)
        // The first reading (the query's time) is `start`; every later one is a second on.
        let f = try Fixture(now: {
            reads.withLock { n in
                n += 1
                return n == 1 ? start : start.addingTimeInterval(1)
            }
        })
        try f.insert("A")
        try f.store.recordAttempt(
            messageID: "A", outcomes: [:], nextAttempt: start.addingTimeInterval(0.5), now: start)
        reads.withLock { $0 = 0 }
        let (taken, wait) = await f.scheduler.dueWork()
        #expect(taken.isEmpty, "not due at the query's time")
        #expect(wait == .milliseconds(1), "due by now: the next pass comes at once")
    }

    /// The loop's read of due work can be older than an attempt that just finished: a message it
    /// takes that is no longer due is left for its next attempt, not tried twice in a row.
    @Test func theLoopDoesNotRetryAMessageThatIsNoLongerDue() async throws {
        let f = try Fixture()
        try f.insert("A")
        try f.store.recordAttempt(
            messageID: "A", outcomes: [:], nextAttempt: f.clock.date.addingTimeInterval(30), now: f.clock.date)
        await f.scheduler.process("A", onlyIfDue: true)
        #expect(try f.store.message("A")?.attempts == 1, "skipped: due in 30 s")
        #expect(try f.state("A") == .queued)
        await f.scheduler.process("A")
        #expect(try f.state("A") == .done, "an explicit attempt still runs")
    }

    /// Mailbox deliveries deferred for a full filesystem come back when space does, not at their next
    /// retry: the loop reads the free space every 2 s while they wait.
    @Test func mailboxDeliveriesWaitingForSpaceAreRetriedWhenItComesBack() async throws {
        let free = FakeFreeSpace()
        let f = try Fixture(mailboxFree: free)
        try f.insert("A")
        try f.store.recordAttempt(
            messageID: "A", outcomes: [0: .deferred(reason: "452 4.3.1 Mailbox delivery failed: full")],
            nextAttempt: f.clock.date.addingTimeInterval(600), now: f.clock.date)
        f.scheduler.noteMailboxFull()
        var (taken, wait) = await f.scheduler.dueWork()
        #expect(taken.isEmpty)
        #expect(wait == .seconds(2), "polls the free space, not the 10-minute retry")
        free.bytes.withLock { $0 = 512 << 10 }  // half a megabyte: not enough to call it back
        (taken, wait) = await f.scheduler.dueWork()
        #expect(taken.isEmpty)
        free.bytes.withLock { $0 = 8 << 20 }
        (taken, wait) = await f.scheduler.dueWork()
        #expect(taken == ["A"], "due again at once")
        #expect(wait == DeliveryScheduler.safetyPoll, "nothing else waits: no more polling")
    }

    /// After the wall clock is stepped back, deferred messages carry next attempts later than any
    /// the retry schedule sets; the loop brings them back within one longest interval (60 s here).
    @Test func nextAttemptsLeftLateByAClockStepBackAreBroughtBack() async throws {
        let f = try Fixture()
        for id in ["A", "B"] {
            try f.insert(id)
            try f.store.recordAttempt(
                messageID: id, outcomes: [:], nextAttempt: f.clock.date.addingTimeInterval(7200 + 60),
                now: f.clock.date)
        }
        try f.insert("C")
        try f.store.recordAttempt(
            messageID: "C", outcomes: [:], nextAttempt: f.clock.date.addingTimeInterval(45), now: f.clock.date)
        let (taken, wait) = await f.scheduler.dueWork()
        #expect(taken.isEmpty)
        #expect(wait == .seconds(45), "C is still first")
        let late = try ["A", "B"].map { try #require(f.store.message($0)?.nextAttempt) }
        #expect(late.allSatisfy { abs($0.timeIntervalSince(f.clock.date) - 60) < 0.001 }, "\(late)")
        let c = try #require(f.store.message("C")?.nextAttempt)
        #expect(abs(c.timeIntervalSince(f.clock.date) - 45) < 0.001, "within the schedule: left alone")
    }

    @Test func aPokeThroughTheTriggerFromAnotherProcessWakesTheScheduler() async throws {
        let f = try Fixture(trigger: .besideQueue)
        let trigger = DeliveryTrigger.path(dataDirectory: f.dir)
        #expect(!DeliveryTrigger.poke(path: trigger), "nobody listens yet")
        f.scheduler.start()
        #expect(try await eventually { DeliveryTrigger.poke(path: trigger) })
        #expect(try await f.asleep())
        try f.insert("A")
        #expect(DeliveryTrigger.poke(path: trigger))
        #expect(try await eventually { try f.state("A") == .done })
        await f.scheduler.shutdown()
        #expect(!DeliveryTrigger.poke(path: trigger), "a stopped server is not woken")
    }

    @Test func shutdownWaitsForTheLoopAndRefusesNothingInFlight() async throws {
        let f = try Fixture()
        for i in 0..<20 { try f.insert(String(format: "M%015d", i)) }
        f.scheduler.start()
        await f.scheduler.shutdown()
        // Whatever was taken finished and was recorded; the rest is still queued, nothing lost.
        let states = try (0..<20).map { try f.state(String(format: "M%015d", $0)) }
        #expect(states.allSatisfy { $0 == .done || $0 == .queued })
        #expect(try f.store.message("M000000000000000")?.recipients[0].status != nil)
    }
}
