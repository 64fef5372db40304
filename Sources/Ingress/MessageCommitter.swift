import MailQueue
import SMTPCore

/// Where a session hands a complete message to be made durable: the queue's `GroupCommitter` in
/// the server, a scripted one in handler tests. `completion` runs on any thread, once, after the
/// message and its trace event are on disk (nil) or could not be stored (the error); no `250` is
/// sent before it says so.
///
/// It also says whether the queue has room for a new message at all (`storageRefusal`, asked at
/// `MAIL`) and which transient reply a failed write gets (`storageReply`): `452 4.3.1` for a full
/// disk, `451 4.3.0` for an I/O error or a locked database (`StorageFault`).
public protocol MessageCommitter: Sendable {
    func commit(_ message: NewMessage, completion: @escaping @Sendable (Error?) -> Void)

    /// The refusal of a new message at `MAIL` (`452 4.3.1`: free space below the reserve, or a
    /// declared `SIZE=` that does not fit), nil when it may start. Called on an event loop: must
    /// not block.
    func storageRefusal(declaredSize: Int?) -> SMTPReply?

    /// The reply for a message whose body or queue write failed with `error`, nil when the error
    /// is no storage fault (the session's generic `451 4.3.0`).
    func storageReply(for error: any Error) -> SMTPReply?
}

extension MessageCommitter {
    public func storageRefusal(declaredSize: Int?) -> SMTPReply? { nil }

    public func storageReply(for error: any Error) -> SMTPReply? { StorageFault(error)?.reply }
}

extension GroupCommitter: MessageCommitter {
    public func storageRefusal(declaredSize: Int?) -> SMTPReply? {
        storage.admissionRefusal(declaredSize: declaredSize)
    }

    public func storageReply(for error: any Error) -> SMTPReply? {
        // Queue writes recorded their fault where they failed; a spool write is recorded here.
        if error is FileSync.Failure { storage.recordFault(error, during: "spool") }
        if let e = error as? any QueueWriteError { return e.reply }
        return storage.refusal(for: error)
    }
}
