import Cluster
import Foundation
import MailQueue
import SMTPCore
import Testing

/// Queue control, the message trace, the listing, qshape and the counts through `QueueControl`,
/// against both stores (`QueueStoreKind`): what `mailflow queue`, `mailflow trace` and the admin
/// center show and do must not depend on where the queue is kept.
struct BothStoresControlTests {
    static let stores = QueueStoreKind.allCases

    /// A hold keeps a message from being claimed until it is released; both are traced with
    /// their actor, and a second hold is refused with the store-independent wording.
    @Test(arguments: stores)
    func holdStopsClaimsUntilRelease(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1)
        try await q.accept([m])
        let held = try await q.control.control(.hold, id: m.id, actor: "ops")
        #expect(held == .init(queueID: m.id, action: .hold, outcome: .held))
        #expect(!held.makesDue)
        #expect(try await q.stored(m.id).state == .held)
        #expect(try await q.stored(m.id).nextAttempt == nil)
        #expect(try await q.claimIDs().isEmpty)
        #expect(try await q.leased.secondsUntilNextClaimable() == nil)
        #expect(
            try await q.control.queueCounts()
                == .init(queuedMessages: 0, heldMessages: 1, pendingRecipients: 1, deferredMessages: 0))
        #expect(try await q.control.list(tenant: nil, includeDone: false, limit: 10).map(\.state) == ["held"])
        await #expect(
            throws: SQLiteQueueStore.ControlError.notApplicable(m.id, "only a queued message can be held (it is held)")
        ) {
            try await q.control.control(.hold, id: m.id, actor: "ops")
        }
        let released = try await q.control.control(.release, id: m.id, actor: "ops")
        #expect(released.outcome == .released && released.makesDue)
        #expect(try await q.claimIDs() == [m.id])
        #expect(try await q.adminDetails(m.id) == ["hold by ops", "release by ops"])
        await q.stop()
    }

    /// A retry makes a deferred message claimable at once; it applies to queued messages only.
    @Test(arguments: stores)
    func retryMakesADeferredMessageDueNow(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1)
        try await q.accept([m, bothStoresMessage(2)])
        #expect(try await q.claimIDs(limit: 1) == [m.id])
        _ = try await q.record(m.id, [0: .deferred(reason: "451 later")], next: Date().addingTimeInterval(3600))
        #expect(try await q.claimIDs() == ["B000000000000002"])
        #expect(try await q.claimIDs().isEmpty)
        let retried = try await q.control.control(.retry, id: m.id, actor: "ops")
        #expect(retried.outcome == .dueNow && retried.makesDue)
        #expect(
            abs(try #require(try await q.stored(m.id).nextAttempt).timeIntervalSinceNow) < 60, "due now, not in an hour"
        )
        #expect(try await q.claimIDs() == [m.id])
        _ = try await q.control.control(.hold, id: "B000000000000002", actor: "ops")
        await #expect(
            throws: SQLiteQueueStore.ControlError.notApplicable(
                "B000000000000002", "only a queued message can be retried (it is held)")
        ) {
            try await q.control.control(.retry, id: "B000000000000002", actor: "ops")
        }
        #expect(try await q.adminDetails(m.id) == ["retry by ops"])
        await q.stop()
    }

    /// A bounce of a held message queues it again, due at once, marked for the scheduler to fail
    /// its pending recipients and report to the sender.
    @Test(arguments: stores)
    func aBounceQueuesTheMessageMarkedForTheReport(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1)
        try await q.accept([m])
        _ = try await q.control.control(.hold, id: m.id, actor: "ops")
        let bounced = try await q.control.control(.bounce, id: m.id, actor: "ops")
        #expect(bounced.outcome == .bounceRequested && bounced.makesDue)
        let stored = try await q.stored(m.id)
        #expect(stored.state == .queued && stored.bounceRequested)
        let claimed = try await q.leased.claim(limit: 10)
        #expect(claimed.map(\.id) == [m.id])
        #expect(claimed.first?.bounceRequested == true, "the claimer sees the request")
        #expect(
            try await q.record(m.id, [0: .failed(reason: "550 5.3.0 returned by an administrator")])
                == .recorded(finished: true))
        #expect(try await q.stored(m.id).state == .done)
        await #expect(throws: SQLiteQueueStore.ControlError.notApplicable(m.id, "the message is already done")) {
            try await q.control.control(.bounce, id: m.id, actor: "ops")
        }
        await q.stop()
    }

    /// A delete fails only the pending recipients, without a report, drops the body and is never
    /// claimed again; nothing applies to the done message afterwards.
    @Test(arguments: stores)
    func deleteEndsTheMessageWithoutAReport(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1, to: ["r0@example.net", "r1@example.net"])
        try await q.accept([m])
        _ = try await q.claimIDs()
        _ = try await q.record(
            m.id, [0: .delivered(detail: "250 ok"), 1: .deferred(reason: "451 later")],
            next: Date().addingTimeInterval(3600))
        let deleted = try await q.control.control(.delete, id: m.id, actor: "alice")
        #expect(deleted.outcome == .deleted && !deleted.makesDue)
        #expect(deleted.releasedSpoolPath == nil, "an inline body has no spool file")
        let stored = try await q.stored(m.id)
        #expect(stored.state == .done && stored.body == nil && stored.nextAttempt == nil)
        #expect(stored.recipients.map(\.status) == [.delivered, .failed])
        #expect(stored.recipients[1].lastReply == "deleted by an administrator (alice), no report sent")
        #expect(try await q.adminDetails(m.id) == ["delete by alice (no report to the sender)"])
        #expect(try await q.control.list(tenant: nil, includeDone: false, limit: 10).isEmpty)
        await #expect(
            throws: SQLiteQueueStore.ControlError.notApplicable(
                m.id, "only a queued message can be retried (it is done)")
        ) {
            try await q.control.control(.retry, id: m.id, actor: "ops")
        }
        #expect(try await q.claimIDs().isEmpty)
        await q.stop()
    }

    /// A delete while a delivery is in flight: the attempt recorded after it neither makes the
    /// deleted recipient pending again nor gives the done message a next attempt.
    @Test(arguments: stores)
    func anAttemptRecordedAfterADeleteLeavesTheMessageDone(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let m = bothStoresMessage(1, to: ["r0@example.net", "r1@example.net"])
        try await q.accept([m])
        #expect(try await q.claimIDs() == [m.id])
        _ = try await q.control.control(.delete, id: m.id, actor: "ops")
        let record = try await q.record(
            m.id, [0: .delivered(detail: "250 ok"), 1: .deferred(reason: "451 4.3.0 later")],
            next: Date().addingTimeInterval(60))
        #expect(record == .recorded(finished: true))
        let stored = try await q.stored(m.id)
        #expect(stored.state == .done)
        #expect(stored.nextAttempt == nil)
        #expect(stored.recipients.map(\.status) == [.failed, .failed])
        #expect(try await q.leased.secondsUntilNextClaimable() == nil)
        #expect(try await q.control.traceEvents(queueID: m.id).map(\.kind).suffix(2) == [.delivered, .deferred])
        await q.stop()
    }

    /// A hold or a bounce while a delivery is in flight: the attempt recorded afterwards leaves a
    /// held message held (no next attempt), and a bounced one due at once for its report, whatever
    /// next attempt the delivery asked for.
    @Test(arguments: stores)
    func holdAndBounceDuringADeliveryWinOverItsDeferral(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let held = bothStoresMessage(1)
        let bounced = bothStoresMessage(2)
        try await q.accept([held, bounced])
        #expect(try await q.claimIDs() == [held.id, bounced.id])
        _ = try await q.control.control(.hold, id: held.id, actor: "ops")
        _ = try await q.control.control(.bounce, id: bounced.id, actor: "ops")
        let later = Date().addingTimeInterval(3600)
        #expect(
            try await q.record(held.id, [0: .deferred(reason: "451 later")], next: later) == .recorded(finished: false))
        #expect(
            try await q.record(bounced.id, [0: .deferred(reason: "451 later")], next: later)
                == .recorded(finished: false))
        let h = try await q.stored(held.id)
        #expect(h.state == .held && h.nextAttempt == nil)
        let b = try await q.stored(bounced.id)
        #expect(b.state == .queued && b.bounceRequested)
        let due = try await q.claimIDs()
        #expect(due == [bounced.id], "the bounce is due now, not in an hour")
        await q.stop()
    }

    /// Every action from every state: its outcome where it applies, and otherwise the one refusal
    /// `ControlAction.refusal(state:)` words; an unknown queue ID is `notFound`.
    @Test(arguments: stores, SQLiteQueueStore.ControlAction.allCases)
    func everyActionFromEveryState(store: QueueStoreKind, action: SQLiteQueueStore.ControlAction) async throws {
        let q = try await store.make()
        let queued = bothStoresMessage(1)
        let held = bothStoresMessage(2)
        let done = bothStoresMessage(3)
        try await q.accept([queued, held, done])
        _ = try await q.control.control(.hold, id: held.id, actor: "ops")
        #expect(try await q.claimIDs() == [queued.id, done.id])
        _ = try await q.record(done.id, [0: .delivered(detail: "250 ok")])
        await q.leased.release(queued.id)
        let outcomes: [SQLiteQueueStore.ControlAction: SQLiteQueueStore.ControlResult.Outcome] = [
            .hold: .held, .release: .released, .retry: .dueNow, .bounce: .bounceRequested, .delete: .deleted,
        ]
        for (m, state) in [(queued, "queued"), (held, "held"), (done, "done")] {
            if let why = action.refusal(state: state) {
                await #expect(throws: SQLiteQueueStore.ControlError.notApplicable(m.id, why), "\(action) \(state)") {
                    try await q.control.control(action, id: m.id, actor: "ops")
                }
                #expect(try await q.stored(m.id).state.rawValue == state, "a refusal changes nothing")
            } else {
                let r = try await q.control.control(action, id: m.id, actor: "ops")
                #expect(r == .init(queueID: m.id, action: action, outcome: outcomes[action]!), "\(action) \(state)")
                #expect(try await q.adminDetails(m.id).last?.hasPrefix("\(action.rawValue) by ops") == true)
            }
        }
        await #expect(throws: SQLiteQueueStore.ControlError.notFound("B999999999999999")) {
            try await q.control.control(action, id: "B999999999999999", actor: "ops")
        }
        await q.stop()
    }

    /// The trace's filters (sender substring, direction, status with tenant, a literal `%`) and a
    /// recipient's timeline.
    @Test(arguments: stores)
    func traceFiltersAndTimeline(store: QueueStoreKind) async throws {
        let q = try await store.make()
        let a = bothStoresMessage(
            1, to: ["local:contoso.test/alice", "local:contoso.test/bob"], tenant: "contoso", sender: "boss@x.test")
        let b = bothStoresMessage(2, to: ["far@remote.test"], sender: "other@y.test")
        try await q.accept([a, b])
        #expect(try await q.claimIDs(limit: 1) == [a.id])
        _ = try await q.record(
            a.id, [0: .delivered(detail: "250 ok")], next: Date().addingTimeInterval(60))
        func trace(_ p: [String: String]) async throws -> [SQLiteQueueStore.TraceRow] {
            try await q.control.trace(try SQLiteQueueStore.TraceQuery(parameters: p))
        }
        let rows = try await trace(["sender": "BOSS@"])
        #expect(rows.map(\.recipient).sorted() == ["alice@contoso.test", "bob@contoso.test"])
        let alice = try #require(rows.first { $0.recipient == "alice@contoso.test" })
        #expect(alice.status == "Delivered" && alice.direction == "Inbound" && alice.tenant == "contoso")
        #expect(alice.events.map(\.kind) == [.received, .delivered])
        #expect(alice.lastReply == "250 ok")
        #expect(try await trace(["direction": "outbound"]).map(\.queueID) == [b.id])
        #expect(try await trace(["status": "pending", "tenant": "contoso"]).map(\.recipient) == ["bob@contoso.test"])
        #expect(try await trace(["sender": "%"]).isEmpty, "a literal percent: wildcards are escaped")
        #expect(try await trace(["client_ip": "192.0.2.2"]).map(\.queueID) == [b.id])
        #expect(try await trace(["limit": "1"]).count == 1)
        await q.stop()
    }

    /// qshape: pending recipients per destination domain, by age bucket.
    @Test(arguments: stores)
    func shapeCountsPendingByDomainAndAge(store: QueueStoreKind) async throws {
        let q = try await store.make()
        try await q.accept([
            bothStoresMessage(1, to: ["local:contoso.test/alice"]),
            bothStoresMessage(2, age: 3 * 3600, to: ["x@remote.test", "y@remote.test"]),
        ])
        let shape = try await q.control.shape()
        #expect(shape.map(\.domain) == ["remote.test", "contoso.test"])
        let remote = try #require(shape.first { $0.domain == "remote.test" })
        #expect(remote.total == 2)
        #expect(remote.buckets[6] == 2, "between 160 and 320 minutes")
        #expect(shape.first { $0.domain == "contoso.test" }?.buckets[0] == 1)
        await q.stop()
    }

    /// The listing by tenant, with and without finished messages, within a limit; tenant activity.
    @Test(arguments: stores)
    func listingAndTenantActivity(store: QueueStoreKind) async throws {
        let q = try await store.make()
        try await q.accept([
            // Ages far apart: a loaded machine may take seconds between these lines and the queries.
            bothStoresMessage(1, age: 7200, tenant: "acme"), bothStoresMessage(2, age: 3600),
            bothStoresMessage(3, age: 60, to: ["r0@example.net", "r1@example.net"], tenant: "acme"),
        ])
        #expect(try await q.claimIDs(limit: 1) == ["B000000000000001"])
        _ = try await q.record("B000000000000001", [0: .delivered(detail: "250 ok")])
        let list = { (tenant: String?, done: Bool, limit: Int) in
            try await q.control.list(tenant: tenant, includeDone: done, limit: limit).map(\.id)
        }
        #expect(try await list(nil, false, 10) == ["B000000000000002", "B000000000000003"])
        #expect(try await list("acme", false, 10) == ["B000000000000003"])
        #expect(try await list("acme", true, 10) == ["B000000000000001", "B000000000000003"])
        #expect(try await list(nil, true, 2) == ["B000000000000001", "B000000000000002"])
        let three = try #require(try await q.control.list(tenant: "acme", includeDone: false, limit: 1).first)
        #expect(three.recipients == ["r0@example.net", "r1@example.net"])
        #expect(three.sender == "a@example.org" && three.state == "queued" && three.attempts == 0)
        #expect(
            try await q.control.tenantActivity(since: Date().addingTimeInterval(-3 * 3600))
                == [.init(tenant: "acme", received: 2, pending: 2)])
        #expect(
            try await q.control.tenantActivity(since: Date().addingTimeInterval(-1800))
                == [.init(tenant: "acme", received: 1, pending: 2)])
        await q.stop()
    }
}
