import NIOCore

/// A token bucket: `capacity` events, refilled evenly over `period` (so `capacity` per `period` on
/// average, with bursts up to `capacity`). Time comes from the caller, so tests drive it with a fake
/// clock instead of sleeping.
///
/// ```swift
/// var b = TokenBucket(capacity: 600, period: .minutes(1), now: t0)  // 600 messages a minute
/// b.take(now: t0)  // true
/// ```
public struct TokenBucket: Sendable, Equatable {
    public let capacity: Double
    public let perNanosecond: Double
    public let period: TimeAmount
    public private(set) var tokens: Double
    public private(set) var updated: NIODeadline

    public init(capacity: Int, period: TimeAmount, now: NIODeadline) {
        self.capacity = Double(capacity)
        self.perNanosecond = Double(capacity) / Double(max(period.nanoseconds, 1))
        self.period = period
        self.tokens = Double(capacity)
        self.updated = now
    }

    mutating func refill(_ now: NIODeadline) {
        if now > updated {
            tokens = min(capacity, tokens + Double((now - updated).nanoseconds) * perNanosecond)
            updated = now
        }
    }

    /// The same bucket with a new capacity (a cluster node's share of a forest's rate changed),
    /// keeping the tokens it has up to the new capacity; itself when the capacity is unchanged.
    public func resized(to capacity: Int, now: NIODeadline) -> TokenBucket {
        guard Double(capacity) != self.capacity else { return self }
        var b = self
        b.refill(now)
        var resized = TokenBucket(capacity: capacity, period: period, now: now)
        resized.tokens = min(Double(capacity), b.tokens)
        return resized
    }

    /// Takes one token if there is one.
    public mutating func take(now: NIODeadline) -> Bool {
        refill(now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Puts back a token taken for something that did not happen (never above capacity).
    public mutating func giveBack() {
        tokens = min(capacity, tokens + 1)
    }

    /// Whether a token is there, without taking it.
    public mutating func available(now: NIODeadline) -> Bool {
        refill(now)
        return tokens >= 1
    }

    /// Full again: the bucket can be forgotten.
    public mutating func isFull(now: NIODeadline) -> Bool {
        refill(now)
        return tokens >= capacity
    }

    /// Seconds until the next token (for `Retry` hints and tests).
    public var secondsToNextToken: Double {
        tokens >= 1 ? 0 : (1 - tokens) / perNanosecond / 1e9
    }
}
