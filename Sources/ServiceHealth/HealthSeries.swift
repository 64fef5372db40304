import Foundation

/// One time series the monitor counts: a direction and one slice of traffic (all of it, one forest,
/// region, tenant or destination).
///
/// Keys are made only by a `SeriesRegistry`, which numbers them: equality and hashing use the
/// number, so the many dictionaries keyed by series never hash the names again.
struct SeriesKey: Hashable, Sendable {
    enum Dimension: UInt8, Sendable { case all, forest, region, tenant, destination }
    let direction: MailDirection
    let dimension: Dimension
    let value: String
    let id: Int

    static func == (a: SeriesKey, b: SeriesKey) -> Bool { a.id == b.id }
    func hash(into h: inout Hasher) { h.combine(id) }
}

/// Numbers the series as they appear, and remembers which series an outcome counts in.
struct SeriesRegistry: Sendable {
    struct Name: Hashable, Sendable {
        var direction: MailDirection
        var dimension: SeriesKey.Dimension
        var value: String
    }

    struct Place: Hashable, Sendable {
        var direction: MailDirection
        var forest: String
        var region: String
        var tenant: String
    }

    var ids: [Name: SeriesKey] = [:]
    var places: [Place: [SeriesKey]] = [:]

    mutating func key(_ direction: MailDirection, _ dimension: SeriesKey.Dimension, _ value: String) -> SeriesKey {
        let name = Name(direction: direction, dimension: dimension, value: value)
        if let k = ids[name] { return k }
        let k = SeriesKey(direction: direction, dimension: dimension, value: value, id: ids.count)
        ids[name] = k
        return k
    }

    /// The series an outcome counts in: all, its forest, region, tenant, and destination.
    mutating func keys(for o: SMTPOutcome) -> [SeriesKey] {
        let place = Place(direction: o.direction, forest: o.forest, region: o.region, tenant: o.tenant)
        var k: [SeriesKey]
        if let known = places[place] {
            k = known
        } else {
            k = [
                key(o.direction, .all, "*"), key(o.direction, .forest, o.forest), key(o.direction, .region, o.region),
                key(o.direction, .tenant, o.tenant),
            ]
            places[place] = k
        }
        if let d = o.destination { k.append(key(o.direction, .destination, d)) }
        return k
    }
}

/// What an episode (and an open issue) is about: a direction and a signature; delays have their own.
struct EpisodeKey: Hashable, Sendable {
    var direction: MailDirection
    var signature: ErrorSignature

    static let delaySignature = ErrorSignature(template: "delay: outbound delivery latency above its baseline")
    static let delay = EpisodeKey(direction: .outbound, signature: delaySignature)
    var isDelay: Bool { signature == Self.delaySignature }

    static let volumeSignature = ErrorSignature(template: "volume: traffic far below its usual level")
    static func volume(_ d: MailDirection) -> EpisodeKey { EpisodeKey(direction: d, signature: volumeSignature) }
    var isVolume: Bool { signature == Self.volumeSignature }

    init(direction: MailDirection, signature: ErrorSignature) {
        self.direction = direction
        self.signature = signature
    }

    init(issue: HealthIssue) {
        if issue.origin == .customer && issue.evidence.total == 0 {
            self.init(
                direction: .inbound,
                signature: ErrorSignature(template: "user reports: \(issue.scope.regions.first ?? "")"))
        } else {
            self.init(direction: issue.scope.direction, signature: ErrorSignature(template: issue.signature))
        }
    }
}

/// A small counter that keeps the busiest values and the total (client addresses, tenants).
struct BoundedCounter: Sendable {
    var counts: [String: Int] = [:]
    var total = 0
    static let limit = 64

    mutating func add(_ v: String, _ n: Int = 1) {
        total += n
        if counts[v] != nil || counts.count < Self.limit { counts[v, default: 0] += n }
    }

    mutating func merge(_ o: BoundedCounter) { for (k, v) in o.counts { add(k, v) } }

    var distinct: Int { counts.count }
    var topShare: Double { total == 0 ? 0 : Double(counts.values.max() ?? 0) / Double(total) }
}

/// Latency samples of one series in one bucket (the first 64 kept: enough for a median).
struct LatencySamples: Sendable {
    var samples: [Double] = []
    var count = 0
    mutating func add(_ ms: Double) {
        count += 1
        if samples.count < 64 { samples.append(ms) }
    }

    var median: Double {
        let s = samples.sorted()
        return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}

struct SignatureBucket: Sendable {
    var first: Date
    var last: Date
    var count = 0
    var byKey: [SeriesKey: Int] = [:]
    var clients = BoundedCounter()
    var tenants = BoundedCounter()
}

/// One bucket's counts.
struct Bucket: Sendable {
    var totals: [SeriesKey: Int] = [:]
    var failures: [EpisodeKey: SignatureBucket] = [:]
    var latency: [SeriesKey: LatencySamples] = [:]
    /// Median latency and sample count per series, set when the bucket closes.
    var latencyMedians: [SeriesKey: LatencyEntry] = [:]

    mutating func finish() {
        for (k, l) in latency { latencyMedians[k] = LatencyEntry(bucket: 0, median: l.median, count: l.count) }
        latency = [:]
    }
}

/// One bucket's latency median for one series, in a sliding window.
struct LatencyEntry: Sendable {
    var bucket: Int
    var median: Double
    var count: Int
}

/// The last few closed buckets, with their sums kept up to date as buckets come and go, so a
/// low-volume series (a forest seeing a few sessions a minute) is judged on enough outcomes.
struct SlidingWindow: Sendable {
    var buckets: [Bucket] = []
    let size: Int
    var totals: [SeriesKey: Int] = [:]
    var failures: [EpisodeKey: [SeriesKey: Int]] = [:]
    /// Per series, the latency medians of the buckets in the window (bucket number, median, samples).
    var latencies: [SeriesKey: [LatencyEntry]] = [:]
    var pushed = 0

    init(size: Int) { self.size = size }

    mutating func push(_ b: Bucket) {
        buckets.append(b)
        pushed += 1
        let oldest = pushed - size
        for (k, m) in b.latencyMedians {
            var l = latencies[k] ?? []
            l.removeAll { $0.bucket <= oldest }
            l.append(LatencyEntry(bucket: pushed, median: m.median, count: m.count))
            latencies[k] = l
        }
        if pushed % size == 0 {
            latencies = latencies.filter { $0.value.last.map { $0.bucket > oldest } ?? false }
        }
        for (k, n) in b.totals { totals[k, default: 0] += n }
        for (ek, f) in b.failures { for (k, n) in f.byKey { failures[ek, default: [:]][k, default: 0] += n } }
        guard buckets.count > size else { return }
        let old = buckets.removeFirst()
        for (k, n) in old.totals {
            let v = totals[k, default: 0] - n
            totals[k] = v > 0 ? v : nil
        }
        for (ek, f) in old.failures {
            for (k, n) in f.byKey {
                let v = failures[ek]?[k] ?? 0
                failures[ek]?[k] = v - n > 0 ? v - n : nil
            }
            if failures[ek]?.isEmpty == true { failures[ek] = nil }
        }
    }

    /// Failures and outcomes per series for `ek` over the newest `count` buckets.
    func recent(_ ek: EpisodeKey, buckets count: Int) -> [SeriesKey: (failures: Int, total: Int)] {
        var out: [SeriesKey: (failures: Int, total: Int)] = [:]
        for b in buckets.suffix(count) {
            guard let f = b.failures[ek] else { continue }
            for (k, n) in f.byKey { out[k, default: (0, 0)].failures += n }
        }
        for k in out.keys { for b in buckets.suffix(count) { out[k]!.total += b.totals[k] ?? 0 } }
        return out
    }

    /// The signature's data over the newest `count` buckets: first failure, clients, tenants.
    func signature(_ ek: EpisodeKey, buckets count: Int) -> SignatureBucket? {
        var out: SignatureBucket?
        for b in buckets.suffix(count) {
            guard let f = b.failures[ek] else { continue }
            if out == nil {
                out = SignatureBucket(first: f.first, last: f.last)
            }
            out!.last = f.last
            out!.count += f.count
            out!.clients.merge(f.clients)
            out!.tenants.merge(f.tenants)
        }
        return out
    }

    /// Median of the per-bucket latency medians, and the samples behind them.
    func latency(_ key: SeriesKey) -> (median: Double, samples: Int)? {
        let oldest = pushed - size
        var medians: [Double] = []
        var samples = 0
        for m in latencies[key] ?? [] where m.bucket > oldest {
            medians.append(m.median)
            samples += m.count
        }
        guard !medians.isEmpty else { return nil }
        medians.sort()
        let n = medians.count
        return (n % 2 == 1 ? medians[n / 2] : (medians[n / 2 - 1] + medians[n / 2]) / 2, samples)
    }

    var latencyKeys: Dictionary<SeriesKey, [LatencyEntry]>.Keys { latencies.keys }
}

struct KeyStats: Sendable {
    var failures: Int
    var total: Int
    var share: Double
    var baseline: Double
}

/// An anomaly in progress for one signature: when it began, which series it touched, how broad it is.
struct Episode: Sendable {
    var onset: Date
    var lastFailure: Date
    var buckets = 0
    var failures = 0
    var total = 0
    var peakShare = 0.0
    var currentShare = 0.0
    var baselineShare = 0.0
    var keys: [SeriesKey: KeyStats] = [:]
    var clients = BoundedCounter()
    var tenants = BoundedCounter()
    var quietSince: Date?
    var latencyMs = 0.0
    var latencyBaselineMs = 0.0

    init(onset: Date) {
        self.onset = onset
        self.lastFailure = onset
    }

    /// The dimension whose series measure an episode: forests if any is anomalous, else
    /// destinations, else the whole direction.
    static func focus(_ keys: some Collection<SeriesKey>) -> SeriesKey.Dimension {
        if keys.contains(where: { $0.dimension == .forest }) { return .forest }
        if keys.contains(where: { $0.dimension == .destination }) { return .destination }
        return .all
    }

    /// Adds one closed bucket: the series anomalous in the window now, and the bucket's own counts
    /// (`counts`: failures and outcomes per series, with clients and tenants of the failures).
    mutating func extend(
        with anomalous: [SeriesKey: KeyStats], counts: [SeriesKey: (failures: Int, total: Int)],
        signature: SignatureBucket?, at end: Date
    ) {
        buckets += 1
        for (k, s) in anomalous {
            if let old = keys[k] {
                keys[k] = KeyStats(
                    failures: s.failures, total: s.total, share: max(old.share, s.share), baseline: old.baseline)
            } else {
                keys[k] = s
            }
        }
        let dim = Self.focus(anomalous.keys)
        let focus = anomalous.filter { $0.key.dimension == dim }
        for k in focus.keys {
            failures += counts[k]?.failures ?? 0
            total += counts[k]?.total ?? 0
        }
        if let top = focus.values.max(by: { $0.share < $1.share }) {
            currentShare = top.share
            peakShare = max(peakShare, top.share)
            baselineShare = top.baseline
        }
        if let signature {
            lastFailure = max(lastFailure, signature.last)
            clients.merge(signature.clients)
            tenants.merge(signature.tenants)
        }
    }

    func qualifies(policy: HealthDetectionPolicy, direction: MailDirection, isDelay: Bool, isVolume: Bool = false)
        -> Bool
    {
        let duration =
            isVolume ? policy.volumeMinimumDuration : isDelay ? policy.latencyMinimumDuration : policy.minimumDuration
        guard buckets >= policy.minimumBuckets, lastFailure.timeIntervalSince(onset) >= duration else {
            return false
        }
        if isDelay || isVolume { return true }
        guard failures >= policy.minimumFailures else { return false }
        if direction == .inbound {
            guard clients.distinct >= policy.minimumClients, clients.topShare <= policy.maximumTopClientShare else {
                return false
            }
        }
        guard tenants.distinct >= policy.minimumTenants, tenants.topShare <= policy.maximumTopTenantShare else {
            return false
        }
        return true
    }

    func values(_ d: SeriesKey.Dimension) -> [String] {
        keys.keys.filter { $0.dimension == d }.map(\.value).sorted()
    }

    func scope(direction: MailDirection) -> IssueScope {
        IssueScope(
            direction: direction, forests: values(.forest), regions: values(.region), tenants: values(.tenant),
            destinations: values(.destination), peakFailureShare: peakShare)
    }

    func origin(direction: MailDirection, isDelay: Bool, policy: HealthDetectionPolicy) -> IssueOrigin {
        if direction == .inbound && !isDelay { return .mailflow }
        let destinations = values(.destination)
        if !destinations.isEmpty && destinations.count <= policy.remoteProviderMaximumDestinations {
            return .remoteProvider
        }
        return .mailflow
    }

    func classification(origin: IssueOrigin, isDelay: Bool, policy: HealthDetectionPolicy) -> IssueClassification {
        guard !isDelay, origin == .mailflow else { return .advisory }
        return peakShare >= policy.incidentShare && failures >= policy.incidentMinimumFailures ? .incident : .advisory
    }
}

/// Hour of week and hour of day of a moment (UTC), for baselines that know both.
struct TimeSlot: Sendable {
    var hourOfWeek: Int
    var hourOfDay: Int

    init(_ t: Date) {
        let hours = Int((t.timeIntervalSince1970 / 3600).rounded(.down))
        // 1970-01-01 was a Thursday; hour 0 of the week is Monday 00:00.
        hourOfWeek = ((hours + 72) % 168 + 168) % 168
        hourOfDay = (hours % 24 + 24) % 24
    }
}

/// A share's baseline for one series and signature.
struct Baseline: Sendable {
    var share: Double
    /// Too little history: a cold start.
    var cold: Bool
}

/// What the monitor has learnt: per series, outcomes and failures per signature by hour of week
/// (only from buckets that were not anomalous), and outbound latency by hour of day.
struct SeriesHistory: Sendable {
    struct Counts: Sendable {
        var byHourOfWeek = [Double](repeating: 0, count: 168)
        var total = 0.0
    }

    var totals: [SeriesKey: Counts] = [:]
    /// Buckets closed per hour-of-week slot (the denominator of a series' usual volume).
    var bucketsPerSlot = [Double](repeating: 0, count: 168)
    var failures: [SeriesKey: [ErrorSignature: Counts]] = [:]
    /// Per series: an exponentially weighted mean of log(median latency) per hour of day.
    struct LatencyHistory: Sendable {
        var logMedian = [Double](repeating: 0, count: 24)
        var weight = [Double](repeating: 0, count: 24)
        var overall = 0.0
        var samples = 0.0
    }

    var latency: [SeriesKey: LatencyHistory] = [:]
    var signatures: [MailDirection: Set<ErrorSignature>] = [:]

    func knows(signature: ErrorSignature, direction: MailDirection) -> Bool {
        signatures[direction]?.contains(signature) == true
    }

    mutating func remember(signature: ErrorSignature, direction: MailDirection) {
        signatures[direction, default: []].insert(signature)
    }

    func baseline(key: SeriesKey, signature: ErrorSignature, slot: TimeSlot, policy: HealthDetectionPolicy) -> Baseline
    {
        guard let t = totals[key], t.total >= Double(policy.historyMinimumOutcomes) else {
            return Baseline(share: policy.coldStartShare, cold: true)
        }
        let f = failures[key]?[signature]
        let overall = (f?.total ?? 0) / t.total
        let a = policy.baselineShrinkage
        // Hour of day: the seven hour-of-week slots of this hour.
        var dayF = 0.0
        var dayT = 0.0
        for d in 0..<7 {
            let h = (slot.hourOfDay + 24 * d) % 168
            dayF += f?.byHourOfWeek[h] ?? 0
            dayT += t.byHourOfWeek[h]
        }
        let hourOfDay = (dayF + a * overall) / (dayT + a)
        let weekF = f?.byHourOfWeek[slot.hourOfWeek] ?? 0
        let weekT = t.byHourOfWeek[slot.hourOfWeek]
        let hourOfWeek = (weekF + a * hourOfDay) / (weekT + a)
        // Robust to a thin slot: never below the series' own long-run share.
        return Baseline(share: max(hourOfWeek, overall, policy.baselineFloor), cold: false)
    }

    /// Outcomes a series usually has per bucket in this hour of the week; nil until that hour has
    /// been seen whole at least once (a week of history), so a quiet weekend is never compared
    /// with a busy weekday.
    func expectedVolume(key: SeriesKey, slot: TimeSlot, bucketSeconds: Double) -> Double? {
        let seen = bucketsPerSlot[slot.hourOfWeek]
        guard seen * bucketSeconds >= 3600, let t = totals[key] else { return nil }
        return t.byHourOfWeek[slot.hourOfWeek] / seen
    }

    /// The usual median latency of a series at this hour of day (ms), once enough is known.
    func latencyBaseline(key: SeriesKey, slot: TimeSlot, policy: HealthDetectionPolicy) -> Double? {
        guard let l = latency[key], l.samples >= Double(policy.latencyHistoryMinimum) else { return nil }
        let h = slot.hourOfDay
        return l.weight[h] > 0 ? exp(l.logMedian[h]) : exp(l.overall)
    }

    mutating func learn(
        bucket: Bucket, slot: TimeSlot, excluding anomalous: Set<EpisodeKey>, delayed: Set<SeriesKey>,
        quiet: Set<SeriesKey> = []
    ) {
        bucketsPerSlot[slot.hourOfWeek] += 1
        var anomalousKeys = quiet
        for ek in anomalous { for k in bucket.failures[ek]?.byKey.keys ?? [:].keys { anomalousKeys.insert(k) } }
        for (key, n) in bucket.totals where !anomalousKeys.contains(key) {
            totals[key, default: Counts()].byHourOfWeek[slot.hourOfWeek] += Double(n)
            totals[key, default: Counts()].total += Double(n)
        }
        for (ek, f) in bucket.failures where !anomalous.contains(ek) {
            for (key, n) in f.byKey where !anomalousKeys.contains(key) {
                failures[key, default: [:]][ek.signature, default: Counts()].byHourOfWeek[slot.hourOfWeek] += Double(n)
                failures[key, default: [:]][ek.signature, default: Counts()].total += Double(n)
            }
        }
        for (key, m) in bucket.latencyMedians where !delayed.contains(key) && m.median > 0 {
            var v = latency[key] ?? LatencyHistory()
            let x = log(m.median)
            let h = slot.hourOfDay
            // A running mean for the first hours of a slot, then slow: a delay must not become normal
            // within the hour it happens in (about a day's weight per hour of day).
            let a = max(1 / (v.weight[h] + 1), 1.0 / 240)
            v.logMedian[h] += a * (x - v.logMedian[h])
            v.weight[h] += 1
            v.overall += (v.samples == 0 ? 1 : 0.02) * (x - v.overall)
            v.samples += Double(m.count)
            latency[key] = v
        }
    }
}
