/// How deeply a YAML text nests, measured without recursion before Yams composes it.
///
/// Yams 5.0.1 composes with one recursive call per level (`Parser.loadNode` and `loadSequence` or
/// `loadMapping`), so a file nested a few thousand levels deep overflows the thread's stack, and
/// libyaml's scanner slows down with the square of the flow depth. This follows libyaml 0.2.5's
/// scanner token by token (indentation, simple keys, flow levels, the five scalar styles) and counts
/// the collections its parser opens: block collections, indentless sequences (`a:` then `- b` at the
/// same column), flow collections and the single-pair mappings of `[a: b]`. An alias counts as deep
/// as its anchor's node could be, so chains of aliases are measured too. Where libyaml reports a
/// syntax error the scan stops quietly: nothing after it is composed, and Yams then reports it.
struct YAMLNestingScan {
    /// Why the text is refused, and where (a 1-based line).
    struct Refusal: Equatable {
        var line: Int
        var message: String
    }

    enum End: Error {
        /// libyaml stops with a syntax error at this point.
        case syntaxError
        case refused(Refusal)
    }

    /// The first place where the text nests deeper than `limit` collections, or nil.
    static func check(_ text: String, limit: Int) -> Refusal? {
        var scan = YAMLNestingScan(bytes: Array(text.utf8), limit: limit)
        do {
            try scan.run()
        } catch {
            if case .refused(let r) = error { return r }
        }
        return nil
    }

    private struct SimpleKey {
        var possible = false
        var line = 0
        var index = 0
        var column = 0
        /// The deepest level reached since the key began: the key's own nodes go one level deeper
        /// when its `:` turns out to open a mapping around them.
        var deepest = 0
    }

    private struct Block {
        var column: Int
        var isMapping: Bool
        /// A sequence at this mapping's own column is open (`a:` then `- b`).
        var indentless = false
    }

    private struct Flow {
        var isSequence: Bool
        /// `[a: b]`: this entry is a single-pair mapping.
        var pairOpen = false
    }

    /// An anchor whose node has not ended: the deepest level reached since it was defined.
    private struct Anchor {
        var name: String
        var level: Int
        var index: Int
        var deepest: Int
        /// Its node has begun; it ends at the next token at `level` (or when `level` closes).
        var seenNode = false
    }

    private let b: [UInt8]
    private let limit: Int
    private var p = 0
    private var line = 0
    private var column = 0
    /// Characters read, as libyaml's `mark.index` (a simple key lasts at most 1024 of them).
    private var index = 0
    private var depth = 0
    private var blocks: [Block] = []
    private var flows: [Flow] = []
    /// One possible simple key per flow level, the first for block context.
    private var keys = [SimpleKey()]
    private var simpleKeyAllowed = true
    /// Anchors whose node is still open, innermost last.
    private var anchors: [Anchor] = []
    /// For each anchor name, the most levels its node (any of them, if defined again) holds.
    private var anchorHeights: [String: Int] = [:]

    private init(bytes: [UInt8], limit: Int) {
        b = bytes
        self.limit = limit
    }

    private var indent: Int { blocks.last?.column ?? -1 }

    // MARK: Characters, as libyaml's macros see them (past the end reads as NUL)

    private func at(_ k: Int) -> UInt8 { p + k < b.count ? b[p + k] : 0 }
    private func has(_ k: Int, _ c: Unicode.Scalar) -> Bool { at(k) == UInt8(c.value) }
    private func isZ(_ k: Int) -> Bool { at(k) == 0 }
    private func isBlank(_ k: Int) -> Bool { at(k) == 0x20 || at(k) == 0x09 }
    private func isBreakZ(_ k: Int) -> Bool { isBreak(k) || isZ(k) }
    private func isBlankZ(_ k: Int) -> Bool { isBlank(k) || isBreakZ(k) }
    private func isDigit(_ k: Int) -> Bool { (0x30...0x39).contains(at(k)) }

    /// CR, LF, NEL, LS and PS: libyaml starts a new line at each.
    private func isBreak(_ k: Int) -> Bool {
        switch at(k) {
        case 0x0A, 0x0D: return true
        case 0xC2: return at(k + 1) == 0x85
        case 0xE2: return at(k + 1) == 0x80 && (at(k + 2) == 0xA8 || at(k + 2) == 0xA9)
        default: return false
        }
    }

    private func isAlpha(_ k: Int) -> Bool {
        let c = at(k)
        return (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) || c == 0x5F
            || c == 0x2D
    }

    private func isHex(_ k: Int) -> Bool {
        isDigit(k) || (0x41...0x46).contains(at(k)) || (0x61...0x66).contains(at(k))
    }

    private func isOneOf(_ k: Int, _ set: String) -> Bool {
        let c = at(k)
        return c != 0 && c < 0x80 && set.utf8.contains(c)
    }

    private func isURIChar(_ k: Int, verbatim: Bool) -> Bool {
        isAlpha(k) || isOneOf(k, ";/?:@&=+$.%!~*'()") || (verbatim && isOneOf(k, ",[]"))
    }

    private func isDocumentIndicator() -> Bool {
        guard column == 0, isBlankZ(3) else { return false }
        let c = at(0)
        return (c == 0x2D || c == 0x2E) && at(1) == c && at(2) == c
    }

    private mutating func skip() {
        let c = at(0)
        p += c < 0x80 ? 1 : c & 0xE0 == 0xC0 ? 2 : c & 0xF0 == 0xE0 ? 3 : c & 0xF8 == 0xF0 ? 4 : 1
        index += 1
        column += 1
    }

    private mutating func skipLine() {
        if at(0) == 0x0D && at(1) == 0x0A {
            p += 2
            index += 2
        } else if isBreak(0) {
            skip()
        } else {
            return
        }
        column = 0
        line += 1
    }

    // MARK: Depth

    private mutating func reach(_ level: Int, alias: String? = nil) throws(End) {
        if level > limit {
            let through = alias.map { " through the alias *\(MailflowConfig.excerpt($0))" } ?? ""
            throw .refused(
                Refusal(line: line + 1, message: "lists and mappings nested more than \(limit) deep\(through)"))
        }
        for i in keys.indices where keys[i].possible && keys[i].deepest < level { keys[i].deepest = level }
        for i in anchors.indices where anchors[i].deepest < level { anchors[i].deepest = level }
    }

    /// A collection begins (a node, for an anchor waiting for one).
    private mutating func open(deepest: Int = 0) throws(End) {
        nodeBegins()
        depth += 1
        try reach(max(depth, deepest))
    }

    private mutating func close(_ count: Int = 1) { depth -= count }

    private mutating func nodeBegins() {
        for i in anchors.indices.reversed() {
            if anchors[i].seenNode { break }
            anchors[i].seenNode = true
        }
    }

    /// Before a token: the anchors whose node has ended record how deep it went.
    private mutating func endAnchors(keyStart: Int? = nil) {
        while let a = anchors.last,
            a.level > depth || (a.level == depth && a.seenNode && a.index >= (keyStart ?? a.index))
        {
            anchors.removeLast()
            anchorHeights[a.name] = max(anchorHeights[a.name] ?? 0, a.deepest - a.level)
        }
    }

    /// How many levels an alias of `name` can add; nil if no anchor of that name came before.
    private func height(of name: String) -> Int? {
        var h = anchorHeights[name]
        for a in anchors where a.name == name { h = max(h ?? 0, a.deepest - a.level) }
        return h
    }

    /// libyaml's `roll_indent`: a block collection opens where `column` is deeper than the indentation.
    private mutating func roll(_ column: Int, mapping: Bool, deepest: Int = 0) throws(End) -> Bool {
        guard flows.isEmpty, indent < column else { return false }
        blocks.append(Block(column: column, isMapping: mapping))
        try open(deepest: deepest)
        return true
    }

    /// libyaml's `unroll_indent`: block collections deeper than `column` end.
    private mutating func unroll(to column: Int) {
        guard flows.isEmpty else { return }
        while let last = blocks.last, last.column > column {
            blocks.removeLast()
            close(last.indentless ? 2 : 1)
        }
    }

    /// A key at a mapping's own column ends the sequence that sat at that column.
    private mutating func endIndentless(at column: Int) {
        guard flows.isEmpty, let last = blocks.last, last.column == column, last.indentless else { return }
        blocks[blocks.count - 1].indentless = false
        close()
    }

    private mutating func saveKey() {
        guard simpleKeyAllowed else { return }
        keys[keys.count - 1] = SimpleKey(possible: true, line: line, index: index, column: column, deepest: depth)
    }

    private mutating func removeKey() { keys[keys.count - 1].possible = false }

    // MARK: Tokens

    private mutating func run() throws(End) {
        while true {
            scanToNextToken()
            unroll(to: column)
            // Any other token at a mapping's column ends the sequence that sat there.
            if !(has(0, "-") && isBlankZ(1)) { endIndentless(at: column) }
            if isZ(0) { return }
            let isValue = has(0, ":") && (!flows.isEmpty || isBlankZ(1))
            if !isValue { endAnchors() }
            if column == 0 && has(0, "%") {  // a directive: a line of its own
                guard flows.isEmpty else { throw .syntaxError }
                unroll(to: -1)
                removeKey()
                simpleKeyAllowed = false
                while !isBreakZ(0) { skip() }
                continue
            }
            if isDocumentIndicator() {
                guard flows.isEmpty else { throw .syntaxError }
                unroll(to: -1)
                removeKey()
                simpleKeyAllowed = false
                skip()
                skip()
                skip()
                continue
            }
            switch Unicode.Scalar(at(0)) {
            case "[", "{":
                saveKey()
                flows.append(Flow(isSequence: has(0, "[")))
                keys.append(SimpleKey())
                simpleKeyAllowed = true
                skip()
                try open()
            case "]", "}":
                guard let f = flows.last, f.isSequence == has(0, "]") else { throw .syntaxError }
                removeKey()
                flows.removeLast()
                keys.removeLast()
                simpleKeyAllowed = false
                skip()
                close(f.pairOpen ? 2 : 1)
            case ",":
                guard let f = flows.last else { throw .syntaxError }
                nodeBegins()  // the entry ends: an anchor still waiting was on an empty node
                removeKey()
                simpleKeyAllowed = true
                skip()
                if f.pairOpen {
                    flows[flows.count - 1].pairOpen = false
                    close()
                }
            case "-" where isBlankZ(1):
                guard flows.isEmpty, simpleKeyAllowed else { throw .syntaxError }
                if try !roll(column, mapping: false) {
                    if let last = blocks.last, last.column == column, last.isMapping, !last.indentless {
                        blocks[blocks.count - 1].indentless = true
                        try open()
                    } else {
                        nodeBegins()  // the next entry: an anchor still waiting was on an empty one
                    }
                }
                removeKey()
                simpleKeyAllowed = true
                skip()
            case "?" where !flows.isEmpty || isBlankZ(1):
                if flows.isEmpty {
                    guard simpleKeyAllowed else { throw .syntaxError }
                    if try !roll(column, mapping: true) {
                        endIndentless(at: column)
                        nodeBegins()
                    }
                } else if let f = flows.last, f.isSequence, !f.pairOpen {
                    flows[flows.count - 1].pairOpen = true
                    try open()
                }
                removeKey()
                simpleKeyAllowed = flows.isEmpty
                skip()
            case ":" where !flows.isEmpty || isBlankZ(1):
                try value()
            case "*", "&":
                let isAnchor = has(0, "&")
                let tokenIndex = index
                saveKey()
                simpleKeyAllowed = false
                skip()
                let start = p
                while isAlpha(0) { skip() }
                guard p > start, isBlankZ(0) || isOneOf(0, "?:,]}%@`") else { throw .syntaxError }
                let name = String(decoding: b[start..<p], as: UTF8.self)
                if isAnchor {
                    // In valid YAML at most two anchors wait at one level (`a: &x` then `&y b: c`).
                    guard anchors.count <= 2 * (limit + 1) else {
                        throw .refused(Refusal(line: line + 1, message: "anchors (&name) without values"))
                    }
                    anchors.append(Anchor(name: name, level: depth, index: tokenIndex, deepest: depth))
                } else {
                    // An alias of nothing defined before: Yams refuses it.
                    guard let h = height(of: name) else { throw .syntaxError }
                    nodeBegins()
                    try reach(depth + h, alias: name)
                }
            case "!":
                saveKey()
                simpleKeyAllowed = false
                try tag()
            case "|" where flows.isEmpty, ">" where flows.isEmpty:
                removeKey()
                simpleKeyAllowed = true
                nodeBegins()
                try blockScalar()
            case "'", "\"":
                saveKey()
                simpleKeyAllowed = false
                nodeBegins()
                try quotedScalar(single: has(0, "'"))
            default:
                let plain =
                    !(isBlankZ(0) || isOneOf(0, "-?:,[]{}#&*!|>'\"%@`")) || (has(0, "-") && !isBlank(1))
                    || (flows.isEmpty && (has(0, "?") || has(0, ":")) && !isBlankZ(1))
                guard plain else { throw .syntaxError }
                saveKey()
                simpleKeyAllowed = false
                nodeBegins()
                try plainScalar()
            }
        }
    }

    private mutating func scanToNextToken() {
        while true {
            if column == 0 && at(0) == 0xEF && at(1) == 0xBB && at(2) == 0xBF { skip() }
            while has(0, " ") || ((!flows.isEmpty || !simpleKeyAllowed) && has(0, "\t")) { skip() }
            if has(0, "#") {
                while !isBreakZ(0) { skip() }
            }
            guard isBreak(0) else { return }
            skipLine()
            if flows.isEmpty { simpleKeyAllowed = true }
        }
    }

    /// `:`: the possible simple key before it becomes a key, which may open a mapping around it.
    private mutating func value() throws(End) {
        let k = keys[keys.count - 1]
        if k.possible && k.line == line && k.index + 1024 >= index {
            let opensAround =
                flows.isEmpty ? indent < k.column : (flows.last.map { $0.isSequence && !$0.pairOpen } ?? false)
            // Anchors on the key end with it; one before the key is on the mapping that now opens.
            endAnchors(keyStart: opensAround ? k.index : nil)
            if flows.isEmpty {
                if try !roll(k.column, mapping: true, deepest: k.deepest + 1) { endIndentless(at: k.column) }
            } else if let f = flows.last, f.isSequence, !f.pairOpen {
                flows[flows.count - 1].pairOpen = true
                try open(deepest: k.deepest + 1)
            }
            removeKey()
            simpleKeyAllowed = false
        } else {
            endAnchors()
            if flows.isEmpty {
                guard simpleKeyAllowed else { throw .syntaxError }
                if try !roll(column, mapping: true) {
                    endIndentless(at: column)
                    nodeBegins()
                }
            } else {
                nodeBegins()
            }
            simpleKeyAllowed = flows.isEmpty
        }
        skip()
    }

    private mutating func tag() throws(End) {
        if has(1, "<") {
            skip()
            skip()
            while isURIChar(0, verbatim: true) { skip() }
            guard has(0, ">") else { throw .syntaxError }
            skip()
        } else {
            skip()
            while isURIChar(0, verbatim: false) { skip() }
        }
        guard isBlankZ(0) || (!flows.isEmpty && has(0, ",")) else { throw .syntaxError }
    }

    private mutating func plainScalar() throws(End) {
        let minColumn = indent + 1
        var leadingBlanks = false
        while true {
            if isDocumentIndicator() || has(0, "#") { break }
            while !isBlankZ(0) {
                if !flows.isEmpty && has(0, ":") && isOneOf(1, ",?[]{}") { throw .syntaxError }
                if (has(0, ":") && isBlankZ(1)) || (!flows.isEmpty && isOneOf(0, ",[]{}")) { break }
                leadingBlanks = false
                skip()
            }
            guard isBlank(0) || isBreak(0) else { break }
            while isBlank(0) || isBreak(0) {
                if isBlank(0) {
                    if leadingBlanks && column < minColumn && has(0, "\t") { throw .syntaxError }
                    skip()
                } else {
                    skipLine()
                    leadingBlanks = true
                }
            }
            if flows.isEmpty && column < minColumn { break }
        }
        if leadingBlanks { simpleKeyAllowed = true }
    }

    private mutating func quotedScalar(single: Bool) throws(End) {
        let quote: Unicode.Scalar = single ? "'" : "\""
        skip()
        while true {
            guard !isDocumentIndicator(), !isZ(0) else { throw .syntaxError }
            while !isBlankZ(0) {
                if single && has(0, "'") && has(1, "'") {
                    skip()
                    skip()
                } else if has(0, quote) {
                    break
                } else if !single && has(0, "\\") && isBreak(1) {
                    skip()
                    skipLine()
                    break
                } else if !single && has(0, "\\") {
                    var codeLength = 0
                    switch Unicode.Scalar(at(1)) {
                    case "0", "a", "b", "t", "\t", "n", "v", "f", "r", "e", " ", "\"", "/", "\\", "N", "_", "L", "P":
                        break
                    case "x": codeLength = 2
                    case "u": codeLength = 4
                    case "U": codeLength = 8
                    default: throw .syntaxError
                    }
                    skip()
                    skip()
                    for k in 0..<codeLength where !isHex(k) { throw .syntaxError }
                    for _ in 0..<codeLength { skip() }
                } else {
                    skip()
                }
            }
            if has(0, quote) { break }
            while isBlank(0) || isBreak(0) {
                if isBlank(0) { skip() } else { skipLine() }
            }
        }
        skip()
    }

    private mutating func blockScalar() throws(End) {
        skip()
        var increment = 0
        if has(0, "+") || has(0, "-") {
            skip()
            if isDigit(0) {
                guard !has(0, "0") else { throw .syntaxError }
                increment = Int(at(0) - 0x30)
                skip()
            }
        } else if isDigit(0) {
            guard !has(0, "0") else { throw .syntaxError }
            increment = Int(at(0) - 0x30)
            skip()
            if has(0, "+") || has(0, "-") { skip() }
        }
        while isBlank(0) { skip() }
        if has(0, "#") {
            while !isBreakZ(0) { skip() }
        }
        guard isBreakZ(0) else { throw .syntaxError }
        skipLine()
        var blockIndent = increment > 0 ? (indent >= 0 ? indent + increment : increment) : 0
        try blockScalarBreaks(&blockIndent)
        while column == blockIndent && !isZ(0) {
            while !isBreakZ(0) { skip() }
            skipLine()
            try blockScalarBreaks(&blockIndent)
        }
    }

    private mutating func blockScalarBreaks(_ blockIndent: inout Int) throws(End) {
        var maxIndent = 0
        while true {
            while (blockIndent == 0 || column < blockIndent) && has(0, " ") { skip() }
            maxIndent = max(maxIndent, column)
            if (blockIndent == 0 || column < blockIndent) && has(0, "\t") { throw .syntaxError }
            guard isBreak(0) else { break }
            skipLine()
        }
        if blockIndent == 0 { blockIndent = max(maxIndent, indent + 1, 1) }
    }
}
