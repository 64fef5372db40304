import Foundation
import Hummingbird
import ServiceHealth

/// An issue as the API answers it: `HealthIssueDocument` (the shape of `mailflow health ... --json`),
/// with `endDateTime: null` while the issue is open rather than no key at all.
struct IssueJSON: ResponseEncodable {
    var document: HealthIssueDocument

    init(_ issue: HealthIssue) { document = HealthIssueDocument(issue) }

    enum Keys: String, CodingKey { case endDateTime }

    func encode(to encoder: any Encoder) throws {
        try document.encode(to: encoder)
        if document.endDateTime == nil {
            var c = encoder.container(keyedBy: Keys.self)
            try c.encodeNil(forKey: .endDateTime)
        }
    }
}

/// `GET /api/v1/health/overview`: one entry per service, as Graph's `serviceHealth`.
struct HealthOverviewResponse: ResponseEncodable {
    struct Service: Codable, Equatable {
        var service: String
        /// The worst open issue's status, or `serviceOperational`.
        var status: String
        /// The open issues, oldest first.
        var issues: [String]
    }
    var services: [Service]
}

struct HealthIssuesResponse: ResponseEncodable {
    var issues: [IssueJSON]
}

/// `POST /api/v1/health/reports` answers `202` with what it took.
struct HealthReportResponse: ResponseEncodable {
    var accepted: Bool
    var reporter: String
    var tenant: String
    var region: String
}

extension AdminHTTPServer {
    /// The services of the health overview, always listed, in this order; a service named by an open
    /// issue and not here is listed after them.
    static let healthServices = ["Inbound mail flow", "Outbound mail flow", "Admin"]

    /// Open statuses from the worst down: the overview shows the worst open issue's.
    static let openStatusRank: [IssueStatus] = [
        .serviceInterruption, .serviceDegradation, .investigating, .restoringService, .extendedRecovery,
    ]

    /// The limits of the fields the API and the forms take (Unicode scalars, as JSON Schema counts).
    enum HealthLimits {
        static let tenant = 200
        static let region = 100
        static let reportText = 10_000
        static let errorText = 2_000
        static let post = 10_000
        static let review = 100_000
    }

    func addHealthAPIRoutes(_ api: RouterGroup<AdminRequestContext>) {
        let backend = self.backend
        api.get("health/overview") { _, context in
            HealthOverviewResponse(
                services: Self.healthOverview(Self.visibleIssues(backend, tenant: context.tenant)))
        }
        api.get("health/issues") { request, context in
            let filter = try HealthIssueFilter(Self.form(request.uri.query ?? ""))
            return HealthIssuesResponse(
                issues: filter.apply(Self.visibleIssues(backend, tenant: context.tenant)).map(IssueJSON.init))
        }
        api.get("health/issues/:id") { _, context in
            IssueJSON(
                try Self.healthIssue(backend, id: try context.parameters.require("id"), tenant: context.tenant))
        }
        api.post("health/issues/:id/posts") { request, context in
            let id = try context.parameters.require("id")
            let body = try await Self.jsonObject(request, limit: 256 * 1024)
            let text = try Self.textField(body, "text", max: HealthLimits.post)
            return IssueJSON(try await Self.healthAct(backend, id: id, .post(text), actor: context.actor ?? "api"))
        }
        api.post("health/issues/:id/status") { request, context in
            let id = try context.parameters.require("id")
            let body = try await Self.jsonObject(request, limit: 16 * 1024)
            let status = try Self.statusField(body["status"], present: body.keys.contains("status"))
            return IssueJSON(try await Self.healthAct(backend, id: id, .status(status), actor: context.actor ?? "api"))
        }
        api.post("health/issues/:id/review") { request, context in
            let id = try context.parameters.require("id")
            let body = try await Self.jsonObject(request, limit: 2 * 1024 * 1024, allowEmpty: true)
            let text = try Self.optionalTextField(body, "text", max: HealthLimits.review) ?? ""
            return IssueJSON(try await Self.publishReview(backend, id: id, text: text, actor: context.actor ?? "api"))
        }
        api.post("health/reports") { request, context in
            let body = try await Self.jsonObject(request, limit: 256 * 1024)
            let report = try Self.problemReport(Self.scopedReport(body, tenant: context.tenant))
            let reporter = context.actor ?? "api"
            try await backend.healthReport(report, reporter)
            return EditedResponse(
                status: .accepted,
                response: HealthReportResponse(
                    accepted: true, reporter: reporter, tenant: report.tenant, region: report.region))
        }
    }

    // MARK: shared by the API and the pages

    /// One entry per service: the fixed three, then any other service an open issue names.
    static func healthOverview(_ issues: [HealthIssue]) -> [HealthOverviewResponse.Service] {
        let open = issues.filter { !$0.isResolved }.sorted(by: issueOrder).reversed()
        let others = Set(open.map(\.service)).subtracting(healthServices).sorted()
        return (healthServices + others).map { name in
            let mine = open.filter { $0.service == name }
            let worst = openStatusRank.first { s in mine.contains { $0.status == s } }
            return .init(service: name, status: worst?.rawValue ?? "serviceOperational", issues: mine.map(\.id))
        }
    }

    /// Newest first: by start time, then by number.
    static func issueOrder(_ a: HealthIssue, _ b: HealthIssue) -> Bool {
        if a.startDateTime != b.startDateTime { return a.startDateTime > b.startDateTime }
        return (Int(a.id.dropFirst(2)) ?? 0) > (Int(b.id.dropFirst(2)) ?? 0)
    }

    /// One issue; with `tenant`, `404` unless its scope names the tenant.
    static func healthIssue(_ backend: AdminBackend, id: String, tenant: String? = nil) throws -> HealthIssue {
        guard let issue = visibleIssues(backend, tenant: tenant).first(where: { $0.id == id }) else {
            throw HTTPError(.notFound, message: "no issue \(id)")
        }
        return issue
    }

    /// An admin action; an unknown issue is `404`, an action that does not apply `409`.
    static func healthAct(_ backend: AdminBackend, id: String, _ action: HealthAdminAction, actor: String) async throws
        -> HealthIssue
    {
        do {
            return try await backend.healthAct(id, action, actor)
        } catch let e as HealthActionError {
            switch e {
            case .unknownIssue: throw HTTPError(.notFound, message: e.description)
            case .notApplicable: throw HTTPError(.conflict, message: e.description)
            case .notApplied: throw HTTPError(.serviceUnavailable, message: e.description)
            }
        }
    }

    /// Publishes a post-incident review; blank text publishes the monitor's draft.
    static func publishReview(_ backend: AdminBackend, id: String, text: String, actor: String) async throws
        -> HealthIssue
    {
        let issue = try healthIssue(backend, id: id)
        let body = isBlank(text) ? HealthMonitor.draftReview(issue) : text
        return try await healthAct(backend, id: id, .postIncidentReview(body), actor: actor)
    }

    // MARK: input

    /// The body as a JSON object; anything else is `400`. An empty body is `{}` where `allowEmpty`.
    static func jsonObject(_ request: Request, limit: Int, allowEmpty: Bool = false) async throws -> [String: Any] {
        let buffer = try await request.body.collect(upTo: limit)
        if buffer.readableBytes == 0 && allowEmpty { return [:] }
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)),
            let object = parsed as? [String: Any]
        else {
            throw HTTPError(.badRequest, message: "the body must be a JSON object")
        }
        return object
    }

    /// White space as the monitor trims it (Foundation's `whitespacesAndNewlines`); docs/openapi.yaml
    /// spells the same set out in its patterns.
    static func isBlank(_ s: String) -> Bool {
        s.unicodeScalars.allSatisfy { CharacterSet.whitespacesAndNewlines.contains($0) }
    }

    /// A required string field with something in it besides white space, at most `max` scalars.
    static func textField(_ object: [String: Any], _ key: String, max: Int) throws -> String {
        guard object.keys.contains(key) else { throw HTTPError(.badRequest, message: "\(key) is required") }
        guard let text = try optionalTextField(object, key, max: max), !text.isEmpty else {
            throw HTTPError(.badRequest, message: "\(key) must not be empty")
        }
        guard !isBlank(text) else {
            throw HTTPError(.badRequest, message: "\(key) must contain more than white space")
        }
        return text
    }

    /// An optional string field (absent is nil; `null` or another type is `400`), at most `max` scalars.
    static func optionalTextField(_ object: [String: Any], _ key: String, max: Int) throws -> String? {
        guard let value = object[key] else { return nil }
        guard let text = value as? String else { throw HTTPError(.badRequest, message: "\(key) must be a string") }
        guard text.unicodeScalars.count <= max else {
            throw HTTPError(.badRequest, message: "\(key) must be at most \(max) characters")
        }
        return text
    }

    static func statusField(_ value: Any?, present: Bool) throws -> IssueStatus {
        let all = IssueStatus.allCases.map(\.rawValue).joined(separator: ", ")
        guard present else { throw HTTPError(.badRequest, message: "status is required") }
        guard let text = value as? String, let status = IssueStatus(rawValue: text) else {
            throw HTTPError(.badRequest, message: "status must be one of \(all)")
        }
        return status
    }

    /// A problem report from the API's JSON or the report form; a bad field is `400` naming it. An
    /// empty error text is none.
    static func problemReport(_ object: [String: Any]) throws -> ProblemReport {
        let t = try textField(object, "tenant", max: HealthLimits.tenant)
        let r = try textField(object, "region", max: HealthLimits.region)
        let body = try textField(object, "text", max: HealthLimits.reportText)
        let e = try optionalTextField(object, "error", max: HealthLimits.errorText)
        return ProblemReport(tenant: t, region: r, text: body, errorText: (e ?? "").isEmpty ? nil : e)
    }
}

/// The filters of `GET /api/v1/health/issues`; a bad value is `400` naming it.
struct HealthIssueFilter {
    var status: IssueStatus?
    var classification: IssueClassification?
    var service: String?
    var open: Bool?
    var since: Date?

    init(_ p: [String: String], now: Date = Date()) throws {
        for key in ["status", "classification", "open", "since"] where p[key]?.isEmpty == true {
            throw HTTPError(.badRequest, message: "\(key) must not be empty")
        }
        if let s = p["status"] {
            guard let status = IssueStatus(rawValue: s) else {
                throw HTTPError(
                    .badRequest,
                    message: "status must be one of \(IssueStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.status = status
        }
        if let c = p["classification"] {
            guard let value = IssueClassification(rawValue: c) else {
                throw HTTPError(.badRequest, message: "classification must be incident or advisory")
            }
            classification = value
        }
        if let s = p["service"], !s.isEmpty { service = s }
        if let o = p["open"] {
            guard o == "true" || o == "false" else {
                throw HTTPError(.badRequest, message: "open must be true or false")
            }
            open = o == "true"
        }
        if let s = p["since"] {
            guard let t = AdminHTTPServer.parseTime(s, now: now) else {
                throw HTTPError(.badRequest, message: "since: '\(s)' is not an ISO 8601 time or a duration like 24h")
            }
            since = t
        }
    }

    /// The matching issues, newest first. `since` keeps the issues open at any time since then
    /// (still open, or ended at or after it; a resolved issue without an end counts as ended when
    /// last modified).
    func apply(_ issues: [HealthIssue]) -> [HealthIssue] {
        issues.filter { i in
            (status == nil || i.status == status)
                && (classification == nil || i.classification == classification)
                && (service == nil || i.service.caseInsensitiveCompare(service!) == .orderedSame)
                && (open == nil || i.isResolved != open)
                && (since == nil
                    || (i.endDateTime ?? (i.isResolved ? i.lastModifiedDateTime : nil)).map { $0 >= since! } ?? true)
        }.sorted(by: AdminHTTPServer.issueOrder)
    }
}
