/// An SPF record (RFC 7208 §4.5, §12 ABNF) parsed into its terms, without evaluating anything.
public struct SPFRecord: Sendable, Hashable {
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

    public enum Term: Sendable, Hashable {
        case directive(Directive)
        case redirect(String)
        case explanation(String)
        /// An unknown modifier (RFC 7208 §6: ignored by evaluators).
        case unknownModifier(name: String, value: String)
    }

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

    public var terms: [Term]

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

    public init(parsing text: String) throws(ParseError) {
        guard Self.isSPF(text) else { throw .notSPF }
        var terms: [Term] = []
        var seenModifiers: Set<String> = []
        for raw in text.split(separator: " ").dropFirst() {
            let term = String(raw)
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
            if name == "a" || name == "mx", let slash = tail.firstIndex(of: "/") {
                argument = String(tail[..<slash])
                cidr = String(tail[slash...])
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

    /// RFC 7208 §7.1: `%%`, `%_`, `%-`, or `%{` letter *digit [ "r" ] *delimiter `}`.
    static func checkMacros(_ text: String, term: String) throws(ParseError) {
        var chars = Array(text)[...]
        while let c = chars.popFirst() {
            guard c == "%" else { continue }
            guard let next = chars.popFirst() else { throw .badMacro(term) }
            switch next {
            case "%", "_", "-": continue
            case "{":
                guard let letter = chars.popFirst(), "slodiphcrtvSLODIPHCRTV".contains(letter) else {
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

    /// A domain-spec without macros must be a plausible domain name ending in a toplabel (RFC 7208 §7.1).
    static func checkDomainSpec(_ text: String, term: String) throws(ParseError) {
        guard !text.isEmpty else { throw .badArgument(term, reason: "empty domain") }
        if text.contains("%") { return }
        let labels =
            text.hasSuffix(".")
            ? text.dropLast().split(separator: ".", omittingEmptySubsequences: false)
            : text.split(separator: ".", omittingEmptySubsequences: false)
        guard labels.count >= 2, labels.allSatisfy({ !$0.isEmpty && $0.count <= 63 }) else {
            throw .badArgument(term, reason: "'\(text)' is not a domain name")
        }
        guard let top = labels.last, top.contains(where: { !$0.isNumber }) else {
            throw .badArgument(term, reason: "'\(text)' does not end in a top-level label")
        }
        guard text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) }) else {
            throw .badArgument(term, reason: "'\(text)' is not a domain name")
        }
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
        let valid = isIPv6 ? IPText.isIPv6(address) : IPText.isIPv4(address)
        guard valid else {
            throw .badArgument(term, reason: "'\(address)' is not an IPv\(isIPv6 ? 6 : 4) address")
        }
        if pieces.count == 2 {
            let max = isIPv6 ? 128 : 32
            guard let n = Int(pieces[1]), n >= 0, n <= max else {
                throw .badArgument(term, reason: "bad prefix length '/\(pieces[1])'")
            }
        }
    }
}
