import NIOCore

extension MailflowConfig {
    /// `admin`: the admin listener (JSON API, `/metrics`, web admin center).
    mutating func decodeAdmin(_ admin: ConfigReader) throws {
        try admin.only(["enabled", "listen", "session_lifetime"])
        if let l = try admin.string("listen") {
            guard let (host, port) = ListenAddress.parse(l), (try? SocketAddress(ipAddress: host, port: port)) != nil
            else {
                throw admin.error("listen", "\(Self.quote(l)) is not IP:port (for example 127.0.0.1:8025)")
            }
            adminListen = l
        }
        if try admin.bool("enabled") == false { adminListen = nil }
        if let t = try admin.duration("session_lifetime") { adminSessionLifetime = t }
    }
}
