import Foundation
import MailQueue
import ServiceHealth

/// What Mailflow's own trace says about an address or a destination domain lately: the "is it me or
/// them" half that no outside checker can give. Reads the trace stream (read-only) from `since` on,
/// at most ``maxEvents`` events.
public struct TraceReview {
    /// How many trace events one review reads at most.
    public static let maxEvents = 200_000
    /// How many last replies a finding lists.
    public static let lastReplies = 5

    let store: any HealthStore
    let since: Date

    /// Reads `store`'s trace stream: a node's queue database, or in a cluster the shared one
    /// (`SharedHealthStore`), where every node's trace is.
    public init(store: any HealthStore, since: Date) {
        self.store = store
        self.since = since
    }

    /// Opens the queue database read-only; nil when it does not exist (Mailflow never ran here).
    public static func open(dataDirectory: String, since: Date) throws -> TraceReview? {
        let path = dataDirectory + "/queue.sqlite"
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return TraceReview(store: try SQLiteQueueStore(path: path, readOnly: true), since: since)
    }

    func events() throws -> [SQLiteQueueStore.HealthTraceRow] {
        try store.healthTrace(from: try store.healthTraceStart(atOrAfter: since), limit: Self.maxEvents).rows
    }

    var window: String {
        let hours = Int((Date().timeIntervalSince(since) / 3600).rounded())
        return hours >= 48 ? "the last \(hours / 24) days" : "the last \(hours) h"
    }

    /// What `address` did here: messages received, refusals and throttle events by reply signature,
    /// forests hit, the last replies it got.
    public func address(_ address: String) throws -> [CheckFinding] {
        let rows = try events().filter { $0.clientAddress == address || $0.messageClient == address }
        func finding(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil)
            -> CheckFinding
        {
            CheckFinding(
                category: .trace, subject: address, check: check, severity: severity, summary: summary, detail: detail)
        }
        let received = Set(rows.filter { $0.kind == .received }.map(\.id)).count
        let throttled = rows.filter { $0.kind == .throttled }
        var out = [finding("trace.received", .info, "\(received) message(s) received from \(address) in \(window)")]
        guard !throttled.isEmpty else {
            out.append(finding("trace.throttled", .ok, "No refusals or throttling of \(address) in \(window)"))
            return out
        }
        let bySignature = Self.tally(throttled.map { ErrorSignature($0.reply ?? "").text })
        out.append(
            finding(
                "trace.throttled", .warning, "\(throttled.count) refusal(s) or throttle event(s) in \(window)",
                bySignature.map { "\($0.count) × \($0.text)" }.joined(separator: "\n")))
        let forests = Self.tally(throttled.compactMap(\.forest))
        if !forests.isEmpty {
            out.append(
                finding(
                    "trace.forests", .info,
                    "Forests hit: \(forests.map { "\($0.text) (\($0.count))" }.joined(separator: ", "))"
                ))
        }
        let last = throttled.suffix(Self.lastReplies).reversed().map { row in
            "\(Self.stamp(row.time)) \(row.reply ?? "-")"
        }
        out.append(finding("trace.last-replies", .info, "The last replies it got", last.joined(separator: "\n")))
        return out
    }

    /// What Mailflow saw delivering to `domain`: deliveries, deferrals by error signature, failures,
    /// the last replies.
    public func destination(_ domain: String) throws -> [CheckFinding] {
        let suffix = "@" + domain.lowercased()
        let rows = try events().filter { row in
            guard let r = row.recipient?.lowercased(), r.hasSuffix(suffix) else { return false }
            return row.kind == .delivered || row.kind == .deferred || row.kind == .failed
        }
        func finding(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil)
            -> CheckFinding
        {
            CheckFinding(
                category: .trace, subject: domain, check: check, severity: severity, summary: summary, detail: detail)
        }
        guard !rows.isEmpty else {
            return [finding("trace.delivery", .info, "Mailflow delivered nothing to \(domain) in \(window)")]
        }
        let delivered = rows.filter { $0.kind == .delivered }.count
        let deferred = rows.filter { $0.kind == .deferred }
        let failed = rows.filter { $0.kind == .failed }
        var out = [
            finding(
                "trace.delivery", .info,
                "In \(window): \(delivered) delivered, \(deferred.count) deferral(s), \(failed.count) failure(s) to \(domain)"
            )
        ]
        func signatures(_ rows: [SQLiteQueueStore.HealthTraceRow]) -> String {
            Self.tally(rows.map { ErrorSignature($0.detail ?? "").text }).map { "\($0.count) × \($0.text)" }
                .joined(separator: "\n")
        }
        if !deferred.isEmpty {
            out.append(
                finding(
                    "trace.deferrals", delivered == 0 ? .warning : .info,
                    "\(deferred.count) deferral(s) by \(Self.tally(deferred.map { ErrorSignature($0.detail ?? "").text }).count) signature(s)",
                    signatures(deferred)))
        }
        if !failed.isEmpty {
            out.append(finding("trace.failures", .warning, "\(failed.count) permanent failure(s)", signatures(failed)))
        }
        let last = rows.filter { $0.kind != .delivered }.suffix(Self.lastReplies).reversed().map { row in
            "\(Self.stamp(row.time)) \(row.kind.rawValue) \(row.detail ?? "-")"
        }
        if !last.isEmpty {
            out.append(
                finding("trace.last-replies", .info, "The last replies from \(domain)", last.joined(separator: "\n")))
        }
        return out
    }

    /// Distinct texts with their counts, most frequent first.
    static func tally(_ texts: [String]) -> [(text: String, count: Int)] {
        var counts: [String: Int] = [:]
        for t in texts { counts[t, default: 0] += 1 }
        let pairs: [(text: String, count: Int)] = counts.map { (text: $0.key, count: $0.value) }
        return pairs.sorted { a, b in a.count != b.count ? a.count > b.count : a.text < b.text }
    }

    static func stamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().timeSeparator(.colon).time(includingFractionalSeconds: false))
    }
}
