import Foundation
import GRDB
import SMTPCore
import Testing

@testable import MailQueue

#if canImport(Glibc)
    import Glibc
#endif

/// The mapping from a failed write (errno, SQLite result code, the error types the writers throw) to
/// what the client is told: a full disk is `452 4.3.1`, an I/O error or a locked queue `451 4.3.0`,
/// anything else is no storage fault and keeps the caller's generic answer. Never a `5xx`.
struct StorageFaultTests {
    @Test(
        arguments: [
            (ENOSPC, StorageFault.full), (EDQUOT, .full), (EFBIG, .full), (EIO, .ioError), (EROFS, .ioError),
        ] as [(Int32, StorageFault)])
    func errnoMapsToItsKind(_ code: Int32, _ kind: StorageFault) {
        #expect(StorageFault(errno: code) == kind)
    }

    @Test(arguments: [EINTR, EBADF, EACCES, ENOENT, 0])
    func otherErrnosAreNoStorageFault(_ code: Int32) {
        #expect(StorageFault(errno: code) == nil)
    }

    /// Primary and extended codes: SQLITE_IOERR_FSYNC (1034), SQLITE_IOERR_SHMSIZE (4874),
    /// SQLITE_BUSY_TIMEOUT (773), SQLITE_READONLY_DBMOVED (1032), SQLITE_CANTOPEN (14).
    @Test(
        arguments: [
            (13, StorageFault.full), (10, .ioError), (1034, .ioError), (4874, .ioError), (14, .ioError),
            (1032, .ioError),
            (5, .busy), (773, .busy), (6, .busy),
        ] as [(Int32, StorageFault)])
    func sqliteCodesMapToTheirKind(_ code: Int32, _ kind: StorageFault) {
        #expect(StorageFault(sqliteCode: code) == kind)
        #expect(StorageFault(DatabaseError(resultCode: ResultCode(rawValue: code), message: "x")) == kind)
    }

    /// A constraint, a misuse, an error (1), an interrupt: the write was refused for what it is, not
    /// for lack of storage.
    @Test(arguments: [19, 2067, 21, 1, 9, 0] as [Int32])
    func otherSQLiteCodesAreNoStorageFault(_ code: Int32) {
        #expect(StorageFault(sqliteCode: code) == nil)
        #expect(StorageFault(DatabaseError(resultCode: ResultCode(rawValue: code), message: "x")) == nil)
    }

    @Test func theWritersErrorTypesAreRecognised() {
        #expect(StorageFault(FileSync.Failure(operation: "write", path: "/x", errno: ENOSPC)) == .full)
        #expect(StorageFault(FileSync.Failure(operation: "fsync", path: "/x", errno: EIO)) == .ioError)
        #expect(StorageFault(FileSync.Failure(operation: "open", path: "/x", errno: EACCES)) == nil)
        #expect(StorageFault(StorageFailure(.busy, "locked")) == .busy)
        #expect(StorageFault(POSIXError(.ENOSPC)) == .full)
        #expect(StorageFault(CocoaError(.fileWriteOutOfSpace)) == .full)
        #expect(StorageFault(NSError(domain: NSPOSIXErrorDomain, code: Int(EIO))) == .ioError)
        struct Unrelated: Error {}
        #expect(StorageFault(Unrelated()) == nil)
        #expect(StorageFault(BatchWriterStopped(writer: "w")) == nil)
    }

    @Test func repliesAreTransientAndSayWhy() {
        #expect(StorageFault.full.reply.encoded == "452 4.3.1 Insufficient system storage, try again later\r\n")
        #expect(StorageFault.ioError.reply.code == 451 && StorageFault.ioError.reply.enhancedCode == .init(4, 3, 0))
        #expect(StorageFault.busy.reply.code == 451 && StorageFault.busy.reply.enhancedCode == .init(4, 3, 0))
        for kind in StorageFault.allCases { #expect(kind.reply.isTransient) }
        #expect(StorageFault.full.deferral("Mailbox delivery failed: x") == "452 4.3.1 Mailbox delivery failed: x")
        #expect(StorageFault.ioError.deferral("y") == "451 4.3.0 y")
    }
}
