import Foundation
import MailQueue

/// Mailbox deliveries deferred because the mailbox filesystem was full are retried as soon as space
/// comes back, not at their next retry (which the schedule may put minutes away): while such a
/// deferral stands, each pass of the loop, at least every `mailboxSpacePoll`, reads the free space
/// of the mailbox root, and once it has grown by `StorageGuard.faultMargin` over what it was at the
/// fault, every pending local delivery is made due now (one `UPDATE`) and the loop takes them.
extension DeliveryScheduler {
    /// How often free space is read while mailbox deliveries wait for it.
    static let mailboxSpacePoll: Duration = .seconds(2)

    /// A mailbox write failed for lack of space: remember how much was free, to see it come back.
    func noteMailboxFull() {
        let free = mailboxFreeSpace(maildir.root)?.free ?? 0
        state.withLock { s in s.mailboxFullAt = min(s.mailboxFullAt ?? free, free) }
    }

    /// If a full mailbox filesystem has room again, makes the waiting local deliveries due at `now`.
    func retryMailboxDeliveriesIfSpaceIsBack(now t: Date) async {
        guard let atFault = state.withLock({ $0.mailboxFullAt }),
            let free = mailboxFreeSpace(maildir.root)?.free, free >= atFault + StorageGuard.faultMargin
        else { return }
        state.withLock { $0.mailboxFullAt = nil }
        let store = self.store
        do {
            let moved = try await planningPool.runIfActive { try store.retryLocalDeliveries(now: t) }
            logger.notice(
                "mailbox space is back (\(free) bytes free): \(moved) deferred mailbox deliveries are retried now")
        } catch {
            logger.error("delivery scheduler: could not retry mailbox deliveries after space came back: \(error)")
        }
    }
}
