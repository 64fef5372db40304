import DNSClient

/// The resolver a `mailflow check` run uses: the servers named on the command line, else the config's,
/// else /etc/resolv.conf's; nothing else is asked.
public enum CheckResolver {
    /// A DNS server address, for callers that do not import DNSClient.
    public typealias Server = DNSServer

    public struct BadServer: Error, CustomStringConvertible {
        public var text: String
        public var description: String { "'\(text)' is not an IP address with an optional :port" }
    }

    /// Parses `IP`, `IP:PORT`, `[IPv6]:PORT` or a bare IPv6 address.
    public static func server(_ text: String) throws(BadServer) -> DNSServer {
        var host = text
        var port = 53
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65535).contains(p) else {
                    throw BadServer(text: text)
                }
                port = p
            }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            guard let p = Int(text[text.index(after: colon)...]), (1...65535).contains(p) else {
                throw BadServer(text: text)
            }
            port = p
        }
        do {
            return try DNSServer(ip: host, port: port)
        } catch {
            throw BadServer(text: text)
        }
    }

    /// A resolver over `servers` (or resolv.conf's when empty), each query bounded by `timeout`
    /// (per attempt: at most 2 s, 2 attempts per server).
    public static func make(servers: [DNSServer], timeout: Duration) -> DNSResolver {
        let list = servers.isEmpty ? ResolvConf.load().servers : servers
        let perAttempt = min(timeout, .seconds(2))
        let ms = perAttempt.components.seconds * 1000 + perAttempt.components.attoseconds / 1_000_000_000_000_000
        return DNSResolver(
            configuration: DNSResolverConfiguration(servers: list, timeout: .milliseconds(max(ms, 100)), attempts: 2))
    }
}
