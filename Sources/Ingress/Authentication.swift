import Accounts
import Foundation
import SMTPCore
import Synchronization

/// Where sessions find the users who may authenticate (the queue database's `user` table in
/// Mailflow). Blocking: sessions call it on the thread pool, never on an event loop.
public protocol AccountDirectory: Sendable {
    func account(username: String) throws -> UserAccount?
}

/// The submission listeners' rules (RFC 6409, RFC 8314): the mechanisms offered, and how failed
/// attempts from one source are slowed down and then locked out.
public struct SubmissionPolicy: Sendable, Equatable {
    public var mechanisms: [SASLExchange.Mechanism]
    /// Failures from one source within `window` before it is locked out.
    public var maxFailures: Int
    public var window: TimeInterval
    /// How long a locked-out source's AUTH is answered `421 4.7.0`.
    public var lockout: TimeInterval
    /// Added before every failure's reply: one step per failure so far, at most `maxDelay`.
    public var failureDelayStep: TimeInterval
    public var maxDelay: TimeInterval
    /// Messages one user may submit a minute (Exchange Online: 30); 0 is no limit.
    public var messagesPerMinute: Int
    /// Recipients one user may send to a day (Exchange Online: 10,000); 0 is no limit.
    public var recipientsPerDay: Int

    public init(
        mechanisms: [SASLExchange.Mechanism] = SASLExchange.Mechanism.allCases, maxFailures: Int = 5,
        window: TimeInterval = 900, lockout: TimeInterval = 900, failureDelayStep: TimeInterval = 1,
        maxDelay: TimeInterval = 5, messagesPerMinute: Int = 30, recipientsPerDay: Int = 10_000
    ) {
        self.messagesPerMinute = messagesPerMinute
        self.recipientsPerDay = recipientsPerDay
        self.mechanisms = mechanisms
        self.maxFailures = maxFailures
        self.window = window
        self.lockout = lockout
        self.failureDelayStep = failureDelayStep
        self.maxDelay = maxDelay
    }

    /// What the submission listener's sessions offer.
    public var offer: AuthenticationOffer {
        AuthenticationOffer(mechanisms: mechanisms.map(\.rawValue), requireTLS: true, required: true)
    }
}

/// Counts failed authentications per source (address, or /64 for IPv6, as admission control
/// counts connections) across sessions: each failure's reply waits a little longer, and past
/// `maxFailures` within `window` the source is locked out for `lockout`. A success does not clear the
/// count (one valid account must not buy another round of guesses at someone else's); failures age
/// out of the window. It also bounds the password checks (PBKDF2) in flight: past `maxInFlight`, AUTH
/// is answered `454 4.7.0` at once rather than queueing CPU work a remote controls.
public final class AuthenticationGuard: Sendable {
    struct Entry {
        var failures: [Date] = []
        var lockedUntil: Date?
    }

    public enum Verdict: Equatable, Sendable {
        /// Answer `535 5.7.8` after this many seconds.
        case delay(TimeInterval)
        /// Answer `421 4.7.0` and close; the source is locked out.
        case lockOut
    }

    let entries = Mutex<[String: Entry]>([:])
    let now: @Sendable () -> Date
    /// Password checks running or queued, server-wide, and the most allowed.
    let inFlight = Mutex(0)
    public let maxInFlight: Int
    /// Sources remembered at most (the oldest entries go first past it).
    static let maxEntries = 100_000

    public init(maxInFlight: Int = 8, now: @escaping @Sendable () -> Date = { Date() }) {
        self.now = now
        self.maxInFlight = maxInFlight
    }

    /// Takes a slot for one password check; false when `maxInFlight` are running already.
    public func beginCheck() -> Bool {
        inFlight.withLock { n in
            guard n < maxInFlight else { return false }
            n += 1
            return true
        }
    }

    public func endCheck() {
        inFlight.withLock { $0 = max(0, $0 - 1) }
    }

    /// Whether the source may try at all.
    public func isLockedOut(source: String) -> Bool {
        let t = now()
        return entries.withLock { e in
            guard let until = e[AdmissionControl.sourceKey(source)]?.lockedUntil else { return false }
            if until > t { return true }
            e[AdmissionControl.sourceKey(source)] = nil
            return false
        }
    }

    public func recordFailure(source: String, policy: SubmissionPolicy) -> Verdict {
        let t = now()
        let key = AdmissionControl.sourceKey(source)
        return entries.withLock { e in
            if e.count >= Self.maxEntries { Self.prune(&e, now: t, window: policy.window) }
            var entry = e[key] ?? Entry()
            entry.failures = entry.failures.filter { t.timeIntervalSince($0) < policy.window } + [t]
            defer { e[key] = entry }
            if entry.failures.count >= policy.maxFailures {
                entry.lockedUntil = t.addingTimeInterval(policy.lockout)
                entry.failures = []
                return .lockOut
            }
            return .delay(min(policy.maxDelay, policy.failureDelayStep * Double(entry.failures.count)))
        }
    }

    /// Forgets sources with no failure in the window and no lockout running; past the cap, the rest
    /// too (a remote with many /64s must not grow this without bound).
    static func prune(_ e: inout [String: Entry], now t: Date, window: TimeInterval) {
        e = e.filter { _, entry in
            (entry.lockedUntil ?? .distantPast) > t || entry.failures.contains { t.timeIntervalSince($0) < window }
        }
        // Still full: forget the sources that are only counting, keep the lockouts.
        if e.count >= maxEntries { e = e.filter { ($0.value.lockedUntil ?? .distantPast) > t } }
    }

    /// Sources locked out now (for `mailflow limits` and tests).
    public var lockedOutSources: Int {
        let t = now()
        return entries.withLock { $0.values.count { ($0.lockedUntil ?? .distantPast) > t } }
    }
}
