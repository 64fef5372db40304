import Foundation

/// Incident or advisory, as Microsoft 365 service health classifies (Graph `serviceHealthClassificationType`).
public enum IssueClassification: String, Sendable, Codable, Hashable {
    /// A clear, broad user impact in Mailflow's own service (a forest refusing most sessions).
    case incident
    /// Limited impact: a smaller rise, delays without failures, or a remote provider's trouble.
    case advisory
}

/// The statuses of Graph's `serviceHealthIssue`, in the order an issue usually walks them.
public enum IssueStatus: String, Sendable, Codable, Hashable, CaseIterable {
    case investigating
    case serviceDegradation
    case serviceInterruption
    case restoringService
    case extendedRecovery
    case serviceRestored
    case falsePositive
    case postIncidentReviewPublished

    /// Whether the issue is over (no more automatic changes).
    public var isResolved: Bool {
        self == .serviceRestored || self == .falsePositive || self == .postIncidentReviewPublished
    }
}

/// Where the fault lies.
public enum IssueOrigin: String, Sendable, Codable, Hashable {
    /// Mailflow's own service: its refusals, its local failures, its outbound path as a whole.
    case mailflow
    /// One remote provider (a destination deferring or failing Mailflow's deliveries).
    case remoteProvider
    /// Only user reports so far, no telemetry behind them.
    case customer
}

/// What an issue touches, with the share of each part's traffic that fails with its signature.
public struct IssueScope: Sendable, Codable, Hashable {
    public var direction: MailDirection
    public var forests: [String] = []
    public var regions: [String] = []
    public var tenants: [String] = []
    public var destinations: [String] = []
    /// The failing share of the affected traffic, 0...1, at the issue's worst so far.
    public var peakFailureShare: Double = 0

    public init(
        direction: MailDirection, forests: [String] = [], regions: [String] = [], tenants: [String] = [],
        destinations: [String] = [], peakFailureShare: Double = 0
    ) {
        self.direction = direction
        self.forests = forests
        self.regions = regions
        self.tenants = tenants
        self.destinations = destinations
        self.peakFailureShare = peakFailureShare
    }

    /// Whether a tenant sees this issue (tenant-scoped admins see only these).
    public func includes(tenant: String) -> Bool { tenants.contains(tenant) }
}

/// One post on an issue, in the layout admins know from Exchange Online's service health.
public struct IssuePost: Sendable, Codable, Hashable {
    public enum Kind: String, Sendable, Codable, Hashable {
        /// Written by the monitor (open, classification change, restore).
        case automatic
        /// Written by an admin.
        case regular
        /// The post-incident review.
        case postIncidentReview
    }

    public var createdDateTime: Date
    public var kind: Kind
    public var author: String
    /// The whole post as text, one "Heading: text" paragraph per part.
    public var description: String

    public init(createdDateTime: Date, kind: Kind, author: String, description: String) {
        self.createdDateTime = createdDateTime
        self.kind = kind
        self.author = author
        self.description = description
    }
}

/// What evidence the monitor has for an issue's root cause.
public struct IssueEvidence: Sendable, Codable, Hashable {
    /// Failures with the signature since the onset.
    public var failures: Int = 0
    /// All outcomes in the affected scope since the onset.
    public var total: Int = 0
    /// The first failure with the signature in the current episode.
    public var firstSeen: Date
    /// The baseline failure share the episode was compared against.
    public var baselineShare: Double = 0
    /// Other signatures that started with it in the same scope.
    public var relatedSignatures: [String] = []
    /// The failing share of the affected traffic at each bucket while the issue was active, with the
    /// baseline and the share the detector calls anomalous (the issue page's chart). At most
    /// `SharePoint.limit` points: older ones are thinned out.
    public var series: [SharePoint]?

    public init(firstSeen: Date) { self.firstSeen = firstSeen }
}

/// A service-health issue (Graph `serviceHealthIssue`): `MF` + number, classification, status,
/// origin, scope, signature, posts and the user reports that joined it.
public struct HealthIssue: Sendable, Codable, Hashable, Identifiable {
    public var id: String
    public var title: String
    public var classification: IssueClassification
    public var status: IssueStatus
    public var origin: IssueOrigin
    /// The service in Mailflow's overview: "Inbound mail flow", "Outbound mail flow".
    public var service: String
    public var signature: String
    public var impactDescription: String
    public var startDateTime: Date
    public var detectedDateTime: Date
    public var endDateTime: Date?
    public var lastModifiedDateTime: Date
    public var scope: IssueScope
    public var evidence: IssueEvidence
    /// User reports that joined this issue, by region.
    public var reportsByRegion: [String: Int] = [:]
    public var posts: [IssuePost] = []

    public var reports: Int { reportsByRegion.values.reduce(0, +) }
    public var isResolved: Bool { status.isResolved }
}

/// One point of an issue's chart: when, the failing share, its baseline and the anomaly threshold.
public struct SharePoint: Sendable, Codable, Hashable {
    public static let limit = 360
    public var time: Date
    public var share: Double
    public var baseline: Double
    public var threshold: Double

    public init(time: Date, share: Double, baseline: Double, threshold: Double) {
        self.time = time
        self.share = share
        self.baseline = baseline
        self.threshold = threshold
    }
}

extension IssueEvidence {
    /// Adds a point, thinning the series to every other point once it is full.
    public mutating func record(_ p: SharePoint) {
        var s = series ?? []
        s.append(p)
        if s.count > SharePoint.limit { s = s.enumerated().filter { $0.offset % 2 == 0 }.map(\.element) }
        series = s
    }
}
