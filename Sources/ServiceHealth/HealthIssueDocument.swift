import Foundation

/// An issue as the API, `mailflow health ... --json` and replay print it: the fields of Graph's
/// `serviceHealthIssue` (id, title, classification, status, origin, service, impactDescription,
/// isResolved, startDateTime, endDateTime, lastModifiedDateTime, posts) plus Mailflow's own
/// (signature, detectedDateTime, scope, reports and where they came from, evidence).
public struct HealthIssueDocument: Codable, Sendable, Equatable {
    public struct Scope: Codable, Sendable, Equatable {
        public var direction: String
        public var forests: [String]
        public var regions: [String]
        public var tenants: [String]
        public var destinations: [String]
        public var peakFailureShare: Double
    }

    public struct Post: Codable, Sendable, Equatable {
        public var createdDateTime: String
        public var postType: String
        public var author: String
        public var description: String
    }

    public struct Evidence: Codable, Sendable, Equatable {
        public var failures: Int
        public var total: Int
        public var firstSeen: String
        public var baselineShare: Double
        public var relatedSignatures: [String]
        public var series: [Point]
    }

    /// A point of the failing share against its baseline and the anomaly threshold.
    public struct Point: Codable, Sendable, Equatable {
        public var time: String
        public var share: Double
        public var baseline: Double
        public var threshold: Double
    }

    public var id: String
    public var title: String
    public var classification: String
    public var status: String
    public var origin: String
    public var service: String
    public var signature: String
    public var impactDescription: String
    public var isResolved: Bool
    public var startDateTime: String
    public var detectedDateTime: String
    public var endDateTime: String?
    public var lastModifiedDateTime: String
    public var scope: Scope
    public var reports: Int
    public var reportsByRegion: [String: Int]
    public var evidence: Evidence
    public var posts: [Post]

    public init(_ i: HealthIssue) {
        let t = HealthSignalLine.formatTime
        id = i.id
        title = i.title
        classification = i.classification.rawValue
        status = i.status.rawValue
        origin = i.origin.rawValue
        service = i.service
        signature = i.signature
        impactDescription = i.impactDescription
        isResolved = i.isResolved
        startDateTime = t(i.startDateTime)
        detectedDateTime = t(i.detectedDateTime)
        endDateTime = i.endDateTime.map(t)
        lastModifiedDateTime = t(i.lastModifiedDateTime)
        scope = Scope(
            direction: i.scope.direction.rawValue, forests: i.scope.forests, regions: i.scope.regions,
            tenants: i.scope.tenants, destinations: i.scope.destinations, peakFailureShare: i.scope.peakFailureShare)
        reports = i.reports
        reportsByRegion = i.reportsByRegion
        evidence = Evidence(
            failures: i.evidence.failures, total: i.evidence.total, firstSeen: t(i.evidence.firstSeen),
            baselineShare: i.evidence.baselineShare, relatedSignatures: i.evidence.relatedSignatures,
            series: (i.evidence.series ?? []).map {
                Point(time: t($0.time), share: $0.share, baseline: $0.baseline, threshold: $0.threshold)
            })
        posts = i.posts.map {
            Post(
                createdDateTime: t($0.createdDateTime), postType: $0.kind.rawValue, author: $0.author,
                description: $0.description)
        }
    }

    /// Encodes with sorted keys and `null` for an open issue's `endDateTime`.
    public static func encode(_ docs: [HealthIssueDocument], pretty: Bool = true) throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        return try enc.encode(docs.map(Nullable.init))
    }

    /// Writes `endDateTime: null` rather than leaving the key out.
    struct Nullable: Encodable {
        var doc: HealthIssueDocument
        init(_ d: HealthIssueDocument) { doc = d }
        enum K: String, CodingKey { case endDateTime }
        func encode(to encoder: Encoder) throws {
            try doc.encode(to: encoder)
            if doc.endDateTime == nil {
                var c = encoder.container(keyedBy: K.self)
                try c.encodeNil(forKey: .endDateTime)
            }
        }
    }
}
