import Foundation
import NIOCore

/// The parts of resolv.conf(5) this client uses: `nameserver` lines and `options timeout:N attempts:N`.
///
/// Unknown lines and options are ignored; `#` and `;` start comments. An IPv6 server may carry a zone
/// (`fe80::1%eth0`), which is not supported and skipped.
public struct ResolvConf: Hashable, Sendable {
    /// The default path, `/etc/resolv.conf`.
    public static let defaultPath = "/etc/resolv.conf"

    /// Servers in file order, on port 53.
    public var servers: [DNSServer]
    /// Per-attempt timeout (resolv.conf default 5 s; this client's default when absent is 2 s).
    public var timeout: TimeAmount
    /// Rounds over the server list (default 2).
    public var attempts: Int

    public init(servers: [DNSServer], timeout: TimeAmount = .seconds(2), attempts: Int = 2) {
        self.servers = servers
        self.timeout = timeout
        self.attempts = attempts
    }

    /// Parses resolv.conf text. Values are clamped like glibc does: timeout 1...30 s, attempts 1...5.
    public static func parse(_ text: String) -> ResolvConf {
        var config = ResolvConf(servers: [])
        for rawLine in text.split(whereSeparator: \.isNewline) {
            var line = Substring(rawLine)
            if let comment = line.firstIndex(where: { $0 == "#" || $0 == ";" }) {
                line = line[..<comment]
            }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let keyword = fields.first else { continue }
            switch keyword {
            case "nameserver":
                guard fields.count >= 2, let server = try? DNSServer(ip: String(fields[1])) else { continue }
                config.servers.append(server)
            case "options":
                for option in fields.dropFirst() {
                    let parts = option.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, let value = Int(parts[1]) else { continue }
                    switch parts[0] {
                    case "timeout": config.timeout = .seconds(Int64(min(max(value, 1), 30)))
                    case "attempts": config.attempts = min(max(value, 1), 5)
                    default: break
                    }
                }
            default:
                continue
            }
        }
        return config
    }

    /// Reads and parses a file (by default /etc/resolv.conf); a missing file gives no servers.
    public static func load(path: String = defaultPath) -> ResolvConf {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else { return ResolvConf(servers: []) }
        return parse(text)
    }
}
