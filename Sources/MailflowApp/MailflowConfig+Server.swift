import NIOCore

extension MailflowConfig {
    /// The log levels `server.log_level` takes, as swift-log names them.
    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// `server`: the server's name, its SMTP listeners, the data directory and logging.
    mutating func decodeServer(_ server: ConfigReader, baseDirectory: String) throws {
        try server.only(["hostname", "smtp", "data", "log_level", "log_format"])
        if let f = try server.string("log_format") {
            guard ["text", "json"].contains(f) else {
                throw server.error("log_format", "\(Self.quote(f)) is not one of text, json")
            }
            logFormat = f
        }
        if let h = try server.string("hostname") {
            try Self.checkHostName(h, server, "hostname")
            hostname = h
        }
        if let list = try server.stringList("smtp") {
            guard !list.isEmpty else { throw server.error("smtp", "needs at least one listen address") }
            for (i, a) in list.enumerated() {
                guard let (host, port) = ListenAddress.parse(a) else {
                    throw server.error(
                        "smtp[\(i)]", "\(Self.quote(a)) is not host:port (for example 127.0.0.1:2525 or [::1]:2525)")
                }
                guard (try? SocketAddress(ipAddress: host, port: port)) != nil else {
                    throw server.error(
                        "smtp[\(i)]", "\(Self.quote(host)) is not an IP address (host names are not resolved)")
                }
            }
            smtpListen = list
        }
        if let d = try server.string("data") { dataDirectory = Self.resolve(d, baseDirectory) }
        if let l = try server.string("log_level") {
            guard Self.logLevels.contains(l) else {
                throw server.error(
                    "log_level", "\(Self.quote(l)) is not one of \(Self.logLevels.joined(separator: ", "))")
            }
            logLevel = l
        }
    }

    /// `tls`: the STARTTLS certificate chain and key, both or neither (without them a self-signed
    /// pair is generated into the data directory).
    mutating func decodeTLS(_ tls: ConfigReader, baseDirectory: String) throws {
        try tls.only(["certificate", "key"])
        let cert = try tls.string("certificate")
        let key = try tls.string("key")
        guard (cert == nil) == (key == nil) else {
            throw tls.error(
                cert == nil ? "certificate" : "key",
                "is required when tls.\(cert == nil ? "key" : "certificate") is set")
        }
        tlsCertificate = cert.map { Self.resolve($0, baseDirectory) }
        tlsKey = key.map { Self.resolve($0, baseDirectory) }
    }
}
