import Foundation
import MailQueue
import Testing

@testable import Delivery

#if canImport(Glibc)
    import Glibc
#endif

/// Mailbox writes on a full filesystem (issue 15): a deferral with `452 4.3.1`, never a failure or a
/// bounce, nothing left in `new/`, and the next attempt once space is back delivers exactly once.
/// The full disk is the kernel's own: the message's `tmp/` file is a symbolic link to `/dev/full`,
/// whose every write fails with `ENOSPC`.
struct MaildirStorageTests {
    @Test(
        arguments: [
            (ENOSPC, "452 4.3.1 Mailbox delivery failed: "), (EDQUOT, "452 4.3.1 Mailbox delivery failed: "),
            (EIO, "451 4.3.0 Mailbox delivery failed: "), (EACCES, "451 4.3.0 Mailbox delivery failed: "),
        ] as [(Int32, String)])
    func deferralsSayWhy(_ code: Int32, _ prefix: String) {
        let reason = MaildirDelivery.deferral(for: MaildirDelivery.Failure(description: "write x: y", errno: code))
        #expect(reason == prefix + "write x: y")
    }

    @Test func anErrorWithoutErrnoIsTheGenericLocalError() {
        struct Other: Error, CustomStringConvertible { var description: String { "other" } }
        #expect(MaildirDelivery.deferral(for: Other()) == "451 4.3.0 Mailbox delivery failed: other")
        #expect(MaildirDelivery.deferral(for: MaildirDelivery.Failure(description: "gone")).hasPrefix("451 4.3.0 "))
    }

    @Test func aFullMailboxFilesystemDefersAndTheRetryDeliversOnce() async throws {
        let f = try DeliverySchedulerTests.Fixture()
        try f.insert("A")
        let box = "\(f.dir)/mailboxes/contoso.test/alice"
        for sub in ["tmp", "new", "cur"] {
            try FileManager.default.createDirectory(atPath: "\(box)/\(sub)", withIntermediateDirectories: true)
        }
        let name = MaildirDelivery(root: "\(f.dir)/mailboxes", hostname: "mx.test").uniqueName(
            queueID: "A", recipientIndex: 0)
        #expect(symlink("/dev/full", "\(box)/tmp/\(name)") == 0)

        await f.scheduler.attempt("A")
        let deferred = try #require(try f.store.message("A"))
        #expect(deferred.state == .queued)
        #expect(deferred.recipients[0].status == .pending)
        let reply = try #require(deferred.recipients[0].lastReply)
        #expect(reply.hasPrefix("452 4.3.1 Mailbox delivery failed: "), "\(reply)")
        #expect(reply.contains(String(cString: strerror(ENOSPC))))
        #expect(try f.store.traceEvents(queueID: "A").map(\.kind) == [.received, .deferred])
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(box)/new").isEmpty)
        // The failed copy is gone from tmp/ (here: the link), so the retry writes a real file.
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(box)/tmp").isEmpty)

        await f.scheduler.attempt("A")
        #expect(try f.store.message("A")?.state == .done)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(box)/new") == [name])
        let delivered = try String(contentsOfFile: "\(box)/new/\(name)", encoding: .utf8)
        #expect(delivered.hasSuffix("Subject: t\r\n\r\nhi\r\n"))
        await f.scheduler.shutdown()
    }
}
