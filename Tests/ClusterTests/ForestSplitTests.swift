import Ingress
import Testing

@testable import Cluster

struct ForestSplitTests {
    static func forest(_ name: String, _ connections: Int, rate: Int = 0) -> ResourceForest {
        ResourceForest(name: name, region: "r", tenants: [], maxConnections: connections, maxMessagesPerMinute: rate)
    }

    /// The parts of every node add up to the forest's limits, whatever the number of nodes.
    @Test(arguments: [
        (10, 0, 1), (10, 0, 3), (10, 600, 3), (2, 5, 3), (1, 1, 4), (500, 0, 7), (0, 0, 2),
    ])
    func partsAddUpToTheLimit(connections: Int, rate: Int, nodes: Int) {
        let names = (0..<nodes).map { "node-\($0)" }
        let f = Self.forest("NAMPR01", connections, rate: rate)
        let parts = names.map { ForestSplit.shares([f], nodes: names, me: $0)["NAMPR01"]! }
        #expect(parts.map(\.connections).reduce(0, +) == connections)
        #expect(parts.allSatisfy { $0.nodes == nodes })
        #expect(parts.map(\.connections).max()! - parts.map(\.connections).min()! <= 1, "even to one session")
        if rate > 0 {
            #expect(parts.compactMap(\.messagesPerMinute).reduce(0, +) == rate)
        } else {
            #expect(parts.allSatisfy { $0.messagesPerMinute == nil }, "no rate limit stays no rate limit")
        }
    }

    /// Every node computes the same split: the order of the list it read does not matter, and a node
    /// not yet in the list counts itself.
    @Test func everyNodeComputesTheSameSplit() {
        let f = [Self.forest("A", 10), Self.forest("B", 7)]
        let one = ForestSplit.shares(f, nodes: ["b", "a", "c"], me: "c")
        let other = ForestSplit.shares(f, nodes: ["c", "b", "a"], me: "c")
        #expect(one == other)
        #expect(ForestSplit.shares(f, nodes: ["a", "b"], me: "c") == one)
        #expect(ForestSplit.shares(f, nodes: [], me: "c")["A"]?.connections == 10, "alone: the whole forest")
    }

    /// The remainders of many small forests do not all land on one node.
    @Test func remaindersAreSpreadOverTheNodes() {
        let forests = (0..<30).map { Self.forest("F\($0)", 1) }
        let nodes = ["a", "b", "c"]
        let holders = nodes.map { n in
            ForestSplit.shares(forests, nodes: nodes, me: n).values.filter { $0.connections == 1 }.count
        }
        #expect(holders.reduce(0, +) == 30)
        #expect(holders.allSatisfy { $0 >= 5 }, "\(holders)")
    }

    /// A node that dies: the two left share the forest between them.
    @Test func aGoneNodesPartGoesToTheOthers() {
        let f = [Self.forest("NAMPR01", 10)]
        let three = ["a", "b", "c"].map {
            ForestSplit.shares(f, nodes: ["a", "b", "c"], me: $0)["NAMPR01"]!.connections
        }
        let two = ["a", "b"].map { ForestSplit.shares(f, nodes: ["a", "b"], me: $0)["NAMPR01"]!.connections }
        #expect(three.sorted() == [3, 3, 4])
        #expect(two == [5, 5])
    }
}

struct PostgresAddressTests {
    @Test(arguments: [
        ("postgres://mailflow@127.0.0.1:5433/mail", "postgres://mailflow@127.0.0.1:5433/mail"),
        ("postgresql://u:secret@db.example.net/mail", "postgres://u:***@db.example.net:5432/mail (TLS)"),
        ("postgres://u@db.example.net/mail?sslmode=disable", "postgres://u@db.example.net:5432/mail"),
        ("postgres://u@127.0.0.1/mail?sslmode=require", "postgres://u@127.0.0.1:5432/mail (TLS)"),
        ("postgres://u@x/mail?host=/run/postgresql", "postgres://u@/run/postgresql/.s.PGSQL.5432/mail"),
        ("postgres://u@[::1]:6000/mail", "postgres://u@[::1]:6000/mail"),
    ])
    func goodURLsAreReadAndShownWithoutTheirPassword(url: String, shown: String) throws {
        #expect(try PostgresAddress(url: url).description == shown)
    }

    @Test(arguments: [
        ("mysql://u@h/db", "is not a postgres:// URL"),
        ("postgres://h/db", "names no user (postgres://USER@HOST/DB)"),
        ("postgres://u@h", "names no database (postgres://USER@HOST/DB)"),
        ("postgres://u@h/db?sslmode=verify-full", "sslmode must be disable or require"),
        ("postgres://u@h/db?host=relative", "host= must be a socket directory (an absolute path)"),
        ("postgres://u@h/db?application_name=x", "has an unknown parameter application_name (known: sslmode, host)"),
    ])
    func badURLsSayWhatIsWrong(url: String, message: String) {
        #expect(throws: PostgresAddress.Invalid(description: message)) { try PostgresAddress(url: url) }
    }
}
