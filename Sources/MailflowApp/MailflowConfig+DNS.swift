import DNSClient

extension MailflowConfig {
    /// `dns`: the recursive servers delivery asks for MX and address records.
    mutating func decodeDNS(_ dns: ConfigReader) throws {
        try dns.only(["servers", "timeout", "attempts"])
        if let list = try dns.stringList("servers") {
            if let bad = Self.firstBadDNSServer(list) {
                throw dns.error("servers[\(bad)]", Self.badDNSServer(list[bad]))
            }
            dnsServers = list
        }
        if let t = try dns.duration("timeout") { dnsTimeout = t }
        if let a = try dns.int("attempts", in: 1...10) { dnsAttempts = a }
    }

    /// `dnsServers` as the resolver takes them (port 53 unless given). A config built in code (not
    /// read from a file) may hold a bad entry: that is the same error a file gets, never a server
    /// silently left out.
    public func dnsServerAddresses() throws -> [DNSServer] {
        try dnsServers.enumerated().map { i, a in
            guard let s = Self.dnsServer(a) else {
                throw ConfigError(path: "dns.servers[\(i)]", message: Self.badDNSServer(a))
            }
            return s
        }
    }

    static func dnsServer(_ text: String) -> DNSServer? {
        let (host, port) = ListenAddress.parse(text) ?? (text, 53)
        return try? DNSServer(ip: host, port: port)
    }

    static func firstBadDNSServer(_ list: [String]) -> Int? { list.firstIndex { dnsServer($0) == nil } }

    static func badDNSServer(_ text: String) -> String { "\(quote(text)) is not an IP address with an optional :port" }
}
