import Cluster
import Foundation
import MailQueue
import Testing

/// A node whose wall clock is not the database's (docs/cluster.md: "All lease times are on the
/// database's clock, so the nodes' clocks need not agree"). The delivery scheduler reckons an
/// attempt's next try on the node's clock (`Attempt.now`, `Attempt.nextAttempt`); the shared queue
/// compares it with the database's `now()` when it claims.
struct SharedQueueClockTests {
    /// A node two hours behind the database defers a message by five minutes: the message must not
    /// be claimable again at once (each claim, attempt and record would come round again straight
    /// away: a retry storm as fast as the remote answers), nor two hours later on a node ahead.
    /// `SharedQueue.recordAttempt` stores `now() + (nextAttempt - now)`: the interval, on the
    /// database's clock.
    @Test(arguments: [-7200.0, 7200.0])
    func aDeferralIsReckonedOnTheDatabasesClock(nodeClockOffset: TimeInterval) async throws {
        let db = try await ThrowawayPostgres.freshDatabase()
        let node = SharedQueueNodeTests.node("node-skewed", database: db)
        let m = bothStoresMessage(1)
        try await node.accept([m])
        #expect(try await node.claim(limit: 1).map(\.id) == [m.id])
        let nodeNow = Date().addingTimeInterval(nodeClockOffset)
        let record = try await node.record(
            SQLiteQueueStore.Attempt(
                messageID: m.id, outcomes: [0: .deferred(reason: "451 4.7.1 greylisted")],
                nextAttempt: nodeNow.addingTimeInterval(300), now: nodeNow))
        #expect(record == .recorded(finished: false))
        let wait = try await node.secondsUntilNextClaimable()
        #expect(wait.map { $0 > 290 && $0 <= 300 } == true, "due in five minutes, got \(String(describing: wait))")
        await node.stop()
    }
}
