import Foundation

/// A message trace parameter that was refused: which one, and what it must be. The admin API answers
/// it as a `400`, the CLI as a usage error; both read the words from here.
public struct TraceQueryError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The parameter's name as the API spells it (`status`, `since`, `limit`, ...).
    public var parameter: String
    /// What is wrong, as a sentence that starts with the parameter (`status must be one of ...`).
    public var description: String

    public init(parameter: String, description: String) {
        self.parameter = parameter
        self.description = description
    }
}

extension SQLiteQueueStore.TraceQuery {
    /// The recipient statuses a trace can be filtered by.
    public static let statuses = ["pending", "held", "delivered", "failed"]
    /// `inbound` (delivered to a local mailbox) or `outbound` (relayed).
    public static let directions = ["inbound", "outbound"]
    /// The results the `spf`, `dkim` and `dmarc` filters take (RFC 8601's, as stored).
    public static let authResults: [String: [String]] = [
        "spf": ["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"],
        "dkim": ["pass", "fail", "neutral", "policy", "none", "temperror", "permerror"],
        "dmarc": ["pass", "fail", "none", "temperror", "permerror"],
    ]
    /// Rows a trace returns unless asked for a number, and the most it returns.
    public static let defaultLimit = 100
    public static let maximumLimit = 5000

    /// A trace query from the text people type, checked one way for the admin API's query string and
    /// the `mailflow trace` options. Keys as the API spells them: `sender`, `recipient`, `message_id`,
    /// `queue_id`, `status`, `client_ip`, `tenant`, `direction`, `since`, `until`, `spf`, `dkim`,
    /// `dmarc`, `limit`.
    ///
    /// Text filters are trimmed and ignored when empty; `status`, `direction`, `since`, `until` and
    /// `limit` given empty are refused. Times are ISO 8601 or a duration back from `now`
    /// (`Self.time(_:now:)`).
    ///
    /// ```swift
    /// try TraceQuery(parameters: ["status": "failed", "since": "24h"])  // failed in the last day
    /// try TraceQuery(parameters: ["limit": "0"])  // TraceQueryError: limit must be a whole number ...
    /// ```
    public init(parameters p: [String: String], now: Date = Date()) throws(TraceQueryError) {
        self.init()
        for key in ["status", "direction", "since", "until", "limit"] where p[key]?.isEmpty == true {
            throw TraceQueryError(parameter: key, description: "\(key) must not be empty")
        }
        func text(_ key: String) -> String? {
            guard let v = p[key]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        sender = text("sender")
        recipient = text("recipient")
        messageID = text("message_id")
        queueID = text("queue_id")
        clientAddress = text("client_ip")
        tenant = text("tenant")
        if let s = text("status") {
            guard Self.statuses.contains(s.lowercased()) else {
                throw TraceQueryError(
                    parameter: "status", description: "status must be one of \(Self.statuses.joined(separator: ", "))")
            }
            status = s
        }
        if let d = text("direction") {
            guard Self.directions.contains(d.lowercased()) else {
                throw TraceQueryError(parameter: "direction", description: "direction must be inbound or outbound")
            }
            direction = d
        }
        for key in ["spf", "dkim", "dmarc"] {
            guard let v = text(key)?.lowercased() else { continue }
            let allowed = Self.authResults[key] ?? []
            guard allowed.contains(v) else {
                throw TraceQueryError(
                    parameter: key, description: "\(key) must be one of \(allowed.joined(separator: ", "))")
            }
            switch key {
            case "spf": spf = v
            case "dkim": dkim = v
            default: dmarc = v
            }
        }
        for key in ["since", "until"] {
            guard let s = text(key) else { continue }
            guard let t = Self.time(s, now: now) else {
                throw TraceQueryError(
                    parameter: key, description: "\(key): '\(s)' is not an ISO 8601 time or a duration like 24h")
            }
            if key == "since" { since = t } else { until = t }
        }
        if let s = text("limit") {
            guard let n = Int(s), (1...Self.maximumLimit).contains(n) else {
                throw TraceQueryError(
                    parameter: "limit", description: "limit must be a whole number from 1 to \(Self.maximumLimit)")
            }
            limit = n
        }
    }

    /// ISO 8601 (`2026-11-29T10:00:00Z`, `2026-11-29T11:00:00+01:00`, or a date, at midnight UTC) or
    /// a duration back from `now` in minutes, hours or days (`30m`, `1.5h`, `7d`): the `TimeBound` of
    /// docs/openapi.yaml. Nil for anything else, including dates that do not exist (February 30).
    public static func time(_ s: String, now: Date = Date()) -> Date? {
        let units: [Character: TimeInterval] = ["m": 60, "h": 3600, "d": 86400]
        if let last = s.last, let unit = units[last], let n = Double(s.dropLast()), n.isFinite, n >= 0 {
            return now - n * unit
        }
        return iso8601(s)
    }

    static func iso8601(_ s: String) -> Date? {
        func number(_ t: Substring, _ digits: Int) -> Int? {
            t.count == digits && t.allSatisfy(\.isASCII) && t.allSatisfy(\.isNumber) ? Int(t) : nil
        }
        let halves = s.split(separator: "T", maxSplits: 1, omittingEmptySubsequences: false)
        let ymd = halves[0].split(separator: "-", omittingEmptySubsequences: false)
        guard ymd.count == 3, let y = number(ymd[0], 4), let mo = number(ymd[1], 2), let d = number(ymd[2], 2) else {
            return nil
        }
        var c = DateComponents(year: y, month: mo, day: d, hour: 0, minute: 0, second: 0)
        var offset = 0
        if halves.count == 2 {
            var time = halves[1]
            if time.hasSuffix("Z") {
                time = time.dropLast()
            } else if time.count == 14, let sign = time.dropFirst(8).first, sign == "+" || sign == "-" {
                let hm = time.dropFirst(9).split(separator: ":", omittingEmptySubsequences: false)
                guard hm.count == 2, let oh = number(hm[0], 2), let om = number(hm[1], 2), oh < 24, om < 60 else {
                    return nil
                }
                offset = (oh * 3600 + om * 60) * (sign == "+" ? 1 : -1)
                time = time.prefix(8)
            } else {
                return nil
            }
            let hms = time.split(separator: ":", omittingEmptySubsequences: false)
            guard hms.count == 3, let h = number(hms[0], 2), let mi = number(hms[1], 2), let se = number(hms[2], 2),
                h < 24, mi < 60, se < 60
            else { return nil }
            (c.hour, c.minute, c.second) = (h, mi, se)
        }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        guard let date = cal.date(from: c), cal.component(.day, from: date) == d,
            cal.component(.month, from: date) == mo
        else { return nil }
        return date - TimeInterval(offset)
    }
}
