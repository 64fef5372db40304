import Foundation
import SMTPCore
import Testing

@testable import Delivery
@testable import MailQueue

/// A generator that counts up: for tests where no jitter is drawn (a constant generator would
/// spin in the standard library's rejection sampling).
struct FixedRandom: RandomNumberGenerator, Sendable {
    var value: UInt64 = 0
    mutating func next() -> UInt64 {
        value &+= 1
        return value
    }
}

/// SplitMix64: a seeded generator, so a run with jitter can be repeated exactly.
struct SeededRandom: RandomNumberGenerator, Sendable {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let received = Date(timeIntervalSince1970: 1_800_000_000)

func recipient(_ index: Int, _ route: Route, notify: DSNNotify? = nil, status: RecipientStatus = .pending)
    -> StoredRecipient
{
    StoredRecipient(
        index: index,
        recipient: EnvelopeRecipient(address: "r\(index)@example.test", route: route, notify: notify),
        status: status, attempts: 0, lastReply: nil)
}

func message(
    sender: String = "s@example.test", recipients: [StoredRecipient], attempts: Int = 0, abruptCloses: Int = 0,
    delayNoticeSentAt: Date? = nil, bounceRequested: Bool = false
) -> StoredMessage {
    StoredMessage(
        id: "0123456789ABCDEF", receivedAt: received, sender: sender, size: 10, bodyType: nil, smtpUTF8: false,
        ret: nil, envelopeID: nil, clientAddress: "127.0.0.1", helo: "c", protocolName: "ESMTP", tls: nil,
        tenant: nil, messageID: nil, addMessageID: false, subject: nil, stampLength: 0, state: .queued,
        nextAttempt: received, attempts: attempts, recipients: recipients, body: .inline(Data()),
        bounceRequested: bounceRequested, abruptCloses: abruptCloses, delayNoticeSentAt: delayNoticeSentAt)
}

let relay = Route.relay(domain: "example.net")
let mailbox = Route.local(domain: "example.test", mailbox: "alice")

func remote(_ reply: SMTPReply, index: Int = 0, host: String? = "mx.example.net") -> RemoteOutcome {
    RemoteOutcome(result: RecipientResult.from(reply, index: index), remoteHost: host, remoteIP: "192.0.2.1")
}

let busy = SMTPReply(451, .init(4, 3, 0), "try later")
let noUser = SMTPReply(550, .init(5, 1, 1), "no such user")

func planner(
    intervals: [TimeInterval] = [60, 300, 900], expiry: TimeInterval = 86_400, jitter: Double = 0,
    maxAbruptCloses: Int = 3, delayNotice: TimeInterval? = 4 * 3600
) -> DeliveryPlanner {
    DeliveryPlanner(
        policy: DeliveryPolicy(
            retry: RetrySchedule(intervals: intervals, expiry: expiry, jitter: jitter),
            maxAbruptCloses: maxAbruptCloses, delayNotice: delayNotice))
}

struct DeliveryPlannerTests {
    // MARK: Retry

    @Test(
        "The next attempt follows the schedule; the last interval repeats; jitter draws from the injected source",
        arguments: [
            // (attempts so far, jitter, seed, base delay)
            (0, 0.0, UInt64(1), 60.0),
            (1, 0.0, 1, 300),
            (2, 0.0, 1, 900),
            (7, 0.0, 1, 900),
            (0, 0.1, 1, 60),
            (2, 0.1, 2, 900),
            (1, 0.5, 3, 300),
        ] as [(Int, Double, UInt64, TimeInterval)])
    func retryDelays(attempts: Int, jitter: Double, seed: UInt64, base: TimeInterval) {
        let m = message(recipients: [recipient(0, relay)], attempts: attempts)
        var rng = SeededRandom(seed: seed)
        var same = SeededRandom(seed: seed)
        let expected = jitter == 0 ? base : base * (1 + Double.random(in: -jitter...jitter, using: &same))
        let now = received.addingTimeInterval(10)
        let d = planner(jitter: jitter).decide(
            m, results: AttemptResults(remote: [0: remote(busy)]), now: now, using: &rng)
        #expect(d.outcomes[0] == .deferred(reason: "451 4.3.0 try later (remote mx.example.net [192.0.2.1])"))
        let delay = d.nextAttempt.map { $0.timeIntervalSince(now) } ?? -1
        #expect(abs(delay - expected) < 1e-6)
        #expect(delay >= base * (1 - jitter) && delay <= base * (1 + jitter))
        #expect(d.abruptClose == false)
    }

    @Test func aSeededSourceRepeatsTheSameJitterAndStaysInRange() {
        let p = planner(intervals: [100], jitter: 0.1)
        let m = message(recipients: [recipient(0, relay)])
        let now = received.addingTimeInterval(1)
        func run() -> [Date?] {
            var rng = SeededRandom(seed: 42)
            return (0..<20).map { _ in
                p.decide(m, results: AttemptResults(remote: [0: remote(busy)]), now: now, using: &rng).nextAttempt
            }
        }
        let a = run()
        #expect(a == run())
        for next in a {
            let delay = next.map { $0.timeIntervalSince(now) } ?? -1
            #expect((90...110).contains(delay))
        }
        #expect(Set(a).count > 1, "the jitter varies between draws")
    }

    @Test func nothingPendingMeansNoNextAttempt() {
        let m = message(recipients: [recipient(0, relay), recipient(1, mailbox)])
        var rng = FixedRandom()
        let d = planner().decide(
            m,
            results: AttemptResults(
                local: [1: .delivered(detail: "250 2.0.0 Delivered")],
                remote: [0: remote(SMTPReply(250, .init(2, 0, 0), "ok"))]),
            now: received, using: &rng)
        #expect(d.nextAttempt == nil)
        #expect(d.outcomes[0] == .delivered(detail: "250 2.0.0 ok (remote mx.example.net [192.0.2.1])"))
        #expect(d.outcomes[1] == .delivered(detail: "250 2.0.0 Delivered"))
        #expect(d.reports.isEmpty)
    }

    @Test func aPermanentRemoteFailureFailsAtOnceWithAFailureReport() {
        let m = message(recipients: [recipient(0, relay), recipient(1, relay)])
        var rng = FixedRandom()
        let now = received.addingTimeInterval(5)
        let d = planner().decide(
            m, results: AttemptResults(remote: [0: remote(noUser), 1: remote(busy, index: 1)]), now: now, using: &rng)
        #expect(d.outcomes[0] == .failed(reason: "550 5.1.1 no such user (remote mx.example.net [192.0.2.1])"))
        #expect(d.nextAttempt == now.addingTimeInterval(60))
        #expect(
            d.reports == [
                DeliveryReport(
                    kind: .failure,
                    rows: [
                        .init(
                            recipientIndex: 0, status: "5.1.1", remoteMTA: "mx.example.net",
                            diagnostic: "550 5.1.1 no such user (remote mx.example.net [192.0.2.1])")
                    ], lastAttempt: now)
            ])
    }

    // MARK: Expiry

    @Test(
        "A recipient still deferred when the message expires fails with 450 4.4.7",
        arguments: [
            (
                AttemptResults(local: [0: .deferred(reason: "451 4.3.0 Mailbox delivery failed: disk")]),
                "451 4.3.0 Mailbox delivery failed: disk"
            ),
            (AttemptResults(remote: [0: remote(busy)]), "451 4.3.0 try later (remote mx.example.net [192.0.2.1])"),
        ] as [(AttemptResults, String)])
    func expiry(results: AttemptResults, last: String) {
        let m = message(recipients: [recipient(0, results.local.isEmpty ? relay : mailbox)], attempts: 30)
        var rng = FixedRandom()
        let now = received.addingTimeInterval(3600)
        let d = planner(expiry: 3600).decide(m, results: results, now: now, using: &rng)
        #expect(d.outcomes[0] == .failed(reason: "450 4.4.7 Message expired after 3600 s, last: \(last)"))
        #expect(d.nextAttempt == nil)
        #expect(d.failureReport?.rows.map(\.status) == ["4.4.7"])
        #expect(d.delayReport == nil, "an expired message gets its failure report, not a delay notice")
    }

    @Test func oneSecondBeforeExpiryItIsStillDeferred() {
        let m = message(recipients: [recipient(0, relay)])
        var rng = FixedRandom()
        let d = planner(expiry: 3600, delayNotice: nil).decide(
            m, results: AttemptResults(remote: [0: remote(busy)]), now: received.addingTimeInterval(3599),
            using: &rng)
        #expect(d.outcomes[0] == .deferred(reason: "451 4.3.0 try later (remote mx.example.net [192.0.2.1])"))
    }

    // MARK: Poison messages (abrupt closes)

    @Test(
        "Abrupt closes: the one that reaches maxAbruptCloses fails the recipient with 554 5.4.300",
        arguments: [
            // (abrupt closes before, limit, fails)
            (0, 3, false), (1, 3, false), (2, 3, true), (5, 3, true), (0, 1, true),
        ])
    func abruptCloses(before: Int, limit: Int, fails: Bool) {
        let m = message(recipients: [recipient(0, relay), recipient(1, relay)], abruptCloses: before)
        var rng = FixedRandom()
        let now = received.addingTimeInterval(10)
        let d = planner(maxAbruptCloses: limit).decide(
            m,
            results: AttemptResults(remote: [0: remote(ClientSession.abruptClose), 1: remote(busy, index: 1)]),
            now: now, using: &rng)
        #expect(d.abruptClose)
        if fails {
            #expect(
                d.outcomes[0]
                    == .failed(
                        reason: "554 5.4.300 Message failed after \(before + 1) abrupt disconnects by the remote; "
                            + "it may be harmful to it (SuspiciousRemoteServerError)"))
            #expect(d.failureReport?.rows.map(\.status) == ["5.4.300"])
        } else {
            guard case .deferred = d.outcomes[0] else {
                Issue.record("expected a deferral, got \(String(describing: d.outcomes[0]))")
                return
            }
        }
        // Only the recipient whose session was cut off counts as poison; the other waits.
        guard case .deferred = d.outcomes[1] else {
            Issue.record("expected a deferral, got \(String(describing: d.outcomes[1]))")
            return
        }
        // Exchange waits three times as long after an abrupt close.
        #expect(d.nextAttempt == now.addingTimeInterval(180))
    }

    @Test func anAttemptWithoutAnAbruptCloseDoesNotCountOne() {
        let m = message(recipients: [recipient(0, relay)], abruptCloses: 2)
        var rng = FixedRandom()
        let d = planner().decide(m, results: AttemptResults(remote: [0: remote(busy)]), now: received, using: &rng)
        #expect(!d.abruptClose)
        #expect(d.nextAttempt == received.addingTimeInterval(60))
    }

    // MARK: Reports (RFC 3461 NOTIFY)

    static let notifyCases: [(DSNNotify?, Bool, Bool)] = [
        // (NOTIFY, failure report, delay report)
        (nil, true, true),
        (DSNNotify(never: true), false, false),
        (DSNNotify(failure: true), true, false),
        (DSNNotify(delay: true), false, true),
        (DSNNotify(failure: true, delay: true), true, true),
        (DSNNotify(success: true), false, false),
        (DSNNotify(success: true, failure: true), true, false),
    ]

    @Test("NOTIFY decides which reports a recipient appears in", arguments: notifyCases)
    func notify(_ notify: DSNNotify?, failureReport: Bool, delayReport: Bool) {
        let m = message(recipients: [recipient(0, relay, notify: notify), recipient(1, relay, notify: notify)])
        var rng = FixedRandom()
        // Five hours in: recipient 0 fails, recipient 1 is deferred and the delay notice is due.
        let now = received.addingTimeInterval(5 * 3600)
        let d = planner().decide(
            m, results: AttemptResults(remote: [0: remote(noUser), 1: remote(busy, index: 1)]), now: now, using: &rng)
        #expect((d.failureReport?.rows.map(\.recipientIndex) ?? []) == (failureReport ? [0] : []))
        #expect((d.delayReport?.rows.map(\.recipientIndex) ?? []) == (delayReport ? [1] : []))
        if delayReport {
            #expect(d.delayReport?.willRetryUntil == received.addingTimeInterval(86_400))
            #expect(d.delayReport?.rows.first?.status == "4.3.0")
        }
        #expect(d.reports.first?.kind != .delay || d.failureReport == nil, "failure before delay")
    }

    @Test(
        "The delay notice: once the message is old enough, only once, never when disabled",
        arguments: [
            // (age in hours, already sent, delayNotice in hours, expected)
            (5.0, false, 4.0 as Double?, true),
            (4.0, false, 4.0, true),
            (3.9, false, 4.0, false),
            (5.0, true, 4.0, false),
            (5.0, false, nil, false),
        ] as [(Double, Bool, Double?, Bool)])
    func delayNotice(ageHours: Double, alreadySent: Bool, noticeHours: Double?, expected: Bool) {
        let m = message(
            recipients: [recipient(0, relay)],
            delayNoticeSentAt: alreadySent ? received.addingTimeInterval(3600) : nil)
        var rng = FixedRandom()
        let d = planner(delayNotice: noticeHours.map { $0 * 3600 }).decide(
            m, results: AttemptResults(remote: [0: remote(busy)]), now: received.addingTimeInterval(ageHours * 3600),
            using: &rng)
        #expect((d.delayReport != nil) == expected)
        #expect(d.failureReport == nil)
    }

    @Test func theNullSenderGetsNoReport() {
        let m = message(sender: "", recipients: [recipient(0, relay), recipient(1, relay)])
        var rng = FixedRandom()
        let d = planner().decide(
            m, results: AttemptResults(remote: [0: remote(noUser), 1: remote(busy, index: 1)]),
            now: received.addingTimeInterval(5 * 3600), using: &rng)
        guard case .failed = d.outcomes[0] else {
            Issue.record("expected a failure")
            return
        }
        #expect(d.reports.isEmpty, "a bounce is never bounced")
    }

    // MARK: Bounce requested, routes

    @Test func aBounceRequestFailsEveryPendingRecipientWithoutTryingIt() {
        let m = message(
            recipients: [
                recipient(0, relay), recipient(1, mailbox), recipient(2, relay, status: .delivered),
                recipient(3, relay, notify: DSNNotify(never: true)),
            ], bounceRequested: true)
        let p = planner()
        #expect(p.work(for: m, relayAvailable: true) == DeliveryWork())
        var rng = FixedRandom()
        let d = p.decide(m, results: AttemptResults(), now: received, using: &rng)
        let bounced = RecipientOutcome.failed(reason: "550 5.3.0 Returned to the sender by an administrator")
        #expect(d.outcomes == [0: bounced, 1: bounced, 3: bounced])
        #expect(d.nextAttempt == nil)
        #expect(d.failureReport?.rows.map(\.recipientIndex) == [0, 1])
        #expect(d.failureReport?.rows.map(\.status) == ["5.3.0", "5.3.0"])
    }

    @Test func workSplitsPendingRecipientsByTransportAndDomain() {
        let other = Route.relay(domain: "example.org")
        let m = message(recipients: [
            recipient(0, relay), recipient(1, mailbox), recipient(2, other), recipient(3, relay),
            recipient(4, relay, status: .failed),
        ])
        let w = planner().work(for: m, relayAvailable: true)
        #expect(w.local.map(\.index) == [1])
        #expect(w.remote.mapValues { $0.map(\.index) } == ["example.net": [0, 3], "example.org": [2]])
        #expect(w.unroutable.isEmpty)
        let noRelay = planner().work(for: m, relayAvailable: false)
        #expect(noRelay.remote.isEmpty)
        #expect(noRelay.unroutable == [0, 2, 3])
        var rng = FixedRandom()
        let d = planner().decide(
            m, results: AttemptResults(unroutable: noRelay.unroutable), now: received, using: &rng)
        #expect(d.outcomes[2] == .failed(reason: "550 5.4.4 No route for relay:example.org"))
    }

    @Test func statusCodesComeFromTheReplyText() {
        #expect(DeliveryPlanner.statusCode(in: "550 5.1.1 no such user") == "5.1.1")
        #expect(DeliveryPlanner.statusCode(in: "450 4.4.7 Message expired") == "4.4.7")
        #expect(DeliveryPlanner.statusCode(in: "451 try later") == nil)
    }
}

struct RetryScheduleTests {
    @Test func backsOffAndRepeatsTheLastInterval() {
        var rng = FixedRandom()
        let r = RetrySchedule(intervals: [60, 300], expiry: 3600, jitter: 0)
        #expect(r.delay(afterAttempt: 1, random: &rng) == 60)
        #expect(r.delay(afterAttempt: 2, random: &rng) == 300)
        #expect(r.delay(afterAttempt: 9, random: &rng) == 300)
        var seeded = SeededRandom(seed: 7)
        let j = RetrySchedule(intervals: [100], expiry: 3600, jitter: 0.1)
        for _ in 0..<50 { #expect((90...110).contains(j.delay(afterAttempt: 1, random: &seeded))) }
    }
}
