import Foundation
import GRDB
import SMTPCore
import Synchronization
import Testing

@testable import MailQueue

#if canImport(Glibc)
    import Glibc
#endif

/// A filesystem whose free space the test sets, and a monotonic clock it moves.
private final class FakeDisk: Sendable {
    let free = Mutex<Int64?>(100 << 20)
    let time = Mutex<TimeInterval>(1000)

    func guardOf(minimumFree: Int64) -> StorageGuard {
        StorageGuard(
            path: "/data", minimumFree: minimumFree,
            freeSpace: { _ in self.free.withLock { f in f.map { ($0, 1 << 30) } } },
            now: { self.time.withLock { $0 } })
    }

    func set(_ bytes: Int64?) { free.withLock { $0 = bytes } }
    /// Moves the clock past the sampling interval, so the next question reads the disk again.
    func advance(_ seconds: TimeInterval = StorageGuard.sampleInterval) { time.withLock { $0 += seconds } }
}

/// `StorageGuard` on an injected disk and clock: refusal at MAIL below the reserve and for a `SIZE=`
/// that does not fit, resumption as soon as space returns, the hold after a write that failed for
/// lack of space, and what the admin API and `/metrics` read.
struct StorageGuardTests {
    static let full = SMTPReply(452, .init(4, 3, 1), "Insufficient system storage, try again later")

    @Test func refusesBelowTheReserveAndResumesWhenSpaceReturns() {
        let disk = FakeDisk()
        let g = disk.guardOf(minimumFree: 10 << 20)
        #expect(g.admissionRefusal(declaredSize: nil) == nil)
        disk.set(9 << 20)
        disk.advance()
        #expect(g.admissionRefusal(declaredSize: nil) == Self.full)
        let paused = g.status()
        #expect(paused.acceptancePaused)
        #expect(paused.reason?.contains("below the reserve of 10.0 MB") == true)
        #expect(paused.refusals["free_space"] == 1)
        disk.set(11 << 20)
        disk.advance()
        #expect(g.admissionRefusal(declaredSize: nil) == nil)
        #expect(!g.status().acceptancePaused)
    }

    @Test func aDeclaredSizeMustFitAboveTheReserve() {
        let disk = FakeDisk()
        disk.set(20 << 20)
        let g = disk.guardOf(minimumFree: 10 << 20)
        #expect(g.admissionRefusal(declaredSize: 10 << 20) == nil)
        let r = g.admissionRefusal(declaredSize: (10 << 20) + 1)
        #expect(r?.code == 452 && r?.enhancedCode == .init(4, 3, 1))
        #expect(r?.lines.first?.contains("for a message of 10485761 octets") == true)
        #expect(g.status().refusals["size"] == 1)
        #expect(!g.status().acceptancePaused)
    }

    /// Between samples the last reading holds: a burst of MAIL commands costs one `statvfs`.
    @Test func theDiskIsReadAtMostOncePerSampleInterval() {
        let disk = FakeDisk()
        let g = disk.guardOf(minimumFree: 10 << 20)
        #expect(g.admissionRefusal(declaredSize: nil) == nil)
        disk.set(0)
        #expect(g.admissionRefusal(declaredSize: nil) == nil)
        disk.advance()
        #expect(g.admissionRefusal(declaredSize: nil) == Self.full)
    }

    /// With the reserve off, a write that failed for lack of space still holds acceptance until the
    /// free space grows by the margin, or for `faultHold` at most.
    @Test func aFullWriteHoldsAcceptanceUntilSpaceGrowsOrTheHoldEnds() {
        let disk = FakeDisk()
        disk.set(4096)
        let g = disk.guardOf(minimumFree: 0)
        #expect(g.admissionRefusal(declaredSize: nil) == nil)
        #expect(g.recordFault(DatabaseError(resultCode: .SQLITE_FULL), during: "commit") == .full)
        #expect(g.admissionRefusal(declaredSize: nil) == Self.full)
        let s = g.status()
        #expect(s.acceptancePaused && s.faults["full"] == 1 && s.lastFault?.operation == "commit")
        #expect(s.reason?.contains("a queue write failed for lack of space") == true)
        // Grown, but by less than the margin: still held.
        disk.set(4096 + StorageGuard.faultMargin / 2)
        disk.advance()
        #expect(g.admissionRefusal(declaredSize: nil) == Self.full)
        disk.set(4096 + StorageGuard.faultMargin)
        disk.advance()
        #expect(g.admissionRefusal(declaredSize: nil) == nil)
        // A new fault, then the hold runs out with the disk unchanged: one may try again.
        disk.set(0)
        g.recordFault(FileSync.Failure(operation: "write", path: "/data/spool/x", errno: ENOSPC), during: "spool")
        disk.advance()
        #expect(g.admissionRefusal(declaredSize: nil) == Self.full)
        disk.advance(StorageGuard.faultHold)
        #expect(g.admissionRefusal(declaredSize: nil) == nil)
    }

    /// SQLite reports some out-of-space writes as SQLITE_IOERR: below the reserve they count as full.
    @Test func anIOErrorOnAFilesystemBelowTheReserveCountsAsFull() {
        let disk = FakeDisk()
        let g = disk.guardOf(minimumFree: 10 << 20)
        let ioerr = DatabaseError(resultCode: ResultCode(rawValue: 1034))  // SQLITE_IOERR_FSYNC
        #expect(g.recordFault(ioerr, during: "commit") == .ioError)
        #expect(g.refusal(for: ioerr)?.code == 451)
        disk.set(1 << 20)
        #expect(g.recordFault(ioerr, during: "commit") == .full)
        #expect(g.refusal(for: ioerr) == StorageFault.full.reply)
        #expect(g.status().faults == ["full": 1, "io_error": 1, "busy": 0])
        #expect(g.status().refusals["write"] == 2)
    }

    @Test func errorsThatAreNoStorageFaultAreNotRecorded() {
        let g = FakeDisk().guardOf(minimumFree: 0)
        struct Other: Error {}
        #expect(g.recordFault(Other(), during: "commit") == nil)
        #expect(g.refusal(for: Other()) == nil)
        #expect(g.status().lastFault == nil)
        #expect(g.status().faults.values.allSatisfy { $0 == 0 })
    }

    /// A filesystem that cannot be read (statvfs fails) refuses nothing: not knowing is no reason.
    @Test func anUnreadableFilesystemRefusesNothing() {
        let disk = FakeDisk()
        disk.set(nil)
        let g = disk.guardOf(minimumFree: 10 << 20)
        #expect(g.admissionRefusal(declaredSize: 1 << 30) == nil)
        #expect(g.status().freeBytes == nil && !g.status().acceptancePaused)
    }

    /// The real `statvfs` of a real directory.
    @Test func statvfsReadsARealFilesystem() throws {
        let dir = try temporaryDirectory()
        let space = try #require(StorageGuard.statvfsFreeSpace(dir))
        #expect(space.free > 0 && space.total >= space.free)
        #expect(StorageGuard.statvfsFreeSpace("\(dir)/missing/deeper") == nil)
        #expect(StorageGuard.defaultMinimumFree(maxMessageSize: 35 << 20) == (35 << 20) * 3 / 2)
    }

    /// Real SQLite refusing to grow (`PRAGMA max_page_count` makes it answer SQLITE_FULL as a full
    /// disk does): the group committer fails the message, nothing of it is stored, the fault is
    /// recorded with its `452 4.3.1`, and once the database may grow again the next commit works
    /// without a restart.
    @Test func aFullDatabaseFailsTheCommitAndRecoversWithoutRestart() async throws {
        let store = try SQLiteQueueStore(path: "\(try temporaryDirectory())/q.sqlite")
        let committer = GroupCommitter(store: store)
        defer { committer.shutdown() }
        try await committer.commit(newMessage("BEFORE"))
        let pages = try await store.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA page_count")! }
        try await store.pool.write { db in try db.execute(sql: "PRAGMA max_page_count = \(pages)") }
        let big = String(repeating: "x", count: 64 * 1024)
        await #expect(throws: DatabaseError.self) {
            try await committer.commit(newMessage("LOST", body: "Subject: t\r\n\r\n\(big)\r\n"))
        }
        #expect(try store.message("LOST") == nil)
        #expect(try store.traceEvents(queueID: "LOST").isEmpty)
        let status = store.storage.status()
        #expect(status.faults["full"] == 1)
        #expect(status.lastFault?.kind == "full" && status.lastFault?.operation == "commit")
        #expect(
            committer.storage.refusal(for: DatabaseError(resultCode: .SQLITE_FULL)) == StorageFault.full.reply)
        try await store.pool.write { db in try db.execute(sql: "PRAGMA max_page_count = 1073741823") }
        try await committer.commit(newMessage("AFTER", body: "Subject: t\r\n\r\n\(big)\r\n"))
        #expect(try store.message("AFTER") != nil)
        #expect(try store.message("BEFORE") != nil)
    }
}
