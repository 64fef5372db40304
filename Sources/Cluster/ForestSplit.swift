import Ingress

/// Splits each resource forest's limits evenly over the live nodes of a cluster, so that the parts
/// add up to the forest's limit exactly when every node sees the same members. The message rate is
/// shared this way; sessions are claimed by use instead (`ForestClaim`), which replaces the
/// `connections` this computes.
///
/// Each node gets `limit / n`; the remainder goes one each to the nodes that follow a starting
/// point chosen from the forest's name, so that with many small forests the extra sessions do not
/// all land on the first node. The order of the nodes is their names' order, which every node
/// computes alike; the starting point uses FNV-1a, not `hashValue` (randomised per process).
///
/// ```swift
/// ForestSplit.shares([ResourceForest(name: "NAMPR01", region: "na", tenants: [], maxConnections: 10,
///                    maxMessagesPerMinute: 0)], nodes: ["a", "b", "c"], me: "b")
/// // ["NAMPR01": ForestShare(connections: 3 or 4, messagesPerMinute: nil, nodes: 3)]
/// ```
public enum ForestSplit {
    public static func shares(_ forests: [ResourceForest], nodes: [String], me: String) -> [String: ForestShare] {
        let members = Array(Set(nodes + [me])).sorted()
        let n = members.count
        let index = members.firstIndex(of: me) ?? 0
        var out: [String: ForestShare] = [:]
        for f in forests {
            let position = (index - Int(fnv1a(f.name) % UInt64(n)) + n) % n
            func part(_ limit: Int) -> Int { limit / n + (position < limit % n ? 1 : 0) }
            out[f.name] = ForestShare(
                connections: part(f.maxConnections),
                messagesPerMinute: f.maxMessagesPerMinute > 0 ? part(f.maxMessagesPerMinute) : nil, nodes: n)
        }
        return out
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in text.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }
}
