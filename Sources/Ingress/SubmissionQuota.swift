import NIOCore
import Synchronization

/// Per-user sending limits on the submission listeners, like Exchange Online's (30 messages a
/// minute, 10,000 recipients a day): one token bucket each per user, shared by every session and
/// listener, on the event loop's clock. A bucket refills evenly, so "a day" is a rolling budget
/// rather than a reset at midnight.
public final class SubmissionQuota: Sendable {
    struct Buckets: Sendable {
        var messages: TokenBucket?
        var recipients: TokenBucket?
    }

    let users = Mutex<[String: Buckets]>([:])
    let now: @Sendable () -> NIODeadline

    public init(now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.now = now
    }

    /// Takes one message from `user`'s minute budget; false when it is spent (`0` is no limit).
    public func admitMessage(user: String, policy: SubmissionPolicy) -> Bool {
        take(\.messages, user: user, capacity: policy.messagesPerMinute, period: .minutes(1))
    }

    /// Gives back the message token of a MAIL that was refused after all.
    public func refundMessage(user: String) {
        users.withLock { $0[user]?.messages?.giveBack() }
    }

    /// Gives back the recipient token of a recipient that was refused after all.
    public func refundRecipient(user: String) {
        users.withLock { $0[user]?.recipients?.giveBack() }
    }

    /// Takes one recipient from `user`'s day budget; false when it is spent (`0` is no limit).
    public func admitRecipient(user: String, policy: SubmissionPolicy) -> Bool {
        take(\.recipients, user: user, capacity: policy.recipientsPerDay, period: .hours(24))
    }

    func take(_ which: WritableKeyPath<Buckets, TokenBucket?>, user: String, capacity: Int, period: TimeAmount) -> Bool
    {
        guard capacity > 0 else { return true }
        let t = now()
        return users.withLock { u in
            var b = u[user] ?? Buckets()
            var bucket = b[keyPath: which] ?? TokenBucket(capacity: capacity, period: period, now: t)
            defer {
                b[keyPath: which] = bucket
                u[user] = b
            }
            return bucket.take(now: t)
        }
    }
}
