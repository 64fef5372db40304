import Foundation
import Logging
import MailQueue
import NIOCore
import NIOEmbedded
import NIOPosix
import SMTPCore
import Synchronization
import Testing

@testable import Ingress

#if canImport(Glibc)
    import Glibc
#endif

/// A queue whose storage the test breaks: `failure` fails every commit with that error, `refusal`
/// is the answer to "is there room for a new message?" at MAIL.
final class BrokenStorageCommitter: MessageCommitter {
    let failure = Mutex<(any Error)?>(nil)
    let refusal = Mutex<SMTPReply?>(nil)
    let declaredSizes = Mutex<[Int?]>([])
    let committed = Mutex<[String]>([])

    func commit(_ message: NewMessage, completion: @escaping @Sendable (Error?) -> Void) {
        if let error = failure.withLock({ $0 }) { return completion(error) }
        committed.withLock { $0.append(message.id) }
        completion(nil)
    }

    func storageRefusal(declaredSize: Int?) -> SMTPReply? {
        declaredSizes.withLock { $0.append(declaredSize) }
        return refusal.withLock { $0 }
    }
}

/// The session handler when the queue's storage fails (issue 15): a full disk is `452 4.3.1` before
/// any `250`, at MAIL when the queue says so beforehand and at the end of the body when the write
/// fails; an I/O error or a locked queue is `451 4.3.0`; the session goes on and the next message,
/// once storage is back, is accepted. On `EmbeddedChannel`.
final class SMTPServerHandlerStorageTests: Sendable {
    let committer = BrokenStorageCommitter()
    let context: IngressContext
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("mf-storage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let policy = IngressPolicy(
            session: ServerSessionConfiguration(hostname: "mx.test", tlsAvailable: false), timeouts: SessionTimeouts(),
            directory: TenantDirectory(tenants: [
                Tenant(name: "example", domains: ["example.test"], mailboxes: ["alice"])
            ]))
        context = IngressContext(
            policy: SharedPolicy(policy), admission: AdmissionControl(limits: AdmissionLimits()), committer: committer,
            spool: try Spool(directory: directory.appendingPathComponent("spool").path), threadPool: .singleton,
            tls: nil, logger: Logger(label: "test"))
    }

    deinit {
        try? FileManager.default.removeItem(at: directory)
    }

    func connect() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(SMTPServerHandler(context: context))
        channel.localAddress = try SocketAddress(ipAddress: "127.0.0.1", port: 25)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.10", port: 40000)).wait()
        _ = try channel.replies()
        try channel.send("EHLO c.test\r\n")
        _ = try channel.replies()
        return channel
    }

    /// One whole transaction; the reply to the end of its body.
    func send(_ channel: EmbeddedChannel, mailParameters: String = "") throws -> String {
        try channel.send("MAIL FROM:<a@b.test>\(mailParameters)\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        let started = try channel.replies()
        guard started.contains("354 ") else { return started }
        try channel.send("Subject: t\r\n\r\nhello\r\n.\r\n")
        channel.embeddedEventLoop.run()
        return try channel.replies()
    }

    static let storageErrors: [(String, any Error, String)] = [
        ("spool ENOSPC", FileSync.Failure(operation: "write", path: "/s", errno: ENOSPC), "452 4.3.1 "),
        ("quota", FileSync.Failure(operation: "fsync", path: "/s", errno: EDQUOT), "452 4.3.1 "),
        ("sqlite full", StorageFailure(.full, "SQLITE_FULL"), "452 4.3.1 "),
        ("disk I/O", FileSync.Failure(operation: "fsync", path: "/s", errno: EIO), "451 4.3.0 "),
        ("locked", StorageFailure(.busy, "SQLITE_BUSY"), "451 4.3.0 "),
    ]

    @Test(arguments: 0..<storageErrors.count)
    func aFailedWriteIsATransientReplyAndTheSessionGoesOn(_ i: Int) throws {
        let (_, error, expected) = Self.storageErrors[i]
        let channel = try connect()
        committer.failure.withLock { $0 = error }
        let refused = try send(channel)
        #expect(refused.hasPrefix(expected), "\(refused)")
        #expect(!refused.contains("250"))
        committer.failure.withLock { $0 = nil }
        #expect(try send(channel).contains("250 2.0.0 Ok: queued as "))
        #expect(committer.committed.withLock { $0.count } == 1)
        channel.end()
    }

    /// An error that is no storage fault keeps the generic answer.
    @Test func anotherFailureIsTheGenericLocalError() throws {
        struct Other: Error {}
        let channel = try connect()
        committer.failure.withLock { $0 = Other() }
        #expect(try send(channel).hasPrefix("451 4.3.0 Local error in processing, try again later"))
        channel.end()
    }

    @Test func mailIsRefusedWhileTheQueueHasNoRoomAndAcceptedOnceItHas() throws {
        let channel = try connect()
        committer.refusal.withLock { $0 = SMTPReply(452, .init(4, 3, 1), "Insufficient system storage") }
        try channel.send("MAIL FROM:<a@b.test> SIZE=12345\r\n")
        #expect(try channel.replies() == "452 4.3.1 Insufficient system storage\r\n")
        // No transaction was opened: RCPT is out of sequence.
        try channel.send("RCPT TO:<alice@example.test>\r\n")
        #expect(try channel.replies().hasPrefix("503 "))
        committer.refusal.withLock { $0 = nil }
        #expect(try send(channel, mailParameters: " SIZE=40").contains("250 2.0.0 Ok: queued as "))
        #expect(committer.declaredSizes.withLock { $0 } == [12345, 40])
        channel.end()
    }
}
