import Delivery
import Foundation
import SMTPCore
import Testing

struct DestinationConcurrencyTests {
    let t0 = Date(timeIntervalSince1970: 1000)

    @Test func growsWithSuccessUpToTheMaximum() {
        var d = DestinationConcurrency(initial: 2, maximum: 4, growAfter: 2)
        for i in 0..<20 { d.recordSuccess(now: t0.addingTimeInterval(Double(i))) }
        #expect(d.window == 4)
    }

    @Test func settlesAtWhatTheRemoteAllows() {
        // A remote that allows 3 sessions: the window grows to 4, is refused once, settles at 3 and
        // only probes again after `probeAfter` clean deliveries.
        var d = DestinationConcurrency(initial: 2, maximum: 20, growAfter: 2, probeAfter: 50, quietPeriod: 1)
        var t = t0
        var refusals = 0
        for _ in 0..<300 {
            t = t.addingTimeInterval(0.1)
            if d.window > 3 {
                refusals += 1
                d.recordThrottle(working: 3, now: t)
            } else {
                d.recordSuccess(now: t)
            }
        }
        #expect(d.window <= 4)
        #expect(d.ceiling == 3 || d.ceiling == 4)
        // 300 messages cost a handful of refusals, not one in five.
        #expect(refusals <= 8)
    }

    @Test func oneBurstCutsOnce() {
        var d = DestinationConcurrency(initial: 8, maximum: 20, quietPeriod: 2)
        d.recordThrottle(working: 5, now: t0)
        d.recordThrottle(working: 1, now: t0.addingTimeInterval(0.5))
        #expect(d.window == 5)
        d.recordThrottle(working: 2, now: t0.addingTimeInterval(3))
        #expect(d.window == 2)
    }

    @Test func aSessionOpenedAfterTheCutAndRefusedCutsAgain() {
        // The first cut counted two sessions still connecting as working (window 6 -> 4); the
        // remote allows 3. Refusals of sessions opened before the cut are the same burst; one
        // opened after it shows 4 is still too many, even inside the quiet period.
        var d = DestinationConcurrency(initial: 6, maximum: 20, quietPeriod: 2)
        d.recordThrottle(working: 4, now: t0, openedAt: t0.addingTimeInterval(-0.05))
        #expect(d.window == 4 && d.ceiling == 4)
        d.recordThrottle(working: 3, now: t0.addingTimeInterval(0.01), openedAt: t0.addingTimeInterval(-0.04))
        #expect(d.window == 4)  // opened before the cut: the same burst
        d.recordThrottle(working: 3, now: t0.addingTimeInterval(0.1), openedAt: t0.addingTimeInterval(0.05))
        #expect(d.window == 3 && d.ceiling == 3)
    }

    @Test func parksAfterRepeatedFailures() {
        var d = DestinationConcurrency(initial: 1, parkAfter: 3, parkFor: 60)
        for _ in 0..<3 { d.recordFailure(now: t0) }
        #expect(d.isParked(at: t0.addingTimeInterval(30)))
        #expect(!d.isParked(at: t0.addingTimeInterval(61)))
    }

    @Test(arguments: [
        ("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit", true),
        ("451 4.7.1 Message rate limit exceeded, server busy, try again later", true),
        ("450 4.3.2 System not accepting network messages", true),
        ("450 4.2.1 Mailbox busy", true),
        ("550 5.1.1 No such user", false),
        ("451 4.3.0 Local error", false),
    ])
    func recognisesThrottlingReplies(_ text: String, _ expected: Bool) {
        let parts = text.split(separator: " ", maxSplits: 2).map(String.init)
        let reply = SMTPReply(Int(parts[0])!, EnhancedStatusCode(parsing: parts[1]), parts[2])
        #expect(DestinationConcurrency.isThrottle(reply) == expected)
    }
}
