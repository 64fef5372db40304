import Ingress
import NIOCore

extension MailflowConfig {
    /// `submission`: the listeners where a tenant's users submit mail with a password (RFC 6409,
    /// RFC 8314), off unless addresses are given, and how failed AUTH from one source is slowed and
    /// locked out.
    mutating func decodeSubmission(_ s: ConfigReader) throws {
        try s.only([
            "starttls", "implicit_tls", "max_failures", "failure_window", "lockout", "messages_per_minute",
            "recipients_per_day",
        ])
        submissionListen = try Self.listenAddresses(s, "starttls") ?? submissionListen
        submissionImplicitTLSListen = try Self.listenAddresses(s, "implicit_tls") ?? submissionImplicitTLSListen
        if let n = try s.int("max_failures", in: 1...1000) { submissionPolicy.maxFailures = n }
        if let v = try s.duration("failure_window") { submissionPolicy.window = v }
        if let v = try s.duration("lockout") { submissionPolicy.lockout = v }
        if let n = try s.int("messages_per_minute", in: 0...1_000_000) { submissionPolicy.messagesPerMinute = n }
        if let n = try s.int("recipients_per_day", in: 0...100_000_000) { submissionPolicy.recipientsPerDay = n }
    }

    /// A list of `host:port` listen addresses (IP addresses only; names are not resolved).
    static func listenAddresses(_ r: ConfigReader, _ key: String) throws -> [String]? {
        guard let list = try r.stringList(key) else { return nil }
        for (i, a) in list.enumerated() {
            guard let (host, port) = ListenAddress.parse(a) else {
                throw r.error("\(key)[\(i)]", "\(quote(a)) is not host:port (for example 127.0.0.1:587 or [::1]:587)")
            }
            guard (try? SocketAddress(ipAddress: host, port: port)) != nil else {
                throw r.error("\(key)[\(i)]", "\(quote(host)) is not an IP address (host names are not resolved)")
            }
        }
        return list
    }
}
