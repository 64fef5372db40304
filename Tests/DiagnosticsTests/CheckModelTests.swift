import Foundation
import Testing

@testable import Diagnostics

@Suite struct CheckModelTests {
    private func finding(_ severity: CheckSeverity) -> CheckFinding {
        CheckFinding(category: .spf, subject: "example.org", check: "spf.test", severity: severity, summary: "x")
    }

    @Test(
        arguments: [
            ([], CheckSeverity.ok, Int32(0)),
            ([.ok], .ok, 0),
            ([.ok, .info], .info, 0),
            ([.info, .warning, .ok], .warning, 1),
            ([.warning, .failure, .info], .failure, 2),
            ([.failure], .failure, 2),
        ] as [([CheckSeverity], CheckSeverity, Int32)])
    func verdictIsTheWorstFinding(severities: [CheckSeverity], verdict: CheckSeverity, exitCode: Int32) {
        let report = CheckReport(
            kind: .domain, target: "example.org", startedAt: Date(), durationSeconds: 0,
            findings: severities.map(finding))
        #expect(report.verdict == verdict)
        #expect(report.exitCode == exitCode)
    }

    @Test func severitiesAreOrdered() {
        #expect(CheckSeverity.allCases.sorted() == [.ok, .info, .warning, .failure])
    }

    @Test func jsonCarriesVerdictAndRawValues() throws {
        let report = CheckReport(
            kind: .host, target: "mx.example.org:25", startedAt: Date(timeIntervalSince1970: 0), durationSeconds: 1.5,
            findings: [
                CheckFinding(
                    category: .mtaSTS, subject: "example.org", check: "mta-sts.record", severity: .warning,
                    summary: "s", ncsc: .phaseOut)
            ])
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(report)
        let object = try #require(JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["verdict"] as? String == "warning")
        #expect(object["exitCode"] as? Int == 1)
        let first = try #require((object["findings"] as? [[String: Any]])?.first)
        #expect(first["category"] as? String == "mta-sts")
        #expect(first["ncsc"] as? String == "phase-out")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let back = try decoder.decode(CheckReport.self, from: data)
        #expect(back.findings == report.findings)
    }
}
