import Foundation
import MailQueue
import NIOCore
import NIOPosix

/// The scheduling loop: which messages are due, how long to sleep, what wakes it, and the
/// corrections it makes to the queue's times (a wall clock stepped back). Delivery itself is in
/// `DeliveryScheduler.swift`.
extension DeliveryScheduler {
    /// The scheduling loop: returns once `shutdown()` has been called and the deliveries in flight
    /// have finished.
    public func run() async {
        let trigger = await listenForTrigger()
        var wakeUps = self.wakeUps.makeAsyncIterator()
        await withDiscardingTaskGroup { deliveries in
            while !state.withLock({ $0.stopping }) {
                let (taken, wait) = await dueWork()
                for id in taken {
                    deliveries.addTask {
                        await self.process(id, onlyIfDue: true)
                        _ = self.state.withLock { $0.inFlight.remove(id) }
                        self.wakeUp()
                    }
                }
                guard await Self.wait(for: &wakeUps, atMost: wait, on: clock, source: wakeUpSource) else { break }
            }
        }
        try? await trigger?.close()
    }

    /// Takes due messages up to the free capacity (marking them in flight) and says how long to
    /// sleep if no wake-up comes: until the earliest message not in flight falls due, at most
    /// `safetyPoll`. Messages in flight wake the loop as they finish, so they do not count: a slow
    /// delivery (a remote that takes minutes) must not hold back the rest of the queue.
    func dueWork() async -> (taken: [String], wait: Duration) {
        if let leased { return await claimedWork(from: leased) }
        let t = now()
        await retryMailboxDeliveriesIfSpaceIsBack(now: t)
        do {
            let store = self.store
            let (taken, earliest, latest) = try await planningPool.runIfActive {
                let capacity = self.concurrency - self.state.withLock { $0.inFlight.count }
                let due = capacity > 0 ? try store.dueMessageIDs(now: t, limit: capacity + self.concurrency) : []
                let taken = self.state.withLock { s -> [String] in
                    var out: [String] = []
                    for id in due where !s.inFlight.contains(id) && out.count < capacity {
                        s.inFlight.insert(id)
                        out.append(id)
                    }
                    return out
                }
                let busy = self.state.withLock { $0.inFlight }
                return (taken, try store.nextDueTime(excluding: busy), try store.latestDueTime())
            }
            var next = earliest
            if let latest, latest > planner.latestNextAttempt(after: t) {
                next = min(next ?? .distantFuture, await pullInAfterClockStep(latest: latest, now: t))
            }
            var wait = Self.safetyPoll
            if let next, next > t {
                // Measured from the query's time, not from now: a message that fell due between the
                // two (the timer is monotonic, `next` is wall time, and they drift by microseconds)
                // is slept for a millisecond, not for the safety poll. (CI saw a whole throttled
                // queue left overdue for 15-60 s, until an unrelated wake-up.)
                let dt = max(0.001, next.timeIntervalSince(now()))
                wait = min(wait, .milliseconds(Int64((dt * 1000).rounded(.up))))
            }
            // Otherwise it was due at the query and not taken: over capacity, and a finishing
            // delivery wakes the loop.
            if state.withLock({ $0.mailboxFullAt != nil }) { wait = min(wait, Self.mailboxSpacePoll) }
            return (taken, wait)
        } catch {
            logger.error("delivery scheduler: \(error)")
            return ([], .seconds(1))
        }
    }

    /// `dueWork` in cluster mode: claims due messages up to the free capacity from the shared queue,
    /// and sleeps until the next one is claimable there (a retry falling due, or a lease of a node
    /// that died running out), at most `sharedPoll`: other nodes' commits and queue control do not
    /// wake this loop.
    func claimedWork(from leased: any LeasedQueue) async -> (taken: [String], wait: Duration) {
        let capacity = concurrency - state.withLock { $0.inFlight.count }
        let claimed: [StoredMessage]
        do {
            claimed = try await leased.claim(limit: capacity)
        } catch {
            logger.error("delivery scheduler: the shared queue: \(error)")
            return ([], .seconds(1))
        }
        let taken = state.withLock { s -> [String] in
            for m in claimed {
                s.inFlight.insert(m.id)
                s.claimed[m.id] = m
            }
            return claimed.map(\.id)
        }
        // What is claimed is delivered whatever happens next: a failure from here on only shortens
        // the sleep (CI-style fault test: a claim followed by a broken connection had left its
        // messages leased, renewed and never delivered).
        do {
            var wait = Self.sharedPoll
            if let dt = try await leased.secondsUntilNextClaimable() {
                if dt > 0.05 {
                    wait = min(wait, .milliseconds(Int64((dt * 1000).rounded(.up))))
                } else if claimed.count < capacity {
                    // Due but not ours: another node was claiming it at that moment (SKIP LOCKED).
                    wait = .milliseconds(100)
                }
                // Otherwise due and over capacity: a finishing delivery wakes the loop.
            }
            return (taken, wait)
        } catch {
            logger.error("delivery scheduler: the shared queue: \(error)")
            return (taken, .seconds(1))
        }
    }

    /// The longest the loop sleeps in cluster mode before it looks at the shared queue again.
    public static let sharedPoll: Duration = .seconds(2)

    /// A next attempt later than any the planner sets means the wall clock was stepped back (the
    /// queue stores wall-clock times), or a reload shortened the retry intervals: those messages are
    /// brought back within one longest retry interval, or deferred mail would wait out the step on
    /// top of its interval.
    /// Returns the time they are now due.
    func pullInAfterClockStep(latest: Date, now t: Date) async -> Date {
        let bound = planner.latestNextAttempt(after: t)
        let target = planner.clampedNextAttempt(latest, now: t)
        let store = self.store
        do {
            let moved = try await planningPool.runIfActive { try store.pullIn(nextAttemptsAfter: bound, to: target) }
            logger.warning(
                "\(moved) deferred messages were due later than any retry interval sets (the wall clock was stepped back, or a reload shortened the intervals); they are retried by \(target)"
            )
        } catch {
            logger.error("delivery scheduler: could not bring back next attempts after a clock step: \(error)")
        }
        return target
    }

    /// Waits for a wake-up, or `duration` on `clock`, whichever comes first. False once the wake-ups
    /// have ended (shutdown).
    static func wait(
        for wakeUps: inout AsyncStream<Void>.Iterator, atMost duration: Duration, on clock: any Clock<Duration>,
        source: AsyncStream<Void>.Continuation
    ) async -> Bool {
        // The timer is a child task, cancelled (and awaited) as this scope ends when the wake-up
        // comes first; its firing is one more wake-up (a late one only costs one extra pass).
        async let _: Void = {
            do {
                try await clock.sleep(for: duration)
                source.yield()
            } catch {}
        }()
        return await wakeUps.next() != nil
    }

    /// Listens on the trigger FIFO; without it the scheduler still runs, on wake-ups from this
    /// process and the safety poll.
    func listenForTrigger() async -> (any Channel)? {
        guard let triggerPath else { return nil }
        do {
            let source = wakeUpSource
            return try await DeliveryTrigger.listen(path: triggerPath, group: eventLoopGroup) { source.yield() }
        } catch {
            logger.warning(
                "delivery trigger unavailable, queue control from other processes waits for the safety poll: \(error)")
            return nil
        }
    }
}
