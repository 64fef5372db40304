import Foundation
import MailQueue
import SMTPCore

/// The settings a `DeliveryPlanner` applies: when to retry and give up, when a message counts as
/// poison for remotes, when the sender hears that mail is late.
public struct DeliveryPolicy: Sendable, Equatable {
    public var retry: RetrySchedule
    /// Abrupt closes by remotes a message may cause before it fails as possibly harmful (Exchange's
    /// `SuspiciousRemoteServerError` limit).
    public var maxAbruptCloses: Int
    /// After this long undelivered, the sender gets one delay notice (nil: never).
    public var delayNotice: TimeInterval?

    /// Exchange's limit of abrupt closes, and its first delay notice after four hours.
    public static let defaultMaxAbruptCloses = 3
    public static let defaultDelayNotice: TimeInterval = 4 * 3600

    public init(
        retry: RetrySchedule = .exchangeLike, maxAbruptCloses: Int = Self.defaultMaxAbruptCloses,
        delayNotice: TimeInterval? = Self.defaultDelayNotice
    ) {
        self.retry = retry
        self.maxAbruptCloses = maxAbruptCloses
        self.delayNotice = delayNotice
    }
}

/// What one attempt at a message tries: its pending recipients split by transport. Recipients of a
/// message an administrator bounced are not tried at all, and relay recipients without an outbound
/// transport have no route; both are settled by `DeliveryPlanner.decide`.
public struct DeliveryWork: Sendable, Equatable {
    /// Recipients delivered into a local mailbox.
    public var local: [StoredRecipient] = []
    /// Recipients relayed, by destination domain (one SMTP transaction per domain).
    public var remote: [String: [StoredRecipient]] = [:]
    /// Relay recipients with no outbound transport configured (their indexes).
    public var unroutable: [Int] = []

    public init(local: [StoredRecipient] = [], remote: [String: [StoredRecipient]] = [:], unroutable: [Int] = []) {
        self.local = local
        self.remote = remote
        self.unroutable = unroutable
    }
}

/// What the transports reported for one attempt, by recipient index.
public struct AttemptResults: Sendable, Hashable {
    /// Mailbox deliveries: `.delivered`, or `.deferred` with the error (the planner turns a deferral
    /// into a failure once the message has expired).
    public var local: [Int: RecipientOutcome]
    /// Outcomes of remote SMTP transactions.
    public var remote: [Int: RemoteOutcome]
    /// Relay recipients that had no route (from `DeliveryWork.unroutable`).
    public var unroutable: [Int]

    public init(local: [Int: RecipientOutcome] = [:], remote: [Int: RemoteOutcome] = [:], unroutable: [Int] = []) {
        self.local = local
        self.remote = remote
        self.unroutable = unroutable
    }
}

/// One delivery status notification to send to the message's sender (RFC 3464), before rendering:
/// rendering needs the message body and so stays with the scheduler.
public struct DeliveryReport: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// `Action: failed` for recipients that will not be delivered.
        case failure
        /// `Action: delayed` for recipients still being retried (RFC 3464 §2.3.3).
        case delay
    }

    /// One per-recipient block of the report.
    public struct Row: Sendable, Hashable {
        public var recipientIndex: Int
        /// The enhanced status code (RFC 3463), e.g. `4.4.7`.
        public var status: String
        public var remoteMTA: String?
        /// The reply text, e.g. `550 5.1.1 no such user`.
        public var diagnostic: String

        public init(recipientIndex: Int, status: String, remoteMTA: String? = nil, diagnostic: String) {
            self.recipientIndex = recipientIndex
            self.status = status
            self.remoteMTA = remoteMTA
            self.diagnostic = diagnostic
        }
    }

    public var kind: Kind
    public var rows: [Row]
    public var lastAttempt: Date
    /// For delay reports: when the queue gives up (RFC 3464 `Will-Retry-Until`).
    public var willRetryUntil: Date?

    public init(kind: Kind, rows: [Row], lastAttempt: Date, willRetryUntil: Date? = nil) {
        self.kind = kind
        self.rows = rows
        self.lastAttempt = lastAttempt
        self.willRetryUntil = willRetryUntil
    }
}

/// What the scheduler carries out after an attempt: one transaction with these outcomes, this next
/// attempt time, the abrupt-close count and the reports rendered as DSN messages.
public struct DeliveryDecision: Sendable, Hashable {
    /// The outcome of every recipient that this attempt settled or deferred, by index.
    public var outcomes: [Int: RecipientOutcome]
    /// When to try again (nil: no recipient is left pending).
    public var nextAttempt: Date?
    /// A remote closed a session abruptly during this attempt (counts toward `maxAbruptCloses`).
    public var abruptClose: Bool
    /// Reports to the sender, failure before delay; empty for the null sender.
    public var reports: [DeliveryReport]

    public init(outcomes: [Int: RecipientOutcome], nextAttempt: Date?, abruptClose: Bool, reports: [DeliveryReport]) {
        self.outcomes = outcomes
        self.nextAttempt = nextAttempt
        self.abruptClose = abruptClose
        self.reports = reports
    }

    public var failureReport: DeliveryReport? { reports.first { $0.kind == .failure } }
    public var delayReport: DeliveryReport? { reports.first { $0.kind == .delay } }
}

/// Mailflow's delivery policy as a pure function: from a stored message and what one attempt at it
/// did, the outcome of each recipient, the next attempt and the reports to its sender. No clock, no
/// queue, no sockets: `now` and the random source come in as arguments, so every rule is a table
/// test.
///
/// - Retry: the `RetrySchedule` delay after this attempt (with its jitter), three times as long
///   after an abrupt close (Exchange waits longer before trying such a remote again).
/// - Expiry: a recipient still deferred once the message is older than `retry.expiry` fails with
///   `450 4.4.7` (Exchange Online's "message expired").
/// - Poison messages: a recipient whose session the remote cut off fails with `554 5.4.300` once the
///   message has caused `maxAbruptCloses` abrupt closes (Exchange's SuspiciousRemoteServerError).
/// - Bounce requested by an administrator: every pending recipient fails with `550 5.3.0`.
/// - Reports (RFC 3461 §4.1, RFC 3464): a failure report for failed recipients unless their NOTIFY
///   excludes FAILURE; one delay notice per message, once it is `delayNotice` old, for deferred
///   recipients unless their NOTIFY excludes DELAY; never a report to the null sender, so a bounce
///   is never bounced.
///
/// ```swift
/// let planner = DeliveryPlanner(policy: DeliveryPolicy(retry: .exchangeLike))
/// var rng = SystemRandomNumberGenerator()
/// let decision = planner.decide(message, results: results, now: Date(), using: &rng)
/// ```
public struct DeliveryPlanner: Sendable, Equatable {
    public var policy: DeliveryPolicy

    public init(policy: DeliveryPolicy) {
        self.policy = policy
    }

    /// The pending recipients of `message` to try, by transport. `relayAvailable` is false when no
    /// outbound transport is configured.
    public func work(for message: StoredMessage, relayAvailable: Bool) -> DeliveryWork {
        var work = DeliveryWork()
        guard !message.bounceRequested else { return work }
        for r in message.recipients where r.status == .pending {
            switch r.recipient.route {
            case .local: work.local.append(r)
            case .relay(let domain):
                if relayAvailable {
                    work.remote[domain, default: []].append(r)
                } else {
                    work.unroutable.append(r.index)
                }
            }
        }
        return work
    }

    /// The decisions after one attempt at `message` that ended at `now`.
    public func decide(
        _ message: StoredMessage, results: AttemptResults, now: Date, using random: inout some RandomNumberGenerator
    ) -> DeliveryDecision {
        let retry = policy.retry
        let expired = retry.isExpired(receivedAt: message.receivedAt, now: now)
        var outcomes: [Int: RecipientOutcome] = [:]
        func deferOrExpire(_ index: Int, _ reason: String) {
            outcomes[index] =
                expired
                ? .failed(reason: "450 4.4.7 Message expired after \(Int(retry.expiry)) s, last: \(reason)")
                : .deferred(reason: reason)
        }

        if message.bounceRequested {
            for r in message.recipients where r.status == .pending {
                outcomes[r.index] = .failed(reason: "550 5.3.0 Returned to the sender by an administrator")
            }
        }
        for index in results.unroutable where outcomes[index] == nil {
            let route = message.recipients.first { $0.index == index }?.recipient.route
            outcomes[index] = .failed(reason: "550 5.4.4 No route for \(route.map { "\($0)" } ?? "recipient \(index)")")
        }
        for (index, outcome) in results.local where outcomes[index] == nil {
            if case .deferred(let reason) = outcome {
                deferOrExpire(index, reason)
            } else {
                outcomes[index] = outcome
            }
        }
        let abrupt = results.remote.values.contains { $0.result.reply == ClientSession.abruptClose }
        let abruptSoFar = message.abruptCloses + (abrupt ? 1 : 0)
        for (index, o) in results.remote where outcomes[index] == nil {
            let detail = Self.detail(o)
            switch o.result.disposition {
            case .delivered: outcomes[index] = .delivered(detail: detail)
            case .failed: outcomes[index] = .failed(reason: detail)
            case .deferred:
                if o.result.reply == ClientSession.abruptClose && abruptSoFar >= policy.maxAbruptCloses {
                    // Exchange's "poison for remote": the message keeps breaking the remote's sessions.
                    outcomes[index] = .failed(
                        reason: "554 5.4.300 Message failed after \(abruptSoFar) abrupt disconnects by the remote; "
                            + "it may be harmful to it (SuspiciousRemoteServerError)")
                } else {
                    deferOrExpire(index, detail)
                }
            }
        }

        let anyDeferred = outcomes.values.contains {
            if case .deferred = $0 { return true } else { return false }
        }
        var nextAttempt: Date?
        if anyDeferred {
            var delay = retry.delay(afterAttempt: message.attempts + 1, random: &random)
            // Exchange waits longer after an abrupt close before trying that remote again.
            if abrupt { delay *= 3 }
            nextAttempt = now.addingTimeInterval(delay)
        }
        let delayNoticeDue =
            anyDeferred && message.delayNoticeSentAt == nil
            && policy.delayNotice.map { now.timeIntervalSince(message.receivedAt) >= $0 } == true
        return DeliveryDecision(
            outcomes: outcomes, nextAttempt: nextAttempt, abruptClose: abrupt,
            reports: reports(message, outcomes: outcomes, remote: results.remote, now: now, delay: delayNoticeDue))
    }

    /// The latest next attempt this policy ever sets after an attempt at `now`: the longest retry
    /// interval with its jitter, three times over after an abrupt close.
    public func latestNextAttempt(after now: Date) -> Date {
        let longest = policy.retry.intervals.max() ?? 60
        return now.addingTimeInterval(longest * (1 + policy.retry.jitter) * 3)
    }

    /// A stored next attempt, read back at `now` after the wall clock may have been stepped back.
    ///
    /// `next_attempt` is wall-clock time. When NTP or an administrator steps the clock back by two
    /// hours, every deferred message would wait those two hours on top of its interval: the queue
    /// looks stuck. A next attempt later than any this policy sets (`latestNextAttempt(after:)`) can
    /// only come from such a step, and is brought back to one longest interval from `now`, so
    /// deferred mail is retried within its normal rhythm. A forward step needs nothing: due
    /// messages are tried once each, at most `concurrency` at a time, and get fresh intervals.
    ///
    /// ```swift
    /// planner.clampedNextAttempt(now + 7200, now: now)  // now + 900 with the default schedule
    /// ```
    public func clampedNextAttempt(_ stored: Date, now: Date) -> Date {
        guard stored > latestNextAttempt(after: now) else { return stored }
        let longest = policy.retry.intervals.max() ?? 60
        return now.addingTimeInterval(longest)
    }

    /// RFC 3461/3464: which recipients the sender hears about, and how.
    func reports(
        _ message: StoredMessage, outcomes: [Int: RecipientOutcome], remote: [Int: RemoteOutcome], now: Date,
        delay: Bool
    ) -> [DeliveryReport] {
        guard !message.sender.isEmpty else { return [] }
        var failures: [DeliveryReport.Row] = []
        var delays: [DeliveryReport.Row] = []
        for r in message.recipients {
            let notify = r.recipient.notify
            switch outcomes[r.index] {
            case .failed(let reason)?:
                if let notify, notify.never || !notify.failure { continue }
                failures.append(
                    .init(
                        recipientIndex: r.index, status: Self.statusCode(in: reason) ?? "5.0.0",
                        remoteMTA: remote[r.index]?.remoteHost, diagnostic: reason))
            case .deferred(let reason)? where delay:
                // RFC 3461 §4.1: without NOTIFY the MTA may send delay notices; with it, only for DELAY.
                if let notify, notify.never || !notify.delay { continue }
                delays.append(
                    .init(
                        recipientIndex: r.index, status: Self.statusCode(in: reason) ?? "4.0.0",
                        remoteMTA: remote[r.index]?.remoteHost, diagnostic: reason))
            default:
                continue
            }
        }
        var out: [DeliveryReport] = []
        if !failures.isEmpty { out.append(DeliveryReport(kind: .failure, rows: failures, lastAttempt: now)) }
        if !delays.isEmpty {
            out.append(
                DeliveryReport(
                    kind: .delay, rows: delays, lastAttempt: now,
                    willRetryUntil: message.receivedAt.addingTimeInterval(policy.retry.expiry)))
        }
        return out
    }

    /// A remote outcome as the trace records it: the reply, then where it came from.
    static func detail(_ o: RemoteOutcome) -> String {
        let remoteWhere = [o.remoteHost, o.remoteIP.map { "[\($0)]" }, o.tls].compactMap { $0 }.joined(separator: " ")
        return "\(o.result.reply)" + (remoteWhere.isEmpty ? "" : " (remote \(remoteWhere))")
    }

    /// The enhanced status code in a reply text (`550 5.1.1 ...` → `5.1.1`).
    static func statusCode(in text: String) -> String? {
        for word in text.split(separator: " ").prefix(3) where EnhancedStatusCode(parsing: word) != nil {
            return String(word)
        }
        return nil
    }
}
