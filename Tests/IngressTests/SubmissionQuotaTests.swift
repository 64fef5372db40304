import NIOCore
import Synchronization
import Testing

@testable import Ingress

/// Per-user budgets on a clock the test moves.
struct SubmissionQuotaTests {
    final class Clock: Sendable {
        let t = Mutex(NIODeadline.uptimeNanoseconds(1_000_000_000))
        func advance(_ a: TimeAmount) { t.withLock { $0 = $0 + a } }
    }

    @Test func messagesPerMinuteRefillOverTheMinuteAndUsersAreApart() {
        let clock = Clock()
        let quota = SubmissionQuota(now: { clock.t.withLock { $0 } })
        let policy = SubmissionPolicy(messagesPerMinute: 2, recipientsPerDay: 0)
        #expect(quota.admitMessage(user: "a", policy: policy))
        #expect(quota.admitMessage(user: "a", policy: policy))
        #expect(!quota.admitMessage(user: "a", policy: policy))
        #expect(quota.admitMessage(user: "b", policy: policy), "another user has a budget of its own")
        clock.advance(.seconds(30))
        #expect(quota.admitMessage(user: "a", policy: policy), "half a minute brings one back")
        #expect(!quota.admitMessage(user: "a", policy: policy))
        #expect(quota.admitRecipient(user: "a", policy: policy), "0 is no limit")
    }

    @Test func recipientsPerDay() {
        let clock = Clock()
        let quota = SubmissionQuota(now: { clock.t.withLock { $0 } })
        let policy = SubmissionPolicy(recipientsPerDay: 3)
        #expect((0..<3).allSatisfy { _ in quota.admitRecipient(user: "a", policy: policy) })
        #expect(!quota.admitRecipient(user: "a", policy: policy))
        clock.advance(.hours(8))
        #expect(quota.admitRecipient(user: "a", policy: policy))
    }
}

extension SubmissionQuotaTests {
    @Test func refusedOnesAreGivenBack() {
        let clock = Clock()
        let quota = SubmissionQuota(now: { clock.t.withLock { $0 } })
        let policy = SubmissionPolicy(messagesPerMinute: 1, recipientsPerDay: 1)
        #expect(quota.admitMessage(user: "a", policy: policy))
        quota.refundMessage(user: "a")
        #expect(quota.admitMessage(user: "a", policy: policy), "the refused MAIL cost nothing")
        #expect(quota.admitRecipient(user: "a", policy: policy))
        quota.refundRecipient(user: "a")
        quota.refundRecipient(user: "a")
        #expect(quota.admitRecipient(user: "a", policy: policy))
        #expect(!quota.admitRecipient(user: "a", policy: policy), "never more than the capacity")
    }
}
