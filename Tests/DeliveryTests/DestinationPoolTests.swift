import Foundation
import Testing

@testable import Delivery

struct DestinationPoolTests {
    /// Parking runs on the monotonic clock, so a wall clock stepped back does not hold a parked
    /// destination for the step; what people see (statuses, the 451 text) is still wall-clock time.
    @Test func aParkedDestinationIsShownInWallClockTimeAndParkedOnTheMonotonicClock() async {
        let pool = DestinationPool(settings: OutboundSettings(heloName: "mx.test"))
        // Failures in a row: the window narrows to one, then the destination is parked for 60 s.
        for _ in 0..<5 {
            guard case .open = await pool.acquire("k") else {
                Issue.record("expected a new session")
                return
            }
            await pool.release("k", connection: nil, host: nil, signal: .failure, error: nil)
        }
        let status = await pool.statuses().first { $0.key == "k" }
        let shown = try? #require(status?.parkedUntil)
        #expect(shown.map { abs($0.timeIntervalSinceNow - 60) < 5 } == true, "\(String(describing: shown))")
        guard case .parked(let until, _) = await pool.acquire("k") else {
            Issue.record("expected the destination parked")
            return
        }
        // `until` is on the monotonic timeline; as wall time it is a minute from now.
        #expect(abs(await pool.wallTime(until).timeIntervalSinceNow - 60) < 5)
        #expect(abs(until.timeIntervalSince(OutboundDelivery.monotonicNow()) - 60) < 5)
    }
}
