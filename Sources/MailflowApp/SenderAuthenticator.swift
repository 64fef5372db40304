import DNSClient
import Foundation
import Ingress
import MailAuth
import MailMessage
import MailQueue
import Metrics
import NIOPosix
import SMTPCore

/// SPF, DKIM and DMARC for a message received from another server, with Mailflow's resolver: the
/// `InboundAuthenticator` ingress asks once the body is durable (docs/sender-auth.md).
///
/// SPF checks the MAIL FROM identity (the HELO one for the null sender); DKIM checks every signature
/// (the verifier's cap applies) of messages up to `maxVerifiedSize`; DMARC takes the RFC5322.From
/// domain and both. The header section is read on its own (bounded), so a large or oddly formed
/// message still gets its From judged and its forged `Authentication-Results` removed. The result is
/// one `Authentication-Results` field, stored with the message and put above this server's
/// `Received:` at delivery. A DMARC `fail` under `p=reject`, or a From that does not name exactly one
/// address (RFC 7489 §6.6.1), is refused with `550 5.7.1` when the tenant says so
/// (`tenants[].dmarc_reject`); otherwise it is recorded.
struct SenderAuthenticator: InboundAuthenticator {
    let authservID: String
    let dns: any SPFDNS
    let spf: SPFEvaluator
    let dkim: DKIMVerifier
    let now: @Sendable () -> Date
    let metricsFactory: any MetricsFactory
    /// File reads and the spool rewrite: never on the cooperative pool.
    let blockingPool: NIOThreadPool
    /// Larger messages are not read into memory for DKIM (their signatures are not checked).
    static let maxVerifiedSize = 16 * 1024 * 1024
    /// The most of a header section read for From and the forged-field filter.
    static let maxHeaderSize = 1024 * 1024
    /// SPF, DKIM and DMARC together (RFC 7208 §4.6.4 suggests at least 20 s for SPF alone).
    static let deadline: Duration = .seconds(30)

    init(
        authservID: String, resolver: DNSResolver, metricsFactory: any MetricsFactory,
        blockingPool: NIOThreadPool = .singleton, now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.authservID = authservID
        let dns = ResolverSPFDNS(resolver: resolver)
        self.dns = dns
        self.spf = SPFEvaluator(dns: dns, receivingDomain: authservID)
        self.dkim = DKIMVerifier(resolver: DNSKeyResolver(resolver: resolver))
        self.now = now
        self.metricsFactory = metricsFactory
        self.blockingPool = blockingPool
    }

    /// The message as read for checking: its header section (up to the blank line, bounded) and,
    /// when small enough, the whole message.
    struct Read: Sendable {
        var header: [UInt8]
        var whole: [UInt8]?
    }

    func authenticate(_ r: InboundAuthenticationRequest) async -> InboundAuthenticationVerdict {
        let read: Read
        do {
            read = try await blockingPool.runIfActive { try Self.read(r.body, skip: r.stampLength) }
        } catch {
            return Self.localError(
                "the stored message could not be read: \(error)", spf: "none", authservID: authservID)
        }
        let checked = await Self.within(Self.deadline) { await self.check(r, read) }
        var verdict = checked ?? Self.timedOut(r, authservID: authservID)
        count(verdict.authentication)
        // RFC 8601 §5: fields that claim this server's authserv-id came from outside; they go.
        let filtered = AuthenticationResultsFilter(authservIDs: [authservID]).filter(read.header)
        if filtered.removed > 0, verdict.refusal == nil {
            do {
                let header = filtered.header
                verdict.rewrittenBody = try await blockingPool.runIfActive {
                    try Self.rewrite(
                        r.body, stampLength: r.stampLength, oldHeaderLength: read.header.count, header: header)
                }
            } catch {
                verdict.refusal = SMTPReply(451, .init(4, 3, 0), "Local error in processing, try again later")
            }
        }
        return verdict
    }

    func check(_ r: InboundAuthenticationRequest, _ read: Read) async -> InboundAuthenticationVerdict {
        let spfResult: SPFResult
        if let ip = DNSIPAddress(r.clientAddress) {
            spfResult = await spf.checkMailFrom(ip: ip, mailFrom: r.mailFrom, helo: r.helo)
        } else {
            spfResult = SPFResult(kind: .none, domain: r.helo, reason: "no client IP address")
        }
        let parsed = read.whole.flatMap { try? DKIMMessage(crlf: $0) }
        var dkimResults: [DKIMResult] = []
        if let parsed { dkimResults = await dkim.verify(parsed, now: now()) }
        let signatures = parsed.map(Self.signatureValues) ?? []
        var dmarc: DMARCResult?
        var refusal: SMTPReply?
        let dmarcWord: String
        switch FromField.identity(header: read.header) {
        case .domain(let from):
            let result = await DMARCEvaluator.check(
                fromDomain: from, spf: spfResult.kind, spfDomain: spfResult.domain,
                dkim: dkimResults.compactMap { d in
                    d.domain.map { DMARCDKIMInput(domain: $0, passed: d.status == .pass) }
                },
                dns: dns, pctSample: Int.random(in: 0..<100))
            dmarc = result
            dmarcWord = result.kind.rawValue
            if r.honourReject, result.kind == .fail, result.policy == .reject {
                refusal = SMTPReply(
                    550, .init(5, 7, 1),
                    "Message rejected: it fails the DMARC policy of \(result.recordDomain ?? result.fromDomain) (p=reject)"
                )
            }
        case .invalid(let why):
            // RFC 7489 §6.6.1: no DMARC identity to judge; such mail is refused where DMARC is enforced.
            dmarcWord = "permerror"
            if r.honourReject {
                refusal = SMTPReply(550, .init(5, 7, 1), "Message rejected: \(why) (RFC 7489 6.6.1)")
            }
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
            ? (read.whole == nil ? "neutral" : "none")
            : (dkimResults.contains { $0.status == .pass } ? "pass" : dkimResults[0].status.rawValue)
        return InboundAuthenticationVerdict(
            authentication: SenderAuthentication(
                field: results.field, spf: spfResult.kind.rawValue, dkim: dkimWord, dmarc: dmarcWord),
            refusal: refusal)
    }

    /// Past the deadline: temperror for what could not finish; the message is taken.
    static func timedOut(_ r: InboundAuthenticationRequest, authservID: String) -> InboundAuthenticationVerdict {
        let results = AuthenticationResults(
            authservID: authservID,
            spf: .init(result: .temperror, mailFrom: r.mailFrom.isEmpty ? nil : r.mailFrom, reason: "timed out"))
        return InboundAuthenticationVerdict(
            authentication: SenderAuthentication(
                field: results.field, spf: "temperror", dkim: "temperror", dmarc: "temperror"))
    }

    static func localError(_ why: String, spf: String, authservID: String) -> InboundAuthenticationVerdict {
        InboundAuthenticationVerdict(
            authentication: SenderAuthentication(
                field: AuthenticationResults(authservID: authservID).field, spf: spf, dkim: "none", dmarc: "none"),
            refusal: SMTPReply(451, .init(4, 3, 0), "Local error in processing, try again later"))
    }

    /// `body()`'s result, or nil once `limit` has passed (the work is cancelled).
    static func within<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
        await withTaskGroup(of: T?.self) { group in
            group.addTask { await body() }
            group.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
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

    /// The header section (bounded) and, up to `maxVerifiedSize`, the whole message, without this
    /// server's stamp. Blocking.
    static func read(_ body: MessageBody, skip: Int) throws -> Read {
        let whole: [UInt8]?
        let start: [UInt8]
        switch body {
        case .inline(let d):
            let message = d.dropFirst(skip)
            whole = message.count <= maxVerifiedSize ? Array(message) : nil
            start = whole ?? Array(message.prefix(maxHeaderSize))
        case .spooled(let path):
            guard let h = FileHandle(forReadingAtPath: path) else { throw RewriteError(path: path) }
            defer { try? h.close() }
            try h.seek(toOffset: UInt64(skip))
            let d = try h.read(upToCount: maxVerifiedSize + 1) ?? Data()
            whole = d.count <= maxVerifiedSize ? Array(d) : nil
            start = whole ?? Array(d.prefix(maxHeaderSize))
        }
        return Read(header: FromField.headerSection(start), whole: whole)
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

    /// The stored body with its header section replaced: a new inline body, or the spool file written
    /// anew beside the old one (stamp, new header, the rest copied in chunks), synced and renamed over
    /// it; the message is not committed yet. On failure the temporary file is removed and it throws.
    static func rewrite(_ body: MessageBody, stampLength: Int, oldHeaderLength: Int, header: [UInt8]) throws -> (
        body: MessageBody, size: Int
    ) {
        switch body {
        case .inline(let d):
            var out = Data(d.prefix(stampLength))
            out.append(contentsOf: header)
            out.append(d.dropFirst(stampLength + oldHeaderLength))
            return (.inline(out), out.count)
        case .spooled(let path):
            let temporary = path + ".rewrite"
            var renamed = false
            defer { if !renamed { unlink(temporary) } }
            guard let source = FileHandle(forReadingAtPath: path),
                FileManager.default.createFile(
                    atPath: temporary, contents: nil, attributes: [.posixPermissions: 0o600]),
                let sink = FileHandle(forWritingAtPath: temporary)
            else { throw RewriteError(path: temporary) }
            defer {
                try? source.close()
                try? sink.close()
            }
            var size = 0
            let stamp = try source.read(upToCount: stampLength) ?? Data()
            try sink.write(contentsOf: stamp)
            try sink.write(contentsOf: Data(header))
            size += stamp.count + header.count
            try source.seek(toOffset: UInt64(stampLength + oldHeaderLength))
            while let chunk = try source.read(upToCount: 256 * 1024), !chunk.isEmpty {
                try sink.write(contentsOf: chunk)
                size += chunk.count
            }
            try sink.synchronize()
            guard rename(temporary, path) == 0 else { throw RewriteError(path: path) }
            renamed = true
            try FileSync.sync(path: URL(fileURLWithPath: path).deletingLastPathComponent().path)
            return (.spooled(path: path), size)
        }
    }

    struct RewriteError: Error, CustomStringConvertible {
        var path: String
        var description: String { "cannot rewrite \(path)" }
    }
}

/// RFC 8601 §5 for the mail `SenderAuthenticator` does not check: the header section is read on the
/// blocking pool, fields claiming this server's authserv-id are removed, and the stored body is
/// rewritten the same way.
struct StoredForgedResultsRemover: ForgedResultsRemover {
    let authservID: String
    let blockingPool: NIOThreadPool

    func removeForgedResults(from body: MessageBody, stampLength: Int) async throws -> (body: MessageBody, size: Int)? {
        let authservID = self.authservID
        return try await blockingPool.runIfActive {
            let header = try SenderAuthenticator.readHeader(body, skip: stampLength)
            let filtered = AuthenticationResultsFilter(authservIDs: [authservID]).filter(header)
            guard filtered.removed > 0 else { return nil }
            return try SenderAuthenticator.rewrite(
                body, stampLength: stampLength, oldHeaderLength: header.count, header: filtered.header)
        }
    }
}

extension SenderAuthenticator {
    /// Only the header section (at most `maxHeaderSize`), without this server's stamp. Blocking.
    static func readHeader(_ body: MessageBody, skip: Int) throws -> [UInt8] {
        switch body {
        case .inline(let d):
            return FromField.headerSection(Array(d.dropFirst(skip).prefix(maxHeaderSize)))
        case .spooled(let path):
            guard let h = FileHandle(forReadingAtPath: path) else { throw RewriteError(path: path) }
            defer { try? h.close() }
            try h.seek(toOffset: UInt64(skip))
            return FromField.headerSection(Array(try h.read(upToCount: maxHeaderSize) ?? Data()))
        }
    }
}
