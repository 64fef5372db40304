import DNSClient
import Foundation
import Ingress
import MailAuth
import MailQueue
import Metrics
import SMTPCore

/// SPF, DKIM and DMARC for a message received from another server, with Mailflow's resolver: the
/// `InboundAuthenticator` ingress asks once the body is durable (docs/sender-auth.md).
///
/// SPF checks the MAIL FROM identity (the HELO one for the null sender); DKIM checks every signature
/// (the verifier's cap applies) of messages up to `maxVerifiedSize`; DMARC takes the RFC5322.From
/// domain and both. The result becomes one `Authentication-Results` field, stored with the message
/// and put above this server's `Received:` at delivery. A DMARC `fail` under `p=reject` is refused
/// with `550 5.7.1` when the tenant says so (`tenants[].dmarc_reject`); otherwise it is recorded.
struct SenderAuthenticator: InboundAuthenticator {
    let authservID: String
    let dns: any SPFDNS
    let spf: SPFEvaluator
    let dkim: DKIMVerifier
    let now: @Sendable () -> Date
    let metricsFactory: any MetricsFactory
    /// Larger messages are not read into memory for DKIM (their signatures are reported `neutral`).
    static let maxVerifiedSize = 16 * 1024 * 1024

    init(
        authservID: String, resolver: DNSResolver, metricsFactory: any MetricsFactory,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.authservID = authservID
        let dns = ResolverSPFDNS(resolver: resolver)
        self.dns = dns
        self.spf = SPFEvaluator(dns: dns, receivingDomain: authservID)
        self.dkim = DKIMVerifier(resolver: DNSKeyResolver(resolver: resolver))
        self.now = now
        self.metricsFactory = metricsFactory
    }

    func authenticate(_ r: InboundAuthenticationRequest) async -> InboundAuthenticationVerdict {
        let spfResult: SPFResult
        if let ip = DNSIPAddress(r.clientAddress) {
            spfResult = await spf.checkMailFrom(ip: ip, mailFrom: r.mailFrom, helo: r.helo)
        } else {
            spfResult = SPFResult(kind: .none, domain: r.helo, reason: "no client IP address")
        }
        let message = Self.messageBytes(r.body, skip: r.stampLength)
        let parsed = message.flatMap { try? DKIMMessage(crlf: $0) }
        var dkimResults: [DKIMResult] = []
        if let parsed { dkimResults = await dkim.verify(parsed, now: now()) }
        let signatures = parsed.map(Self.signatureValues) ?? []
        var dmarc: DMARCResult?
        if let parsed, let from = Self.fromDomain(parsed) {
            dmarc = await DMARCEvaluator.check(
                fromDomain: from, spf: spfResult.kind, spfDomain: spfResult.domain,
                dkim: dkimResults.compactMap { d in
                    d.domain.map { DMARCDKIMInput(domain: $0, passed: d.status == .pass) }
                },
                dns: dns, pctSample: Int.random(in: 0..<100))
        }
        let results = AuthenticationResults(
            authservID: authservID,
            spf: .init(
                result: spfResult.kind, mailFrom: r.mailFrom.isEmpty ? nil : r.mailFrom,
                helo: r.mailFrom.isEmpty ? r.helo : nil),
            dkim: dkimResults.enumerated().map { i, d in
                AuthenticationResults.DKIM(
                    result: d.status.rawValue, domain: d.domain, selector: d.selector,
                    signature: i < signatures.count ? signatures[i] : nil, reason: d.reason?.description)
            },
            dmarc: dmarc.map(AuthenticationResults.DMARC.init))
        let dkimWord =
            dkimResults.isEmpty
            ? (message == nil ? "neutral" : "none")
            : (dkimResults.contains { $0.status == .pass } ? "pass" : dkimResults[0].status.rawValue)
        let authentication = SenderAuthentication(
            field: results.field, spf: spfResult.kind.rawValue, dkim: dkimWord, dmarc: dmarc?.kind.rawValue ?? "none")
        count(authentication)
        var rewritten: (body: MessageBody, size: Int)?
        if let parsed {
            // RFC 8601 §5: fields that claim this server's authserv-id came from outside; they go.
            let header = Array(parsed.bytes[0..<parsed.bodyStart])
            let filtered = AuthenticationResultsFilter(authservIDs: [authservID]).filter(header)
            if filtered.removed > 0 {
                rewritten = try? Self.rewrite(
                    r.body, stampLength: r.stampLength, message: filtered.header + parsed.bytes[parsed.bodyStart...])
            }
        }
        var refusal: SMTPReply?
        if r.honourReject, let dmarc, dmarc.kind == .fail, dmarc.policy == .reject {
            refusal = SMTPReply(
                550, .init(5, 7, 1),
                "Message rejected: it fails the DMARC policy of \(dmarc.recordDomain ?? dmarc.fromDomain) (p=reject)")
        }
        return InboundAuthenticationVerdict(authentication: authentication, refusal: refusal, rewrittenBody: rewritten)
    }

    /// The stored body with the message part replaced: a new inline body, or the spool file written
    /// anew beside the old one, synced and renamed over it (the message is not committed yet).
    static func rewrite(_ body: MessageBody, stampLength: Int, message: [UInt8]) throws -> (
        body: MessageBody, size: Int
    ) {
        switch body {
        case .inline(let d):
            var out = Data(d.prefix(stampLength))
            out.append(contentsOf: message)
            return (.inline(out), out.count)
        case .spooled(let path):
            guard let h = FileHandle(forReadingAtPath: path) else { throw RewriteError(path: path) }
            let stamp = try h.read(upToCount: stampLength) ?? Data()
            try? h.close()
            var out = stamp
            out.append(contentsOf: message)
            let temporary = path + ".rewrite"
            guard
                FileManager.default.createFile(atPath: temporary, contents: out, attributes: [.posixPermissions: 0o600])
            else { throw RewriteError(path: temporary) }
            try FileSync.sync(path: temporary)
            guard rename(temporary, path) == 0 else { throw RewriteError(path: path) }
            try FileSync.sync(path: URL(fileURLWithPath: path).deletingLastPathComponent().path)
            return (.spooled(path: path), out.count)
        }
    }

    struct RewriteError: Error {
        var path: String
    }

    /// `mailflow_sender_auth_total{method, result}`.
    func count(_ a: SenderAuthentication) {
        for (method, result) in [("spf", a.spf), ("dkim", a.dkim), ("dmarc", a.dmarc)] {
            Counter(
                label: "mailflow_sender_auth_total", dimensions: [("method", method), ("result", result)],
                factory: metricsFactory
            ).increment()
        }
    }

    /// The message as received (without this server's stamp), or nil when it is too large to verify.
    static func messageBytes(_ body: MessageBody, skip: Int) -> [UInt8]? {
        switch body {
        case .inline(let d):
            guard d.count - skip <= maxVerifiedSize else { return nil }
            return Array(d.dropFirst(skip))
        case .spooled(let path):
            guard let h = FileHandle(forReadingAtPath: path) else { return nil }
            defer { try? h.close() }
            guard (try? h.seek(toOffset: UInt64(skip))) != nil,
                let d = try? h.read(upToCount: maxVerifiedSize + 1), d.count <= maxVerifiedSize
            else { return nil }
            return Array(d)
        }
    }

    /// The `b=` value of each DKIM-Signature field, in order (for `header.b`, RFC 6008).
    static func signatureValues(_ m: DKIMMessage) -> [String] {
        m.headerFields.filter { $0.lowercasedName == "dkim-signature" }.map { field in
            let value = String(decoding: field.value, as: UTF8.self)
            for tag in value.split(separator: ";") {
                let t = tag.trimmingCharacters(in: .whitespacesAndNewlines)
                if t.hasPrefix("b=") { return String(t.dropFirst(2)).filter { !$0.isWhitespace } }
            }
            return ""
        }
    }

    /// The RFC5322.From domain (RFC 7489 §6.6.1): exactly one From field with exactly one address;
    /// nil otherwise (DMARC is then not evaluated).
    static func fromDomain(_ m: DKIMMessage) -> String? {
        let froms = m.headerFields.filter { $0.lowercasedName == "from" }
        guard froms.count == 1 else { return nil }
        let value = String(decoding: froms[0].value, as: UTF8.self)
        let ats = value.filter { $0 == "@" }.count
        guard ats == 1, let at = value.firstIndex(of: "@") else { return nil }
        let domain = value[value.index(after: at)...].prefix { !">) \t\r\n,;".contains($0) }
        return domain.isEmpty ? nil : domain.lowercased()
    }
}
