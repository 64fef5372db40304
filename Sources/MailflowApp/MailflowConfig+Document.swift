import Foundation
import Yams

// The file as a whole, before any section is read: its bounds, YAML errors as one line, and the
// tree checks (keys once, text keys, value sizes, alias expansion) that no section should repeat.
extension MailflowConfig {
    // Bounds checked before the YAML is parsed, so a hostile file is refused with a line instead of
    // taking the process down: Yams composes recursively (a few thousand levels overflow the stack).
    /// The largest config file read (1 MiB); a real one is a few KB.
    public static let maxFileSize = 1 << 20
    /// Lists and mappings inside one another, counted through aliases; a real config uses 4.
    public static let maxNesting = 64
    /// The longest text value or key (4 KiB, as PATH_MAX).
    public static let maxValueSize = 4096
    /// Values in the document once aliases are expanded: far more than 1 MiB can hold without them.
    static let maxExpandedValues = 1_000_000

    static func tooLarge() -> ConfigError {
        ConfigError(
            path: "", message: "the file is larger than 1 MiB (\(maxFileSize) octets), the most a config file may be")
    }

    /// The document's root node after every check that comes before the sections; nil for an
    /// empty file.
    static func document(_ yaml: String) throws -> Node? {
        guard yaml.utf8.count <= maxFileSize else { throw tooLarge() }
        // Before Yams: its composer recurses once per level.
        if let refusal = YAMLNestingScan.check(yaml, limit: maxNesting) {
            throw ConfigError(path: "", message: refusal.message, line: refusal.line)
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw yamlError(error, yaml)
        }
        if let node { try checkTree(node) }
        return node
    }

    /// A value as an error message shows it: in quotes, at most 80 characters.
    static func quote(_ value: String) -> String { "'\(excerpt(value))'" }

    /// At most `limit` characters of `value` (then `…`), with control and line-breaking characters
    /// escaped: a message that quotes a value stays one short line.
    public static func excerpt(_ value: String, limit: Int = 80) -> String {
        var out = ""
        for (n, u) in value.unicodeScalars.enumerated() {
            if n == limit { return escaped(out) + "…" }
            out.unicodeScalars.append(u)
        }
        return escaped(out)
    }

    /// `text` with every control, format and line or paragraph separator character written as an
    /// escape (`\n`, `\u{7}`), so it prints as one line that cannot restyle a terminal.
    static func escaped(_ text: String) -> String {
        var out = ""
        for u in text.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                switch u.properties.generalCategory {
                case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
                    out += "\\u{\(String(u.value, radix: 16))}"
                default: out.unicodeScalars.append(u)
                }
            }
        }
        return out
    }

    /// Yams' error as one line: libyaml's problem and where, without the multi-line snippet.
    static func yamlError(_ error: Error, _ yaml: String) -> ConfigError {
        switch error as? YamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let during = context.map { "; \($0.text) from line \($0.mark.line)" } ?? ""
            return ConfigError(
                path: "", message: "not valid YAML: \(problem) (column \(mark.column)\(during))", line: mark.line)
        case .reader(let problem, let offset, let value, _):
            let line = offset.map { o in yaml.prefix(o).reduce(1) { $1.isNewline ? $0 + 1 : $0 } }
            return ConfigError(
                path: "", message: "not valid YAML: \(problem) (U+\(String(format: "%04X", value)))", line: line)
        default:
            return ConfigError(path: "", message: "not valid YAML: \(error)")
        }
    }

    /// Every mapping key appears once and is text; no text value is longer than `maxValueSize`;
    /// aliases do not expand the document past `maxExpandedValues`. Iterative: nothing here recurses.
    static func checkTree(_ root: Node) throws {
        // Paths are built only for an error, from each node's parent.
        var parents: [(parent: Int, segment: String)] = [(-1, "")]
        var stack: [(node: Node, at: Int)] = [(root, 0)]
        func path(_ at: Int) -> String {
            var segments: [String] = []
            var i = at
            while i > 0 {
                segments.append(parents[i].segment)
                i = parents[i].parent
            }
            return segments.reversed().reduce("") { p, s in s.hasPrefix("[") || p.isEmpty ? p + s : p + "." + s }
        }
        func tooLong(_ s: Node.Scalar, _ at: Int, key: Bool) -> ConfigError? {
            let size = s.string.utf8.count
            guard size > maxValueSize else { return nil }
            return ConfigError(
                path: path(at),
                message:
                    "\(key ? "a key" : "a value") of \(size) octets (\(quote(s.string))); at most \(maxValueSize) allowed",
                line: s.mark?.line)
        }
        var count = 0
        while let (node, at) = stack.popLast() {
            count += 1
            guard count <= maxExpandedValues else {
                // No line: an alias's copy carries its anchor's lines.
                throw ConfigError(
                    path: path(at), message: "aliases expand the document past \(maxExpandedValues) values")
            }
            switch node {
            case .scalar(let s):
                if let e = tooLong(s, at, key: false) { throw e }
            case .sequence(let seq):
                for (i, item) in seq.enumerated().reversed() {
                    parents.append((at, "[\(i)]"))
                    stack.append((item, parents.count - 1))
                }
            case .mapping(let m):
                var seen: [String: Int] = [:]
                var children: [(Node, Int)] = []
                for (k, v) in m {
                    guard case .scalar(let ks) = k else {
                        throw ConfigError(
                            path: path(at), message: "a key must be text, not a list or mapping", line: k.mark?.line)
                    }
                    if let e = tooLong(ks, at, key: true) { throw e }
                    parents.append((at, excerpt(ks.string)))
                    let line = ks.mark?.line ?? 0
                    if let first = seen[ks.string] {
                        throw ConfigError(
                            path: path(parents.count - 1),
                            message:
                                "appears twice in the same mapping, on lines \(first) and \(line) (a key may appear once)",
                            line: line)
                    }
                    seen[ks.string] = line
                    children.append((v, parents.count - 1))
                }
                stack.append(contentsOf: children.reversed())
            }
        }
    }
}
