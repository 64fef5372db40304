import Foundation

/// What changed on an issue when the monitor advanced (for persistence and notifications).
public struct HealthChange: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case opened, classificationChanged, statusChanged, reportsJoined, restored
    }

    public var kind: Kind
    public var issue: HealthIssue

    public init(kind: Kind, issue: HealthIssue) {
        self.kind = kind
        self.issue = issue
    }
}

/// The service-health detector: it reads SMTP outcomes and user reports in time order, counts them
/// per bucket and series (direction x all/forest/region/tenant/destination x error signature), and
/// opens, updates and restores `HealthIssue`s.
///
/// Pure and single-threaded: time is the signals' own (or `advance(to:)`'s), so the live server and
/// `mailflow health replay` run exactly the same code on a real or a virtual clock.
///
/// Detection, per bucket: a series is anomalous for a signature when its failing share is
/// significantly above the baseline share for that time of week (a one-sided binomial z-score,
/// with minimum lifts), learnt from history only outside anomalies; an anomaly must last
/// `minimumDuration`, reach `minimumFailures` and be broad (several clients, several tenants) before
/// an issue opens. Its scope is every forest, region, tenant and destination whose own series was
/// anomalous; its origin is Mailflow (inbound, or outbound trouble everywhere) or a remote provider
/// (outbound trouble at one or two destinations). docs/health.md has the rules and thresholds.
public struct HealthMonitor: Sendable {
    public let policy: HealthDetectionPolicy
    public private(set) var issues: [HealthIssue] = []
    /// Next issue number (`MF` + number).
    public private(set) var nextNumber: Int

    var history = SeriesHistory()
    var registry = SeriesRegistry()
    var bucketStart: Date?
    var bucket = Bucket()
    var window: SlidingWindow
    var episodes: [EpisodeKey: Episode] = [:]
    var signatureCache: [String: ErrorSignature] = [:]
    var signatureCount: [MailDirection: Int] = [:]
    var reports = ReportTracker()
    /// Index into `issues` of the open issue per episode key.
    var openIssue: [EpisodeKey: Int] = [:]
    /// Related anomalies whose issue has been restored: they open nothing until they end.
    var absorbed: Set<EpisodeKey> = []
    var changes: [HealthChange] = []

    public init(
        policy: HealthDetectionPolicy = HealthDetectionPolicy(), existing: [HealthIssue] = [], nextNumber: Int = 1
    ) {
        self.policy = policy
        self.window = SlidingWindow(size: policy.windowBuckets)
        self.issues = existing
        self.nextNumber = max(nextNumber, (existing.compactMap { Int($0.id.dropFirst(2)) }.max() ?? 0) + 1)
        // An issue still open carries on: its episode starts again here, so a quiet bucket starts
        // its restore clock (without one it would stay `restoringService` for ever after a
        // restart or a cluster's change of health leader).
        for (i, issue) in existing.enumerated() where !issue.isResolved {
            let key = EpisodeKey(issue: issue)
            openIssue[key] = i
            var episode = Episode(onset: issue.startDateTime)
            episode.lastFailure = max(issue.startDateTime, issue.lastModifiedDateTime)
            episodes[key] = episode
        }
    }

    /// A monitor that keeps `existing` issues (from storage) and starts from what `warm` learnt by
    /// replaying recent history, without any issue `warm` opened: after a restart, baselines come
    /// back at once and nothing already reported is opened twice.
    public init(existing: [HealthIssue], nextNumber: Int, learntFrom warm: HealthMonitor) {
        self.init(policy: warm.policy, existing: existing, nextNumber: nextNumber)
        history = warm.history
        registry = warm.registry
        signatureCache = warm.signatureCache
        signatureCount = warm.signatureCount
        reports.history = warm.reports.history
        reports.since = warm.reports.since
    }

    /// When the monitor's clock stands (the start of the bucket being filled).
    public var clock: Date? { bucketStart }

    // MARK: input

    /// Takes one signal; closes the buckets its time has passed first. Returns what changed.
    @discardableResult
    public mutating func ingest(_ signal: HealthSignal) -> [HealthChange] {
        advanceBuckets(to: signal.time)
        switch signal.kind {
        case .smtp(let o): count(o, at: signal.time)
        case .report(let r): report(r, at: signal.time)
        }
        return takeChanges()
    }

    /// Moves the clock to `now` (live mode calls this every few seconds), closing finished buckets.
    @discardableResult
    public mutating func advance(to now: Date) -> [HealthChange] {
        advanceBuckets(to: now)
        return takeChanges()
    }

    /// Replaces an issue after an admin acted on it (status, post, false positive).
    public mutating func update(_ issue: HealthIssue) {
        guard let i = issues.firstIndex(where: { $0.id == issue.id }) else { return }
        issues[i] = issue
        if issue.isResolved {
            openIssue = openIssue.filter { $0.value != i }
        }
    }

    mutating func takeChanges() -> [HealthChange] {
        defer { changes = [] }
        return changes
    }

    func bucketIndex(_ t: Date) -> Int64 { Int64((t.timeIntervalSince1970 / policy.bucketSeconds).rounded(.down)) }

    mutating func advanceBuckets(to t: Date) {
        let idx = bucketIndex(t)
        guard let start = bucketStart else {
            bucketStart = Date(timeIntervalSince1970: Double(idx) * policy.bucketSeconds)
            return
        }
        var current = bucketIndex(start)
        // A long silence: evaluate at most a day of empty buckets one by one, then jump.
        let maxSteps = Int64(86400 / policy.bucketSeconds)
        if idx - current > maxSteps { current = idx - maxSteps }
        while current < idx {
            let closingStart = Date(timeIntervalSince1970: Double(current) * policy.bucketSeconds)
            closeBucket(start: closingStart, end: closingStart.addingTimeInterval(policy.bucketSeconds))
            current += 1
            bucket = Bucket()
        }
        bucketStart = Date(timeIntervalSince1970: Double(idx) * policy.bucketSeconds)
    }

    mutating func signature(_ reply: String, _ direction: MailDirection) -> ErrorSignature {
        if let s = signatureCache[reply] { return s }
        var s = ErrorSignature(reply)
        if signatureCount[direction, default: 0] >= policy.maximumSignatures,
            !history.knows(signature: s, direction: direction)
        {
            s = ErrorSignature(template: "<other>")
        } else if !history.knows(signature: s, direction: direction) {
            signatureCount[direction, default: 0] += 1
            history.remember(signature: s, direction: direction)
        }
        if signatureCache.count > 50_000 { signatureCache.removeAll(keepingCapacity: true) }
        signatureCache[reply] = s
        return s
    }

    mutating func count(_ o: SMTPOutcome, at time: Date) {
        let keys = registry.keys(for: o)
        for k in keys { bucket.totals[k, default: 0] += 1 }
        if let l = o.latencyMilliseconds, o.direction == .outbound {
            for k in keys where k.dimension == .all || k.dimension == .destination || k.dimension == .forest {
                bucket.latency[k, default: LatencySamples()].add(l)
            }
        }
        guard ErrorSignature.isFailure(o.reply) else { return }
        let sig = signature(o.reply, o.direction)
        let ek = EpisodeKey(direction: o.direction, signature: sig)
        var f = bucket.failures[ek] ?? SignatureBucket(first: time, last: time)
        f.last = time
        f.count += 1
        for k in keys { f.byKey[k, default: 0] += 1 }
        if let c = o.clientIP { f.clients.add(c) }
        f.tenants.add(o.tenant)
        bucket.failures[ek] = f
    }

    // MARK: closing a bucket

    mutating func closeBucket(start: Date, end: Date) {
        let slot = TimeSlot(start)
        bucket.finish()
        window.push(bucket)
        var anomalousNow: Set<EpisodeKey> = []
        // Failure share per signature and series, over the short and the long window, against the
        // baseline of this time of week.
        for (ek, perKey) in window.failures {
            let short = window.recent(ek, buckets: policy.shortWindowBuckets)
            var anomalous: [SeriesKey: KeyStats] = [:]
            var sharp = false
            for (key, failures) in perKey {
                let total = window.totals[key] ?? failures
                let s = short[key]
                // Cheap first: too few failures, or a share no baseline could make anomalous.
                let shortPossible = s.map { plausible(failures: $0.failures, total: $0.total) } ?? false
                guard shortPossible || plausible(failures: failures, total: total) else { continue }
                let base = history.baseline(key: key, signature: ek.signature, slot: slot, policy: policy)
                if shortPossible, let s, isAnomalous(failures: s.failures, total: s.total, baseline: base) {
                    anomalous[key] = KeyStats(
                        failures: s.failures, total: s.total, share: Double(s.failures) / Double(max(s.total, 1)),
                        baseline: base.share)
                    sharp = true
                    continue
                }
                if isAnomalous(failures: failures, total: total, baseline: base) {
                    anomalous[key] = KeyStats(
                        failures: failures, total: total, share: Double(failures) / Double(max(total, 1)),
                        baseline: base.share)
                }
            }
            if anomalous.isEmpty { continue }
            anomalousNow.insert(ek)
            let current = window.recent(ek, buckets: 1)
            if var e = episodes[ek] {
                e.extend(with: anomalous, counts: current, signature: bucket.failures[ek], at: end)
                episodes[ek] = e
            } else {
                // A new episode starts with what the window that found it holds.
                let span = sharp ? policy.shortWindowBuckets : policy.windowBuckets
                let seen = window.signature(ek, buckets: span)
                var e = Episode(onset: seen?.first ?? start)
                e.extend(with: anomalous, counts: window.recent(ek, buckets: span), signature: seen, at: end)
                episodes[ek] = e
            }
        }
        // Delays: median outbound latency over the window against its baseline.
        var delayed: Set<SeriesKey> = []
        var delayKeys: [SeriesKey: KeyStats] = [:]
        var worst: (ms: Double, base: Double) = (0, 0)
        for key in window.latencyKeys {
            guard let l = window.latency(key), l.samples >= policy.latencyMinimumSamples,
                let base = history.latencyBaseline(key: key, slot: slot, policy: policy)
            else { continue }
            if l.median >= base * policy.latencyFactor, l.median - base >= policy.latencyMinimumSeconds * 1000 {
                delayed.insert(key)
                delayKeys[key] = KeyStats(failures: l.samples, total: l.samples, share: 1, baseline: 0)
                if l.median > worst.ms { worst = (l.median, base) }
            }
        }
        if !delayKeys.isEmpty {
            let ek = EpisodeKey.delay
            anomalousNow.insert(ek)
            var e = episodes[ek] ?? Episode(onset: start)
            e.extend(with: delayKeys, counts: [:], signature: nil, at: end)
            e.lastFailure = end
            e.latencyMs = max(e.latencyMs, worst.ms)
            if e.latencyBaselineMs == 0 { e.latencyBaselineMs = worst.base }
            episodes[ek] = e
        }
        // Volume: forests, regions and whole directions far below their usual number of outcomes.
        var quietKeys: [MailDirection: [SeriesKey: KeyStats]] = [:]
        let weekKnown = history.bucketsPerSlot[slot.hourOfWeek] * policy.bucketSeconds >= 3600
        for key in registry.ids.values
        where weekKnown && key.dimension != .tenant && key.dimension != .destination {
            guard
                let perBucket = history.expectedVolume(key: key, slot: slot, bucketSeconds: policy.bucketSeconds)
            else { continue }
            let expected = perBucket * Double(window.buckets.count)
            let seen = Double(window.totals[key] ?? 0)
            guard expected >= policy.volumeMinimumExpected, seen <= expected * policy.volumeDropShare else { continue }
            quietKeys[key.direction, default: [:]][key] = KeyStats(
                failures: Int(expected - seen), total: Int(expected), share: 1 - seen / expected, baseline: 0)
        }
        for (direction, keys) in quietKeys {
            let ek = EpisodeKey.volume(direction)
            anomalousNow.insert(ek)
            var e = episodes[ek] ?? Episode(onset: start)
            e.extend(with: keys, counts: [:], signature: nil, at: end)
            e.lastFailure = end
            episodes[ek] = e
        }
        // Learn from what was normal.
        // Series in a delay episode (or issue) are not learnt until it ends.
        let delaying = delayed.union(episodes[.delay]?.keys.keys ?? [:].keys)
        let quietNow = Set(quietKeys.values.flatMap(\.keys))
        history.learn(bucket: bucket, slot: slot, excluding: anomalousNow, delayed: delaying, quiet: quietNow)

        // Episodes that did not continue end; open issues see a quiet bucket.
        for (ek, e) in episodes where !anomalousNow.contains(ek) {
            if openIssue[ek] == nil {
                episodes[ek] = nil
                absorbed.remove(ek)
            } else {
                episodes[ek]?.quietSince = e.quietSince ?? start
            }
        }
        for ek in anomalousNow { episodes[ek]?.quietSince = nil }

        for ek in anomalousNow.sorted(by: { $0.signature < $1.signature }) {
            guard let e = episodes[ek] else { continue }
            if let i = openIssue[ek] {
                // A related signature that joined another issue keeps it open but does not redefine it.
                if EpisodeKey(issue: issues[i]) == ek { refresh(issueAt: i, with: e, at: end) }
            } else if !absorbed.contains(ek),
                e.qualifies(policy: policy, direction: ek.direction, isDelay: ek.isDelay, isVolume: ek.isVolume)
            {
                open(ek, e, at: end)
            }
        }
        // Restoring and restored: an issue is quiet when every signature it holds is quiet.
        var keysByIssue: [Int: [EpisodeKey]] = [:]
        for (ek, i) in openIssue { keysByIssue[i, default: []].append(ek) }
        for (i, keys) in keysByIssue.sorted(by: { $0.key < $1.key }) {
            guard !issues[i].isResolved else { continue }
            if issues[i].origin == .customer && issues[i].evidence.total == 0 { continue }
            // The issue's own signature decides; related ones ride along.
            let primary = EpisodeKey(issue: issues[i])
            guard !anomalousNow.contains(primary) else { continue }
            let quiet = episodes[primary]?.quietSince ?? end
            if end.timeIntervalSince(quiet) >= policy.restoreAfter {
                restore(i, endedAt: episodes[primary]?.lastFailure ?? quiet, now: end)
                for ek in keys {
                    openIssue[ek] = nil
                    if ek == primary || !anomalousNow.contains(ek) {
                        episodes[ek] = nil
                    } else {
                        absorbed.insert(ek)
                    }
                }
            } else if issues[i].status != .restoringService {
                setStatus(
                    i, .restoringService, at: end,
                    note:
                        "The failure rate is back at its usual level; we're monitoring the service to confirm recovery."
                )
            }
        }
        reports.close(bucketEnd: end, policy: policy)
        checkReports(at: end)
    }

    func plausible(failures: Int, total: Int) -> Bool {
        failures >= policy.minimumBucketFailures
            && Double(failures) >= (policy.baselineFloor + policy.minimumShareLift) * Double(total)
    }

    func isAnomalous(failures: Int, total: Int, baseline: Baseline) -> Bool {
        guard failures >= policy.minimumBucketFailures else { return false }
        let share = Double(failures) / Double(max(total, 1))
        let p0 = max(baseline.share, policy.baselineFloor)
        if baseline.cold && share < policy.coldStartMinimumShare { return false }
        guard share >= p0 + policy.minimumShareLift, share >= p0 * policy.minimumShareRatio else { return false }
        let n = Double(total)
        let z = (Double(failures) - 0.5 - n * p0) / (n * p0 * (1 - p0)).squareRoot()
        return z >= policy.significance
    }

    // MARK: issues

    mutating func open(_ ek: EpisodeKey, _ e: Episode, at now: Date) {
        let scope = e.scope(direction: ek.direction)
        // Correlation: a related anomaly in the same forest (or at the same destination) that starts
        // with an open issue joins it.
        for (otherKey, i) in openIssue where otherKey != ek && !issues[i].isResolved {
            let other = issues[i]
            // A delay during an open issue in the same place is its consequence (retries wait).
            let near = ek.isDelay || abs(e.onset.timeIntervalSince(other.startDateTime)) <= policy.correlationWindow
            let overlap =
                !Set(other.scope.forests).isDisjoint(with: scope.forests)
                || (!scope.destinations.isEmpty && !Set(other.scope.destinations).isDisjoint(with: scope.destinations)
                    && other.scope.direction == ek.direction)
            if near && overlap {
                if !issues[i].evidence.relatedSignatures.contains(ek.signature.text) {
                    issues[i].evidence.relatedSignatures.append(ek.signature.text)
                    issues[i].lastModifiedDateTime = now
                    changes.append(HealthChange(kind: .statusChanged, issue: issues[i]))
                }
                openIssue[ek] = i
                return
            }
        }
        let origin = ek.isVolume ? .mailflow : e.origin(direction: ek.direction, isDelay: ek.isDelay, policy: policy)
        // Mail that stops for a whole forest (or more) is an incident; less is an advisory.
        let classification =
            ek.isVolume
            ? (e.keys.keys.contains { $0.dimension != .region } && e.peakShare >= 1 - policy.volumeDropShare
                ? IssueClassification.incident : .advisory)
            : e.classification(origin: origin, isDelay: ek.isDelay, policy: policy)
        let number = nextNumber
        nextNumber += 1
        var evidence = IssueEvidence(firstSeen: e.onset)
        evidence.failures = e.failures
        evidence.total = e.total
        evidence.baselineShare = e.baselineShare
        evidence.record(point(e, at: now))
        var issue = HealthIssue(
            id: "MF\(number)", title: Self.title(ek, scope: scope, origin: origin), classification: classification,
            status: Self.status(classification, share: e.currentShare, policy: policy), origin: origin,
            service: ek.direction == .inbound ? "Inbound mail flow" : "Outbound mail flow",
            signature: ek.signature.text,
            impactDescription: Self.impact(ek, scope: scope, origin: origin, e: e), startDateTime: e.onset,
            detectedDateTime: now, endDateTime: nil, lastModifiedDateTime: now, scope: scope, evidence: evidence)
        issue.posts.append(
            Self.post(issue, now: now, headline: "We're investigating a problem detected from mail-flow telemetry."))
        issues.append(issue)
        openIssue[ek] = issues.count - 1
        // Reports already in that region join at once.
        let pending = reports.recent(regions: scope.regions, signature: ek.signature)
        if !pending.isEmpty {
            for (r, n) in pending { issues[issues.count - 1].reportsByRegion[r, default: 0] += n }
        }
        changes.append(HealthChange(kind: .opened, issue: issues[issues.count - 1]))
    }

    mutating func refresh(issueAt i: Int, with e: Episode, at now: Date) {
        guard !issues[i].isResolved else { return }
        let ek = EpisodeKey(issue: issues[i])
        var scope = e.scope(direction: issues[i].scope.direction)
        scope.peakFailureShare = max(scope.peakFailureShare, issues[i].scope.peakFailureShare)
        issues[i].scope = merge(issues[i].scope, scope)
        issues[i].evidence.failures = e.failures
        issues[i].evidence.total = e.total
        issues[i].evidence.record(point(e, at: now))
        issues[i].lastModifiedDateTime = now
        if issues[i].origin != .customer {
            let origin = e.origin(direction: ek.direction, isDelay: ek.isDelay, policy: policy)
            if origin != issues[i].origin && issues[i].origin == .remoteProvider {
                issues[i].origin = origin
            }
        } else {
            // Telemetry now backs what users reported.
            issues[i].origin = e.origin(direction: ek.direction, isDelay: ek.isDelay, policy: policy)
        }
        let classification =
            ek.isVolume
            ? issues[i].classification : e.classification(origin: issues[i].origin, isDelay: ek.isDelay, policy: policy)
        if classification == .incident && issues[i].classification == .advisory {
            issues[i].classification = .incident
            issues[i].posts.append(
                Self.post(issues[i], now: now, headline: "The impact has grown: this advisory is now an incident."))
            changes.append(HealthChange(kind: .classificationChanged, issue: issues[i]))
        }
        let status = Self.status(issues[i].classification, share: e.currentShare, policy: policy)
        if issues[i].status == .restoringService || issues[i].status == .investigating
            || (status == .serviceInterruption && issues[i].status == .serviceDegradation)
        {
            setStatus(i, status, at: now, note: "The failure rate has risen again; we're investigating.")
        }
    }

    func point(_ e: Episode, at now: Date) -> SharePoint {
        let base = max(e.baselineShare, policy.baselineFloor)
        return SharePoint(
            time: now, share: e.currentShare, baseline: base,
            threshold: max(base + policy.minimumShareLift, base * policy.minimumShareRatio))
    }

    func merge(_ a: IssueScope, _ b: IssueScope) -> IssueScope {
        var s = a
        s.forests = Array(Set(a.forests).union(b.forests)).sorted()
        s.regions = Array(Set(a.regions).union(b.regions)).sorted()
        s.tenants = Array(Set(a.tenants).union(b.tenants)).sorted()
        s.destinations = Array(Set(a.destinations).union(b.destinations)).sorted()
        s.peakFailureShare = max(a.peakFailureShare, b.peakFailureShare)
        return s
    }

    mutating func setStatus(_ i: Int, _ status: IssueStatus, at now: Date, note: String) {
        guard issues[i].status != status else { return }
        issues[i].status = status
        issues[i].lastModifiedDateTime = now
        issues[i].posts.append(Self.post(issues[i], now: now, headline: note))
        changes.append(HealthChange(kind: .statusChanged, issue: issues[i]))
    }

    mutating func restore(_ i: Int, endedAt: Date, now: Date) {
        if let last = issues[i].evidence.series?.last {
            issues[i].evidence.record(
                SharePoint(time: endedAt, share: last.baseline, baseline: last.baseline, threshold: last.threshold))
        }
        issues[i].status = .serviceRestored
        issues[i].endDateTime = endedAt
        issues[i].lastModifiedDateTime = now
        issues[i].posts.append(
            Self.post(
                issues[i], now: now,
                headline:
                    "The service is restored: the failure rate has stayed at its usual level since \(HealthSignalLine.formatTime(endedAt))."
            ))
        changes.append(HealthChange(kind: .restored, issue: issues[i]))
    }

    // MARK: reports

    mutating func report(_ r: ProblemReport, at time: Date) {
        let sig = r.errorText.map { ErrorSignature($0) }
        reports.add(r, signature: sig, at: time)
        // A report that matches an open issue joins it at once.
        for (ek, i) in openIssue where !issues[i].isResolved {
            if issues[i].scope.regions.contains(r.region) || sig.map({ $0 == ek.signature }) == true {
                issues[i].reportsByRegion[r.region, default: 0] += 1
                // A reports-only issue is scoped by who reports.
                if issues[i].origin == .customer && !issues[i].scope.tenants.contains(r.tenant) {
                    issues[i].scope.tenants = (issues[i].scope.tenants + [r.tenant]).sorted()
                }
                issues[i].lastModifiedDateTime = time
                reports.markJoined(r, at: time)
                return
            }
        }
    }

    mutating func checkReports(at now: Date) {
        for surge in reports.surges(policy: policy) {
            let ek = EpisodeKey(
                direction: .inbound, signature: ErrorSignature(template: "user reports: \(surge.region)"))
            if let i = openIssue[ek], !issues[i].isResolved {
                issues[i].reportsByRegion[surge.region, default: 0] += surge.unjoined
                issues[i].lastModifiedDateTime = now
                continue
            }
            let number = nextNumber
            nextNumber += 1
            let scope = IssueScope(direction: .inbound, regions: [surge.region], tenants: surge.tenants)
            var evidence = IssueEvidence(firstSeen: surge.first)
            evidence.relatedSignatures = Array(surge.errorSignatures.dropFirst())
            var issue = HealthIssue(
                id: "MF\(number)", title: "Users in \(surge.region) report problems with mail flow",
                classification: .advisory, status: .investigating, origin: .customer, service: "Inbound mail flow",
                signature: surge.errorSignatures.first ?? ek.signature.text,
                impactDescription:
                    "\(surge.tenants.count) organisations in \(surge.region) report problems sending or receiving mail; telemetry shows no matching failure yet.",
                startDateTime: surge.first, detectedDateTime: now, endDateTime: nil, lastModifiedDateTime: now,
                scope: scope, evidence: evidence)
            issue.reportsByRegion[surge.region] = surge.count
            issue.posts.append(Self.post(issue, now: now, headline: "We're investigating a surge of user reports."))
            issues.append(issue)
            openIssue[ek] = issues.count - 1
            reports.markAllJoined(region: surge.region)
            changes.append(HealthChange(kind: .opened, issue: issue))
        }
        // Reports-only issues restore once the reports stop.
        for (ek, i) in openIssue where issues[i].origin == .customer && !issues[i].isResolved {
            let last = reports.lastReport(region: issues[i].scope.regions.first ?? "") ?? issues[i].startDateTime
            if now.timeIntervalSince(last) >= policy.reportQuietPeriod {
                restore(i, endedAt: last, now: now)
                openIssue[ek] = nil
            }
        }
    }
}
