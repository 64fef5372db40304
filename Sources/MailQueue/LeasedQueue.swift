import Foundation
import SMTPCore

/// A queue that several nodes share (cluster mode, `storage.postgres`; the implementation is
/// `SharedQueueNode` in the Cluster module). Delivery work is **claimed** under a lease that the
/// queue renews while the node delivers, and an attempt is recorded only while the lease is still
/// this node's: a node that died, or stalled past its lease, loses the message to the others.
///
/// The delivery scheduler takes its work from here instead of `SQLiteQueueStore`'s due index, and
/// the group committer makes acceptances durable here before the `250`.
///
/// ```swift
/// let work = try await queue.claim(limit: 8)             // leased to this node, bodies inline
/// ... deliver ...
/// switch try await queue.record(attempt) {               // under the lease, or not at all
/// case .recorded: break
/// case .leaseLost: duplicates.increment()                // another node may deliver it again
/// }
/// ```
public protocol LeasedQueue: Sendable {
    /// This node's name, the leases' owner.
    var node: String { get }
    /// Makes a batch of new messages durable (one transaction); the `250` may follow.
    func accept(_ messages: [NewMessage]) async throws
    /// Leases up to `limit` due messages to this node, earliest due first, and renews them until
    /// they are recorded or released.
    func claim(limit: Int) async throws -> [StoredMessage]
    /// Seconds until the next message becomes claimable (due, and its lease free or run out),
    /// measured on the queue's clock; nil when nothing is waiting.
    func secondsUntilNextClaimable() async throws -> TimeInterval?
    /// Records an attempt on a message this node claimed, if the lease is still this node's; frees
    /// the lease either way.
    func record(_ attempt: SQLiteQueueStore.Attempt) async throws -> AttemptRecord
    /// Gives back the lease on a claimed message with no attempt made (a shutdown before it started).
    func release(_ id: String) async
}

/// The answer of recording an attempt in a `LeasedQueue`.
public enum AttemptRecord: Sendable, Equatable {
    /// Written, and the lease freed; `finished` when no recipient is pending any more.
    case recorded(finished: Bool)
    /// This node no longer held the lease: nothing was written. Another node may have delivered the
    /// message as well (a duplicate for the ones this attempt delivered): count it and say so.
    case leaseLost
}

/// An error of a queue store that knows how the SMTP client whose message it could not keep is
/// answered (the shared queue's database away: `451 4.3.0 ... (queue database unavailable)`).
/// The session says it instead of its generic `451 4.3.0`; it is always transient.
public protocol QueueWriteError: Error {
    var reply: SMTPReply { get }
}
