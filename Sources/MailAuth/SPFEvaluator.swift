import DNSClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// RFC 7208 `check_host()`: is `ip` allowed to send mail for `domain`?
///
/// Every mechanism (§5), `redirect=` and `exp=` (§6), macros (§7) and the processing limits of §4.6.4:
/// at most 10 DNS-querying terms (`include`, `a`, `mx`, `ptr`, `exists`, `redirect`) through all
/// includes, at most 2 of them finding nothing ("void lookups"), at most 10 MX names per `mx` and
/// 10 PTR names per `ptr` or `%{p}`. A syntax error anywhere in a record is a permerror before any
/// term is evaluated (§4.6); a DNS failure is a temperror (§4.4, §5).
///
///     let spf = SPFEvaluator(dns: ResolverSPFDNS(resolver: resolver))
///     let result = await spf.checkMailFrom(ip: client, mailFrom: "alice@example.org", helo: "mx.example.org")
///     result.kind  // .pass, .fail, ...
public struct SPFEvaluator: Sendable {
    /// RFC 7208 §4.6.4: DNS-querying terms per evaluation.
    public static let lookupLimit = 10
    /// RFC 7208 §4.6.4: terms whose lookup finds no records.
    public static let voidLookupLimit = 2
    /// RFC 7208 §4.6.4: MX names looked up for one `mx` mechanism.
    public static let mxNameLimit = 10
    /// RFC 7208 §4.6.4: PTR names examined for one `ptr` mechanism or `%{p}` macro.
    public static let ptrNameLimit = 10

    let dns: any SPFDNS
    /// This host's name for `%{r}` in explanations (§7.2); `unknown` when not given.
    public var receivingDomain: String
    /// Seconds since the epoch for `%{t}`.
    let timestamp: @Sendable () -> Int

    public init(
        dns: any SPFDNS, receivingDomain: String = "unknown",
        timestamp: @escaping @Sendable () -> Int = { Int(time(nil)) }
    ) {
        self.dns = dns
        self.receivingDomain = receivingDomain
        self.timestamp = timestamp
    }

    /// The MAIL FROM identity (RFC 7208 §2.4): the domain of `mailFrom`, or `postmaster@<helo>`
    /// when the reverse-path is null.
    public func checkMailFrom(ip: DNSIPAddress, mailFrom: String, helo: String) async -> SPFResult {
        let sender = mailFrom.isEmpty ? "postmaster@" + helo : mailFrom
        let domain = sender.lastIndex(of: "@").map { String(sender[sender.index(after: $0)...]) } ?? sender
        return await checkHost(ip: ip, domain: domain, sender: sender, helo: helo)
    }

    /// The HELO identity (RFC 7208 §2.3).
    public func checkHelo(ip: DNSIPAddress, helo: String) async -> SPFResult {
        await checkHost(ip: ip, domain: helo, sender: "postmaster@" + helo, helo: helo)
    }

    /// `check_host(<ip>, <domain>, <sender>)` of RFC 7208 §4.
    public func checkHost(ip: DNSIPAddress, domain: String, sender: String, helo: String) async -> SPFResult {
        var walk = Walk()
        let client = Self.unmapped(ip)
        let context = SPFMacroContext(
            sender: sender.contains("@") ? sender : "postmaster@" + sender, domain: domain, ip: client, helo: helo,
            receiver: receivingDomain, timestamp: timestamp())
        let outcome = await evaluate(domain: domain, context: context, walk: &walk)
        var result = outcome
        result.domain = domain
        result.lookups = walk.lookups
        result.voidLookups = walk.voids
        return result
    }

    // MARK: Evaluation

    struct Walk {
        var lookups = 0
        var voids = 0
    }

    /// Stops evaluation with a temperror or permerror.
    struct Stop: Error {
        var kind: SPFResult.Kind
        var reason: String
    }

    /// `check_host()` of one domain; `explains` is false inside an `include`, whose fail is only a
    /// non-match (§5.2) and needs no `exp=` lookup.
    func evaluate(domain: String, context: SPFMacroContext, walk: inout Walk, explains: Bool = true) async
        -> SPFResult
    {
        // §4.3: a malformed or single-label domain has no policy.
        guard Self.isValidDomain(domain) else {
            return SPFResult(kind: .none, domain: domain, reason: "'\(domain)' is not a usable domain name")
        }
        let texts: [String]
        do {
            texts = try await dns.txt(domain)
        } catch {
            return SPFResult(kind: .temperror, domain: domain, reason: "TXT lookup of \(domain) failed: \(error)")
        }
        let records = texts.filter(SPFRecord.isSPF)
        guard let text = records.first else {
            return SPFResult(kind: .none, domain: domain, reason: "\(domain) has no SPF record")
        }
        guard records.count == 1 else {
            return SPFResult(
                kind: .permerror, domain: domain, reason: "\(domain) has \(records.count) SPF records (§4.5)")
        }
        let record: SPFRecord
        do {
            record = try SPFRecord(parsing: text)
        } catch {
            return SPFResult(kind: .permerror, domain: domain, reason: "the SPF record of \(domain): \(error)")
        }
        var context = context
        context.domain = domain
        do {
            for directive in record.directives {
                let mechanism = directive.mechanism
                if mechanism.countsAsLookup { try count(&walk, "\(domain): \(mechanism.name)") }
                guard try await matches(mechanism, context: context, walk: &walk) else { continue }
                let written = Self.written(directive)
                switch directive.qualifier {
                case .pass:
                    return SPFResult(
                        kind: .pass, domain: domain, mechanism: written, reason: "\(domain) allows it by '\(written)'")
                case .neutral:
                    return SPFResult(
                        kind: .neutral, domain: domain, mechanism: written,
                        reason: "\(domain) says nothing of it ('\(written)')")
                case .softfail:
                    return SPFResult(
                        kind: .softfail, domain: domain, mechanism: written,
                        reason: "\(domain) probably does not allow it ('\(written)')")
                case .fail:
                    let explanation = explains ? await explain(record, context: context) : nil
                    return SPFResult(
                        kind: .fail, domain: domain, mechanism: written, explanation: explanation,
                        reason: "\(domain) does not allow it ('\(written)')")
                }
            }
            if let redirect = record.redirect {
                try count(&walk, "\(domain): redirect")
                guard let target = context.expandDomain(redirect) else {
                    throw Stop(kind: .permerror, reason: "redirect=\(redirect) has a bad macro")
                }
                var result = await evaluate(domain: target, context: context, walk: &walk, explains: explains)
                if result.kind == .none {
                    // §6.1: a redirect to a domain without a record is a permerror.
                    result.kind = .permerror
                    result.reason = "redirect=\(target): \(result.reason)"
                }
                return result
            }
        } catch let stop as Stop {
            return SPFResult(kind: stop.kind, domain: domain, reason: stop.reason)
        } catch {
            return SPFResult(kind: .permerror, domain: domain, reason: "\(error)")
        }
        // §4.7: nothing matched and no redirect.
        return SPFResult(kind: .neutral, domain: domain, reason: "no mechanism of \(domain) matched (default neutral)")
    }

    func count(_ walk: inout Walk, _ what: String) throws(Stop) {
        walk.lookups += 1
        if walk.lookups > Self.lookupLimit {
            throw Stop(
                kind: .permerror,
                reason: "more than \(Self.lookupLimit) DNS-querying terms (§4.6.4), the 11th at \(what)")
        }
    }

    func void(_ walk: inout Walk, _ name: String) throws(Stop) {
        walk.voids += 1
        if walk.voids > Self.voidLookupLimit {
            throw Stop(
                kind: .permerror,
                reason: "more than \(Self.voidLookupLimit) lookups found nothing (§4.6.4), the last for \(name)")
        }
    }

    func matches(_ mechanism: SPFRecord.Mechanism, context: SPFMacroContext, walk: inout Walk) async throws -> Bool {
        let ip = context.ip
        switch mechanism {
        case .all:
            return true
        case .ip4(let network):
            guard ip.isIPv4 else { return false }
            return Self.contains(network: network, ip)
        case .ip6(let network):
            guard !ip.isIPv4 else { return false }
            return Self.contains(network: network, ip)
        case .include(let spec):
            let target = try await targetName(spec, context: context)
            let result = await evaluate(domain: target, context: context, walk: &walk, explains: false)
            switch result.kind {
            case .pass: return true
            case .fail, .softfail, .neutral: return false
            case .temperror: throw Stop(kind: .temperror, reason: "include:\(target): \(result.reason)")
            case .permerror: throw Stop(kind: .permerror, reason: "include:\(target): \(result.reason)")
            case .none:
                // §5.2: an include target without a record is a permerror (its TXT lookup was void).
                throw Stop(kind: .permerror, reason: "include:\(target) has no SPF record")
            }
        case .a(let spec, let cidr):
            let target = try await targetName(spec ?? "%{d}", context: context)
            let addresses = try await addresses(of: target, family: ip)
            if addresses.isEmpty { try void(&walk, target) }
            let (v4, v6) = Self.dualCIDR(cidr)
            return addresses.contains { Self.contains($0, ip, prefix: ip.isIPv4 ? v4 : v6) }
        case .mx(let spec, let cidr):
            let target = try await targetName(spec ?? "%{d}", context: context)
            let names: [String]
            do {
                names = try await dns.mx(target)
            } catch {
                throw Stop(kind: .temperror, reason: "MX lookup of \(target) failed: \(error)")
            }
            if names.isEmpty { try void(&walk, target) }
            guard names.count <= Self.mxNameLimit else {
                throw Stop(
                    kind: .permerror, reason: "\(target) has \(names.count) MX names, over \(Self.mxNameLimit) (§4.6.4)"
                )
            }
            let (v4, v6) = Self.dualCIDR(cidr)
            for name in names where !name.isEmpty {
                let addresses = try await addresses(of: name, family: ip)
                if addresses.contains(where: { Self.contains($0, ip, prefix: ip.isIPv4 ? v4 : v6) }) { return true }
            }
            return false
        case .ptr(let spec):
            let target = try await targetName(spec ?? "%{d}", context: context)
            let validated = await validatedNames(ip)
            let wanted = target.lowercased()
            return validated.contains { name in
                let n = name.lowercased()
                return n == wanted || n.hasSuffix("." + wanted)
            }
        case .exists(let spec):
            let target = try await targetName(spec, context: context)
            let addresses: [DNSIPAddress]
            do {
                // §5.7: always an A lookup, whatever the client's address family.
                addresses = try await dns.a(target)
            } catch {
                throw Stop(kind: .temperror, reason: "A lookup of \(target) failed: \(error)")
            }
            if addresses.isEmpty { try void(&walk, target) }
            return !addresses.isEmpty
        }
    }

    func targetName(_ spec: String, context: SPFMacroContext) async throws(Stop) -> String {
        var context = context
        if spec.contains("%{p") || spec.contains("%{P") {
            context.validatedName = await validatedName(context)
        }
        guard let name = context.expandDomain(spec) else {
            throw Stop(kind: .permerror, reason: "'\(spec)' has a bad macro")
        }
        return name
    }

    /// `%{p}` (§7.3): a validated name of the client, preferring the domain itself or a name below
    /// it; `unknown` when none validates.
    func validatedName(_ context: SPFMacroContext) async -> String {
        let names = await validatedNames(context.ip)
        let domain = context.domain.lowercased()
        return names.first { $0.lowercased() == domain }
            ?? names.first { $0.lowercased().hasSuffix("." + domain) }
            ?? names.first ?? "unknown"
    }

    func addresses(of name: String, family ip: DNSIPAddress) async throws(Stop) -> [DNSIPAddress] {
        guard Self.isValidDomain(name) else { return [] }
        do {
            return ip.isIPv4 ? try await dns.a(name) : try await dns.aaaa(name)
        } catch {
            throw Stop(kind: .temperror, reason: "address lookup of \(name) failed: \(error)")
        }
    }

    /// §5.5: the client's PTR names (the first 10) whose forward lookup gives the client's address back.
    func validatedNames(_ ip: DNSIPAddress) async -> [String] {
        guard let names = try? await dns.ptr(ip) else { return [] }
        var validated: [String] = []
        for name in names.prefix(Self.ptrNameLimit) {
            guard Self.isValidDomain(name) else { continue }
            let found = (try? await (ip.isIPv4 ? dns.a(name) : dns.aaaa(name))) ?? []
            if found.contains(ip) { validated.append(name) }
        }
        return validated
    }

    /// §6.2: the `exp=` text for a fail, or nil when there is none or it cannot be had.
    func explain(_ record: SPFRecord, context: SPFMacroContext) async -> String? {
        guard let spec = record.explanation, let target = context.expandDomain(spec),
            Self.isValidDomain(target), let texts = try? await dns.txt(target), texts.count == 1
        else { return nil }
        var context = context
        if texts[0].contains("%{p") || texts[0].contains("%{P") {
            context.validatedName = await validatedName(context)
        }
        guard let text = context.expand(texts[0], explanation: true),
            text.unicodeScalars.allSatisfy({ $0.isASCII })
        else { return nil }
        return text
    }

    // MARK: Addresses and names

    /// An IPv4-mapped IPv6 address is evaluated as the IPv4 address it carries (RFC 7208 §5).
    static func unmapped(_ ip: DNSIPAddress) -> DNSIPAddress {
        guard !ip.isIPv4, ip.bytes[0..<10].allSatisfy({ $0 == 0 }), ip.bytes[10] == 0xFF, ip.bytes[11] == 0xFF
        else { return ip }
        return DNSIPAddress(bytes: Array(ip.bytes[12...])) ?? ip
    }

    /// `/n`, `//n` or `/n//m` of `a` and `mx` (§5.6); absent lengths are the full address.
    static func dualCIDR(_ text: String?) -> (Int, Int) {
        guard let text else { return (32, 128) }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        switch parts.count {
        case 1: return (Int(parts[0]) ?? 32, 128)
        case 2: return (32, Int(parts[1]) ?? 128)
        case 3: return (Int(parts[0]) ?? 32, Int(parts[2]) ?? 128)
        default: return (32, 128)
        }
    }

    /// `192.0.2.0/24` or `2001:db8::/32` contains `ip`.
    static func contains(network: String, _ ip: DNSIPAddress) -> Bool {
        let pieces = network.split(separator: "/", maxSplits: 1)
        guard let base = pieces.first.flatMap({ DNSIPAddress(String($0)) }) else { return false }
        let prefix = pieces.count == 2 ? Int(pieces[1]) ?? 0 : base.bytes.count * 8
        return contains(base, ip, prefix: prefix)
    }

    /// The first `prefix` bits of `a` and `b` agree (and both are of one family).
    static func contains(_ a: DNSIPAddress, _ b: DNSIPAddress, prefix: Int) -> Bool {
        guard a.bytes.count == b.bytes.count else { return false }
        var bits = min(prefix, a.bytes.count * 8)
        var index = 0
        while bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if a.bytes[index] & mask != b.bytes[index] & mask { return false }
            bits -= 8
            index += 1
        }
        return true
    }

    /// §4.3: a multi-label name, no empty label (a trailing dot aside), labels of at most 63 octets.
    static func isValidDomain(_ domain: String) -> Bool {
        var name = Substring(domain)
        if name.hasSuffix(".") { name = name.dropLast() }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return labels.count >= 2 && name.utf8.count <= SPFMacroContext.maxDomainLength
            && labels.allSatisfy { !$0.isEmpty && $0.utf8.count <= 63 }
            && !name.contains { $0 == "[" || $0 == "]" }
    }

    static func written(_ directive: SPFRecord.Directive) -> String {
        let qualifier = directive.qualifier == .pass ? "" : String(directive.qualifier.rawValue)
        let argument: String
        switch directive.mechanism {
        case .all: argument = ""
        case .include(let d), .exists(let d): argument = ":" + d
        case .a(let d, let c), .mx(let d, let c): argument = (d.map { ":" + $0 } ?? "") + (c ?? "")
        case .ptr(let d): argument = d.map { ":" + $0 } ?? ""
        case .ip4(let n), .ip6(let n): argument = ":" + n
        }
        return qualifier + directive.mechanism.name + argument
    }
}
