import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// One node as the shared database last heard from it.
public struct ClusterNodeStatus: Sendable, Equatable, Codable {
    public var name: String
    /// The node's SMTP listening address(es), for the operator.
    public var address: String
    public var startedAt: Date
    /// Seconds since its last heartbeat, on the database's clock (so nodes' clocks need not agree).
    public var heartbeatAge: Double
    /// Heard from within the node timeout: it counts in the split of the forests.
    public var alive: Bool
    /// Sessions it holds in each forest, as of its last heartbeat.
    public var sessions: [String: Int]
    /// Sessions it may hold in each forest (`ForestClaim`), as of its last heartbeat.
    public var claims: [String: Int]
    /// Leases it holds now in the shared queue (`SharedQueue.leasesHeld`); nil when the cluster
    /// keeps no shared queue (or it was not read).
    public var leases: Int?

    public init(
        name: String, address: String, startedAt: Date, heartbeatAge: Double, alive: Bool, sessions: [String: Int],
        claims: [String: Int] = [:], leases: Int? = nil
    ) {
        self.name = name
        self.address = address
        self.startedAt = startedAt
        self.heartbeatAge = heartbeatAge
        self.alive = alive
        self.sessions = sessions
        self.claims = claims
        self.leases = leases
    }
}

/// The cluster's membership table in PostgreSQL (`mailflow_node`): one row per node, its heartbeat
/// time written with the database's `now()`, and the sessions it holds per forest. Every call is one
/// round trip on a connection the caller owns (`connect`), bounded by `timeout`.
public struct ClusterDirectory: Sendable {
    public let database: PostgresAddress
    public let nodeTimeout: TimeInterval
    /// The longest any one call may take (connecting included); a database that stops answering
    /// costs at most this much per heartbeat.
    public let timeout: TimeAmount
    let logger: Logger

    public init(database: PostgresAddress, nodeTimeout: TimeInterval, timeout: TimeAmount, logger: Logger) {
        self.database = database
        self.nodeTimeout = nodeTimeout
        self.timeout = timeout
        self.logger = logger
    }

    public func connect(on group: any EventLoopGroup) async throws -> PostgresConnection {
        let tls: PostgresConnection.Configuration.TLS
        if database.tls {
            var c = TLSConfiguration.makeClientConfiguration()
            c.certificateVerification = .none
            tls = .require(try NIOSSLContext(configuration: c))
        } else {
            tls = .disable
        }
        var config: PostgresConnection.Configuration
        switch database.endpoint {
        case .tcp(let host, let port):
            config = .init(
                host: host, port: port, username: database.user, password: database.password,
                database: database.database, tls: tls)
        case .unixSocket(let path):
            config = .init(
                unixSocketPath: path, username: database.user, password: database.password,
                database: database.database)
        }
        config.options.connectTimeout = timeout
        return try await PostgresConnection.connect(
            on: group.any(), configuration: config, id: 1, logger: logger)
    }

    /// Creates the table if it is missing. Nodes starting together serialise on an advisory lock
    /// (a concurrent `CREATE TABLE IF NOT EXISTS` can otherwise fail on the type's unique index).
    public func migrate(_ c: PostgresConnection) async throws {
        try await bounded(c) { c, logger in
            try await PostgresCall.exec(c, "BEGIN", logger: logger)
            do {
                try await PostgresCall.exec(c, "SELECT pg_advisory_xact_lock(7264100)", logger: logger)
                try await PostgresCall.exec(
                    c,
                    """
                    CREATE TABLE IF NOT EXISTS mailflow_node (
                      name text PRIMARY KEY,
                      address text NOT NULL,
                      started_at timestamptz NOT NULL,
                      heartbeat_at timestamptz NOT NULL,
                      sessions jsonb NOT NULL DEFAULT '{}',
                      claims jsonb NOT NULL DEFAULT '{}'
                    )
                    """, logger: logger)
                // A table from before claims (a node of an older build created it).
                try await PostgresCall.exec(
                    c, "ALTER TABLE mailflow_node ADD COLUMN IF NOT EXISTS claims jsonb NOT NULL DEFAULT '{}'",
                    logger: logger)
                try await PostgresCall.exec(c, "COMMIT", logger: logger)
            } catch {
                try? await PostgresCall.exec(c, "ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// Writes this node's heartbeat and sessions, reads every node, and stores the claims `claim`
    /// makes from what it read, in one transaction under an advisory lock: nodes claim one at a
    /// time, each against the others' standing claims (`ForestClaim`). Returns the nodes as read,
    /// this one with its new claims.
    public func heartbeat(
        _ c: PostgresConnection, node: String, address: String, startedAt: Date, sessions: [String: Int],
        claim: @escaping @Sendable ([ClusterNodeStatus]) -> [String: Int]
    ) async throws -> [ClusterNodeStatus] {
        let json = String(decoding: try JSONEncoder().encode(sessions), as: UTF8.self)
        let started = startedAt.timeIntervalSince1970
        return try await bounded(c) { c, logger in
            try await PostgresCall.exec(c, "BEGIN", logger: logger)
            do {
                // Not 7264100 (the schema's) nor the shared queue's 7264101.
                try await PostgresCall.exec(c, "SELECT pg_advisory_xact_lock(7264102)", logger: logger)
                try await PostgresCall.exec(
                    c,
                    """
                    INSERT INTO mailflow_node (name, address, started_at, heartbeat_at, sessions)
                    VALUES (\(node), \(address), to_timestamp(\(started)), now(), \(json)::jsonb)
                    ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, started_at = EXCLUDED.started_at,
                      heartbeat_at = now(), sessions = EXCLUDED.sessions
                    """, logger: logger)
                var nodes = try await readNodes(c, logger: logger)
                let claims = claim(nodes)
                let claimsJSON = String(decoding: try JSONEncoder().encode(claims), as: UTF8.self)
                try await PostgresCall.exec(
                    c, "UPDATE mailflow_node SET claims = \(claimsJSON)::jsonb WHERE name = \(node)", logger: logger)
                try await PostgresCall.exec(c, "COMMIT", logger: logger)
                if let i = nodes.firstIndex(where: { $0.name == node }) { nodes[i].claims = claims }
                return nodes
            } catch {
                try? await PostgresCall.exec(c, "ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// Every node the table knows, alive or not, by name.
    public func nodes(_ c: PostgresConnection) async throws -> [ClusterNodeStatus] {
        try await bounded(c) { c, logger in try await readNodes(c, logger: logger) }
    }

    /// Every node, read once on a connection of its own (`mailflow cluster status`).
    public func readOnce() async throws -> [ClusterNodeStatus] {
        let c = try await connect(on: MultiThreadedEventLoopGroup.singleton)
        do {
            let nodes = try await self.nodes(c)
            try? await c.close()
            return nodes
        } catch {
            try? await c.close()
            throw error
        }
    }

    /// Removes this node (a clean stop): the others take its part at their next heartbeat instead
    /// of after the node timeout.
    public func leave(_ c: PostgresConnection, node: String) async throws {
        try await bounded(c) { c, logger in
            try await PostgresCall.exec(c, "DELETE FROM mailflow_node WHERE name = \(node)", logger: logger)
        }
    }

    func readNodes(_ c: PostgresConnection, logger: Logger) async throws -> [ClusterNodeStatus] {
        let rows = try await c.query(
            """
            SELECT name, address, extract(epoch FROM started_at)::float8,
                   extract(epoch FROM (now() - heartbeat_at))::float8, sessions::text, claims::text
            FROM mailflow_node ORDER BY name
            """, logger: logger)
        var out: [ClusterNodeStatus] = []
        for try await (name, address, started, age, sessions, claims) in rows.decode(
            (String, String, Double, Double, String, String).self)
        {
            let counts = (try? JSONDecoder().decode([String: Int].self, from: Data(sessions.utf8))) ?? [:]
            let claimed = (try? JSONDecoder().decode([String: Int].self, from: Data(claims.utf8))) ?? [:]
            out.append(
                ClusterNodeStatus(
                    name: name, address: address, startedAt: Date(timeIntervalSince1970: started), heartbeatAge: age,
                    alive: age < nodeTimeout, sessions: counts, claims: claimed))
        }
        return out
    }

    /// Runs `body`, or throws `ClusterTimeout` after `timeout` (`PostgresCall.bounded`).
    func bounded<T: Sendable>(
        _ c: PostgresConnection, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws -> T {
        try await PostgresCall.bounded(c, timeout: timeout, logger: logger, body)
    }
}
