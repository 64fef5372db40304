import MailQueue

/// Where a session hands a complete message to be made durable: the queue's `GroupCommitter` in
/// the server, a scripted one in handler tests. `completion` runs on any thread, once, after the
/// message and its trace event are on disk (nil) or could not be stored (the error); no `250` is
/// sent before it says so.
public protocol MessageCommitter: Sendable {
    func commit(_ message: NewMessage, completion: @escaping @Sendable (Error?) -> Void)
}

extension GroupCommitter: MessageCommitter {}
