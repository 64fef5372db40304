import Foundation
import GRDB
import SMTPCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A failed write of the queue, the spool or a mailbox, by what it means for the mail: the
/// filesystem is full, the disk failed, or the database stayed locked. Every kind is transient: the
/// message is not kept, the sender is told to try again (`452 4.3.1` or `451 4.3.0`), and the server
/// goes on serving. No kind ever becomes a `5xx`: a full disk is the receiver's problem, not a
/// property of the message (RFC 5321 §4.2.5, RFC 3463 §3.4: X.3.1 "Mail system full").
///
/// ```swift
/// StorageFault(errno: ENOSPC)?.reply  // 452 4.3.1 Insufficient system storage, try again later
/// StorageFault(error)                 // from a GRDB DatabaseError, a FileSync.Failure, a POSIXError
/// ```
public enum StorageFault: String, Sendable, Equatable, Codable, CaseIterable {
    /// No space left (`ENOSPC`), a quota reached (`EDQUOT`), or SQLite's `SQLITE_FULL`.
    case full
    /// The disk or filesystem failed the write (`EIO`, `EROFS`, SQLite's `SQLITE_IOERR`,
    /// `SQLITE_CANTOPEN`, `SQLITE_READONLY`).
    case ioError = "io_error"
    /// SQLite stayed locked past its busy timeout (`SQLITE_BUSY`, `SQLITE_LOCKED`): another process
    /// (queue control from the CLI) held the write lock too long.
    case busy

    /// The reply a client gets for a message that could not be kept. RFC 1870 §6.1 and RFC 3463
    /// §3.4 give `452 4.3.1` to "insufficient system storage"; the other kinds are the generic local
    /// error of RFC 5321 §4.2.3 (`451`), RFC 3463's X.3.0 "other or undefined mail system status".
    public var reply: SMTPReply {
        switch self {
        case .full: return SMTPReply(452, .init(4, 3, 1), "Insufficient system storage, try again later")
        case .ioError:
            return SMTPReply(451, .init(4, 3, 0), "Local error in processing (storage I/O error), try again later")
        case .busy:
            return SMTPReply(451, .init(4, 3, 0), "Local error in processing (queue busy), try again later")
        }
    }

    /// The deferral recorded for a delivery that failed on this fault (a mailbox write): the same
    /// codes, so a delay notice carries `4.3.1` for a full mailbox filesystem.
    public func deferral(_ what: String) -> String {
        let r = reply
        return "\(r.code) \(r.enhancedCode.map { "\($0)" } ?? "4.3.0") \(what)"
    }

    /// The kind of an `errno` from a write, sync, open or rename; nil for one that says nothing about
    /// the storage (`EINTR`, `EBADF`, ...).
    public init?(errno code: Int32) {
        switch code {
        case ENOSPC, EDQUOT, EFBIG: self = .full
        case EIO, EROFS: self = .ioError
        default: return nil
        }
    }

    /// The kind of an SQLite result code (primary or extended: `SQLITE_IOERR_FSYNC` is an I/O
    /// error); nil for the codes a storage problem does not produce (a constraint, a misuse).
    public init?(sqliteCode code: Int32) {
        switch code & 0xFF {
        case 13: self = .full  // SQLITE_FULL
        case 10, 14, 8: self = .ioError  // SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY
        case 5, 6: self = .busy  // SQLITE_BUSY, SQLITE_LOCKED
        default: return nil
        }
    }

    /// The kind of an error thrown by a write of the queue, the spool or a mailbox; nil when the
    /// error is not a storage fault (the caller keeps its generic answer).
    public init?(_ error: any Error) {
        guard let kind = Self.kind(of: error) else { return nil }
        self = kind
    }

    static func kind(of error: any Error) -> StorageFault? {
        switch error {
        case let e as DatabaseError:
            return StorageFault(sqliteCode: e.extendedResultCode.rawValue)
        case let e as FileSync.Failure:
            return StorageFault(errno: e.errno)
        case let e as StorageFailure:
            return e.fault
        case let e as POSIXError:
            return StorageFault(errno: e.code.rawValue)
        case let e as CocoaError where e.code == .fileWriteOutOfSpace:
            return .full
        default:
            let ns = error as NSError
            if ns.domain == NSPOSIXErrorDomain { return StorageFault(errno: Int32(ns.code)) }
            if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
                return StorageFault(errno: Int32(underlying.code))
            }
            return nil
        }
    }
}

/// A write that failed with a known `StorageFault`, for code that has only an errno or a reason to
/// report (a mailbox write, a spool write) and wants the caller to answer with the fault's reply.
public struct StorageFailure: Error, CustomStringConvertible {
    public var fault: StorageFault
    public var detail: String

    public init(_ fault: StorageFault, _ detail: String) {
        self.fault = fault
        self.detail = detail
    }

    public var description: String { detail }
}
