import Foundation
import Testing

@testable import MailflowApp

/// Issue 15, config fuzzing: numbers too large for what they become (whole nanoseconds in an
/// `Int64`, octets in an `Int`) are refused with the key's name instead of trapping.
struct ConfigNumberRangeTests {
    func refusal(_ yaml: String) -> String {
        do {
            _ = try MailflowConfig.parse(yaml: yaml)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test(arguments: [
        ("timeouts:\n  command: 1e300\n", "timeouts.command"),
        ("health:\n  window: 1e300d\n", "health.window"),
        ("delivery:\n  retry_intervals: [1m, 1e308]\n", "delivery.retry_intervals[1]"),
        ("trace:\n  retention: 99999999999999999999d\n", "trace.retention"),
        ("delivery:\n  expiry: 3651d\n", "delivery.expiry"),
    ])
    func durationsLongerThanTenYearsAreRefused(yaml: String, key: String) {
        let m = refusal(yaml)
        #expect(m.contains(key) && m.contains("longer than 3650d"), "\(m)")
        #expect(!m.contains("\n"))
    }

    @Test func tenYearsIsStillADuration() throws {
        let c = try MailflowConfig.parse(yaml: "delivery:\n  expiry: 3650d\n")
        #expect(c.expiry == 3650 * 86400)
    }

    @Test(arguments: ["9999999999999GB", "9223372036854775807KB", "9007199254740993MB"])
    func sizesThatOverflowAreRefused(size: String) {
        let m = refusal("limits:\n  max_message_size: \(size)\n")
        #expect(m.contains("limits.max_message_size") && m.contains("larger than a size can be"), "\(m)")
    }

    @Test func theLargestSizeThatFitsIsNotAnOverflow() {
        // Accepted or refused by the limit's own range, never by the overflow check.
        let m = refusal("limits:\n  max_message_size: 8589934591GB\n")
        #expect(!m.contains("larger than a size can be"), "\(m)")
    }
}
