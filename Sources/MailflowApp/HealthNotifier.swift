import Crypto
import Foundation
import Logging
import ServiceHealth

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Tells people about service-health issues when they open, change classification and restore:
/// a webhook (a JSON POST signed with HMAC-SHA256 over the body in `X-Mailflow-Signature:
/// sha256=<hex>`, retried with backoff) and email to admin addresses through Mailflow's own queue.
public final class HealthNotifier: Sendable {
    public struct Webhook: Sendable, Equatable {
        public var url: URL
        public var secret: String

        public init(url: URL, secret: String) {
            self.url = url
            self.secret = secret
        }
    }

    let webhook: Webhook?
    let emailTo: [String]
    /// Queues one plain-text message (subject, body, recipients) in Mailflow's own queue.
    let sendEmail: @Sendable (String, String, [String]) -> Void
    let logger: Logger
    /// Delays between webhook attempts (then it gives up, logged).
    let backoff: [Duration]

    public init(
        webhook: Webhook?, emailTo: [String], logger: Logger,
        backoff: [Duration] = [.seconds(1), .seconds(5), .seconds(30), .seconds(120)],
        sendEmail: @escaping @Sendable (String, String, [String]) -> Void
    ) {
        self.webhook = webhook
        self.emailTo = emailTo
        self.logger = logger
        self.backoff = backoff
        self.sendEmail = sendEmail
    }

    /// The webhook body: the event and the issue as the API shows it.
    public static func payload(_ change: HealthChange) throws -> Data {
        struct Event: Encodable {
            var event: String
            var issue: HealthIssueDocument
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return try enc.encode(Event(event: change.kind.rawValue, issue: HealthIssueDocument(change.issue)))
    }

    /// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
    public static func signature(body: Data, secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8)))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    public func send(_ change: HealthChange) {
        if !emailTo.isEmpty {
            let i = change.issue
            let subject =
                "[Mailflow service health] \(i.id) \(i.classification.rawValue): \(i.title) (\(i.status.rawValue))"
            sendEmail(subject, i.posts.last?.description ?? i.impactDescription, emailTo)
        }
        guard let webhook, let body = try? Self.payload(change) else { return }
        let signature = Self.signature(body: body, secret: webhook.secret)
        let backoff = self.backoff
        let logger = self.logger
        let id =
            "\(change.issue.id)-\(change.kind.rawValue)-\(Int(change.issue.lastModifiedDateTime.timeIntervalSince1970))"
        Task.detached {
            var request = URLRequest(url: webhook.url, timeoutInterval: 10)
            request.httpMethod = "POST"
            request.httpBody = body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.setValue(signature, forHTTPHeaderField: "X-Mailflow-Signature")
            request.setValue(change.kind.rawValue, forHTTPHeaderField: "X-Mailflow-Event")
            request.setValue(id, forHTTPHeaderField: "X-Mailflow-Delivery")
            for attempt in 0...backoff.count {
                if let status = try? await Self.post(request), (200..<300).contains(status) { return }
                guard attempt < backoff.count else { break }
                try? await Task.sleep(for: backoff[attempt])
            }
            logger.warning("health webhook gave up", metadata: ["delivery": "\(id)"])
        }
    }

    static func post(_ request: URLRequest) async throws -> Int {
        try await withCheckedThrowingContinuation { c in
            URLSession.shared.dataTask(with: request) { _, response, error in
                if let error {
                    c.resume(throwing: error)
                } else {
                    c.resume(returning: (response as? HTTPURLResponse)?.statusCode ?? 0)
                }
            }.resume()
        }
    }
}
