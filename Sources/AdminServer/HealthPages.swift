import Foundation
import Hummingbird
import ServiceHealth

/// The web admin center's service-health pages: the overview of services and issues, one page per
/// issue with its posts and the admins' forms, and the problem report form.
extension AdminHTTPServer {
    /// What `?done=CODE` may say on these pages: fixed messages, never text from the URL.
    static let healthNotices: [String: String] = [
        "report": "Thank you: the report was received. The monitor reads it within seconds.",
        "posts": "Your post was added.",
        "status": "The status was changed.",
        "review": "The post-incident review was published.",
    ]

    static let statusLabels: [String: String] = [
        "serviceOperational": "Healthy", "investigating": "Investigating",
        "serviceDegradation": "Service degradation", "serviceInterruption": "Service interruption",
        "restoringService": "Restoring service", "extendedRecovery": "Extended recovery",
        "serviceRestored": "Service restored", "falsePositive": "False positive",
        "postIncidentReviewPublished": "Post-incident review published",
    ]

    /// How long an ended issue stays on the service health page.
    static let endedIssuesShown: TimeInterval = 30 * 86400

    func addHealthPageRoutes(_ pages: RouterGroup<AdminRequestContext>) {
        let backend = self.backend
        pages.get("health") { [self] request, context in
            html(render("health", healthPage(Self.form(request.uri.query ?? ""), context)))
        }
        pages.get("health/issues/:id") { [self] request, context in
            let id = try context.parameters.require("id")
            guard let issue = Self.visibleIssues(backend, tenant: context.tenant).first(where: { $0.id == id }) else {
                return html(
                    render(
                        "error",
                        base(context, title: "Not found", tab: "health").merging(["message": "No issue \(id)."]) {
                            $1
                        }), status: .notFound)
            }
            return html(render("healthIssue", healthIssuePage(issue, Self.form(request.uri.query ?? ""), context)))
        }
        pages.post("health/issues/:id/posts") { [self] request, context -> Response in
            let id = try context.parameters.require("id")
            let form = try await csrfForm(request, context, limit: 256 * 1024)
            return try await healthFormResult(context, done: "posts") {
                let text = try Self.textField(form, "text", max: HealthLimits.post)
                return try await Self.healthAct(backend, id: id, .post(text), actor: context.actor ?? "web")
            }
        }
        pages.post("health/issues/:id/status") { [self] request, context -> Response in
            let id = try context.parameters.require("id")
            let form = try await csrfForm(request, context, limit: 4096)
            return try await healthFormResult(context, done: "status") {
                let status = try Self.statusField(form["status"], present: form["status"] != nil)
                return try await Self.healthAct(backend, id: id, .status(status), actor: context.actor ?? "web")
            }
        }
        pages.post("health/issues/:id/review") { [self] request, context -> Response in
            let id = try context.parameters.require("id")
            let form = try await csrfForm(request, context, limit: 2 * 1024 * 1024)
            return try await healthFormResult(context, done: "review") {
                let text = try Self.optionalTextField(form, "text", max: HealthLimits.review) ?? ""
                return try await Self.publishReview(backend, id: id, text: text, actor: context.actor ?? "web")
            }
        }
        pages.get("health/report") { [self] _, context in html(render("healthReport", reportPage([:], context))) }
        pages.post("health/report") { [self] request, context -> Response in
            let form = try await csrfForm(request, context, limit: 256 * 1024)
            do {
                let report = try Self.problemReport(Self.scopedReport(form, tenant: context.tenant))
                try await backend.healthReport(report, context.actor ?? "web")
            } catch let e as HTTPError {
                var page = reportPage(form, context)
                page["error"] = e.body ?? "\(e)"
                return html(render("healthReport", page), status: e.status)
            }
            return Response(status: .seeOther, headers: [.location: "/health?done=report"])
        }
    }

    /// Runs a form's action: on success, back to the issue with a fixed notice; otherwise the error page.
    func healthFormResult(
        _ context: AdminRequestContext, done: String, _ action: () async throws -> HealthIssue
    ) async throws -> Response {
        do {
            let issue = try await action()
            let id = issue.id.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            return Response(status: .seeOther, headers: [.location: "/health/issues/\(id)?done=\(done)"])
        } catch let e as HTTPError {
            return html(
                render(
                    "error",
                    base(context, title: "Not done", tab: "health").merging(["message": e.body ?? "\(e)"]) { $1 }),
                status: e.status)
        }
    }

    static func statusLabel(_ raw: String) -> String { statusLabels[raw] ?? raw }

    /// A line for tables: direction, forests, regions, tenants, destinations, peak failing share.
    static func scopeSummary(_ s: IssueScope) -> String {
        var parts = [s.direction.rawValue]
        if !s.forests.isEmpty { parts.append("forests \(s.forests.joined(separator: ", "))") }
        if !s.regions.isEmpty { parts.append("regions \(s.regions.joined(separator: ", "))") }
        if !s.tenants.isEmpty {
            parts.append(
                s.tenants.count <= 3 ? "tenants \(s.tenants.joined(separator: ", "))" : "\(s.tenants.count) tenants")
        }
        if !s.destinations.isEmpty { parts.append("destinations \(s.destinations.joined(separator: ", "))") }
        if s.peakFailureShare > 0 { parts.append("peak \(percent(s.peakFailureShare)) failing") }
        return parts.joined(separator: "; ")
    }

    static func percent(_ share: Double) -> String {
        let p = share * 100
        return p > 0 && p < 1 ? String(format: "%.1f%%", p) : "\(Int(p.rounded()))%"
    }

    static func issueRow(_ i: HealthIssue) -> [String: Any] {
        [
            "id": i.id, "title": i.title, "classification": i.classification.rawValue.capitalized,
            "status": i.status.rawValue, "statusLabel": statusLabel(i.status.rawValue), "service": i.service,
            "start": time(i.startDateTime), "end": time(i.endDateTime ?? (i.isResolved ? i.lastModifiedDateTime : nil)),
            "scope": scopeSummary(i.scope), "reports": i.reports,
        ]
    }

    func healthPage(_ q: [String: String], _ context: AdminRequestContext, now: Date = Date()) -> [String: Any] {
        let issues = Self.visibleIssues(backend, tenant: context.tenant)
        var page = base(context, title: "Service health", tab: "health")
        page["refresh"] = 60
        if let code = q["done"], let notice = Self.healthNotices[code] { page["notice"] = notice }
        page["services"] = Self.healthOverview(issues).map { s -> [String: Any] in
            [
                "service": s.service, "status": s.status, "label": Self.statusLabel(s.status),
                "issues": s.issues.map { ["id": $0] },
            ]
        }
        let sorted = issues.sorted(by: Self.issueOrder)
        page["open"] = sorted.filter { !$0.isResolved }.map(Self.issueRow)
        func ended(_ i: HealthIssue) -> Date { i.endDateTime ?? i.lastModifiedDateTime }
        page["ended"] = sorted.filter { $0.isResolved && ended($0) >= now - Self.endedIssuesShown }
            .sorted { ended($0) > ended($1) }.prefix(100).map(Self.issueRow)
        page["endedDays"] = Int(Self.endedIssuesShown / 86400)
        return page
    }

    func healthIssuePage(
        _ issue: HealthIssue, _ q: [String: String], _ context: AdminRequestContext, now: Date = Date()
    )
        -> [String: Any]
    {
        var page = base(context, title: "\(issue.id): \(issue.title)", tab: "health")
        if let code = q["done"], let notice = Self.healthNotices[code] { page["notice"] = notice }
        page["id"] = issue.id
        page["issueTitle"] = issue.title
        page["status"] = issue.status.rawValue
        page["statusLabel"] = Self.statusLabel(issue.status.rawValue)
        page["classification"] = issue.classification.rawValue.capitalized
        let reports = issue.reportsByRegion.sorted { $0.key < $1.key }
        let fields: [(String, String?)] = [
            ("Classification", issue.classification.rawValue.capitalized),
            ("Status", "\(Self.statusLabel(issue.status.rawValue)) (\(issue.status.rawValue))"),
            ("Origin", issue.origin.rawValue), ("Service", issue.service), ("User impact", issue.impactDescription),
            ("Signature", issue.signature), ("Start", Self.time(issue.startDateTime)),
            ("Detected", Self.time(issue.detectedDateTime)), ("End", Self.time(issue.endDateTime)),
            ("Last modified", Self.time(issue.lastModifiedDateTime)),
            (
                "User reports",
                issue.reports == 0
                    ? "0" : "\(issue.reports) (\(reports.map { "\($0.key): \($0.value)" }.joined(separator: ", ")))"
            ),
        ]
        page["fields"] = fields.compactMap { f -> [String: Any]? in
            guard let v = f.1, !v.isEmpty else { return nil }
            return ["name": f.0, "value": v]
        }
        let s = issue.scope
        let scope: [(String, String)] = [
            ("Direction", s.direction.rawValue), ("Forests", s.forests.joined(separator: ", ")),
            ("Regions", s.regions.joined(separator: ", ")),
            ("Tenants", s.tenants.isEmpty ? "" : "\(s.tenants.count): \(s.tenants.joined(separator: ", "))"),
            ("Destinations", s.destinations.joined(separator: ", ")),
        ]
        page["scope"] = scope.filter { !$0.1.isEmpty }.map { ["name": $0.0, "value": $0.1] }
        let ev = issue.evidence
        // Telemetry behind the issue: shares and counts. A reports-only issue has none.
        if ev.total > 0 {
            page["shares"] = [
                "peak": Self.percent(s.peakFailureShare),
                "peakWidth": Int((min(max(s.peakFailureShare, 0), 1) * 100).rounded()),
                "baseline": Self.percent(ev.baselineShare),
                "baselineWidth": Int((min(max(ev.baselineShare, 0), 1) * 100).rounded()),
            ]
            page["evidence"] = [
                [
                    "name": "Failures",
                    "value": "\(ev.failures) in \(ev.total) outcome(s) since \(Self.time(ev.firstSeen))",
                ],
                ["name": "Usual failing share", "value": Self.percent(ev.baselineShare)],
            ]
        }
        // A reports-only issue's signature is the error text its reports gave most (or a placeholder
        // when they gave none); the others are its related signatures.
        let reported = issue.origin == .customer && !issue.signature.hasPrefix("user reports:") ? [issue.signature] : []
        let related = (issue.origin == .customer ? reported : []) + ev.relatedSignatures
        if !related.isEmpty {
            page["related"] = [
                "label": issue.origin == .customer ? "Error texts in the reports" : "Started together",
                "list": related,
            ]
        }
        // Posts, newest first (the order they were written breaks ties).
        let posts = issue.posts.enumerated().sorted {
            $0.element.createdDateTime != $1.element.createdDateTime
                ? $0.element.createdDateTime > $1.element.createdDateTime : $0.offset > $1.offset
        }.map(\.element)
        page["posts"] = posts.map { p -> [String: Any] in
            [
                "time": Self.time(p.createdDateTime), "kind": p.kind.rawValue,
                "kindLabel": Self.postKinds[p.kind]!.label,
                "author": p.author, "text": p.description,
            ]
        }
        page["postCount"] = posts.count
        page["chartTimeline"] = Self.timelineChart(issue, now: now)
        if let series = issue.evidence.series, series.count >= 2 {
            page["chartShare"] = Charts.shareBand(
                id: "chart-share", times: series.map(\.time), share: series.map(\.share),
                baseline: series.map(\.baseline), threshold: series.map(\.threshold))
        }
        if issue.reports > 0 {
            page["chartReports"] = Charts.bars(
                id: "chart-reports",
                series: [.init(name: "Reports", color: "#6f42c1", values: reports.map { Double($0.value) })],
                labels: reports.map(\.key), labelEvery: 1)
        }
        // The forms: a post always; a status unless the review is out; the review once restored.
        let csrf = context.csrf ?? ""
        page["canSetStatus"] = issue.status != .postIncidentReviewPublished
        page["statuses"] = IssueStatus.allCases.filter { $0 != .postIncidentReviewPublished }.map {
            st -> [String: Any] in
            ["value": st.rawValue, "label": Self.statusLabel(st.rawValue), "selected": st == issue.status]
        }
        if issue.status == .serviceRestored || issue.status == .extendedRecovery {
            page["review"] = ["draft": HealthMonitor.draftReview(issue), "csrf": csrf]
        }
        page["formCSRF"] = csrf
        return page
    }

    static let postKinds: [IssuePost.Kind: (label: String, color: String)] = [
        .automatic: ("Update", "#3b7dd8"), .regular: ("Admin post", "#e08e0b"),
        .postIncidentReview: ("Post-incident review", "#2e9d4e"),
    ]

    /// The issue's impact (start to end, or to now while open) and its posts on a time axis.
    static func timelineChart(_ issue: HealthIssue, now: Date) -> String {
        let end = issue.endDateTime ?? (issue.isResolved ? issue.lastModifiedDateTime : now)
        let marks = issue.posts.map { p in
            Charts.Mark(
                time: p.createdDateTime, kind: p.kind.rawValue, color: postKinds[p.kind]!.color,
                title: "\(time(p.createdDateTime)): \(postKinds[p.kind]!.label) by \(p.author)")
        }
        let last = max(end, marks.map(\.time).max() ?? end)
        return Charts.timeline(
            id: "chart-timeline", start: issue.startDateTime, end: last, band: (issue.startDateTime, end), marks: marks,
            keys: [.init(name: "Impact", color: "#f6d5d3", values: [])]
                + [IssuePost.Kind.automatic, .regular, .postIncidentReview].map {
                    .init(name: postKinds[$0]!.label, color: postKinds[$0]!.color, values: [])
                }, startLabel: time(min(issue.startDateTime, marks.map(\.time).min() ?? issue.startDateTime)),
            endLabel: time(last))
    }

    func reportPage(_ values: [String: String], _ context: AdminRequestContext) -> [String: Any] {
        var page = base(context, title: "Report an issue", tab: "health")
        page["tenantValue"] = values["tenant"] ?? ""
        page["regionValue"] = values["region"] ?? ""
        page["textValue"] = values["text"] ?? ""
        page["errorValue"] = values["error"] ?? ""
        let forests = backend.usage()?.forests ?? []
        if let tenant = context.tenant {
            // A tenant admin reports for its tenant: the field is fixed, the regions are its forest's.
            page["tenantValue"] = tenant
            page["tenantFixed"] = true
            page["tenants"] = [tenant]
            let forest = backend.tenants().first { $0.name == tenant }?.forest
            page["regions"] = Array(Set(forests.filter { $0.name == forest }.map(\.region))).sorted()
        } else {
            page["tenants"] = backend.tenants().map(\.name).sorted()
            page["regions"] = Array(Set(forests.map(\.region))).sorted()
        }
        return page
    }
}
