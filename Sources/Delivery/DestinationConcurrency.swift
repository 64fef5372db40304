import Foundation
import SMTPCore

/// The concurrency window of one destination (a provider, not a domain): how many sessions Mailflow
/// opens to it at once, learnt from how it answers.
///
/// - It starts small and grows by one after `growAfter` clean deliveries in a row, up to `maximum`.
/// - When the remote throttles (a `421`, a `4.3.2` or `4.7.x` busy/rate reply, a dropped session),
///   the window drops to the number of sessions that were working at that moment (what the remote
///   evidently allows), never below one, and that figure becomes a ceiling that is probed again only
///   after `probeAfter` clean deliveries. Hysteresis: signals within `quietPeriod` of a cut count as
///   the same episode, so one burst of refusals cuts once.
/// - A destination that fails `parkAfter` times in a row at a window of one is parked: no sessions
///   until `parkFor` has passed.
///
/// Postfix adapts only to connection failures, per domain; this adapts per provider to the
/// throttling replies themselves (the sender's side of EX1331830).
public struct DestinationConcurrency: Sendable, Equatable {
    public var window: Int
    public let minimum = 1
    public var maximum: Int
    public var ceiling: Int?
    public var growAfter: Int
    public var probeAfter: Int
    public var quietPeriod: TimeInterval
    public var parkAfter: Int
    public var parkFor: TimeInterval
    var successesInARow = 0
    var failuresInARow = 0
    var lastCut: Date?
    public private(set) var parkedUntil: Date?
    public private(set) var throttles = 0

    public init(
        initial: Int = 2, maximum: Int = 20, growAfter: Int = 4, probeAfter: Int = 200, quietPeriod: TimeInterval = 2,
        parkAfter: Int = 5, parkFor: TimeInterval = 60
    ) {
        self.window = max(1, min(initial, maximum))
        self.maximum = maximum
        self.growAfter = growAfter
        self.probeAfter = probeAfter
        self.quietPeriod = quietPeriod
        self.parkAfter = parkAfter
        self.parkFor = parkFor
    }

    public func isParked(at now: Date) -> Bool { parkedUntil.map { now < $0 } ?? false }

    /// A message went through (whatever the recipients' fates: the remote talked to us normally).
    public mutating func recordSuccess(now: Date) {
        failuresInARow = 0
        parkedUntil = nil
        successesInARow += 1
        let limit = ceiling.map { window >= $0 ? probeAfter : growAfter } ?? growAfter
        if successesInARow >= limit && window < maximum {
            window += 1
            successesInARow = 0
            if let c = ceiling, window > c { ceiling = window }
        }
    }

    /// The remote throttled while `working` sessions were delivering fine. `openedAt` is when the
    /// refused session was started, if it was refused at connection: a session started after the
    /// last cut and refused anyway shows the cut was not deep enough, so it cuts again even inside
    /// the quiet period (a cut counted sessions still connecting as working, and the remote kept
    /// refusing the one too many, up to a hundred times a second, for the whole quiet period).
    public mutating func recordThrottle(working: Int, now: Date, openedAt: Date? = nil) {
        throttles += 1
        successesInARow = 0
        if let last = lastCut, now.timeIntervalSince(last) < quietPeriod {
            guard let opened = openedAt, opened > last else { return }
        }
        lastCut = now
        let allowed = max(minimum, min(window - 1, working))
        window = allowed
        ceiling = allowed
    }

    /// A connection could not be made or broke before any message (not necessarily throttling).
    public mutating func recordFailure(now: Date) {
        successesInARow = 0
        failuresInARow += 1
        if window > minimum {
            window = max(minimum, window / 2)
        } else if failuresInARow >= parkAfter {
            parkedUntil = now.addingTimeInterval(parkFor)
            failuresInARow = 0
        }
    }

    /// Whether a reply says "slow down" rather than "no".
    public static func isThrottle(_ reply: SMTPReply) -> Bool {
        if reply.code == 421 { return true }
        guard reply.code / 100 == 4 else { return false }
        if let e = reply.enhancedCode, e.subject == 3 && e.detail == 2 { return true }
        let text = reply.lines.joined(separator: " ").lowercased()
        let words = ["too many", "rate", "busy", "concurrent", "throttl", "try again later", "slow down", "limit"]
        if let e = reply.enhancedCode, e.subject == 7 { return words.contains { text.contains($0) } }
        return words.contains { text.contains($0) }
    }
}
