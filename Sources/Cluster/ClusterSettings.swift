import Foundation

/// The `cluster` section: where the shared PostgreSQL is, this node's name, and how often nodes
/// say they are alive.
public struct ClusterSettings: Sendable, Equatable {
    public var database: PostgresAddress
    /// Unique in the cluster; two nodes with one name would count as one.
    public var node: String
    /// How often this node writes its heartbeat and reads the others'.
    public var heartbeat: TimeInterval
    /// A node whose last heartbeat is older than this (on the database's clock) is gone: its part
    /// of every forest goes to the others.
    public var nodeTimeout: TimeInterval

    public static let defaultHeartbeat: TimeInterval = 1
    public static let defaultNodeTimeout: TimeInterval = 5

    public init(
        database: PostgresAddress, node: String, heartbeat: TimeInterval = defaultHeartbeat,
        nodeTimeout: TimeInterval = defaultNodeTimeout
    ) {
        self.database = database
        self.node = node
        self.heartbeat = heartbeat
        self.nodeTimeout = nodeTimeout
    }
}

/// A PostgreSQL server and database, from a libpq-style URL:
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require][&host=/socket/dir]`.
///
/// TLS: `sslmode=require` verifies nothing but encrypts (as libpq's `require`); `disable` is the
/// default for loopback hosts and UNIX sockets, `require` for any other host.
public struct PostgresAddress: Sendable, Equatable, CustomStringConvertible {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)
    }

    public var endpoint: Endpoint
    public var user: String
    public var password: String?
    public var database: String
    public var tls: Bool

    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    public init(url text: String) throws(Invalid) {
        guard let c = URLComponents(string: text), ["postgres", "postgresql"].contains(c.scheme ?? "") else {
            throw Invalid(description: "is not a postgres:// URL")
        }
        guard let user = c.user, !user.isEmpty else {
            throw Invalid(description: "names no user (postgres://USER@HOST/DB)")
        }
        let database = String(c.path.drop { $0 == "/" })
        guard !database.isEmpty else { throw Invalid(description: "names no database (postgres://USER@HOST/DB)") }
        let port = c.port ?? 5432
        guard (1...65535).contains(port) else { throw Invalid(description: "has a port out of range") }
        var mode: String?
        var socketDirectory: String?
        for item in c.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let v = item.value, ["disable", "require"].contains(v) else {
                    throw Invalid(description: "sslmode must be disable or require")
                }
                mode = v
            case "host":
                guard let v = item.value, v.hasPrefix("/") else {
                    throw Invalid(description: "host= must be a socket directory (an absolute path)")
                }
                socketDirectory = v
            default:
                throw Invalid(description: "has an unknown parameter \(item.name) (known: sslmode, host)")
            }
        }
        if let dir = socketDirectory {
            endpoint = .unixSocket(path: "\(dir)/.s.PGSQL.\(port)")
        } else {
            // URLComponents keeps an IPv6 literal's brackets.
            guard let bracketed = c.host, !bracketed.isEmpty else { throw Invalid(description: "names no host") }
            let host = bracketed.hasPrefix("[") ? String(bracketed.dropFirst().dropLast()) : bracketed
            endpoint = .tcp(host: host, port: port)
        }
        self.user = user
        self.password = c.password
        self.database = database
        switch (mode, endpoint) {
        case ("require", _): tls = true
        case ("disable", _): tls = false
        case (_, .unixSocket): tls = false
        case (_, .tcp(let host, _)): tls = !["127.0.0.1", "::1", "localhost"].contains(host)
        }
    }

    /// The address without the password, for logs and `mailflow cluster status`.
    public var description: String {
        let place: String
        switch endpoint {
        case .tcp(let host, let port): place = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unixSocket(let path): place = path
        }
        return "postgres://\(user)\(password == nil ? "" : ":***")@\(place)/\(database)\(tls ? " (TLS)" : "")"
    }
}

/// `storage: {postgres: ...}`: the queue (envelopes, bodies, recipients, trace) lives in a
/// PostgreSQL database that several nodes share, instead of this node's SQLite file
/// (docs/cluster.md, "Shared queue").
public struct SharedQueueSettings: Sendable, Equatable {
    public var database: PostgresAddress
    /// This node's name as a lease owner (the `cluster` section's `node` when there is one).
    public var node: String
    /// How long a claimed message stays this node's without a renewal; renewed every third of it
    /// while the delivery runs. A node that dies loses its leases to the others after this.
    public var lease: TimeInterval
    /// The longest any one database call may take; past it the call fails (acceptance answers
    /// `451 4.3.0`) and its connection is closed.
    public var timeout: TimeInterval
    /// Connections this node opens to the queue database: one for acceptance (group commit), one
    /// for claims and renewals, the rest for recording delivery attempts.
    public var pool: Int

    public static let defaultLease: TimeInterval = 30
    public static let defaultTimeout: TimeInterval = 5
    public static let defaultPool = 4

    public init(
        database: PostgresAddress, node: String, lease: TimeInterval = defaultLease,
        timeout: TimeInterval = defaultTimeout, pool: Int = defaultPool
    ) {
        self.database = database
        self.node = node
        self.lease = lease
        self.timeout = timeout
        self.pool = pool
    }
}
