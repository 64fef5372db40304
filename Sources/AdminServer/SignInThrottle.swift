import Foundation
import NIOCore
import Synchronization

/// Failed sign-ins per source: a web sign-in or a bearer token that names no valid token. The
/// first half of `limit` failures within `window` are answered at once, the rest after a growing
/// delay; once a source has `limit` of them, each further invalid token from it is `429` with
/// `Retry-After` (until the oldest failure leaves the window) instead of `401`, without a delay,
/// a database write or an audit row of its own. A valid token is always let in: tokens are 256
/// random bits, so telling a valid one apart gives a guesser nothing, while refusing valid tokens
/// would let anyone who shares the source (every local user on loopback, a NAT) lock the operator
/// and the monitoring out. A success does not clear the failures. IPv6 sources count per /64, as
/// one host usually holds a whole /64.
///
/// Pure on the times it is given, so its tests move a clock instead of sleeping.
public final class SignInThrottle: Sendable {
    /// Failures within `window` that close the door.
    public let limit: Int
    public let window: TimeInterval
    /// The most sources remembered; past it the one with the oldest failure is forgotten.
    static let maxSources = 10_000
    let failures = Mutex<[String: [Date]]>([:])

    public static let defaultLimit = 10
    public static let defaultWindow: TimeInterval = 300

    public init(limit: Int = defaultLimit, window: TimeInterval = defaultWindow) {
        self.limit = max(1, limit)
        self.window = window
    }

    /// What to answer an invalid token from `source`: `401` after counting it, or `429` with
    /// `Retry-After: seconds` once the source has `limit` failures in the window.
    public enum Decision: Equatable, Sendable {
        case proceed
        case refuse(retryAfter: Int)
    }

    public func check(_ source: String, now: Date = Date()) -> Decision {
        failures.withLock { all in
            let recent = (all[source] ?? []).filter { now.timeIntervalSince($0) < window }
            all[source] = recent.isEmpty ? nil : recent
            guard recent.count >= limit, let oldest = recent.first else { return .proceed }
            let wait = oldest.addingTimeInterval(window).timeIntervalSince(now)
            return .refuse(retryAfter: max(1, Int(wait.rounded(.up))))
        }
    }

    /// Counts a failure; returns how long to hold the `401` back, and whether this failure closed
    /// the door (the moment worth an audit event).
    public func fail(_ source: String, now: Date = Date()) -> (delay: Duration, closed: Bool) {
        failures.withLock { all in
            var recent = (all[source] ?? []).filter { now.timeIntervalSince($0) < window }
            recent.append(now)
            if all[source] == nil, all.count >= Self.maxSources,
                let victim = all.min(by: { ($0.value.last ?? now) < ($1.value.last ?? now) })?.key
            {
                all[victim] = nil
            }
            all[source] = recent
            return (Self.delay(afterFailures: recent.count, limit: limit), recent.count == limit)
        }
    }

    /// No delay for the first half of `limit` (at least two: a mistyped token), then 250 ms
    /// doubling to at most 4 s.
    public static func delay(afterFailures n: Int, limit: Int) -> Duration {
        let free = max(2, limit / 2)
        guard n > free else { return .zero }
        return .milliseconds(min(4000, 250 << min(n - free - 1, 8)))
    }

    /// The key a peer's failures count under: the IPv4 address, or the /64 of an IPv6 one (an
    /// IPv4-mapped IPv6 address counts as its IPv4 address); `unknown` without an address.
    public static func sourceKey(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        switch address {
        case .v4:
            return address.ipAddress ?? "unknown"
        case .v6(let a):
            var sin6 = a.address.sin6_addr
            let bytes = withUnsafeBytes(of: &sin6) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
                return bytes[12..<16].map { String($0) }.joined(separator: ".")
            }
            let groups = stride(from: 0, to: 8, by: 2).map {
                String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16)
            }
            return groups.joined(separator: ":") + "::/64"
        case .unixDomainSocket:
            return "local"
        }
    }
}
