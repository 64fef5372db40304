import ArgumentParser
import Cluster
import Foundation
import MailflowApp

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Nodes sharing the resource forests' limits through PostgreSQL.",
        subcommands: [Status.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Each node: its heartbeat, whether it counts, the sessions it holds and claims in each forest, its leases.",
            discussion: """
                Reads the cluster's database (`cluster.postgres` in the config). A node counts while its last \
                heartbeat is younger than `cluster.node_timeout`; the nodes that count claim each forest's sessions \
                between them by use, never more than its limit (docs/cluster.md). LEASES: the messages of the shared \
                queue (`storage.postgres`, else the cluster's database if it holds the queue's tables) each node is \
                delivering now; no column when there is no shared queue. With a shared queue, the node running service \
                health for the cluster is named. Exit status 1 when the database cannot be read.
                """)
        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON instead of tables.") var json = false

        func run() async throws {
            let config = try options.load()
            guard let settings = config.cluster else {
                throw FailureMessage(text: "no cluster section in the config: this is a single node")
            }
            let directory = ClusterDirectory(
                database: settings.database, nodeTimeout: settings.nodeTimeout, timeout: .seconds(10),
                logger: .init(label: "mailflow.cluster"))
            var nodes: [ClusterNodeStatus]
            do {
                nodes = try await directory.readOnce()
            } catch {
                throw FailureMessage(text: "cannot read the cluster database \(settings.database): \(error)")
            }
            let leases = await Self.leases(queue: config.sharedQueue?.database ?? settings.database)
            if let leases {
                for i in nodes.indices { nodes[i].leases = leases[nodes[i].name] ?? 0 }
            }
            let healthLeader = await Self.healthLeader(queue: config.sharedQueue?.database)
            // Leases of owners the directory does not list (a node without a `cluster` section).
            let unlisted = (leases ?? [:]).filter { owner, _ in !nodes.contains { $0.name == owner } }
            let alive = nodes.filter(\.alive).map(\.name)
            let forests = config.admissionLimits.forests
            if json {
                struct Out: Encodable {
                    var database: String
                    var nodeTimeout: Double
                    var nodes: [ClusterNodeStatus]
                    var forests: [Forest]
                    /// Leases running now per owner, every owner (nil without a shared queue).
                    var leases: [String: Int]?
                    /// The node running service health for the cluster, and until when its lease runs.
                    var healthLeader: Leader?
                }
                struct Leader: Encodable {
                    var node: String
                    var until: Date
                }
                struct Forest: Encodable {
                    var name: String
                    var maxConnections: Int
                    var sessions: Int
                    /// Each live node's claim: the sessions it may hold.
                    var claims: [String: Int]
                }
                let out = Out(
                    database: settings.database.description, nodeTimeout: settings.nodeTimeout, nodes: nodes,
                    forests: forests.map { f in
                        Forest(
                            name: f.name, maxConnections: f.maxConnections,
                            sessions: nodes.filter(\.alive).reduce(0) { $0 + ($1.sessions[f.name] ?? 0) },
                            claims: Dictionary(
                                uniqueKeysWithValues: nodes.filter(\.alive).map { ($0.name, $0.claims[f.name] ?? 0) }
                            ))
                    }, leases: leases, healthLeader: healthLeader.map { Leader(node: $0.node, until: $0.until) })
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                enc.dateEncodingStrategy = .iso8601
                print(String(decoding: try enc.encode(out), as: UTF8.self))
                return
            }
            print(
                "Database \(settings.database); a node counts for \(String(format: "%g", settings.nodeTimeout)) s "
                    + "after its last heartbeat")
            print("\(alive.count) of \(nodes.count) node(s) counting")
            if let healthLeader {
                print(
                    "Service health run by \(healthLeader.node) (lease until \(isoDate(healthLeader.until)))")
            } else if config.sharedQueue != nil {
                print("Service health run by no node now")
            }
            print("")
            let names = forests.map(\.name)
            printTable(
                ["NODE", "ADDRESS", "HEARTBEAT", "COUNTS"] + names.map { "\($0) SESSIONS/CLAIM" }
                    + (leases == nil ? [] : ["LEASES"]),
                nodes.map { n in
                    [
                        n.name, n.address, String(format: "%.1f s ago", n.heartbeatAge), n.alive ? "yes" : "no (gone)",
                    ]
                        + forests.map { f in
                            "\(n.sessions[f.name] ?? 0)/\(n.alive ? String(n.claims[f.name] ?? 0) : "-")"
                        } + (n.leases.map { [String($0)] } ?? [])
                })
            if !unlisted.isEmpty {
                print(
                    "Leases held by nodes not in the directory: "
                        + unlisted.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            }
            print("")
            printTable(
                ["FOREST", "SESSIONS", "LIMIT"],
                forests.map { f in
                    [
                        f.name, String(nodes.filter(\.alive).reduce(0) { $0 + ($1.sessions[f.name] ?? 0) }),
                        String(f.maxConnections),
                    ]
                })
        }

        /// The node leading service health in the shared queue's database (docs/cluster.md,
        /// "Service health of the cluster"); nil without a shared queue, a leader or the table.
        static func healthLeader(queue database: PostgresAddress?) async -> (node: String, until: Date)? {
            guard let database else { return nil }
            let q = SharedQueue(database: database, timeout: .seconds(10), logger: .init(label: "mailflow.cluster"))
            return try? await q.withConnection { c in try await q.healthLeader(c) }
        }

        /// Leases per node in the shared queue's database, nil when it has no queue tables. A
        /// database that cannot be read costs the column, not the command (the nodes were read).
        static func leases(queue database: PostgresAddress) async -> [String: Int]? {
            let q = SharedQueue(database: database, timeout: .seconds(10), logger: .init(label: "mailflow.cluster"))
            do {
                return try await q.withConnection { c in try await q.leasesHeld(c) }
            } catch {
                FileHandle.standardError.write(Data("mailflow: cannot read leases from \(database): \(error)\n".utf8))
                return nil
            }
        }
    }
}
