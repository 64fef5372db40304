import Cluster
import Foundation

extension MailflowConfig {
    /// `storage`: where the queue lives. Absent, or without `postgres`: this node's SQLite file in
    /// the data directory. `postgres`: a database several nodes share (docs/cluster.md, "Shared
    /// queue"); decoded after `cluster`, whose node name is the lease owner's.
    mutating func decodeStorage(_ storage: ConfigReader) throws {
        try storage.only(["postgres"])
        guard let pg = try storage.mapping("postgres") else { return }
        try pg.only(["url", "lease", "timeout", "pool"])
        guard let url = try pg.string("url") else {
            throw pg.error("url", "is required (postgres://USER@HOST:PORT/DATABASE)")
        }
        let database: PostgresAddress
        do {
            database = try PostgresAddress(url: url)
        } catch {
            throw pg.error("url", "\(error.description)")
        }
        var settings = SharedQueueSettings(database: database, node: cluster?.node ?? Self.defaultNodeName)
        if let l = try pg.duration("lease") {
            guard (3...600).contains(l) else { throw pg.error("lease", "must be between 3s and 10m") }
            settings.lease = l
        }
        if let t = try pg.duration("timeout") {
            guard (0.1...60).contains(t) else { throw pg.error("timeout", "must be between 100ms and 1m") }
            settings.timeout = t
        }
        guard settings.timeout < settings.lease / 3 else {
            throw pg.error("timeout", "must be shorter than a third of the lease (a renewal must finish in time)")
        }
        if let n = try pg.int("pool", in: 3...64) { settings.pool = n }
        sharedQueue = settings
    }
}
