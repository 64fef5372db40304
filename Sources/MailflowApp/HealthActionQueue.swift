import Foundation
import MailQueue
import ServiceHealth

/// An admin's action on an issue for a monitor that runs elsewhere: the running server, for
/// `mailflow health post|status|review`; the health leader, for a cluster node that does not lead.
/// The action is checked first against the issue as the monitor will check it (so a refusal is
/// precise and immediate), then queued in the store, then waited for.
///
/// ```swift
/// let q = HealthActionQueue(store: store)
/// switch try q.queue(.status(.serviceRestored), on: issue, by: "alice") {
/// case .applied: ...                 // the monitor applied and stored it
/// case .refused: ...                 // it refused (see its log)
/// case .waiting: ...                 // not applied within `wait` (withdrawn): nothing runs the monitor?
/// }
/// ```
public struct HealthActionQueue: Sendable {
    public enum Outcome: Sendable, Equatable {
        case applied, refused, waiting
    }

    public let store: any HealthStore
    /// How long to wait for the monitor (its passes run every 5 s).
    public var wait: TimeInterval

    public init(store: any HealthStore, wait: TimeInterval = 15) {
        self.store = store
        self.wait = wait
    }

    /// The stored form of an action: its kind and value.
    static func stored(_ action: HealthAdminAction) -> (kind: String, value: String) {
        switch action {
        case .post(let t): ("post", t)
        case .postIncidentReview(let t): ("review", t)
        case .status(let s): ("status", s.rawValue)
        }
    }

    /// Checks `action` against `issue`, queues it and waits for the monitor's answer.
    public func queue(_ action: HealthAdminAction, on issue: HealthIssue, by actor: String) throws -> Outcome {
        var scratch = HealthMonitor(existing: [issue], nextNumber: 1)
        _ = try scratch.apply(action, to: issue.id, by: actor, at: Date())
        let (kind, value) = Self.stored(action)
        let id = try store.addHealthAction(issue: issue.id, kind: kind, value: value, actor: actor, time: Date())
        let deadline = Date().addingTimeInterval(wait)
        while Date() < deadline {
            switch try store.healthActionState(id) {
            case 1?: return .applied
            case 2?: return .refused
            default: Thread.sleep(forTimeInterval: 0.2)
            }
        }
        // Not applied in time: withdrawn, so that no monitor applies it hours later, unless it was
        // answered meanwhile.
        if try store.withdrawHealthAction(id) { return .waiting }
        return try store.healthActionState(id) == 1 ? .applied : .refused
    }

    /// `queue` for the issue `id` among `issues`, answering the issue as stored once applied;
    /// throws `HealthActionError` otherwise (`.notApplied` when the monitor did not answer in time).
    public func apply(_ action: HealthAdminAction, to id: String, by actor: String, issues: [HealthIssue]) throws
        -> HealthIssue
    {
        guard let issue = issues.first(where: { $0.id == id }) else { throw HealthActionError.unknownIssue(id) }
        switch try queue(action, on: issue, by: actor) {
        case .applied:
            guard let stored = try HealthService.storedIssues(store).first(where: { $0.id == id }) else {
                throw HealthActionError.unknownIssue(id)
            }
            return stored
        case .refused:
            throw HealthActionError.notApplicable("the node running service health refused it (see its log)")
        case .waiting:
            throw HealthActionError.notApplied(
                "not applied within \(Int(wait)) s, and withdrawn: no node is running service health now")
        }
    }
}
