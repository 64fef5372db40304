import Foundation

/// When to try again after a transient failure, and when to give up.
///
/// Defaults follow Exchange Server's transport defaults: four quick retries a minute
/// apart, six more five minutes apart, then every fifteen minutes; expiry after 24 hours with status
/// `4.4.7`, like Exchange Online. A jitter of up to 10% spreads retries so a recovering destination
/// is not hit by every message at once.
public struct RetrySchedule: Sendable, Equatable {
    public var intervals: [TimeInterval]
    public var expiry: TimeInterval
    public var jitter: Double

    public init(intervals: [TimeInterval], expiry: TimeInterval, jitter: Double = 0.1) {
        self.intervals = intervals
        self.expiry = expiry
        self.jitter = jitter
    }

    public static let exchangeLike = RetrySchedule(
        intervals: Array(repeating: 60, count: 4) + Array(repeating: 300, count: 6) + [900],
        expiry: 24 * 3600)

    /// The delay after the `attempt`-th failure (1-based); the last interval repeats.
    public func delay(afterAttempt attempt: Int, random: inout some RandomNumberGenerator) -> TimeInterval {
        guard !intervals.isEmpty else { return 60 }
        let base = intervals[min(max(attempt, 1), intervals.count) - 1]
        guard jitter > 0 else { return base }
        return base * (1 + Double.random(in: -jitter...jitter, using: &random))
    }

    /// Whether a message received at `receivedAt` has run out of time at `now`.
    public func isExpired(receivedAt: Date, now: Date) -> Bool {
        now.timeIntervalSince(receivedAt) >= expiry
    }
}
