/// DMARC (RFC 7489): policy discovery over DNS and the pure verdict over authentication results.
///
/// Discovery (§6.6.3) asks `_dmarc.<From domain>`, then, when that holds no DMARC record,
/// `_dmarc.<organizational domain>`; several records mean no policy, a record without a valid `p=`
/// counts as `p=none` only when it has a valid `rua=`. The verdict (§4.2, §3.1) passes when SPF
/// passed for a domain aligned with the From domain or a DKIM signature passed with an aligned
/// `d=`; relaxed alignment compares organizational domains, strict the names themselves.
///
///     let discovery = await DMARCEvaluator.discover(fromDomain: "news.example.org", dns: dns)
///     let verdict = DMARCEvaluator.evaluate(
///         fromDomain: "news.example.org", spf: .pass, spfDomain: "bounce.example.org",
///         dkim: [DMARCDKIMInput(domain: "example.org", passed: true)], discovery: discovery)
///     verdict.kind  // .pass (relaxed alignment)
public enum DMARCEvaluator {
    /// Policy discovery (RFC 7489 §6.6.3).
    public static func discover(
        fromDomain: String, dns: any SPFDNS, publicSuffixes: PublicSuffixList = .system
    ) async -> DMARCDiscovery {
        let from = normalized(fromDomain)
        var source = from
        var texts: [String]
        do {
            texts = try await dns.txt("_dmarc." + from).filter(DMARCRecord.isDMARC)
            let organizational = publicSuffixes.organizationalDomain(of: from)
            if texts.isEmpty, organizational != from {
                source = organizational
                texts = try await dns.txt("_dmarc." + organizational).filter(DMARCRecord.isDMARC)
            }
        } catch {
            return .temperror(reason: "DMARC lookup failed: \(error)")
        }
        guard let text = texts.first else { return .none(reason: "no DMARC record for \(from)") }
        guard texts.count == 1 else {
            return .none(reason: "\(texts.count) DMARC records at _dmarc.\(source): none applies (§6.6.3)")
        }
        do {
            var record = try DMARCRecord(parsing: text)
            if record.policy == nil {
                guard !record.aggregateReports.isEmpty else {
                    return .none(reason: "the record at _dmarc.\(source) has no p= and no rua= (§6.6.3)")
                }
                record.policy = DMARCRecord.Policy.none
            }
            return .found(record, domain: source)
        } catch {
            if case .badValue(let tag, _, _) = error, tag == "p" || tag == "sp" {
                // §6.6.3 step 6: an invalid p= or sp= is p=none when rua= is usable, else no policy.
                let kept = text.split(separator: ";").filter { spec in
                    let name = DMARCRecord.trimmed(spec.prefix { $0 != "=" })
                    return name != "p" && name != "sp"
                }
                if var record = try? DMARCRecord(parsing: kept.joined(separator: ";")),
                    !record.aggregateReports.isEmpty
                {
                    record.policy = DMARCRecord.Policy.none
                    return .found(record, domain: source)
                }
                return .none(reason: "the record at _dmarc.\(source): \(error), and no rua= (§6.6.3)")
            }
            return .permerror(reason: "the record at _dmarc.\(source) does not parse: \(error)")
        }
    }

    /// The verdict and policy for one message: pure over its inputs.
    /// - Parameters:
    ///   - spf: the SPF result for the MAIL FROM identity, and `spfDomain` the domain it was for.
    ///   - dkim: every DKIM signature's `d=` and whether it verified.
    ///   - pctSample: a number in 0..<100 drawn per message; the policy applies when it is below `pct=`.
    public static func evaluate(
        fromDomain: String, spf: SPFResult.Kind, spfDomain: String, dkim: [DMARCDKIMInput],
        discovery: DMARCDiscovery, pctSample: Int = 0, publicSuffixes: PublicSuffixList = .system
    ) -> DMARCResult {
        let from = normalized(fromDomain)
        let organizational = publicSuffixes.organizationalDomain(of: from)
        var result = DMARCResult(
            kind: .none, fromDomain: from, organizationalDomain: organizational, recordDomain: nil,
            requestedPolicy: nil, policy: .none, sampledOut: false, spfAligned: false, alignedDKIMDomain: nil,
            reason: "")
        let record: DMARCRecord
        switch discovery {
        case .none(let reason):
            result.reason = reason
            return result
        case .temperror(let reason):
            result.kind = .temperror
            result.reason = reason
            return result
        case .permerror(let reason):
            result.kind = .permerror
            result.reason = reason
            return result
        case .found(let found, let domain):
            record = found
            result.recordDomain = domain
        }
        func aligned(_ domain: String, _ mode: DMARCRecord.Alignment) -> Bool {
            let d = normalized(domain)
            return mode == .strict ? d == from : publicSuffixes.organizationalDomain(of: d) == organizational
        }
        result.spfAligned = spf == .pass && aligned(spfDomain, record.spfAlignment)
        result.alignedDKIMDomain = dkim.first { $0.passed && aligned($0.domain, record.dkimAlignment) }?.domain
        let requested =
            (result.recordDomain != from ? record.subdomainPolicy : nil) ?? record.policy ?? DMARCRecord.Policy.none
        result.requestedPolicy = requested
        if result.spfAligned || result.alignedDKIMDomain != nil {
            result.kind = .pass
            result.reason =
                result.alignedDKIMDomain.map { "DKIM d=\($0) aligned with \(from)" }
                ?? "SPF pass for \(normalized(spfDomain)) aligned with \(from)"
            return result
        }
        result.kind = .fail
        var why: [String] = []
        if spf != .pass {
            why.append("SPF \(spf.rawValue)")
        } else {
            why.append(
                "SPF domain \(normalized(spfDomain)) not aligned (\(record.spfAlignment == .strict ? "strict" : "relaxed"))"
            )
        }
        if dkim.isEmpty {
            why.append("no DKIM signature")
        } else if !dkim.contains(where: \.passed) {
            why.append("no DKIM signature passed")
        } else {
            let passed = dkim.filter(\.passed).map { "d=\($0.domain)" }.joined(separator: ", ")
            why.append("DKIM \(passed) not aligned (\(record.dkimAlignment == .strict ? "strict" : "relaxed"))")
        }
        result.reason = why.joined(separator: "; ")
        if pctSample >= record.percent {
            // §6.6.4: a message left out by pct= gets the next milder policy.
            result.sampledOut = true
            result.policy =
                switch requested {
                case .reject: .quarantine
                case .quarantine, .none: .none
                }
        } else {
            result.policy = requested
        }
        return result
    }

    /// Discovery and verdict together.
    public static func check(
        fromDomain: String, spf: SPFResult.Kind, spfDomain: String, dkim: [DMARCDKIMInput], dns: any SPFDNS,
        pctSample: Int = 0, publicSuffixes: PublicSuffixList = .system
    ) async -> DMARCResult {
        let discovery = await discover(fromDomain: fromDomain, dns: dns, publicSuffixes: publicSuffixes)
        return evaluate(
            fromDomain: fromDomain, spf: spf, spfDomain: spfDomain, dkim: dkim, discovery: discovery,
            pctSample: pctSample, publicSuffixes: publicSuffixes)
    }

    static func normalized(_ domain: String) -> String {
        var d = domain.lowercased()
        while d.hasSuffix(".") { d.removeLast() }
        return d
    }
}
