import Foundation
import Synchronization
import Testing

@testable import Ingress

/// Failed-AUTH accounting on a clock the test moves: delays grow, the lockout comes and ends, a
/// success buys nothing, and the in-flight bound holds.
struct AuthenticationGuardTests {
    final class Clock: Sendable {
        let t = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
        func advance(_ s: TimeInterval) { t.withLock { $0 = $0.addingTimeInterval(s) } }
    }

    let policy = SubmissionPolicy(maxFailures: 3, window: 600, lockout: 900, failureDelayStep: 1, maxDelay: 5)

    @Test func delaysGrowThenTheSourceIsLockedOutUntilTheLockoutEnds() {
        let clock = Clock()
        let g = AuthenticationGuard(now: { clock.t.withLock { $0 } })
        #expect(g.recordFailure(source: "192.0.2.1", policy: policy) == .delay(1))
        #expect(g.recordFailure(source: "192.0.2.1", policy: policy) == .delay(2))
        #expect(g.recordFailure(source: "192.0.2.2", policy: policy) == .delay(1), "another source counts apart")
        #expect(g.recordFailure(source: "192.0.2.1", policy: policy) == .lockOut)
        #expect(g.isLockedOut(source: "192.0.2.1"))
        clock.advance(899)
        #expect(g.isLockedOut(source: "192.0.2.1"))
        clock.advance(2)
        #expect(!g.isLockedOut(source: "192.0.2.1"))
    }

    @Test func failuresAgeOutOfTheWindowAndIPv6CountsPerSlash64() {
        let clock = Clock()
        let g = AuthenticationGuard(now: { clock.t.withLock { $0 } })
        _ = g.recordFailure(source: "2001:db8:1:2::1", policy: policy)
        _ = g.recordFailure(source: "2001:db8:1:2::ffff", policy: policy)
        clock.advance(601)
        #expect(g.recordFailure(source: "2001:db8:1:2::7", policy: policy) == .delay(1), "the old two aged out")
        _ = g.recordFailure(source: "2001:db8:1:2::8", policy: policy)
        #expect(g.recordFailure(source: "2001:db8:1:2::9", policy: policy) == .lockOut, "one /64, one count")
    }

    @Test func passwordChecksInFlightAreBounded() {
        let g = AuthenticationGuard(maxInFlight: 2)
        #expect(g.beginCheck() && g.beginCheck())
        #expect(!g.beginCheck())
        g.endCheck()
        #expect(g.beginCheck())
    }
}
