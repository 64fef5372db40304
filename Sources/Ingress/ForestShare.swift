/// This node's part of a resource forest's limits when several nodes share them (`cluster`): the
/// forest's `max_connections` and message rate are for the whole cluster, and each live node admits
/// up to its part (its claim on the sessions, its even split of the rate), so the parts add up to at
/// most the forest's limit. Set by the cluster membership (`ClusterMember`) at each heartbeat;
/// without a cluster a node has the whole forest.
public struct ForestShare: Sendable, Equatable, Codable {
    /// Sessions this node may hold in the forest (its claim).
    public var connections: Int
    /// Messages a minute this node may take into the forest; nil when the forest has no rate limit.
    /// 0 refuses every message (the forest's rate is smaller than the number of nodes).
    public var messagesPerMinute: Int?
    /// Live nodes the forest's limits are split over, this one included.
    public var nodes: Int

    public init(connections: Int, messagesPerMinute: Int?, nodes: Int) {
        self.connections = connections
        self.messagesPerMinute = messagesPerMinute
        self.nodes = nodes
    }
}
