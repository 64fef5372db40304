import DNSClient

/// SPF (RFC 7208) of a domain: one record, its syntax, the DNS-lookup budget counted through every
/// `include` and `redirect`, void lookups, and what the `all` qualifier tells receivers.
///
/// Lookups are counted as an evaluator would count them for a sender matching nothing (the worst
/// case, RFC 7208 §4.6.4): every `include`, `a`, `mx`, `ptr`, `exists` and `redirect` term. Terms
/// holding macros are counted but not looked up (their targets depend on the sender).
public struct SPFCheck: Sendable {
    /// RFC 7208 §4.6.4: at most 10 mechanisms and modifiers that cause DNS queries.
    public static let lookupLimit = 10
    /// RFC 7208 §4.6.4: at most 2 lookups that return no records ("void lookups").
    public static let voidLookupLimit = 2
    /// A guard against include chains, counted apart from the limit so a loop is named as one.
    static let maxDepth = 12

    let dns: any DiagnosticsDNS

    public init(dns: any DiagnosticsDNS) { self.dns = dns }

    /// The SPF findings for `domain`.
    public func run(domain: String) async -> [CheckFinding] {
        var out: [CheckFinding] = []
        func add(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil) {
            out.append(
                CheckFinding(
                    category: .spf, subject: domain, check: check, severity: severity, summary: summary, detail: detail)
            )
        }
        let record: SPFRecord
        switch await fetch(domain) {
        case .failed(let error):
            add("spf.dns", .warning, "SPF lookup failed: \(error)", "Receivers would see a temperror and may defer.")
            return out
        case .none:
            add(
                "spf.record", .warning, "No SPF record",
                "Receivers cannot tell which hosts may send for \(domain) (RFC 7208 result 'none').")
            return out
        case .multiple(let texts):
            add(
                "spf.multiple", .failure, "\(texts.count) SPF records; receivers return permerror (RFC 7208 §4.5)",
                texts.joined(separator: "\n"))
            return out
        case .invalid(let text, let error):
            add("spf.syntax", .failure, "SPF record does not parse: \(error)", text)
            return out
        case .found(let text, let parsed):
            add("spf.record", .ok, "SPF record found", text)
            record = parsed
        }
        var walk = Walk()
        walk.visited.insert(domain.lowercased())
        let allQualifier = await evaluate(record, domain: domain, depth: 0, walk: &walk)
        out += walk.findings.map { f in
            var f = f
            f.subject = domain
            return f
        }
        if walk.lookups > Self.lookupLimit {
            add(
                "spf.lookups", .failure,
                "\(walk.lookups) DNS lookups, over the limit of \(Self.lookupLimit): receivers return permerror",
                walk.trail.joined(separator: "\n"))
        } else {
            add(
                "spf.lookups", walk.lookups >= Self.lookupLimit - 1 ? .info : .ok,
                "\(walk.lookups) of \(Self.lookupLimit) DNS lookups used", walk.trail.joined(separator: "\n"))
        }
        if walk.voids > Self.voidLookupLimit {
            add(
                "spf.void-lookups", .failure,
                "\(walk.voids) void lookups, over the limit of \(Self.voidLookupLimit) (RFC 7208 §4.6.4)",
                walk.voidNames.joined(separator: "\n"))
        } else if walk.voids > 0 {
            add(
                "spf.void-lookups", .warning, "\(walk.voids) lookup(s) found no records",
                walk.voidNames.joined(separator: "\n"))
        }
        switch allQualifier {
        case .pass?:
            add("spf.all", .failure, "+all: every host on the Internet may send for \(domain)")
        case .neutral?:
            add("spf.all", .warning, "?all: unlisted hosts are neutral, SPF protects nothing")
        case .softfail?:
            add("spf.all", .ok, "~all: unlisted hosts soft-fail")
        case .fail?:
            add("spf.all", .ok, "-all: unlisted hosts fail")
        case nil:
            add("spf.all", .info, "No 'all' mechanism: unlisted hosts get 'neutral' (RFC 7208 §4.7)")
        }
        return out
    }

    enum Fetched {
        case found(String, SPFRecord)
        case none
        case multiple([String])
        case invalid(String, SPFRecord.ParseError)
        case failed(DNSError)
    }

    func fetch(_ domain: String) async -> Fetched {
        switch await dns.txt(domain) {
        case .failed(let error): return .failed(error)
        case .none: return .none
        case .found(let texts, _):
            let spf = texts.filter(SPFRecord.isSPF)
            guard let text = spf.first else { return .none }
            guard spf.count == 1 else { return .multiple(spf) }
            do {
                return .found(text, try SPFRecord(parsing: text))
            } catch {
                return .invalid(text, error)
            }
        }
    }

    struct Walk {
        var lookups = 0
        var voids = 0
        var voidNames: [String] = []
        var visited: Set<String> = []
        /// One line per lookup-costing term, indented by include depth.
        var trail: [String] = []
        var findings: [CheckFinding] = []

        mutating func add(_ check: String, _ severity: CheckSeverity, _ summary: String, _ detail: String? = nil) {
            findings.append(
                CheckFinding(
                    category: .spf, subject: "", check: check, severity: severity, summary: summary, detail: detail))
        }
    }

    /// Walks `record` (published at `domain`), counting lookups; returns the effective `all` qualifier
    /// (through `redirect` when the record has no `all`).
    func evaluate(_ record: SPFRecord, domain: String, depth: Int, walk: inout Walk) async -> SPFRecord.Qualifier? {
        let indent = String(repeating: "  ", count: depth)
        var allQualifier: SPFRecord.Qualifier?
        var afterAll: [String] = []
        for directive in record.directives {
            if allQualifier != nil {
                afterAll.append(directive.mechanism.name)
                continue
            }
            let mechanism = directive.mechanism
            if mechanism.countsAsLookup {
                walk.lookups += 1
                walk.trail.append("\(indent)\(walk.lookups). \(domain): \(mechanism.name)\(Self.argument(mechanism))")
            }
            switch mechanism {
            case .all:
                allQualifier = directive.qualifier
            case .include(let target):
                guard !target.contains("%") else { continue }
                await follow(target, from: domain, term: "include", depth: depth, walk: &walk)
            case .a(let target, _):
                let name = target ?? domain
                guard !name.contains("%") else { continue }
                if case .none = await dns.addresses(name) { void(name, &walk) }
            case .mx(let target, _):
                let name = target ?? domain
                guard !name.contains("%") else { continue }
                switch await dns.lookup(name, .mx) {
                case .none: void(name, &walk)
                case .found(let records, _) where records.count > 10:
                    walk.add(
                        "spf.mx-limit", .failure,
                        "mx:\(name) has \(records.count) MX records; more than 10 is a permerror (RFC 7208 §4.6.4)")
                default: break
                }
            case .ptr:
                walk.add(
                    "spf.ptr", .warning, "\(domain) uses 'ptr', which RFC 7208 §5.5 says SHOULD NOT be used",
                    "It is slow, unreliable and many receivers skip it.")
            case .exists(let target):
                guard !target.contains("%") else { continue }
                if case .none = await dns.lookup(target, .a) { void(target, &walk) }
            case .ip4, .ip6:
                break
            }
        }
        if !afterAll.isEmpty {
            walk.add(
                "spf.after-all", .warning,
                "\(domain): terms after 'all' are never evaluated: \(afterAll.joined(separator: " "))")
        }
        if let target = record.redirect {
            if allQualifier != nil {
                walk.add("spf.redirect-ignored", .warning, "\(domain): redirect= is ignored because 'all' is present")
            } else if !target.contains("%") {
                walk.lookups += 1
                walk.trail.append("\(indent)\(walk.lookups). \(domain): redirect=\(target)")
                return await follow(target, from: domain, term: "redirect", depth: depth, walk: &walk)
            }
        }
        return allQualifier
    }

    @discardableResult
    func follow(_ target: String, from domain: String, term: String, depth: Int, walk: inout Walk) async
        -> SPFRecord.Qualifier?
    {
        guard depth < Self.maxDepth, walk.visited.insert(target.lowercased()).inserted else {
            walk.add("spf.loop", .failure, "\(term):\(target) in \(domain) loops back to a record already included")
            return nil
        }
        switch await fetch(target) {
        case .found(_, let record):
            return await evaluate(record, domain: target, depth: depth + 1, walk: &walk)
        case .none:
            // A void lookup when there are no TXT records at all, and a permerror either way (§5.2, §6.1).
            void(target, &walk)
            walk.add(
                "spf.\(term)-missing", .failure,
                "\(term):\(target) (in \(domain)) has no SPF record: receivers return permerror")
        case .multiple(let texts):
            walk.add("spf.\(term)-multiple", .failure, "\(term):\(target) has \(texts.count) SPF records")
        case .invalid(let text, let error):
            walk.add("spf.\(term)-syntax", .failure, "\(term):\(target) does not parse: \(error)", text)
        case .failed(let error):
            walk.add("spf.dns", .warning, "\(term):\(target) could not be looked up: \(error)")
        }
        return nil
    }

    private func void(_ name: String, _ walk: inout Walk) {
        walk.voids += 1
        walk.voidNames.append(name)
    }

    static func argument(_ mechanism: SPFRecord.Mechanism) -> String {
        switch mechanism {
        case .include(let d), .exists(let d): ":" + d
        case .a(let d, let c), .mx(let d, let c): (d.map { ":" + $0 } ?? "") + (c ?? "")
        case .ptr(let d): d.map { ":" + $0 } ?? ""
        case .ip4(let n), .ip6(let n): ":" + n
        case .all: ""
        }
    }
}
