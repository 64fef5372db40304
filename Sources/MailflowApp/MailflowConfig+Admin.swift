import NIOCore
import Yams

extension MailflowConfig {
    /// Where the admin listener's TLS certificate comes from: the pair the SMTP side generates into
    /// the data directory (`admin.tls: generated`), or files of its own (`admin.tls.certificate` and
    /// `admin.tls.key`).
    public enum AdminTLS: Sendable, Equatable {
        case generated
        case files(certificate: String, key: String)
    }

    /// `admin`: the admin listener (JSON API, `/metrics`, web admin center).
    mutating func decodeAdmin(_ admin: ConfigReader, baseDirectory: String = ".") throws {
        try admin.only(["enabled", "listen", "session_lifetime", "tls", "signin_failures", "signin_window"])
        if let l = try admin.string("listen") {
            guard let (host, port) = ListenAddress.parse(l), (try? SocketAddress(ipAddress: host, port: port)) != nil
            else {
                throw admin.error("listen", "\(Self.quote(l)) is not IP:port (for example 127.0.0.1:8025)")
            }
            adminListen = l
        }
        if try admin.bool("enabled") == false { adminListen = nil }
        if let t = try admin.duration("session_lifetime") { adminSessionLifetime = t }
        if let n = try admin.int("signin_failures", in: 1...1_000_000) { adminSignInFailures = n }
        if let t = try admin.duration("signin_window") { adminSignInWindow = t }
        if let node = admin["tls"], node.mapping == nil {
            guard let s = try admin.string("tls") else { return }
            switch s {
            case "generated": adminTLS = .generated
            case "off", "": adminTLS = nil
            default:
                throw admin.error(
                    "tls", "\(Self.quote(s)) is not generated or off (or a mapping with certificate and key)")
            }
        } else if let tls = try admin.mapping("tls") {
            try tls.only(["certificate", "key"])
            let cert = try tls.string("certificate")
            let key = try tls.string("key")
            guard let cert, let key else {
                throw tls.error(
                    cert == nil ? "certificate" : "key",
                    "is required when admin.tls.\(cert == nil ? "key" : "certificate") is set")
            }
            adminTLS = .files(certificate: Self.resolve(cert, baseDirectory), key: Self.resolve(key, baseDirectory))
        }
    }
}
