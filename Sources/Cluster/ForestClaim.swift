import Ingress

/// How many sessions of one resource forest a node claims at its heartbeat: the sessions it holds
/// plus a share of what nobody uses (by use, at least one), never more than the others leave
/// unclaimed.
///
/// Claims are made one node at a time (the heartbeat's transaction holds an advisory lock), each
/// against the others' standing claims, so the claims of the live nodes never add up to more than
/// the forest's limit; a node admits sessions up to its claim without asking anyone. Capacity
/// follows demand: a busy node keeps what it uses and an idle one gives back what it does not,
/// within a heartbeat or two (docs/cluster.md).
///
/// ```swift
/// // 9: its 8, and of the 2 free all the other node has not claimed
/// ForestClaim.claim(limit: 10, mine: 8, others: [.init(sessions: 0, claim: 1)])
/// ```
public enum ForestClaim {
    public struct Other: Sendable, Equatable {
        public var sessions: Int
        public var claim: Int

        public init(sessions: Int, claim: Int) {
            self.sessions = sessions
            self.claim = claim
        }
    }

    /// `mine`: the sessions this node holds now; `others`: each other live node's sessions and
    /// claim as of its last heartbeat.
    public static func claim(limit: Int, mine: Int, others: [Other]) -> Int {
        let unclaimed = limit - others.reduce(0) { $0 + $1.claim }
        let free = limit - mine - others.reduce(0) { $0 + $1.sessions }
        // The free sessions are shared by use (each node's sessions plus one, so an idle node keeps
        // room for a new session at once): a busy node grows into what idle ones do not use.
        let weight = mine + 1
        let weights = others.reduce(weight) { $0 + $1.sessions + 1 }
        let growth = free > 0 ? max(1, (free * weight + weights - 1) / weights) : 0
        return max(0, min(unclaimed, mine + growth))
    }
}

extension ForestClaim {
    /// This node's claim on each forest's sessions, against the other live nodes in `nodes` (this
    /// node's own row, if there, is left out: `mine` is its sessions now).
    public static func claims(
        _ forests: [ResourceForest], me: String, mine: [String: Int], nodes: [ClusterNodeStatus]
    ) -> [String: Int] {
        let others = nodes.filter { $0.alive && $0.name != me }
        var out: [String: Int] = [:]
        for f in forests {
            out[f.name] = claim(
                limit: f.maxConnections, mine: mine[f.name] ?? 0,
                others: others.map { Other(sessions: $0.sessions[f.name] ?? 0, claim: $0.claims[f.name] ?? 0) })
        }
        return out
    }

    /// What admission control gets: sessions up to the claim, the message rate split evenly
    /// (`ForestSplit`) over the live nodes.
    public static func shares(
        _ forests: [ResourceForest], me: String, claims: [String: Int], nodes: [ClusterNodeStatus]
    ) -> [String: ForestShare] {
        let alive = nodes.filter(\.alive).map(\.name)
        var out = ForestSplit.shares(forests, nodes: alive, me: me)
        for (name, claim) in claims { out[name]?.connections = claim }
        return out
    }
}
