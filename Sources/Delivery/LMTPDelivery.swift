import Foundation
import Logging
import MailQueue
import NIOCore
import SMTPCore

/// Where an LMTP mailbox server listens, written as Postfix writes the nexthop of
/// `mailbox_transport = lmtp:...`: `unix:/run/dovecot/lmtp`, `inet:127.0.0.1:24`, `inet:[::1]:24`; a
/// bare `/path` is a UNIX socket and a bare `host:port` a TCP address.
///
/// ```swift
/// try LMTPAddress(parsing: "unix:/run/dovecot/lmtp")  // .unix(path: "/run/dovecot/lmtp")
/// try LMTPAddress(parsing: "127.0.0.1:24")            // .inet(host: "127.0.0.1", port: 24)
/// ```
public enum LMTPAddress: Sendable, Hashable, CustomStringConvertible {
    case unix(path: String)
    /// An IP address (no DNS: the mailbox server is a neighbour named by address) and its port.
    case inet(host: String, port: Int)

    /// Why a written address is not one.
    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(parsing text: String) throws {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("unix:") || t.hasPrefix("/") {
            let path = t.hasPrefix("unix:") ? String(t.dropFirst(5)) : t
            guard path.hasPrefix("/"), !path.contains("\0") else {
                throw ParseError(description: "a UNIX socket needs an absolute path (unix:/run/dovecot/lmtp)")
            }
            self = .unix(path: path)
            return
        }
        let hostPort = t.hasPrefix("inet:") ? String(t.dropFirst(5)) : t
        let host: String
        let portText: Substring
        if hostPort.hasPrefix("["), let close = hostPort.firstIndex(of: "]") {
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let rest = hostPort[hostPort.index(after: close)...]
            guard rest.hasPrefix(":") else { throw ParseError(description: "expected [address]:port") }
            portText = rest.dropFirst()
        } else if let colon = hostPort.lastIndex(of: ":"), !hostPort[..<colon].contains(":") {
            host = String(hostPort[..<colon])
            portText = hostPort[hostPort.index(after: colon)...]
        } else {
            throw ParseError(
                description: "expected unix:/path, inet:address:port or address:port (an IPv6 address in brackets)")
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw ParseError(description: "the port must be 1-65535")
        }
        guard (try? SocketAddress(ipAddress: host, port: port)) != nil else {
            throw ParseError(description: "\"\(host)\" is not an IP address (LMTP takes no host names)")
        }
        self = .inet(host: host, port: port)
    }

    public func socketAddress() throws -> SocketAddress {
        switch self {
        case .unix(let path): return try SocketAddress(unixDomainSocketPath: path)
        case .inet(let host, let port): return try SocketAddress(ipAddress: host, port: port)
        }
    }

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .inet(let host, let port): return host.contains(":") ? "inet:[\(host)]:\(port)" : "inet:\(host):\(port)"
        }
    }
}

/// `delivery.lmtp`: the mailbox server local routes go to instead of Maildir (docs/delivery.md).
public struct LMTPSettings: Sendable, Hashable {
    public var address: LMTPAddress
    /// The `LHLO` argument; nil: the `helo_name` (or host name) outbound mail uses.
    public var lhloName: String?
    /// Connections open at once (each carries one transaction at a time and is reused). Dovecot runs
    /// one `lmtp` process per connection, so this also bounds its processes.
    public var maxConnections: Int
    public static let defaultMaxConnections = 10

    public init(address: LMTPAddress, lhloName: String? = nil, maxConnections: Int = Self.defaultMaxConnections) {
        self.address = address
        self.lhloName = lhloName
        self.maxConnections = maxConnections
    }
}

/// Mailbox delivery over LMTP (RFC 2033) to a mailbox server such as Dovecot, for nodes that share
/// mailboxes on another machine (a cluster) or leave mailbox formats, quotas and sieve to it.
///
/// One transaction carries all local recipients of a message; after the final dot the server
/// answers for each recipient RCPT accepted, so one recipient over quota defers or fails alone
/// (`ClientSession` in `.lmtp` mode). A server that is down or drops the connection defers what it
/// has not answered for; what it already confirmed stays delivered. Connections are kept idle for
/// the next message (at most `maxConnections` open), as Postfix's `lmtp` client caches them.
public final class LMTPDelivery: Sendable {
    public let settings: LMTPSettings
    let heloName: String
    let group: any EventLoopGroup
    let timeouts: OutboundTimeouts
    let pool: LMTPConnectionPool

    public init(settings: LMTPSettings, heloName: String, group: any EventLoopGroup, timeouts: OutboundTimeouts) {
        self.settings = settings
        self.heloName = settings.lhloName ?? heloName
        self.group = group
        self.timeouts = timeouts
        self.pool = LMTPConnectionPool(limit: max(1, settings.maxConnections))
    }

    /// Delivers one message to `recipients` (address, as the mailbox server knows it); a result per
    /// recipient, in order.
    public func deliver(_ envelope: OutboundEnvelope, body: OutboundBody) async -> [RecipientResult] {
        await pool.acquire()
        var conn = await pool.takeIdle()
        var reused = conn != nil
        while true {
            if conn == nil {
                do {
                    conn = try await connect()
                } catch {
                    let reply = (error as? SMTPClientFailure)?.reply ?? SMTPReply(451, .init(4, 4, 1), "\(error)")
                    let results = envelope.recipients.indices.map {
                        RecipientResult(
                            index: $0, disposition: reply.code / 100 == 5 ? .failed : .deferred, reply: reply)
                    }
                    await pool.count(results)
                    await pool.release(nil)
                    return results
                }
            }
            guard let c = conn else { continue }
            // An idle connection the server has since closed (Dovecot ends idle LMTP sessions) gets
            // one fresh connection instead; a fresh one's results stand.
            if reused, !(await c.isUsable) {
                await c.close()
                conn = nil
                reused = false
                continue
            }
            let results = await c.send(envelope, body: body)
            await pool.count(results)
            if await c.isUsable {
                await pool.release(c)
            } else {
                await c.close()
                await pool.release(nil)
            }
            return results
        }
    }

    func connect() async throws -> SMTPClientConnection {
        let address: SocketAddress
        do {
            address = try settings.address.socketAddress()
        } catch {
            throw SMTPClientFailure.connect(address: "\(settings.address)", detail: "\(error)")
        }
        return try await SMTPClientConnection.connect(
            to: address, group: group, heloName: heloName, tls: .disabled, tlsContext: nil, serverName: nil,
            timeouts: timeouts, protocol: .lmtp)
    }

    /// The mailbox server as `mailflow queue destinations` shows it: a fixed window of
    /// `max_connections`, the transactions in flight and waiting, and recipients delivered and
    /// deferred since start.
    public func status() async -> DestinationStatus {
        await pool.status(key: "lmtp:\(settings.address)")
    }

    /// Closes idle connections (at shutdown).
    public func shutdown() async {
        for c in await pool.drain() { await c.close() }
    }
}

/// At most `limit` LMTP transactions at once, and the idle connections between them.
actor LMTPConnectionPool {
    let limit: Int
    var inUse = 0
    var idle: [SMTPClientConnection] = []
    var waiters: [CheckedContinuation<Void, Never>] = []
    var delivered = 0
    var deferred = 0
    var lastError: String?

    init(limit: Int) { self.limit = limit }

    /// Counts one transaction's results per recipient; a refusal is remembered as the last error.
    func count(_ results: [RecipientResult]) {
        for r in results {
            switch r.disposition {
            case .delivered: delivered += 1
            case .deferred, .failed:
                deferred += 1
                lastError = r.reply.description
            }
        }
    }

    func status(key: String) -> DestinationStatus {
        DestinationStatus(
            key: key, window: limit, ceiling: nil, sessions: inUse, waiting: waiters.count, delivered: delivered,
            deferred: deferred, throttles: 0, parkedUntil: nil, lastError: lastError)
    }

    func acquire() async {
        if inUse < limit {
            inUse += 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func takeIdle() -> SMTPClientConnection? { idle.popLast() }

    /// Gives back a slot, with its connection if it can carry another message.
    func release(_ conn: SMTPClientConnection?) {
        if let conn { idle.append(conn) }
        if waiters.isEmpty {
            inUse -= 1
        } else {
            // The slot passes straight to the next waiter.
            waiters.removeFirst().resume()
        }
    }

    func drain() -> [SMTPClientConnection] {
        defer { idle = [] }
        return idle
    }
}
