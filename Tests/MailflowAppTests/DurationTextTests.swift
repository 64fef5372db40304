import Foundation
import Testing

@testable import MailflowApp

/// The one duration parser, shared by the config file and the CLI's `--since` / `--until`.
struct DurationTextTests {
    @Test(arguments: [
        ("30", 30.0), ("30s", 30), ("5m", 300), ("24h", 86400), ("2d", 172_800), ("1.5h", 5400), ("0", 0),
        ("0s", 0), (" 90s ", 90),
    ])
    func durationsParse(_ text: String, _ seconds: TimeInterval) {
        #expect(DurationText.seconds(text) == seconds)
    }

    @Test(arguments: ["", "s", "soon", "-5m", "5 m", "5M", "5w", "inf", "nan", "1e400", "m5", "5mm"])
    func nonDurationsAreRefused(_ text: String) {
        #expect(DurationText.seconds(text) == nil)
    }

    @Test func theConfigKeepsItsOwnRulesOnZero() throws {
        #expect(try MailflowConfig.parse(yaml: "limits:\n  tarpit: 0\n").tarpit == 0)
        #expect(throws: MailflowConfig.ConfigError.self) { try MailflowConfig.parse(yaml: "timeouts:\n  data: 0\n") }
        #expect(try MailflowConfig.parse(yaml: "delivery:\n  delay_notice: 0s\n").delayNotice == nil)
    }
}
