import Foundation

/// The trace and identity header fields Mailflow adds: `Received:` (RFC 5321 §4.4, with RFC 3848
/// protocol names), `Return-Path:` (RFC 5321 §4.4) and a `Message-ID:` (RFC 5322 §3.6.4) where the
/// sender left it out.
public enum HeaderStamps {
    /// The TLS facts recorded in `Received:` (RFC 8314 §4.3 style: version and cipher).
    ///
    /// `cipher` is nil when it is not known: swift-nio-ssl (2.37) makes the negotiated version
    /// public (`NIOSSLHandler.tlsVersion`) but not the negotiated cipher suite, so the inbound
    /// stamp says only the version rather than an empty or guessed cipher.
    public struct TLSInfo: Sendable, Hashable, Codable {
        public var version: String
        public var cipher: String?
        public init(version: String, cipher: String? = nil) {
            self.version = version
            self.cipher = cipher
        }
    }

    /// The `Received:` field (RFC 5321 §4.4) written in front of a body:
    ///
    /// ```
    /// Received: from client.test ([127.0.0.1])
    ///     by mx.example.test (Mailflow) with ESMTPS (TLSv1.3 TLS_AES_128_GCM_SHA256)
    ///     id 0B1C2D3E4F5G for <alice@example.test>; Sun, 29 Nov 2026 10:00:00 +0000
    /// ```
    ///
    /// Without a known cipher the parenthesis holds the version alone (`with ESMTPS (TLSv1.3)`);
    /// without TLS there is none.
    /// `clientAddress` nil leaves out the `from` clause (the client's name and address), for a
    /// tenant that keeps its users' addresses private; RFC 5322 §3.6.7 allows a trace field without it.
    public static func received(
        helo: String, clientAddress: String?, by host: String, protocolName: String, tls: TLSInfo?,
        queueID: String, singleRecipient: String?, date: Date
    ) -> String {
        var s = "Received: "
        if let clientAddress { s += "from \(sanitize(helo)) ([\(clientAddress)])\r\n\t" }
        s += "by \(host) (Mailflow) with \(protocolName)"
        if let tls {
            let cipher = tls.cipher.map(sanitize).flatMap { $0.isEmpty ? nil : $0 }
            s += cipher.map { " (\(sanitize(tls.version)) \($0))" } ?? " (\(sanitize(tls.version)))"
        }
        s += "\r\n\tid \(queueID)"
        if let r = singleRecipient { s += " for <\(sanitize(r))>" }
        s += "; \(rfc5322Date(date))\r\n"
        return s
    }

    public static func returnPath(_ sender: String) -> String {
        "Return-Path: <\(sanitize(sender))>\r\n"
    }

    public static func messageID(queueID: String, host: String) -> String {
        "<\(queueID)@\(host)>"
    }

    /// Removes anything that could break a header line (CR, LF, other controls).
    public static func sanitize(_ s: String) -> String {
        String(s.unicodeScalars.filter { $0.value >= 32 && $0.value != 127 }.map(Character.init))
    }

    /// RFC 5322 §3.3 date, always in UTC: `Sun, 29 Nov 2026 10:00:00 +0000`.
    public static func rfc5322Date(_ date: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.weekday, .day, .month, .year, .hour, .minute, .second], from: date)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int?) -> String {
            let v = v ?? 0
            return v < 10 ? "0\(v)" : "\(v)"
        }
        return "\(days[(c.weekday ?? 1) - 1]), \(c.day ?? 1) \(months[(c.month ?? 1) - 1]) \(c.year ?? 1970) "
            + "\(two(c.hour)):\(two(c.minute)):\(two(c.second)) +0000"
    }
}
