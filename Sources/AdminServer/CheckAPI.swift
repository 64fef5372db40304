import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// At most `limit` checks at a time. A slot is held until the check's work has ended, not only until
/// its request was answered: a check cut off at the request's deadline still counts until it stops,
/// so the admin listener cannot be used to keep more probes running than this.
final class CheckGate: Sendable {
    let limit: Int
    let running = Mutex(0)

    init(limit: Int) { self.limit = limit }

    /// Takes a slot; false when all are taken.
    func tryEnter() -> Bool {
        running.withLock { n in
            guard n < limit else { return false }
            n += 1
            return true
        }
    }

    func leave() { running.withLock { $0 = max(0, $0 - 1) } }
}

/// The first of two outcomes (the check's, the deadline's) wins; the other is dropped.
final class FirstOutcome<T: Sendable>: Sendable {
    let state = Mutex<(Result<T, any Error>?, CheckedContinuation<T, any Error>?)>((nil, nil))

    /// True when this was the first outcome.
    @discardableResult
    func resolve(_ r: Result<T, any Error>) -> Bool {
        let (first, c) = state.withLock { s -> (Bool, CheckedContinuation<T, any Error>?) in
            guard s.0 == nil else { return (false, nil) }
            s.0 = r
            defer { s.1 = nil }
            return (true, s.1)
        }
        c?.resume(with: r)
        return first
    }

    func wait() async throws -> T {
        try await withCheckedThrowingContinuation { c in
            let done = state.withLock { s -> Result<T, any Error>? in
                if let r = s.0 { return r }
                s.1 = c
                return nil
            }
            if let done { c.resume(with: done) }
        }
    }
}

/// `GET /api/v1/check/{domain|host|ip}/{target}` and the Diagnostics page: `mailflow check` run by
/// the server (docs/check.md), for operators only (`TenantScope` does not list these paths: a check
/// contacts other hosts).
extension AdminHTTPServer {
    /// A hostname: at most 253 characters of dot-separated labels of 1 to 63 letters, digits and
    /// hyphens, no label starting or ending with a hyphen, the last not all digits (RFC 3696 §2: that
    /// is an address); one trailing dot is allowed.
    static func isHostname(_ text: String) -> Bool {
        let name = text.hasSuffix(".") ? String(text.dropLast()) : text
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        guard let last = labels.last, !last.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return false }
        return labels.allSatisfy { label in
            guard (1...63).contains(label.utf8.count), label.first != "-", label.last != "-" else { return false }
            return label.utf8.allSatisfy { b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D
            }
        }
    }

    /// An IPv4 or IPv6 literal (an IPv6 one may come in brackets); the bare address, or nil.
    static func ipLiteral(_ text: String) -> String? {
        var bare = text
        if bare.hasPrefix("["), bare.hasSuffix("]") { bare = String(bare.dropFirst().dropLast()) }
        guard !bare.isEmpty, bare.utf8.count <= 45, (try? SocketAddress(ipAddress: bare, port: 0)) != nil else {
            return nil
        }
        return bare
    }

    static let dkimSelectorRule =
        "dot-separated labels of letters, digits, hyphens and underscores (at most 63 characters each, 200 in all)"

    /// A DKIM selector (RFC 6376 §3.1: sub-domain labels; digits-only labels such as dates are common,
    /// and some signers use underscores, so both are accepted).
    static func isDKIMSelector(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 200 else { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count)
                && label.utf8.allSatisfy { b in
                    (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x2D
                        || b == 0x5F
                }
        }
    }

    static let hostnameRule =
        "a hostname (at most 253 characters of dot-separated labels of letters, digits and hyphens)"

    /// The check a caller asked for, or `400` saying what is wrong. `port` is the query's value
    /// (absent: 25 for domain and host); `dkimSelector` the `dkim_selector` query value (domain only).
    static func checkRequest(
        kind: AdminCheckRequest.Kind, target raw: String, port: String?, dkimSelector: String? = nil
    ) throws -> AdminCheckRequest {
        let target = raw.removingPercentEncoding ?? raw
        guard !target.isEmpty else { throw HTTPError(.badRequest, message: "the target is empty") }
        var request: AdminCheckRequest
        switch kind {
        case .domain:
            guard isHostname(target) else {
                throw HTTPError(.badRequest, message: "a domain check needs \(hostnameRule)")
            }
            request = AdminCheckRequest(kind: .domain, target: target.lowercased(), port: 25)
        case .host:
            if let ip = ipLiteral(target) {
                request = AdminCheckRequest(kind: .host, target: ip, port: 25)
            } else if isHostname(target) {
                request = AdminCheckRequest(kind: .host, target: target.lowercased(), port: 25)
            } else {
                throw HTTPError(.badRequest, message: "a host check needs \(hostnameRule) or an IP address")
            }
        case .ip:
            guard let ip = ipLiteral(target) else {
                throw HTTPError(.badRequest, message: "an ip check needs an IPv4 or IPv6 address")
            }
            guard port == nil else { throw HTTPError(.badRequest, message: "an ip check takes no port") }
            guard dkimSelector == nil else {
                throw HTTPError(.badRequest, message: "only a domain check takes a dkim_selector")
            }
            return AdminCheckRequest(kind: .ip, target: ip, port: nil)
        }
        if let dkimSelector {
            guard kind == .domain else {
                throw HTTPError(.badRequest, message: "only a domain check takes a dkim_selector")
            }
            guard isDKIMSelector(dkimSelector) else {
                throw HTTPError(.badRequest, message: "dkim_selector must be \(dkimSelectorRule)")
            }
            request.dkimSelector = dkimSelector.lowercased()
        }
        if let port {
            guard port.utf8.count <= 5, port.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(port),
                (1...65535).contains(n)
            else {
                throw HTTPError(.badRequest, message: "port must be a number from 1 to 65535")
            }
            request.port = n
        }
        return request
    }

    /// Runs a check through the backend: `503` when the server has none, `429` with `Retry-After`
    /// when `maxConcurrentChecks` are running, `504` after `checkTimeout` (the check is told to stop
    /// and keeps its slot until it has).
    func runCheck(_ request: AdminCheckRequest, actor: String) async throws -> AdminCheckResult {
        guard let run = backend.runCheck else {
            throw HTTPError(.serviceUnavailable, message: "this server does not run checks")
        }
        let gate = checkGate
        guard gate.tryEnter() else {
            throw HTTPError(
                .tooManyRequests, headers: [.retryAfter: "10"],
                message: "\(gate.limit) check(s) are running already; try again in a few seconds")
        }
        let outcome = FirstOutcome<AdminCheckResult>()
        let work = Task {
            defer { gate.leave() }
            do {
                outcome.resolve(.success(try await run(request)))
            } catch {
                outcome.resolve(.failure(error))
            }
        }
        let timeout = checkTimeout
        let timer = Task {
            // Cancelled when the check ends first: nothing to do then.
            try? await Task.sleep(for: timeout)
            guard !Task.isCancelled else { return }
            if outcome.resolve(.failure(CheckTimedOut())) { work.cancel() }
        }
        defer { timer.cancel() }
        let target = request.port.map { "\(request.target):\($0)" } ?? request.target
        do {
            let result = try await outcome.wait()
            logger.notice(
                "admin check",
                metadata: [
                    "actor": "\(actor)", "kind": "\(request.kind.rawValue)", "target": "\(target)",
                    "verdict": "\(result.verdict)",
                ])
            return result
        } catch is CheckTimedOut {
            logger.warning(
                "admin check timed out",
                metadata: ["actor": "\(actor)", "kind": "\(request.kind.rawValue)", "target": "\(target)"])
            throw HTTPError(
                .gatewayTimeout, message: "the check did not finish within \(checkTimeout.components.seconds) seconds")
        } catch let e as HTTPError {
            throw e
        } catch {
            logger.error("admin check failed", metadata: ["target": "\(target)", "error": "\(error)"])
            throw HTTPError(.internalServerError, message: "the check could not run: \(error)")
        }
    }

    func addCheckAPIRoutes(_ api: RouterGroup<AdminRequestContext>) {
        for kind in AdminCheckRequest.Kind.allCases {
            api.get("check/\(kind.rawValue)/:target") { [self] request, context -> Response in
                let query = Self.form(request.uri.query ?? "")
                let check = try Self.checkRequest(
                    kind: kind, target: try context.parameters.require("target"), port: query["port"],
                    dkimSelector: query["dkim_selector"])
                let result = try await runCheck(check, actor: context.actor ?? "api")
                return Response(
                    status: .ok, headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
                    body: .init(byteBuffer: ByteBuffer(data: result.report)))
            }
        }
    }

    func addCheckPageRoutes(_ pages: RouterGroup<AdminRequestContext>) {
        pages.get("diagnostics") { [self] request, context -> Response in
            let q = Self.form(request.uri.query ?? "")
            var page = base(context, title: "Diagnostics", tab: "diagnostics")
            let kindText = q["kind"] ?? "domain"
            page["kinds"] = [("domain", "Domain"), ("host", "Host (SMTP server)"), ("ip", "IP address")].map {
                ["value": $0.0, "label": $0.1, "selected": $0.0 == kindText]
            }
            page["target"] = q["target"] ?? ""
            page["port"] = q["port"] ?? ""
            page["dkimSelector"] = q["dkim_selector"] ?? ""
            guard let target = q["target"]?.trimmingCharacters(in: .whitespaces), !target.isEmpty else {
                return html(render("diagnostics", page))
            }
            do {
                guard let kind = AdminCheckRequest.Kind(rawValue: kindText) else {
                    throw HTTPError(.badRequest, message: "the kind of check is domain, host or ip")
                }
                let port = q["port"].flatMap { $0.isEmpty ? nil : $0 }
                let selector = q["dkim_selector"].flatMap { $0.isEmpty ? nil : $0 }
                let check = try Self.checkRequest(kind: kind, target: target, port: port, dkimSelector: selector)
                let result = try await runCheck(check, actor: context.actor ?? "web")
                page["report"] = try Self.reportPage(result.report)
                return html(render("diagnostics", page))
            } catch let e as HTTPError {
                page["error"] = e.body ?? "\(e.status)"
                var r = html(render("diagnostics", page), status: e.status)
                if let retry = e.headers[.retryAfter] { r.headers[.retryAfter] = retry }
                return r
            }
        }
    }

    /// The page's view of a report, read through docs/check.schema.json: findings grouped by
    /// category in the report's order, a badge per finding, the verdict line.
    static func reportPage(_ data: Data) throws -> [String: Any] {
        let report: CheckReportView
        do {
            report = try JSONDecoder().decode(CheckReportView.self, from: data)
        } catch {
            throw HTTPError(.internalServerError, message: "the check's report could not be read: \(error)")
        }
        var order: [String] = []
        var byCategory: [String: [CheckReportView.Finding]] = [:]
        for f in report.findings {
            if byCategory[f.category] == nil { order.append(f.category) }
            byCategory[f.category, default: []].append(f)
        }
        let severities = ["failure", "warning", "info", "ok"]
        let counts = severities.compactMap { s -> String? in
            let n = report.findings.filter { $0.severity == s }.count
            return n == 0 ? nil : "\(n) \(s)\(n > 1 && (s == "failure" || s == "warning") ? "s" : "")"
        }
        return [
            "kind": report.kind, "target": report.target, "verdict": report.verdict,
            "counts": counts.joined(separator: ", "),
            "duration": String(format: "%.2f s", report.durationSeconds),
            "started": report.startedAt.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
                + " UTC",
            "groups": order.map { category -> [String: Any] in
                let findings = byCategory[category] ?? []
                let worst = severities.first { s in findings.contains { $0.severity == s } } ?? "ok"
                return [
                    "category": category, "label": categoryLabels[category] ?? category, "worst": worst,
                    "findings": findings.map { f -> [String: Any] in
                        [
                            "severity": f.severity, "subject": f.subject, "check": f.check, "summary": f.summary,
                            "detail": f.detail as Any, "ncsc": f.ncsc as Any,
                        ]
                    },
                ]
            },
        ]
    }

    static let categoryLabels: [String: String] = [
        "mx": "MX", "address": "Addresses", "smtp": "SMTP", "starttls": "STARTTLS", "tls": "TLS",
        "certificate": "Certificate", "mta-sts": "MTA-STS", "tls-rpt": "TLS-RPT", "dane": "DANE", "spf": "SPF",
        "dmarc": "DMARC", "dkim": "DKIM", "reverse-dns": "Reverse DNS", "blocklist": "DNS blocklists",
        "trace": "What Mailflow saw (trace)",
    ]
}

/// Thrown by the deadline of a check.
struct CheckTimedOut: Error {}

/// A `CheckReport` as docs/check.schema.json describes it, for the page (AdminServer does not link
/// Diagnostics; see ``AdminCheckRequest``).
struct CheckReportView: Decodable {
    struct Finding: Decodable {
        var category: String
        var subject: String
        var check: String
        var severity: String
        var summary: String
        var detail: String?
        var ncsc: String?
    }

    var kind: String
    var target: String
    var startedAt: String
    var durationSeconds: Double
    var verdict: String
    var findings: [Finding]
}
