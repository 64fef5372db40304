import Foundation

extension CheckReport {
    /// A report with the findings ordered by category (in ``CheckCategory`` order), keeping each
    /// category's findings in the order the checks produced them.
    public static func ordered(
        kind: Kind, target: String, startedAt: Date, finishedAt: Date = Date(), findings: [CheckFinding]
    ) -> CheckReport {
        let rank = Dictionary(uniqueKeysWithValues: CheckCategory.allCases.enumerated().map { ($1, $0) })
        let sorted = findings.enumerated().sorted { a, b in
            let (ra, rb) = (rank[a.element.category] ?? 0, rank[b.element.category] ?? 0)
            return ra != rb ? ra < rb : a.offset < b.offset
        }.map(\.element)
        return CheckReport(
            kind: kind, target: target, startedAt: startedAt,
            durationSeconds: finishedAt.timeIntervalSince(startedAt), findings: sorted)
    }
}
