import Foundation
import Ingress
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// This node's membership in a cluster: every `heartbeat` it writes its heartbeat and the sessions
/// it holds per forest to the shared database, reads the other nodes, and gives admission control
/// its part of every forest's limits (`ForestSplit`) among the nodes alive at that moment.
///
/// When the database cannot be reached the node keeps its last part (mail keeps flowing) and says
/// so in the log; the others count it out after the node timeout, so until it is back the forest's
/// sessions can exceed its limit by this node's part (docs/cluster.md). A clean stop removes the
/// node's row, so the others take its part at their next heartbeat.
public final class ClusterMember: Sendable {
    /// What the last heartbeat saw, for logs and tests.
    public struct Snapshot: Sendable, Equatable {
        public var nodes: [ClusterNodeStatus] = []
        public var shares: [String: ForestShare] = [:]
        public var lastError: String?
        public var heartbeats = 0
    }

    let settings: ClusterSettings
    let address: Mutex<String>
    let directory: ClusterDirectory
    let forests: @Sendable () -> [ResourceForest]
    let admission: AdmissionControl
    let group: any EventLoopGroup
    let logger: Logger
    let startedAt = Date()
    let state = Mutex(Snapshot())
    let stopping = Mutex(false)
    let task = Mutex<Task<Void, Never>?>(nil)

    public init(
        settings: ClusterSettings, address: String, forests: @escaping @Sendable () -> [ResourceForest],
        admission: AdmissionControl, group: any EventLoopGroup, logger: Logger
    ) {
        self.settings = settings
        self.address = Mutex(address)
        self.forests = forests
        self.admission = admission
        self.group = group
        self.logger = logger
        // A call may take half the node timeout: a heartbeat that waits longer would already be
        // counted out by the others.
        let bound = max(0.2, settings.nodeTimeout / 2)
        self.directory = ClusterDirectory(
            database: settings.database, nodeTimeout: settings.nodeTimeout,
            timeout: .milliseconds(Int64(bound * 1000)), logger: logger)
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// The addresses the node listens on, once bound (the config may say port 0); sent from the
    /// next heartbeat on.
    public func setAddress(_ text: String) { address.withLock { $0 = text } }

    /// Starts the heartbeats; returns after the first one (or its failure), so a node that joins
    /// knows its part before it takes sessions.
    public func start() async {
        await withCheckedContinuation { (first: CheckedContinuation<Void, Never>) in
            let t = Task.detached { [self] in await self.run(afterFirst: { first.resume() }) }
            task.withLock { $0 = t }
        }
    }

    /// Stops the heartbeats and removes this node from the table (best effort, bounded).
    public func stop() async {
        stopping.withLock { $0 = true }
        let t = task.withLock { $0 }
        await t?.value
        let directory = self.directory
        let node = settings.node
        let group = self.group
        await Task.detached {
            guard let c = try? await directory.connect(on: group) else { return }
            try? await directory.leave(c, node: node)
            try? await c.close()
        }.value
    }

    func run(afterFirst: @escaping @Sendable () -> Void) async {
        var afterFirst: (@Sendable () -> Void)? = afterFirst
        var connection: PostgresConnection?
        var failing = false
        var alive: [String] = []
        while !stopping.withLock({ $0 }) {
            do {
                let c: PostgresConnection
                if let open = connection, !open.isClosed {
                    c = open
                } else {
                    c = try await directory.connect(on: group)
                    connection = c
                    try await directory.migrate(c)
                }
                let nodes = try await directory.heartbeat(
                    c, node: settings.node, address: address.withLock { $0 }, startedAt: startedAt,
                    sessions: admission.forestSessions)
                let now = nodes.filter(\.alive).map(\.name)
                let shares = ForestSplit.shares(forests(), nodes: now, me: settings.node)
                admission.setForestShares(shares)
                if failing || now != alive {
                    logger.notice(
                        "cluster: \(Set(now + [settings.node]).count) nodes alive",
                        metadata: ["nodes": "\(Set(now + [settings.node]).sorted().joined(separator: ","))"])
                }
                failing = false
                alive = now
                state.withLock {
                    $0.nodes = nodes
                    $0.shares = shares
                    $0.lastError = nil
                    $0.heartbeats += 1
                }
            } catch {
                if !failing {
                    logger.warning(
                        "cluster database unreachable; this node keeps its last part of each forest: \(error)",
                        metadata: ["database": "\(settings.database)"])
                }
                failing = true
                if let c = connection { try? await c.close() }
                connection = nil
                state.withLock { $0.lastError = "\(error)" }
            }
            afterFirst?()
            afterFirst = nil
            await pause()
        }
        afterFirst?()
        if let c = connection { try? await c.close() }
    }

    /// One heartbeat interval, cut short by `stop()`.
    func pause() async {
        let step = 0.05
        var left = settings.heartbeat
        while left > 0, !stopping.withLock({ $0 }) {
            try? await Task.sleep(for: .milliseconds(Int64(min(step, left) * 1000)))
            left -= step
        }
    }
}
