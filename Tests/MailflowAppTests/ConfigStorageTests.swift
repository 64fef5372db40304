import Foundation
import MailQueue
import Testing
import Yams

@testable import MailflowApp

/// `limits.queue_min_free`: the reserve of free space the data directory's filesystem keeps
/// (docs/queue.md, "Full disks and storage faults").
struct ConfigStorageTests {
    func limits(_ yaml: String) throws -> MailflowConfig {
        var c = MailflowConfig()
        try c.decodeLimits(try ConfigReader(try #require(try Yams.compose(yaml: yaml)), "limits"))
        return c
    }

    @Test func theDefaultIsOneAndAHalfTimesTheLargestMessage() throws {
        #expect(MailflowConfig().queueMinimumFree == Int64(MailflowConfig().maxMessageSize) * 3 / 2)
        #expect(try limits("max_message_size: 10MB\n").queueMinimumFree == 15 << 20)
    }

    @Test func aSizeOrZeroIsTaken() throws {
        #expect(try limits("queue_min_free: 2GB\n").queueMinimumFree == 2 << 30)
        #expect(try limits("queue_min_free: 0\n").queueMinimumFree == 0)
        #expect(try limits("queue_min_free: 512KB\nmax_message_size: 10MB\n").queueMinimumFree == 512 << 10)
    }

    @Test(arguments: ["lots", "-1MB", "1.5MB"])
    func aBadValueNamesTheKey(_ value: String) {
        do {
            _ = try limits("queue_min_free: \(value)\n")
            Issue.record("\(value) was accepted")
        } catch {
            #expect("\(error)".contains("limits.queue_min_free"), "\(error)")
        }
    }
}
