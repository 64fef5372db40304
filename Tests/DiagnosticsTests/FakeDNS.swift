import DNSClient

@testable import Diagnostics

/// A DNS table for the checks: TXT, A, MX and TLSA answers by name; everything else is NXDOMAIN.
struct FakeDNS: DiagnosticsDNS {
    var txt: [String: [String]] = [:]
    var a: [String: [String]] = [:]
    var mx: [String: [(UInt16, String)]] = [:]
    var tlsa: [String: [TLSARecord]] = [:]
    var ptr: [String: [String]] = [:]
    var authenticated = false
    /// Names that exist (NODATA rather than NXDOMAIN for other types).
    var existing: Set<String> = []

    func query(_ name: String, _ type: DNSRecordType) async throws(DNSError) -> DNSAnswer {
        let key = name.lowercased().hasSuffix(".") ? String(name.lowercased().dropLast()) : name.lowercased()
        let owner = try! DNSName(key)
        var data: [DNSRecordData] = []
        switch type {
        case .txt: data = (txt[key] ?? []).map { .txt([Array($0.utf8)]) }
        case .a: data = (a[key] ?? []).compactMap { DNSIPAddress($0).map(DNSRecordData.a) }
        case .mx: data = (mx[key] ?? []).map { .mx(MXRecord(preference: $0.0, exchange: try! DNSName($0.1))) }
        case .tlsa: data = (tlsa[key] ?? []).map(DNSRecordData.tlsa)
        case .ptr: data = (ptr[key] ?? []).map { .ptr(try! DNSName($0)) }
        default: break
        }
        if data.isEmpty {
            let known =
                txt[key] != nil || a[key] != nil || mx[key] != nil || tlsa[key] != nil || ptr[key] != nil
                || existing.contains(key)
            throw known ? .noData(owner, type) : .nxdomain(owner)
        }
        return DNSAnswer(
            name: owner, type: type, canonicalName: owner,
            records: data.map { DNSResourceRecord(name: owner, type: type, ttl: 300, data: $0) }, ttl: 300,
            authenticated: authenticated)
    }
}

extension [CheckFinding] {
    /// The severity of the finding with `check` id (the first one).
    func severity(_ check: String) -> CheckSeverity? { first { $0.check == check }?.severity }
}
