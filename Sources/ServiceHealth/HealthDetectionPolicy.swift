import Foundation

/// Every threshold the service-health monitor uses, in one place; docs/health.md explains each.
/// The defaults are what `scripts/eval-health` was tuned and scored with.
public struct HealthDetectionPolicy: Sendable, Hashable {
    /// Aggregation step: outcomes are counted per bucket of this many seconds.
    public var bucketSeconds: TimeInterval = 30
    /// Each bucket is judged on the newest `shortWindowBuckets` buckets (a sharp fault, found fast)
    /// and on the newest `windowBuckets` (a low-volume or slowly growing one, found surely).
    public var shortWindowBuckets = 2
    public var windowBuckets = 10
    /// An anomaly's failures must span this long (first to latest) before an issue opens, so a blip
    /// of a minute pages no one.
    public var minimumDuration: TimeInterval = 75
    /// ... and span at least this many anomalous buckets in a row.
    public var minimumBuckets = 2
    /// Failures with the signature, summed over the episode, before an issue opens.
    public var minimumFailures = 8
    /// Failures with the signature in one bucket and one series before that bucket can be anomalous.
    public var minimumBucketFailures = 2
    /// One-sided binomial z-score of the failures against the baseline share.
    public var significance: Double = 4
    /// The failing share must exceed the baseline by this much (absolute) ...
    public var minimumShareLift: Double = 0.10
    /// ... and be this many times the baseline.
    public var minimumShareRatio: Double = 3
    /// A series' baseline is trusted once its history holds this many outcomes; before that (a
    /// cold start), the baseline share is `coldStartShare` and only a failing share of at least
    /// `coldStartMinimumShare` counts, so a fresh server never pages on its usual errors.
    public var historyMinimumOutcomes = 200
    public var coldStartShare: Double = 0.05
    public var coldStartMinimumShare: Double = 0.25
    /// Shrinkage of a time-of-week slot toward its time-of-day slot, and of a time-of-day slot
    /// toward the series' overall share (pseudo-outcomes), so thin slots borrow strength.
    public var baselineShrinkage: Double = 50
    /// Lowest baseline share ever assumed (no series is perfect).
    public var baselineFloor: Double = 0.002

    /// Breadth: inbound failures must come from at least this many client addresses, the busiest
    /// holding at most `maximumTopClientShare` of them (one misbehaving client is not an incident).
    public var minimumClients = 3
    public var maximumTopClientShare: Double = 0.5
    /// Failures must touch at least this many tenants, the busiest holding at most
    /// `maximumTopTenantShare` (one tenant's spam burst or bad recipient list is not an incident).
    public var minimumTenants = 2
    public var maximumTopTenantShare: Double = 0.8

    /// Classification: an issue of Mailflow's own origin whose failing share reached this is an
    /// incident (else an advisory) ...
    public var incidentShare: Double = 0.3
    /// ... with at least this many failures.
    public var incidentMinimumFailures = 20
    /// An incident whose failing share is at least this is a service interruption (else degradation).
    public var interruptionShare: Double = 0.5
    /// Outbound trouble at no more than this many destinations is a remote provider's.
    public var remoteProviderMaximumDestinations = 2

    /// Anomalies starting within this time of an open issue, in an overlapping forest or
    /// destination, join it as related signatures.
    public var correlationWindow: TimeInterval = 600
    /// An issue is restored once its signal has stayed at baseline this long.
    public var restoreAfter: TimeInterval = 900

    /// Delays: an outbound series' median latency over the window at least `latencyFactor` times its
    /// baseline and `latencyMinimumSeconds` above it, with `latencyMinimumSamples` samples.
    public var latencyFactor: Double = 5
    public var latencyMinimumSeconds: Double = 5
    public var latencyMinimumSamples = 6
    /// A delay must last this long before an advisory opens (a greylisting retry is not a delay).
    public var latencyMinimumDuration: TimeInterval = 300
    /// Latency history (samples) before a latency baseline is trusted.
    public var latencyHistoryMinimum = 100

    /// Volume: a forest, region or the whole of one direction whose outcomes over the window fall
    /// to `volumeDropShare` of their usual number for this hour of the week (at least
    /// `volumeMinimumExpected` expected), for `volumeMinimumDuration`: mail stopped without errors.
    public var volumeDropShare: Double = 0.2
    public var volumeMinimumExpected: Double = 40
    public var volumeMinimumDuration: TimeInterval = 600

    /// Reports: distinct reporting tenants in a region within `reportWindow` above which reports
    /// are a surge: at least `reportMinimumTenants`, and `reportSurgeFactor` times the expected count.
    public var reportWindow: TimeInterval = 900
    public var reportMinimumTenants = 3
    public var reportSurgeFactor: Double = 4
    /// A reports-only issue is restored when no report has come for this long.
    public var reportQuietPeriod: TimeInterval = 3600

    /// Cap on distinct signatures tracked per direction; later new ones are counted as `<other>`.
    public var maximumSignatures = 500

    public init() {}
}
