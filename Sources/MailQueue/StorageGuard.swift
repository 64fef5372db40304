import Dispatch
import Foundation
import SMTPCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Watches the filesystem that holds the queue (the data directory: `queue.sqlite`, `spool/`, and
/// by default `mailboxes/`) and decides whether a new message may start: the way Postfix's smtpd
/// refuses `MAIL` below `queue_minfree`, Mailflow refuses with `452 4.3.1` while free space is below
/// a reserve, and refuses a declared `SIZE=` that would not fit above it (RFC 1870 §6.1). Refusing
/// at `MAIL` costs the client nothing; refusing after the body has been sent costs it the body, and
/// the reserve leaves room for the queue to record deliveries and for messages already accepted to
/// be copied into mailboxes.
///
/// The reserve is `limits.queue_min_free`, by default one and a half times the largest message
/// (`defaultMinimumFree`), as Postfix's default. A write that fails anyway (another process filled
/// the disk between two samples, a quota, a reserve of 0) is recorded here by the queue
/// (`recordFault`): for `faultHold` after a `full` fault new messages are refused until the free
/// space has grown by `faultMargin` over what it was at the fault, so a full disk is not hammered
/// by every waiting client; after that new messages may try again.
///
/// Acceptance resumes by itself: every `admissionRefusal` reads the free space again (at most every
/// `sampleInterval`), so the first `MAIL` after space returns is accepted, with no restart.
///
/// Thread model: any thread. `statvfs` reads the superblock's counters (no disk I/O on a local
/// filesystem) and is done at most once per `sampleInterval` across all sessions, so asking on an
/// event loop is fine; the state is a `Mutex`.
///
/// ```swift
/// let guard = StorageGuard(path: "/var/lib/mailflow", minimumFree: 64 << 20)
/// guard.admissionRefusal(declaredSize: 10_000_000)  // nil, or 452 4.3.1 Insufficient system storage
/// ```
public final class StorageGuard: Sendable {
    /// Bytes available to the server on the filesystem holding `path`, and its size; nil if unknown.
    public typealias FreeSpace = @Sendable (String) -> (free: Int64, total: Int64)?

    /// How often the free space is read at most (the admission path reads the last sample between).
    public static let sampleInterval: TimeInterval = 0.5
    /// How long a `full` fault holds acceptance unless free space grows by `faultMargin`.
    public static let faultHold: TimeInterval = 30
    /// Growth in free space past the level at a `full` fault that lifts the hold at once.
    public static let faultMargin: Int64 = 1 << 20

    /// Postfix's default reserve: one and a half times the largest message, so that the largest
    /// message still fits once acceptance has stopped for everyone else.
    public static func defaultMinimumFree(maxMessageSize: Int) -> Int64 {
        Int64(maxMessageSize) * 3 / 2
    }

    /// Why messages are refused or failed to be kept (the `reason` label of the refusal counter).
    public enum RefusalReason: String, Sendable, CaseIterable, Codable {
        /// At `MAIL`: free space below the reserve.
        case freeSpace = "free_space"
        /// At `MAIL`: the declared `SIZE=` would not fit above the reserve.
        case size
        /// At the end of the body: the spool or queue write failed.
        case write
    }

    struct Fault: Sendable {
        var kind: StorageFault
        var operation: String
        var detail: String
        var at: TimeInterval
        var time: Date
        var freeAtFault: Int64?
    }

    struct State: Sendable {
        var minimumFree: Int64
        var free: Int64?
        var total: Int64?
        var sampledAt: TimeInterval = -.infinity
        var fault: Fault?
        var refusals: [RefusalReason: Int] = [:]
        var faults: [StorageFault: Int] = [:]
        /// Acceptance was paused at the last look (to tell `observer` of changes only).
        var paused = false
        var observer: (@Sendable (_ paused: Bool, _ reason: String?) -> Void)?
    }

    /// A change of the pause, to be told outside the lock.
    typealias Change = (observer: @Sendable (Bool, String?) -> Void, paused: Bool, reason: String?)

    public let path: String
    let freeSpace: FreeSpace
    let now: @Sendable () -> TimeInterval
    let wallClock: @Sendable () -> Date
    let state: Mutex<State>

    /// `freeSpace`, `now` (monotonic seconds) and `wallClock` are injected by tests.
    public init(
        path: String, minimumFree: Int64 = 0, freeSpace: @escaping FreeSpace = { StorageGuard.statvfsFreeSpace($0) },
        now: @escaping @Sendable () -> TimeInterval = { StorageGuard.uptime() },
        wallClock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.path = path
        self.freeSpace = freeSpace
        self.now = now
        self.wallClock = wallClock
        self.state = Mutex(State(minimumFree: max(0, minimumFree)))
    }

    /// The reserve below which new messages are refused (`limits.queue_min_free`); a reload sets it.
    public var minimumFree: Int64 {
        get { state.withLock { $0.minimumFree } }
        set { state.withLock { $0.minimumFree = max(0, newValue) } }
    }

    public static func uptime() -> TimeInterval {
        Double(DispatchTime.now().uptimeNanoseconds) / 1e9
    }

    /// Tells `observer` each time acceptance pauses (with the reason) or resumes, as it is noticed
    /// (at `MAIL`, a failed write, a status read): the server logs it.
    public func observePause(_ observer: @escaping @Sendable (_ paused: Bool, _ reason: String?) -> Void) {
        state.withLock { $0.observer = observer }
    }

    /// Notes the pause state now; returns the change to report, if it changed.
    static func note(_ s: inout State, _ pause: (reason: String, byFault: Bool)?) -> Change? {
        let paused = pause != nil
        guard paused != s.paused else { return nil }
        s.paused = paused
        return s.observer.map { ($0, paused, pause?.reason) }
    }

    /// `statvfs`: blocks available to an unprivileged process (`f_bavail`), so the filesystem's
    /// root reserve is never counted as room for mail.
    public static func statvfsFreeSpace(_ path: String) -> (free: Int64, total: Int64)? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        let unit = Int64(s.f_frsize > 0 ? s.f_frsize : s.f_bsize)
        return (Int64(s.f_bavail) * unit, Int64(s.f_blocks) * unit)
    }

    /// Reads the free space if the last sample is older than `sampleInterval` (or `force`).
    func sample(_ s: inout State, at t: TimeInterval, force: Bool = false) {
        guard force || t - s.sampledAt >= Self.sampleInterval else { return }
        s.sampledAt = t
        if let f = freeSpace(path) {
            s.free = f.free
            s.total = f.total
        } else {
            s.free = nil
            s.total = nil
        }
    }

    /// The free space new messages need: the reserve, raised after a recent `full` fault.
    static func threshold(_ s: State, at t: TimeInterval) -> (bytes: Int64, byFault: Bool) {
        guard let f = s.fault, f.kind == .full, t - f.at < faultHold else { return (s.minimumFree, false) }
        let raised = (f.freeAtFault ?? 0) + faultMargin
        return raised > s.minimumFree ? (raised, true) : (s.minimumFree, false)
    }

    /// Why acceptance is paused now (nil when it is not), from the last sample.
    static func pause(_ s: State, at t: TimeInterval) -> (reason: String, byFault: Bool)? {
        guard let free = s.free else { return nil }
        let (needed, byFault) = threshold(s, at: t)
        guard free < needed else { return nil }
        if byFault, let f = s.fault {
            return (
                "a queue write failed for lack of space (\(f.operation): \(f.detail)); waiting for "
                    + "\(ByteText.format(needed)) free, \(ByteText.format(free)) now", true
            )
        }
        return (
            "free space \(ByteText.format(free)) is below the reserve of \(ByteText.format(needed)) "
                + "(limits.queue_min_free)", false
        )
    }

    /// The refusal of a new message at `MAIL`, nil when it may start: `452 4.3.1` while free space
    /// is below the reserve, or when a declared `SIZE=` would not fit above it (RFC 1870 §6.1).
    /// Counts each refusal.
    public func admissionRefusal(declaredSize: Int?) -> SMTPReply? {
        let t = now()
        let (reply, change) = state.withLock { s -> (SMTPReply?, Change?) in
            sample(&s, at: t)
            guard let free = s.free else { return (nil, nil) }
            let pause = Self.pause(s, at: t)
            let change = Self.note(&s, pause)
            if pause != nil {
                s.refusals[.freeSpace, default: 0] += 1
                return (SMTPReply(452, .init(4, 3, 1), "Insufficient system storage, try again later"), change)
            }
            if let size = declaredSize, Int64(size) > free - Self.threshold(s, at: t).bytes {
                s.refusals[.size, default: 0] += 1
                return (
                    SMTPReply(
                        452, .init(4, 3, 1),
                        "Insufficient system storage for a message of \(size) octets, try again later"), change
                )
            }
            return (nil, change)
        }
        if let change { change.observer(change.paused, change.reason) }
        return reply
    }

    /// Records a write that failed (`operation`: `commit`, `spool`, `delivery record`, ...) and
    /// returns its kind, nil when the error is no storage fault. An I/O error while the filesystem
    /// is below the reserve counts as `full`: SQLite reports some out-of-space writes (a sync, the
    /// shared-memory file) as `SQLITE_IOERR`.
    @discardableResult
    public func recordFault(_ error: any Error, during operation: String) -> StorageFault? {
        guard var kind = StorageFault(error) else { return nil }
        let t = now()
        let time = wallClock()
        let (recorded, change) = state.withLock { s -> (StorageFault, Change?) in
            sample(&s, at: t, force: true)
            if kind == .ioError, let free = s.free, free < max(s.minimumFree, Self.faultMargin) { kind = .full }
            s.faults[kind, default: 0] += 1
            let detail = String(describing: error).prefix(300)
            s.fault = Fault(
                kind: kind, operation: operation, detail: String(detail), at: t, time: time, freeAtFault: s.free)
            return (kind, Self.note(&s, Self.pause(s, at: t)))
        }
        if let change { change.observer(change.paused, change.reason) }
        return recorded
    }

    /// The reply for a message whose spool or queue write failed, nil when the error is no storage
    /// fault; counts the refusal. The fault itself was recorded where the write failed.
    public func refusal(for error: any Error) -> SMTPReply? {
        guard let fault = StorageFault(error) else { return nil }
        let t = now()
        return state.withLock { s -> SMTPReply in
            s.refusals[.write, default: 0] += 1
            // The writer may have seen SQLITE_IOERR on a full disk: answer as it was recorded.
            if fault == .ioError, let f = s.fault, f.kind == .full, t - f.at < 1 { return StorageFault.full.reply }
            return fault.reply
        }
    }

    /// What the admin API and `/metrics` show; reads the free space now.
    public func status() -> StorageStatus {
        let t = now()
        let (status, change) = state.withLock { s -> (StorageStatus, Change?) in
            sample(&s, at: t, force: true)
            let pause = Self.pause(s, at: t)
            let status = StorageStatus(
                path: path, freeBytes: s.free, totalBytes: s.total, minimumFreeBytes: s.minimumFree,
                acceptancePaused: pause != nil, reason: pause?.reason,
                refusals: Dictionary(
                    uniqueKeysWithValues: RefusalReason.allCases.map { ($0.rawValue, s.refusals[$0] ?? 0) }),
                faults: Dictionary(
                    uniqueKeysWithValues: StorageFault.allCases.map { ($0.rawValue, s.faults[$0] ?? 0) }),
                lastFault: s.fault.map {
                    StorageStatus.Fault(
                        kind: $0.kind.rawValue, operation: $0.operation, detail: $0.detail, time: $0.time)
                })
            return (status, Self.note(&s, pause))
        }
        if let change { change.observer(change.paused, change.reason) }
        return status
    }
}

/// The storage state as the admin overview (`GET /api/v1/overview`, `storage`) and `/metrics` report it.
public struct StorageStatus: Sendable, Codable, Equatable {
    public struct Fault: Sendable, Codable, Equatable {
        /// `full`, `io_error` or `busy` (`StorageFault`).
        public var kind: String
        /// The write that failed: `commit`, `spool`, `delivery record`, `mailbox`.
        public var operation: String
        public var detail: String
        public var time: Date
    }

    /// The data directory watched.
    public var path: String
    /// Bytes available on its filesystem (nil when `statvfs` failed).
    public var freeBytes: Int64?
    public var totalBytes: Int64?
    /// The reserve (`limits.queue_min_free`).
    public var minimumFreeBytes: Int64
    /// New messages are refused with `452 4.3.1` at `MAIL` now.
    public var acceptancePaused: Bool
    /// Why, in words, when paused.
    public var reason: String?
    /// Messages refused since start, by reason (`free_space`, `size`, `write`).
    public var refusals: [String: Int]
    /// Failed writes since start, by kind (`full`, `io_error`, `busy`).
    public var faults: [String: Int]
    /// The most recent failed write.
    public var lastFault: Fault?
}

/// Byte counts in words for logs and status reasons ("3.2 MB").
enum ByteText {
    static func format(_ n: Int64) -> String {
        let units = ["bytes", "KB", "MB", "GB", "TB"]
        var value = Double(n)
        var unit = 0
        while abs(value) >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) bytes" : String(format: "%.1f", value) + " " + units[unit]
    }
}
