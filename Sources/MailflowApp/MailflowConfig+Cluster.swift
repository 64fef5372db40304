import Cluster
import Foundation

extension MailflowConfig {
    /// `cluster`: several nodes share every resource forest's limits through a PostgreSQL database
    /// (docs/cluster.md). Absent: this node has the whole of every forest.
    mutating func decodeCluster(_ cluster: ConfigReader) throws {
        try cluster.only(["postgres", "node", "heartbeat", "node_timeout"])
        guard let url = try cluster.string("postgres") else {
            throw cluster.error("postgres", "is required (postgres://USER@HOST:PORT/DATABASE)")
        }
        let database: PostgresAddress
        do {
            database = try PostgresAddress(url: url)
        } catch {
            throw cluster.error("postgres", "\(error.description)")
        }
        var settings = ClusterSettings(database: database, node: Self.defaultNodeName)
        if let n = try cluster.string("node") {
            guard !n.isEmpty, n.utf8.count <= 100, n.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:".contains($0) })
            else { throw cluster.error("node", "must be 1 to 100 letters, digits, '-', '_', '.' or ':'") }
            settings.node = n
        }
        if let h = try cluster.duration("heartbeat") {
            guard (1...60).contains(h) else { throw cluster.error("heartbeat", "must be between 1s and 1m") }
            settings.heartbeat = h
        }
        if let t = try cluster.duration("node_timeout") {
            guard t <= 600 else { throw cluster.error("node_timeout", "must be at most 10m") }
            settings.nodeTimeout = t
        }
        guard settings.nodeTimeout >= 2 * settings.heartbeat else {
            throw cluster.error(
                "node_timeout", "must be at least twice the heartbeat (\(Int(settings.heartbeat * 1000))ms)")
        }
        self.cluster = settings
    }

    /// The machine's host name: unique per machine, which is where nodes usually differ.
    static var defaultNodeName: String {
        let h = ProcessInfo.processInfo.hostName
        return h.isEmpty ? "mailflow" : h
    }
}
