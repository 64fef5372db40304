import Foundation
import Ingress
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// This node's membership in a cluster: every `heartbeat` it writes its heartbeat and the sessions
/// it holds per forest to the shared database, reads the other nodes, claims its sessions of every
/// forest against their claims (`ForestClaim`) and gives admission control the claim, with an even
/// split of each forest's message rate (`ForestSplit`).
///
/// When the database cannot be reached the node keeps its last claim (mail keeps flowing) and says
/// so in the log; the others count it out after the node timeout, so until it is back the forest's
/// sessions can exceed its limit by this node's claim (docs/cluster.md). A clean stop removes the
/// node's row, so the others can claim its sessions at their next heartbeat.
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
    /// has its claim before it takes sessions.
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
                let forests = forests()
                let me = settings.node
                let admission = self.admission
                let before = admission.forestShares
                let nodes: [ClusterNodeStatus]
                do {
                    nodes = try await directory.heartbeat(
                        c, node: me, address: address.withLock { $0 }, startedAt: startedAt,
                        sessions: admission.forestSessions,
                        claim: { nodes in Self.claim(forests, me: me, nodes: nodes, admission: admission) })
                } catch {
                    // Not committed: the others still count the claims from before.
                    admission.setForestShares(before)
                    throw error
                }
                let now = nodes.filter(\.alive).map(\.name)
                let claims = nodes.first { $0.name == me }?.claims ?? [:]
                let shares = ForestClaim.shares(forests, me: me, claims: claims, nodes: nodes)
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
                        "cluster database unreachable; this node keeps its last claim on each forest: \(error)",
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

    /// This node's new claims, made inside the heartbeat's transaction (the others wait on its
    /// lock). A smaller claim takes effect here, before it is committed, and sessions admitted
    /// since the heartbeat began keep their place (the claim is raised to them; they fitted the old
    /// claim, which the others' claims left room for), so this node never holds more than the claim
    /// the others see. A larger claim takes effect once committed.
    static func claim(
        _ forests: [ResourceForest], me: String, nodes: [ClusterNodeStatus], admission: AdmissionControl
    ) -> [String: Int] {
        var claims = ForestClaim.claims(forests, me: me, mine: admission.forestSessions, nodes: nodes)
        var interim = admission.forestShares
        for (name, claim) in claims {
            if let old = interim[name] {
                interim[name]?.connections = min(old.connections, claim)
            } else if let f = forests.first(where: { $0.name == name }) {
                interim[name] = ForestShare(connections: min(f.maxConnections, claim), messagesPerMinute: nil, nodes: 1)
            }
        }
        admission.setForestShares(interim)
        for (name, held) in admission.forestSessions where held > claims[name] ?? Int.max {
            claims[name] = held
        }
        return claims
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
