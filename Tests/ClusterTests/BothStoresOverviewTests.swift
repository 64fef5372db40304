import Cluster
import Foundation
import MailQueue
import SMTPCore
import Testing

/// The admin overview's charts through `QueueControl` against both stores (`QueueStoreKind`): the
/// activity buckets and the top errors count the queue's own trace, so in cluster mode every node's.
struct BothStoresOverviewTests {
    static let stores = QueueStoreKind.allCases

    /// Acceptances, deliveries, deferrals, failures and throttle refusals counted in their
    /// buckets, oldest first; nothing outside the window.
    @Test(arguments: stores)
    func activityCountsTheTraceInBuckets(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let committer = q.committer()
        committer.record(
            TraceEvent(
                time: Date(), queueID: "", recipient: nil, kind: .throttled, detail: "forest full",
                reply: "421 4.3.2 too many sessions"))
        for n in 1...3 {
            try await committer.commit(bothStoresMessage(n, to: ["r0@example.net", "r1@example.net"]))
        }
        await committer.shutdownGracefully()
        _ = try await q.claimIDs()
        let later = Date().addingTimeInterval(600)
        _ = try await q.record(
            "B000000000000001", [0: .delivered(detail: "250 ok"), 1: .deferred(reason: "451 4.7.1 greylisted")],
            next: later)
        _ = try await q.record(
            "B000000000000002",
            [0: .deferred(reason: "451 4.7.1 greylisted"), 1: .failed(reason: "550 5.1.1 unknown")], next: later)
        _ = try await q.record("B000000000000003", [0: .delivered(detail: "250 ok"), 1: .delivered(detail: "250 ok")])
        let end = Date().addingTimeInterval(60)
        let buckets = try await q.control.activity(now: end, width: 900, count: 4)
        #expect(buckets.count == 4)
        let starts: [TimeInterval] = (0..<4).map { end.timeIntervalSince1970 - 3600 + 900 * Double($0) }
        #expect(buckets.map(\.start.timeIntervalSince1970) == starts)
        let last = try #require(buckets.last)
        let counts: [Int] = [last.received, last.delivered, last.deferred, last.failed, last.throttled]
        #expect(counts == [3, 3, 2, 1, 1], "received, delivered, deferred, failed, throttled")
        #expect(buckets.dropLast().allSatisfy { $0.received + $0.delivered + $0.deferred + $0.failed == 0 })
        #expect(abs(last.deferralRate - 2.0 / 6.0) < 1e-9)
        let none = try await q.control.activity(now: Date().addingTimeInterval(-3600), width: 900, count: 2)
        #expect(none.allSatisfy { $0.received + $0.delivered + $0.deferred + $0.failed + $0.throttled == 0 })

        let errors = try await q.control.topErrors(since: Date().addingTimeInterval(-3600), limit: 10)
        // Most frequent first; between equals, the latest seen first (the failure came after the refusal).
        #expect(errors.map(\.kind) == ["deferred", "failed", "throttled"])
        #expect(errors.first?.text == "451 4.7.1 greylisted" && errors.first?.count == 2)
        #expect(errors.contains { $0.kind == "failed" && $0.text == "550 5.1.1 unknown" && $0.count == 1 })
        #expect(errors.contains { $0.kind == "throttled" && $0.text == "421 4.3.2 too many sessions" })
        #expect(errors.allSatisfy { $0.firstSeen <= $0.lastSeen && abs($0.lastSeen.timeIntervalSinceNow) < 60 })
        #expect(try await q.control.topErrors(since: Date().addingTimeInterval(-3600), limit: 1).count == 1)
        #expect(try await q.control.topErrors(since: Date().addingTimeInterval(60), limit: 10).isEmpty)
        await q.stop()
    }
}
