import DNSClient

/// An SPF record (RFC 7208 §4.5, §12 ABNF) parsed into its terms, without evaluating anything.
///
/// The one SPF parser in Mailflow: `SPFEvaluator` evaluates what it parses and `mailflow check`
/// (Diagnostics) lints it. Any syntax error anywhere in a record is an error for the whole record,
/// since RFC 7208 §4.6 makes an evaluator return permerror before interpreting any term.
///
///     let record = try SPFRecord(parsing: "v=spf1 mx include:_spf.example.net -all")
///     record.directives.count  // 3
public struct SPFRecord: Sendable, Hashable {
    /// The qualifier before a mechanism (RFC 7208 §4.6.2); `+` when absent.
    public enum Qualifier: Character, Sendable, Hashable {
        case pass = "+"
        case fail = "-"
        case softfail = "~"
        case neutral = "?"
    }

    /// A mechanism (RFC 7208 §5) with its qualifier.
    public struct Directive: Sendable, Hashable {
        public var qualifier: Qualifier
        public var mechanism: Mechanism
    }

    /// A mechanism (RFC 7208 §5) with its arguments as written (macros unexpanded).
    public enum Mechanism: Sendable, Hashable {
        case all
        case include(String)
        case a(String?, cidr: String?)
        case mx(String?, cidr: String?)
        case ptr(String?)
        case ip4(String)
        case ip6(String)
        case exists(String)

        /// The mechanism's name as written in records.
        public var name: String {
            switch self {
            case .all: "all"
            case .include: "include"
            case .a: "a"
            case .mx: "mx"
            case .ptr: "ptr"
            case .ip4: "ip4"
            case .ip6: "ip6"
            case .exists: "exists"
            }
        }

        /// True for the mechanisms that cost a DNS lookup (RFC 7208 §4.6.4).
        public var countsAsLookup: Bool {
            switch self {
            case .include, .a, .mx, .ptr, .exists: true
            case .all, .ip4, .ip6: false
            }
        }
    }

    /// One term of the record: a directive or a modifier (RFC 7208 §4.6.1).
    public enum Term: Sendable, Hashable {
        case directive(Directive)
        case redirect(String)
        case explanation(String)
        /// An unknown modifier (RFC 7208 §6: ignored by evaluators).
        case unknownModifier(name: String, value: String)
    }

    /// Why a record does not parse; every case is a permerror to an evaluator (RFC 7208 §4.6).
    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        case notSPF
        case unknownMechanism(String)
        case badArgument(String, reason: String)
        case duplicateModifier(String)
        case badMacro(String)

        public var description: String {
            switch self {
            case .notSPF: "the record does not start with v=spf1"
            case .unknownMechanism(let term): "'\(term)' is not an SPF mechanism or modifier"
            case .badArgument(let term, let reason): "'\(term)': \(reason)"
            case .duplicateModifier(let name): "the \(name)= modifier appears more than once (RFC 7208 §6)"
            case .badMacro(let term): "'\(term)' has a malformed macro (RFC 7208 §7.1)"
            }
        }
    }

    /// The terms in record order.
    public var terms: [Term]

    /// The `exp=` domain-spec, if any (RFC 7208 §6.2).
    public var explanation: String? {
        for case .explanation(let target) in terms { return target }
        return nil
    }

    /// The directives in order.
    public var directives: [Directive] {
        terms.compactMap { if case .directive(let d) = $0 { d } else { nil } }
    }

    /// The `redirect=` target, if any.
    public var redirect: String? {
        for case .redirect(let target) in terms { return target }
        return nil
    }

    /// True when `text` is an SPF record at all: `v=spf1` followed by a space or the end (RFC 7208 §4.5).
    public static func isSPF(_ text: String) -> Bool {
        let lower = text.lowercased()
        return lower == "v=spf1" || lower.hasPrefix("v=spf1 ")
    }

    /// Parses `text`, a TXT record's strings joined without separators (RFC 7208 §3.3).
    public init(parsing text: String) throws(ParseError) {
        guard Self.isSPF(text) else { throw .notSPF }
        var terms: [Term] = []
        var seenModifiers: Set<String> = []
        for raw in text.split(separator: " ").dropFirst() {
            let term = String(raw)
            // Terms are separated by SP only and are 7-bit visible text (RFC 7208 §3.1, §12): a tab,
            // CR, LF or a non-ASCII byte inside a record is a syntax error, not a separator.
            guard term.unicodeScalars.allSatisfy({ $0.value >= 0x21 && $0.value <= 0x7E }) else {
                throw .badArgument(term, reason: "a control or non-ASCII character")
            }
            let parsed = try Self.parseTerm(term)
            switch parsed {
            case .redirect, .explanation:
                let name = term.prefix { $0 != "=" }.lowercased()
                guard seenModifiers.insert(name).inserted else { throw .duplicateModifier(name) }
            default: break
            }
            terms.append(parsed)
        }
        self.terms = terms
    }

    static func parseTerm(_ term: String) throws(ParseError) -> Term {
        // A modifier is name=value where name is ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) (§12).
        if let eq = term.firstIndex(of: "="), !term[..<eq].contains(":"), !term[..<eq].contains("/") {
            let name = term[..<eq].lowercased()
            let value = String(term[term.index(after: eq)...])
            guard let first = name.first, first.isASCII, first.isLetter,
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
            else { throw .unknownMechanism(term) }
            try checkMacros(value, term: term)
            switch name {
            case "redirect":
                try checkDomainSpec(value, term: term)
                return .redirect(value)
            case "exp":
                try checkDomainSpec(value, term: term)
                return .explanation(value)
            default:
                return .unknownModifier(name: name, value: value)
            }
        }
        var rest = Substring(term)
        var qualifier = Qualifier.pass
        if let first = rest.first, let q = Qualifier(rawValue: first) {
            qualifier = q
            rest = rest.dropFirst()
        }
        let nameEnd = rest.firstIndex { $0 == ":" || $0 == "/" } ?? rest.endIndex
        let name = rest[..<nameEnd].lowercased()
        var argument: String? = nil
        var cidr: String? = nil
        var tail = rest[nameEnd...]
        if tail.first == ":" {
            tail = tail.dropFirst()
            // For a and mx the domain-spec may be followed by a dual-cidr-length; a macro-string cannot hold '/'.
            if name == "a" || name == "mx", let split = dualCIDRStart(tail) {
                argument = String(tail[..<split])
                cidr = String(tail[split...])
            } else {
                argument = String(tail)
            }
        } else if tail.first == "/" {
            cidr = String(tail)
        }
        let mechanism: Mechanism
        switch name {
        case "all":
            guard argument == nil, cidr == nil else { throw .badArgument(term, reason: "'all' takes no argument") }
            mechanism = .all
        case "include", "exists":
            guard let domain = argument, cidr == nil else {
                throw .badArgument(term, reason: "'\(name)' needs a domain, as \(name):example.org")
            }
            try checkMacros(domain, term: term)
            try checkDomainSpec(domain, term: term)
            mechanism = name == "include" ? .include(domain) : .exists(domain)
        case "a", "mx":
            if let domain = argument {
                try checkMacros(domain, term: term)
                try checkDomainSpec(domain, term: term)
            }
            if let cidr { try checkDualCIDR(cidr, term: term) }
            mechanism = name == "a" ? .a(argument, cidr: cidr) : .mx(argument, cidr: cidr)
        case "ptr":
            guard cidr == nil else { throw .badArgument(term, reason: "'ptr' takes no CIDR length") }
            if let domain = argument {
                try checkMacros(domain, term: term)
                try checkDomainSpec(domain, term: term)
            }
            mechanism = .ptr(argument)
        case "ip4":
            guard let network = argument ?? nil else { throw .badArgument(term, reason: "'ip4' needs an address") }
            try checkNetwork(network, isIPv6: false, term: term)
            mechanism = .ip4(network)
        case "ip6":
            guard let network = argument else { throw .badArgument(term, reason: "'ip6' needs an address") }
            try checkNetwork(network, isIPv6: true, term: term)
            mechanism = .ip6(network)
        default:
            throw .unknownMechanism(term)
        }
        return .directive(Directive(qualifier: qualifier, mechanism: mechanism))
    }

    /// RFC 7208 §7.1: `%%`, `%_`, `%-`, or `%{` letter *digit [ "r" ] *delimiter `}`; the letters
    /// `c`, `r` and `t` only where `explanation` is true (§7.1: they belong to `exp` text).
    static func checkMacros(_ text: String, term: String, explanation: Bool = true) throws(ParseError) {
        let letters = explanation ? "slodiphcrtvSLODIPHCRTV" : "slodiphvSLODIPHV"
        var chars = Array(text)[...]
        while let c = chars.popFirst() {
            guard c == "%" else { continue }
            guard let next = chars.popFirst() else { throw .badMacro(term) }
            switch next {
            case "%", "_", "-": continue
            case "{":
                guard let letter = chars.popFirst(), letters.contains(letter) else {
                    throw .badMacro(term)
                }
                while let d = chars.first, d.isASCII, d.isNumber { chars.removeFirst() }
                if chars.first == "r" || chars.first == "R" { chars.removeFirst() }
                while let d = chars.first, ".-+,/_=".contains(d) { chars.removeFirst() }
                guard chars.popFirst() == "}" else { throw .badMacro(term) }
            default:
                throw .badMacro(term)
            }
        }
    }

    /// RFC 7208 §7.1 `domain-spec = macro-string domain-end`: any visible characters but a lone `%`,
    /// ending in a macro or in `.` and a top label (letters, digits and inner dashes, not all digits).
    /// Without macros the name must also have at least two non-empty labels of at most 63 octets.
    static func checkDomainSpec(_ text: String, term: String) throws(ParseError) {
        guard !text.isEmpty else { throw .badArgument(term, reason: "empty domain") }
        try checkMacros(text, term: term, explanation: false)
        if text.hasSuffix("}") || text.hasSuffix("%%") || text.hasSuffix("%_") || text.hasSuffix("%-") { return }
        let trimmed = text.hasSuffix(".") ? String(text.dropLast()) : text
        let labels = trimmed.split(separator: ".", omittingEmptySubsequences: false)
        guard let top = labels.last, labels.count >= 2 else {
            throw .badArgument(term, reason: "'\(text)' is not a domain name")
        }
        guard !top.isEmpty, top.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }),
            top.first != "-", top.last != "-", top.contains(where: { !$0.isNumber })
        else {
            throw .badArgument(term, reason: "'\(text)' does not end in a top-level label")
        }
        if !text.contains("%") {
            guard labels.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 63 }) else {
                throw .badArgument(term, reason: "'\(text)' is not a domain name")
            }
        }
    }

    /// Where a trailing `dual-cidr-length` (`/n`, `//n`, `/n//m`) starts in `a:`/`mx:` arguments; a
    /// domain-spec may itself hold `/` (RFC 7208 §7.1 macro-literal), so only a numeric tail counts.
    static func dualCIDRStart(_ text: Substring) -> Substring.Index? {
        func numericSlashStart(_ end: Substring.Index) -> Substring.Index? {
            var i = end
            while i > text.startIndex, text[text.index(before: i)].isASCII, text[text.index(before: i)].isNumber {
                i = text.index(before: i)
            }
            guard i != end, i > text.startIndex, text[text.index(before: i)] == "/" else { return nil }
            return text.index(before: i)
        }
        guard let last = numericSlashStart(text.endIndex) else { return nil }
        if last > text.startIndex, text[text.index(before: last)] == "/" {
            // `//m`, perhaps after `/n`.
            let doubleStart = text.index(before: last)
            return numericSlashStart(doubleStart) ?? doubleStart
        }
        return last
    }

    /// `/n` (IPv4, 0...32), `//n` (IPv6, 0...128) or both (RFC 7208 §5.6).
    static func checkDualCIDR(_ text: String, term: String) throws(ParseError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        func length(_ s: Substring?, max: Int) -> Bool {
            guard let s, let n = Int(s), n >= 0, n <= max, s.first != "0" || s == "0" else { return false }
            return true
        }
        let ok: Bool
        switch parts.count {
        case 1: ok = length(parts.first, max: 32)
        case 2: ok = parts.first == "" && length(parts.last, max: 128)
        case 3: ok = length(parts.first, max: 32) && parts.dropFirst().first == "" && length(parts.last, max: 128)
        default: ok = false
        }
        guard ok else { throw .badArgument(term, reason: "bad CIDR length '\(text)'") }
    }

    static func checkNetwork(_ text: String, isIPv6: Bool, term: String) throws(ParseError) {
        let pieces = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let address = String(pieces[0])
        let valid = isIPv6 ? isIPv6Text(address) : isIPv4Text(address)
        guard valid else {
            throw .badArgument(term, reason: "'\(address)' is not an IPv\(isIPv6 ? 6 : 4) address")
        }
        if pieces.count == 2 {
            let max = isIPv6 ? 128 : 32
            guard let n = Int(pieces[1]), n >= 0, n <= max, pieces[1].allSatisfy(\.isNumber),
                pieces[1] == "0" || pieces[1].first != "0"
            else {
                throw .badArgument(term, reason: "bad prefix length '/\(pieces[1])'")
            }
        }
    }

    /// Dotted-quad IPv4 with each part 0...255 and no leading zeros (RFC 7208 §12 `ip4-network`).
    static func isIPv4Text(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4
            && parts.allSatisfy { p in
                guard let n = Int(p), n >= 0, n <= 255, p.allSatisfy(\.isNumber) else { return false }
                return p == "0" || p.first != "0"
            }
    }

    /// RFC 4291 §2.2 text (`ip6-network`).
    static func isIPv6Text(_ text: String) -> Bool {
        text.contains(":") && DNSIPAddress(text).map { !$0.isIPv4 } == true
    }
}
