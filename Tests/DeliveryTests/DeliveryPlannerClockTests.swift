import Foundation
import Testing

@testable import Delivery

/// `next_attempt` is wall-clock time: what the planner makes of one read back after the clock was
/// stepped (tests/e2e/test_clock_jump.py drives the same steps against the real server).
@Suite struct DeliveryPlannerClockTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let planner = DeliveryPlanner(policy: DeliveryPolicy(retry: .exchangeLike))

    @Test func latestNextAttemptCoversTheLongestIntervalWithJitterAfterAnAbruptClose() {
        // Exchange-like: 900 s at most, +10% jitter, three times after an abrupt close.
        #expect(planner.latestNextAttempt(after: now) == now.addingTimeInterval(900 * 1.1 * 3))
    }

    @Test func everyNextAttemptThePlannerSetsIsLeftAlone() {
        var rng = SeededRandom(seed: 15)
        for attempt in 1...20 {
            let delay = planner.policy.retry.delay(afterAttempt: attempt, random: &rng)
            for next in [now.addingTimeInterval(delay), now.addingTimeInterval(delay * 3)] {
                #expect(planner.clampedNextAttempt(next, now: now) == next)
            }
        }
        #expect(planner.clampedNextAttempt(now.addingTimeInterval(-7200), now: now) == now.addingTimeInterval(-7200))
    }

    @Test(arguments: [2.0 * 3600, 24.0 * 3600, 365.0 * 86400] as [TimeInterval])
    func aNextAttemptLeftBehindByABackwardStepComesBackWithinOneInterval(step: TimeInterval) {
        // Deferred for 60 s just before the clock went back by `step`.
        let stored = now.addingTimeInterval(step + 60)
        #expect(planner.clampedNextAttempt(stored, now: now) == now.addingTimeInterval(900))
    }

    @Test func aShortScheduleClampsToItsOwnInterval() {
        let short = DeliveryPlanner(policy: DeliveryPolicy(retry: RetrySchedule(intervals: [3], expiry: 86400)))
        #expect(short.clampedNextAttempt(now.addingTimeInterval(7203), now: now) == now.addingTimeInterval(3))
        #expect(short.clampedNextAttempt(now.addingTimeInterval(9), now: now) == now.addingTimeInterval(9))
    }
}
