import Foundation

/// What an admin can do to an issue.
public enum HealthAdminAction: Sendable, Equatable {
    /// Add a post (a regular update in the issue's timeline).
    case post(String)
    /// Change the status; `serviceRestored` also ends the issue, `falsePositive` closes it.
    case status(IssueStatus)
    /// Publish the post-incident review (timeline, impact, root cause evidence); the issue must be over.
    case postIncidentReview(String)
}

/// Why an admin action was refused (the API answers 404 or 409 with it).
public enum HealthActionError: Error, Equatable, CustomStringConvertible {
    case unknownIssue(String)
    case notApplicable(String)
    /// Queued for the node that runs the monitor (cluster mode), which has not applied it in time.
    case notApplied(String)

    public var description: String {
        switch self {
        case .unknownIssue(let id): return "no issue \(id)"
        case .notApplicable(let why): return why
        case .notApplied(let why): return why
        }
    }
}

extension HealthMonitor {
    /// Carries out an admin's action on an issue; each one is a post naming who did it.
    public mutating func apply(_ action: HealthAdminAction, to id: String, by actor: String, at now: Date)
        throws(HealthActionError) -> HealthIssue
    {
        guard let i = issues.firstIndex(where: { $0.id == id }) else { throw .unknownIssue(id) }
        var issue = issues[i]
        switch action {
        case .post(let text):
            let text = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty, text.count <= 10_000 else {
                throw .notApplicable("a post needs text (at most 10,000 characters)")
            }
            issue.posts.append(IssuePost(createdDateTime: now, kind: .regular, author: actor, description: text))
        case .status(let status):
            guard status != .postIncidentReviewPublished else {
                throw .notApplicable("publish a post-incident review to set postIncidentReviewPublished")
            }
            guard status != issue.status else { throw .notApplicable("\(id) is already \(status.rawValue)") }
            guard !(issue.status == .postIncidentReviewPublished) else {
                throw .notApplicable("\(id) has its post-incident review; its status is final")
            }
            issue.status = status
            if status == .serviceRestored || status == .falsePositive {
                issue.endDateTime = issue.endDateTime ?? now
            } else if !status.isResolved {
                issue.endDateTime = nil
            }
            issue.posts.append(
                IssuePost(
                    createdDateTime: now, kind: .regular, author: actor,
                    description: "Current status: set to \(status.rawValue) by \(actor)."))
        case .postIncidentReview(let text):
            guard issue.status == .serviceRestored || issue.status == .extendedRecovery else {
                throw .notApplicable("a post-incident review is published once the service is restored")
            }
            let body = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !body.isEmpty, body.count <= 100_000 else {
                throw .notApplicable("a review needs text (at most 100,000 characters)")
            }
            issue.status = .postIncidentReviewPublished
            issue.endDateTime = issue.endDateTime ?? now
            issue.posts.append(
                IssuePost(createdDateTime: now, kind: .postIncidentReview, author: actor, description: body))
        }
        issue.lastModifiedDateTime = now
        update(issue)
        return issue
    }

    /// A post-incident review drafted from what the monitor recorded: timeline, impact, evidence.
    public static func draftReview(_ issue: HealthIssue) -> String {
        let t = HealthSignalLine.formatTime
        var lines = ["Post-incident review for \(issue.id): \(issue.title)", "", "Timeline:"]
        lines.append("- \(t(issue.startDateTime)) first failures (\(issue.signature))")
        lines.append("- \(t(issue.detectedDateTime)) detected and opened as \(issue.classification.rawValue)")
        for p in issue.posts { lines.append("- \(t(p.createdDateTime)) post by \(p.author)") }
        if let end = issue.endDateTime { lines.append("- \(t(end)) service restored") }
        lines += [
            "", "Impact: \(issue.impactDescription)",
            "Scope: \(scopeText(issue.scope)).",
            "Root cause evidence: \(issue.evidence.failures) failures in \(issue.evidence.total) outcomes with \"\(issue.signature)\" against a usual \(String(format: "%.1f", issue.evidence.baselineShare * 100))%; related: \(issue.evidence.relatedSignatures.joined(separator: "; ")); user reports: \(issue.reports).",
        ]
        return lines.joined(separator: "\n")
    }
}
