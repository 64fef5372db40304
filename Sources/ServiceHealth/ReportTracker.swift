import Foundation

/// User problem reports: the recent ones per region, and how many a region usually sends, so that
/// a surge above the reports' own baseline opens an issue or joins the matching one (the way
/// Downdetector compares reports with their usual level for the time of day). One report per tenant
/// and region counts once within the window.
struct ReportTracker: Sendable {
    struct Entry: Sendable {
        var time: Date
        var report: ProblemReport
        var signature: ErrorSignature?
        var joined = false
    }

    struct Surge: Sendable {
        var region: String
        var first: Date
        var count: Int
        var unjoined: Int
        var tenants: [String]
        var errorSignatures: [String]
    }

    var recent: [Entry] = []
    var last: [String: Date] = [:]
    /// Reports per region by hour of day, and since when reports have been counted.
    var history: [String: [Double]] = [:]
    var since: Date?
    var now: Date?
    var window: TimeInterval = 900

    mutating func add(_ r: ProblemReport, signature: ErrorSignature?, at t: Date) {
        if since == nil { since = t }
        recent.append(Entry(time: t, report: r, signature: signature))
        last[r.region] = t
    }

    mutating func markJoined(_ r: ProblemReport, at t: Date) {
        if let i = recent.lastIndex(where: { $0.time == t && $0.report == r }) { recent[i].joined = true }
    }

    mutating func markAllJoined(region: String) {
        for i in recent.indices where recent[i].report.region == region { recent[i].joined = true }
    }

    func lastReport(region: String) -> Date? { last[region] }

    mutating func close(bucketEnd: Date, policy: HealthDetectionPolicy) {
        now = bucketEnd
        window = policy.reportWindow
        if since == nil { since = bucketEnd }
        let cutoff = bucketEnd.addingTimeInterval(-policy.reportWindow)
        while let first = recent.first, first.time < cutoff {
            // A report leaving the window becomes history, unless it was part of a surge.
            if !first.joined {
                history[first.report.region, default: [Double](repeating: 0, count: 24)][
                    TimeSlot(first.time).hourOfDay] += 1
            }
            recent.removeFirst()
        }
    }

    /// Reports a region usually sends within the window at this time of day.
    func expected(region: String) -> Double {
        guard let since, let now, let h = history[region] else { return 0 }
        let days = max(now.timeIntervalSince(since) / 86400, 1)
        return h[TimeSlot(now).hourOfDay] / days * window / 3600
    }

    func surges(policy: HealthDetectionPolicy) -> [Surge] {
        var byRegion: [String: [Entry]] = [:]
        for e in recent { byRegion[e.report.region, default: []].append(e) }
        var out: [Surge] = []
        for (region, entries) in byRegion.sorted(by: { $0.key < $1.key }) {
            let unjoined = entries.filter { !$0.joined }
            guard !unjoined.isEmpty else { continue }
            let tenants = Set(entries.map(\.report.tenant))
            let needed = max(
                Double(policy.reportMinimumTenants), policy.reportSurgeFactor * expected(region: region) + 1)
            guard Double(tenants.count) >= needed else { continue }
            var sigs: [String: Int] = [:]
            for e in entries { if let s = e.signature { sigs[s.text, default: 0] += 1 } }
            out.append(
                Surge(
                    region: region, first: entries[0].time, count: entries.count, unjoined: unjoined.count,
                    tenants: tenants.sorted(), errorSignatures: sigs.sorted { $0.value > $1.value }.map(\.key)))
        }
        return out
    }

    /// Unjoined reports in these regions (or with this signature), which join a new issue; marked joined.
    mutating func recent(regions: [String], signature: ErrorSignature) -> [(String, Int)] {
        var counts: [String: Int] = [:]
        for i in recent.indices where !recent[i].joined {
            if regions.contains(recent[i].report.region) || recent[i].signature == signature {
                counts[recent[i].report.region, default: 0] += 1
                recent[i].joined = true
            }
        }
        return counts.sorted { $0.key < $1.key }
    }
}
