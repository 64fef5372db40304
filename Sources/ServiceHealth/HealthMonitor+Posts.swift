import Foundation

/// The words of an issue: its title, user impact, status for a classification, and the posts in the
/// layout admins know from Exchange Online's service health.
extension HealthMonitor {

    static func title(_ ek: EpisodeKey, scope: IssueScope, origin: IssueOrigin) -> String {
        if ek.isVolume {
            let place =
                scope.forests.isEmpty ? scope.regions.joined(separator: ", ") : scope.forests.joined(separator: ", ")
            let what = ek.direction == .inbound ? "Incoming mail" : "Outgoing mail"
            return "\(what)\(place.isEmpty ? "" : " for \(place)") has stopped or dropped sharply"
        }
        if ek.isDelay {
            return scope.destinations.isEmpty
                ? "Outbound mail is delayed" : "Mail to \(scope.destinations.joined(separator: ", ")) is delayed"
        }
        switch (ek.direction, origin) {
        case (.inbound, _):
            let place = scope.forests.isEmpty ? "" : " in \(scope.forests.joined(separator: ", "))"
            return "Senders can't deliver mail to some organisations\(place)"
        case (.outbound, .remoteProvider):
            return "Mail to \(scope.destinations.joined(separator: ", ")) is deferred or refused by the remote provider"
        case (.outbound, _):
            let place = scope.forests.isEmpty ? "" : " from \(scope.forests.joined(separator: ", "))"
            return "Users can't send mail to external recipients\(place)"
        }
    }

    static func impact(_ ek: EpisodeKey, scope: IssueScope, origin: IssueOrigin, e: Episode) -> String {
        let pct = Int((e.peakShare * 100).rounded())
        if ek.isVolume {
            return
                "About \(pct)% less \(ek.direction == .inbound ? "incoming" : "outgoing") mail than usual for this hour of the week, without errors that explain it: senders may not reach Mailflow at all."
        }
        if ek.isDelay {
            return
                "Outbound delivery takes about \(Int(e.latencyMs / 1000)) s instead of the usual \(Int(e.latencyBaselineMs / 1000)) s; mail is delayed, not lost."
        }
        switch ek.direction {
        case .inbound:
            return
                "About \(pct)% of SMTP sessions to the affected organisations are refused with \"\(ek.signature.text)\"; senders' servers retry, so mail is delayed."
        case .outbound:
            return
                "About \(pct)% of delivery attempts fail with \"\(ek.signature.text)\"; affected mail stays queued and is retried."
        }
    }

    static func status(_ c: IssueClassification, share: Double, policy: HealthDetectionPolicy) -> IssueStatus {
        c == .incident && share >= policy.interruptionShare ? .serviceInterruption : .serviceDegradation
    }

    /// "forests A, B; regions R; 3 tenant(s): ...; destinations D; up to 70% of their traffic failing",
    /// leaving out what is empty.
    public static func scopeText(_ s: IssueScope) -> String {
        var parts: [String] = []
        if !s.forests.isEmpty { parts.append("forests \(s.forests.joined(separator: ", "))") }
        if !s.regions.isEmpty { parts.append("regions \(s.regions.joined(separator: ", "))") }
        if !s.tenants.isEmpty {
            parts.append(
                "\(s.tenants.count) tenant(s): \(s.tenants.prefix(10).joined(separator: ", "))\(s.tenants.count > 10 ? ", ..." : "")"
            )
        }
        if !s.destinations.isEmpty { parts.append("destinations \(s.destinations.joined(separator: ", "))") }
        if s.peakFailureShare > 0 {
            parts.append("up to \(Int((s.peakFailureShare * 100).rounded()))% of their traffic failing")
        }
        return parts.isEmpty ? "being determined" : parts.joined(separator: "; ")
    }

    /// A post in the layout admins know: Title, User impact, Current status, Scope of impact, Start
    /// time, Preliminary root cause, Next update by.
    static func post(_ issue: HealthIssue, now: Date, headline: String) -> IssuePost {
        let ev = issue.evidence
        var cause =
            issue.origin == .customer && ev.total == 0
            ? "Users report it (error text \"\(issue.signature)\"); no matching failures in the telemetry yet."
            : "Signature \"\(issue.signature)\": \(ev.failures) failure(s) in \(ev.total) outcome(s) since \(HealthSignalLine.formatTime(ev.firstSeen)), against a usual share of \(String(format: "%.1f", ev.baselineShare * 100))%."
        if !ev.relatedSignatures.isEmpty {
            cause += " Started together: \(ev.relatedSignatures.joined(separator: "; "))."
        }
        if issue.reports > 0 {
            cause +=
                " User reports: "
                + issue.reportsByRegion.sorted { $0.key < $1.key }.map { "\($0.value) from \($0.key)" }
                .joined(separator: ", ") + "."
        }
        let next =
            issue.isResolved ? "This is the final update." : HealthSignalLine.formatTime(now.addingTimeInterval(3600))
        let text = """
            Title: \(issue.title)
            User impact: \(issue.impactDescription)
            Current status: \(headline) Status: \(issue.status.rawValue); classification: \(issue.classification.rawValue).
            Scope of impact: \(scopeText(issue.scope)).
            Start time: \(HealthSignalLine.formatTime(issue.startDateTime))
            Preliminary root cause: \(cause)
            Next update by: \(next)
            """
        return IssuePost(createdDateTime: now, kind: .automatic, author: "mailflow", description: text)
    }
}
