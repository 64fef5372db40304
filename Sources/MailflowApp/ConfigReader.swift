import Foundation
import Yams

/// One mapping of the config file as a section decoder reads it: typed look-ups that throw a
/// `ConfigError` naming the key path and line, so a decoder says only what its values mean.
///
/// ```swift
/// if let t = try r.duration("expiry") { config.expiry = t }  // "delivery.expiry: expected a duration ..."
/// ```
struct ConfigReader {
    let node: Node
    let mapping: Node.Mapping
    /// The key path of this mapping (`limits.per_source`, `tenants[2]`); empty for the root.
    let prefix: String

    init(_ node: Node, _ prefix: String) throws {
        guard let m = node.mapping else {
            throw MailflowConfig.ConfigError(
                path: prefix, message: "expected a mapping of keys", line: node.mark?.line)
        }
        self.node = node
        self.mapping = m
        self.prefix = prefix
    }

    func path(_ key: String) -> String { prefix.isEmpty ? key : "\(prefix).\(key)" }

    func error(_ key: String, _ message: String) -> MailflowConfig.ConfigError {
        MailflowConfig.ConfigError(path: path(key), message: message, line: self[key]?.mark?.line)
    }

    subscript(key: String) -> Node? {
        mapping.first { $0.key.string == key }?.value
    }

    func only(_ keys: [String]) throws {
        for (k, _) in mapping {
            let name = k.string ?? "?"
            guard keys.contains(name) else {
                throw MailflowConfig.ConfigError(
                    path: path(MailflowConfig.excerpt(name)),
                    message: "unknown key (expected one of: \(keys.joined(separator: ", ")))",
                    line: k.mark?.line)
            }
        }
    }

    /// A nested mapping; nil when the key is missing, empty or `null`.
    func mapping(_ key: String) throws -> ConfigReader? {
        guard let n = self[key] else { return nil }
        if n.scalar?.string == "" || n.scalar?.tag.description == Tag.Name.null.rawValue { return nil }
        return try ConfigReader(n, path(key))
    }

    func string(_ key: String) throws -> String? {
        guard let n = self[key] else { return nil }
        guard let s = n.scalar?.string else { throw error(key, "expected a text value") }
        return s
    }

    func int(_ key: String) throws -> Int? {
        guard let n = self[key] else { return nil }
        guard let s = n.scalar?.string, let v = Int(s) else { throw error(key, "expected a whole number") }
        return v
    }

    /// A whole number that must lie in `range`: "must be between 1 and 1000" otherwise.
    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = try int(key) else { return nil }
        guard range.contains(v) else {
            throw error(key, "must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return v
    }

    func bool(_ key: String) throws -> Bool? {
        guard let n = self[key] else { return nil }
        switch n.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error(key, "expected true or false")
        }
    }

    func list(_ key: String) throws -> [Node]? {
        guard let n = self[key] else { return nil }
        guard let s = n.sequence else { throw error(key, "expected a list") }
        return Array(s)
    }

    func stringList(_ key: String) throws -> [String]? {
        guard let items = try list(key) else { return nil }
        return try items.enumerated().map { i, n in
            guard let s = n.scalar?.string, !s.isEmpty else { throw error("\(key)[\(i)]", "expected a text value") }
            return s
        }
    }

    /// A positive duration (`DurationText`), or zero too with `allowZero`.
    func duration(_ key: String, allowZero: Bool = false) throws -> TimeInterval? {
        guard let n = self[key] else { return nil }
        return try Self.duration(n, path: path(key), allowZero: allowZero)
    }

    /// The longest duration a config value may name: ten years. Every duration ends up as whole
    /// nanoseconds in an `Int64` (`TimeAmount`, `Duration`) or divided into buckets, and `1e300s`
    /// there traps; no real timeout, retry interval or retention is longer.
    static let maxDuration: TimeInterval = 3650 * 86400

    static func duration(_ n: Node, path: String, allowZero: Bool = false) throws -> TimeInterval {
        guard let s = n.scalar?.string, let v = DurationText.seconds(s), v > 0 || (allowZero && v == 0) else {
            throw MailflowConfig.ConfigError(
                path: path, message: "expected a duration such as 30, 30s, 5m, 24h or 2d", line: n.mark?.line)
        }
        guard v <= maxDuration else {
            throw MailflowConfig.ConfigError(
                path: path, message: "is longer than 3650d, the longest duration allowed", line: n.mark?.line)
        }
        return v
    }

    /// Octets as a number, or with a unit: `10KB`, `35MB` (binary multiples, like Exchange).
    func size(_ key: String) throws -> Int? {
        guard let n = self[key] else { return nil }
        guard var s = n.scalar?.string.uppercased().replacingOccurrences(of: " ", with: ""), !s.isEmpty else {
            throw error(key, "expected a size such as 35MB")
        }
        var mult = 1
        for (suffix, m) in [("KB", 1024), ("MB", 1024 * 1024), ("GB", 1024 * 1024 * 1024), ("B", 1)]
        where s.hasSuffix(suffix) {
            mult = m
            s.removeLast(suffix.count)
            break
        }
        guard let v = Int(s), v >= 0 else { throw error(key, "expected a size such as 35MB") }
        let (octets, overflow) = v.multipliedReportingOverflow(by: mult)
        guard !overflow else { throw error(key, "is larger than a size can be") }
        return octets
    }

    /// The line of the `index`-th item of the list at `key`, for errors about one item.
    func line(ofItem index: Int, in key: String) -> Int? {
        self[key]?.sequence.flatMap { Array($0)[index].mark?.line }
    }
}
