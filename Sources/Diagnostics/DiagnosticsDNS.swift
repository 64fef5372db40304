import DNSClient

/// The DNS the checks ask: Mailflow's own ``DNSResolver`` (talking only to the configured servers),
/// or a table in tests.
public protocol DiagnosticsDNS: Sendable {
    /// Records of `type` at `name`, CNAMEs followed; throws NXDOMAIN/NODATA and transient failures.
    func query(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> DNSAnswer
}

extension DNSResolver: DiagnosticsDNS {}

/// What one lookup came to, with the negative answers (which checks report) kept apart from failures.
enum LookupOutcome<Value: Sendable>: Sendable {
    case found(Value, DNSAnswer)
    /// NXDOMAIN or NODATA: a "void lookup" in RFC 7208 §4.6.4's words.
    case none(DNSError)
    /// A timeout, SERVFAIL or network error: the check cannot tell.
    case failed(DNSError)
}

extension DiagnosticsDNS {
    func lookup(_ name: String, _ type: DNSRecordType) async -> LookupOutcome<[DNSResourceRecord]> {
        do {
            let answer = try await query(name, type)
            return answer.records.isEmpty ? .none(.noData(answer.name, type)) : .found(answer.records, answer)
        } catch {
            return error.isPermanent ? .none(error) : .failed(error)
        }
    }

    /// The TXT strings at `name`, character-strings of one record concatenated (RFC 7208 §3.3).
    func txt(_ name: String) async -> LookupOutcome<[String]> {
        switch await lookup(name, .txt) {
        case .found(let records, let answer):
            let texts = records.compactMap { record -> String? in
                guard case .txt(let strings) = record.data else { return nil }
                return String(decoding: strings.joined(), as: UTF8.self)
            }
            return .found(texts, answer)
        case .none(let e): return .none(e)
        case .failed(let e): return .failed(e)
        }
    }

    /// A and AAAA addresses of `host`, asked in parallel; `.none` only when both are negative.
    func addresses(_ host: String) async -> LookupOutcome<[DNSIPAddress]> {
        async let v4 = lookup(host, .a)
        async let v6 = lookup(host, .aaaa)
        var found: [DNSIPAddress] = []
        var firstAnswer: DNSAnswer?
        var negative: DNSError?
        var failure: DNSError?
        for outcome in await [v4, v6] {
            switch outcome {
            case .found(_, let answer):
                found += answer.addresses
                firstAnswer = firstAnswer ?? answer
            case .none(let e): negative = negative ?? e
            case .failed(let e): failure = failure ?? e
            }
        }
        if let firstAnswer, !found.isEmpty { return .found(found, firstAnswer) }
        if let failure { return .failed(failure) }
        return .none(negative ?? .timeout)
    }
}

extension DNSName {
    /// The name without the trailing dot, lowercased.
    var plain: String { lowercased.unrooted }
}
