import Foundation
import Logging
import NIOCore
import NIOSSL
import SMTPCore

/// Where mail for a domain can go, as DNS says (RFC 5321 §5.1).
public enum MailExchangerLookup: Sendable, Equatable {
    /// Hosts in the order to try (preference, random among equals; the domain itself when there is no MX).
    case hosts([String])
    /// Null MX, NXDOMAIN: the domain takes no mail.
    case permanent(SMTPReply)
    /// SERVFAIL, timeout: try later.
    case transient(SMTPReply)
}

/// The DNS questions outbound delivery asks; `DNSClient` answers them in production, tests may
/// inject faults.
public protocol MailExchangerResolving: Sendable {
    func exchangers(for domain: String) async -> MailExchangerLookup
    /// IPv4 then IPv6 addresses of a host; empty when it has none.
    func addresses(for host: String) async throws -> [String]
}

/// A tenant's outbound connector: all its external mail goes to this smart host.
public struct OutboundConnector: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var tls: TLSRequirement
    /// When set, the certificate must verify for this name (implies TLS required).
    public var verifyName: String?

    public init(host: String, port: Int, tls: TLSRequirement, verifyName: String? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.verifyName = verifyName
    }
}

/// Settings of outbound delivery.
public struct OutboundSettings: Sendable {
    public var heloName: String
    /// Port for MX delivery (25 in production; tests use unprivileged ports on 127.0.0.0/8).
    public var mxPort: Int
    public var initialWindow: Int
    public var maxWindow: Int
    /// Deadlines of each session (`timeouts.outbound` in the config).
    public var timeouts: OutboundTimeouts

    public init(
        heloName: String, mxPort: Int = 25, initialWindow: Int = 2, maxWindow: Int = 20,
        timeouts: OutboundTimeouts = OutboundTimeouts()
    ) {
        self.heloName = heloName
        self.mxPort = mxPort
        self.initialWindow = initialWindow
        self.maxWindow = maxWindow
        self.timeouts = timeouts
    }
}

/// One attempt's result for one recipient, with what the trace records.
public struct RemoteOutcome: Sendable, Hashable {
    public var result: RecipientResult
    public var remoteHost: String?
    public var remoteIP: String?
    public var tls: String?

    public init(result: RecipientResult, remoteHost: String? = nil, remoteIP: String? = nil, tls: String? = nil) {
        self.result = result
        self.remoteHost = remoteHost
        self.remoteIP = remoteIP
        self.tls = tls
    }
}

/// A destination's state, for `mailflow queue destinations`.
public struct DestinationStatus: Sendable, Codable, Hashable {
    public var key: String
    public var window: Int
    public var ceiling: Int?
    public var sessions: Int
    public var waiting: Int
    public var delivered: Int
    public var deferred: Int
    public var throttles: Int
    public var parkedUntil: Date?
    public var lastError: String?
}

/// Outbound delivery: routes a message's recipients for one domain to a smart host or the domain's
/// MX hosts, and sends them in one transaction over a pooled, reused connection, with per-provider
/// adaptive concurrency (`DestinationConcurrency`).
public final class OutboundDelivery: Sendable {
    let settings: OutboundSettings
    let resolver: MailExchangerResolving
    let group: EventLoopGroup
    let tlsOpportunistic: NIOSSLContext?
    let pool: DestinationPool
    let logger: Logger
    /// The time that adaptive concurrency decides by (parking, quiet periods); injected for tests.
    /// Monotonic by default (`monotonicNow`): a wall clock stepped back must not keep a parked
    /// destination parked for the step.
    let now: @Sendable () -> Date

    /// The monotonic clock as a `Date` (seconds since boot after the reference date): only its
    /// differences mean anything; `DestinationPool.wallTime` turns one into a wall-clock time.
    public static let monotonicNow: @Sendable () -> Date = {
        Date(timeIntervalSinceReferenceDate: Double(DispatchTime.now().uptimeNanoseconds) / 1e9)
    }

    public init(
        settings: OutboundSettings, resolver: MailExchangerResolving, group: EventLoopGroup, logger: Logger,
        now: @escaping @Sendable () -> Date = OutboundDelivery.monotonicNow
    ) throws {
        self.now = now
        self.settings = settings
        self.resolver = resolver
        self.group = group
        self.logger = logger
        var tls = TLSConfiguration.makeClientConfiguration()
        // Opportunistic TLS on port 25 cannot verify (RFC 7435): encrypt, record that it was not
        // verified. Connectors that name a host verify (a context per connector).
        tls.certificateVerification = .none
        tls.minimumTLSVersion = .tlsv12
        self.tlsOpportunistic = try NIOSSLContext(configuration: tls)
        self.pool = DestinationPool(settings: settings, now: now)
    }

    /// The provider key of an MX host: its name without the first label when it has three or more,
    /// so `contoso-com.mail.protection.outlook.com` and `fabrikam-com.mail.protection.outlook.com`
    /// share `mail.protection.outlook.com`.
    public static func providerKey(_ host: String) -> String {
        let labels = host.lowercased().split(separator: ".")
        guard labels.count >= 3 else { return host.lowercased() }
        return labels.dropFirst().joined(separator: ".")
    }

    public func destinations() async -> [DestinationStatus] { await pool.statuses() }

    /// Delivers `envelope` (recipients of one domain) and returns one outcome per recipient.
    public func deliver(
        domain: String, envelope: OutboundEnvelope, body: OutboundBody, connector: OutboundConnector?
    ) async -> [RemoteOutcome] {
        func all(_ reply: SMTPReply, host: String? = nil) -> [RemoteOutcome] {
            envelope.recipients.indices.map {
                RemoteOutcome(result: RecipientResult.from(reply, index: $0), remoteHost: host, remoteIP: nil, tls: nil)
            }
        }
        // Candidate hosts and the destination key.
        let hosts: [String]
        let port: Int
        let key: String
        let tls: TLSRequirement
        let verifyName: String?
        if let c = connector {
            hosts = [c.host]
            port = c.port
            key = "smarthost:\(c.host):\(c.port)"
            tls = c.verifyName != nil ? .required : c.tls
            verifyName = c.verifyName
        } else {
            switch await resolver.exchangers(for: domain) {
            case .permanent(let r): return all(r)
            case .transient(let r): return all(r)
            case .hosts(let h):
                guard let first = h.first else {
                    return all(SMTPReply(451, .init(4, 4, 3), "No mail exchanger found for \(domain)"))
                }
                hosts = h
                key = Self.providerKey(first)
            }
            port = settings.mxPort
            tls = .opportunistic
            verifyName = nil
        }
        var lastReply = SMTPReply(451, .init(4, 4, 1), "No connection to \(domain)")
        // A session throttled while others of ours were open is retried here, in memory, once the
        // (now smaller) window allows, instead of waiting for the queue's retry schedule; one
        // throttled with none open is not: the remote refuses even one session.
        for _ in 0..<6 {
            let slot = await pool.acquire(key)
            var connection: SMTPClientConnection
            var host = hosts.first
            switch slot {
            case .parked(let until, let lastError):
                return all(
                    SMTPReply(
                        451, .init(4, 4, 5),
                        "Destination \(key) is parked after repeated failures until \(await pool.wallTime(until)), last: "
                            + (lastError ?? lastReply.description)))
            case .reuse(let c, let h):
                connection = c
                host = h
            case .open:
                let openedAt = now()
                do {
                    (connection, host) = try await connect(hosts: hosts, port: port, tls: tls, verifyName: verifyName)
                } catch let f as SMTPClientFailure {
                    lastReply = f.reply
                    let throttled = f.isThrottle
                    let working = await pool.release(
                        key, connection: nil, host: nil, signal: throttled ? .throttle : .failure, error: f.reply,
                        openedAt: openedAt)
                    // Only "slow down" while other sessions work is worth an immediate retry here
                    // (fewer sessions will be let in); anything else waits for the queue's schedule.
                    if throttled, working > 0 { continue }
                    return all(f.reply, host: hosts.first)
                } catch {
                    lastReply = SMTPReply(451, .init(4, 4, 1), "\(error)")
                    await pool.release(key, connection: nil, host: nil, signal: .failure, error: lastReply)
                    return all(lastReply, host: hosts.first)
                }
            }
            let results = await connection.send(envelope, body: body)
            let tlsInfo = await connection.tlsInfo
            let usable = await connection.isUsable
            // A session Mailflow had to end (a remote that went silent, trickled past a deadline or
            // sent an unparseable or oversized reply) is a failure of the destination, as a refused
            // connection is: it narrows the window instead of counting as a delivery, and its reply
            // (Mailflow's own words) is never read as the remote asking to slow down.
            let failure = connection.failure.flatMap { $0.isMailflowsOwn ? $0 : nil }
            let throttled =
                failure == nil && results.allSatisfy { $0.disposition == .deferred }
                && results.contains {
                    DestinationConcurrency.isThrottle($0.reply) || $0.reply == ClientSession.abruptClose
                }
            let failed = !usable && failure != nil && results.allSatisfy { $0.disposition == .deferred }
            let signal: DestinationPool.Signal = throttled ? .throttle : failed ? .failure : .success
            let working = await pool.release(
                key, connection: usable ? connection : nil, host: host, signal: signal,
                error: throttled || failed ? results.first?.reply : nil)
            // A remote that asks to slow down while no other session of ours is open refuses even
            // one: another session now is only more load on it, so the queue's schedule decides.
            if throttled, working > 0, results.first?.reply != ClientSession.abruptClose {
                lastReply = results.first?.reply ?? lastReply
                continue
            }
            return results.map {
                RemoteOutcome(
                    result: $0, remoteHost: host, remoteIP: connection.remoteAddress.ipAddress,
                    tls: tlsInfo.map { "\($0.version)\($0.verified ? " verified" : "")" })
            }
        }
        return all(lastReply)
    }

    func connect(hosts: [String], port: Int, tls: TLSRequirement, verifyName: String?) async throws -> (
        SMTPClientConnection, String?
    ) {
        var last: Error = SMTPClientFailure.noAddress(hosts.joined(separator: ", "))
        var context = tlsOpportunistic
        if let name = verifyName {
            var c = TLSConfiguration.makeClientConfiguration()
            c.minimumTLSVersion = .tlsv12
            context = try NIOSSLContext(configuration: c)
            _ = name
        }
        for host in hosts {
            let addresses: [String]
            if (try? SocketAddress(ipAddress: host, port: port)) != nil {
                addresses = [host]
            } else {
                do {
                    addresses = try await resolver.addresses(for: host)
                } catch {
                    last = error
                    continue
                }
            }
            for a in addresses {
                guard let sa = try? SocketAddress(ipAddress: a, port: port) else { continue }
                do {
                    let c = try await SMTPClientConnection.connect(
                        to: sa, group: group, heloName: settings.heloName, tls: tls, tlsContext: context,
                        serverName: verifyName ?? ((try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil),
                        verify: verifyName != nil, timeouts: settings.timeouts)
                    return (c, host)
                } catch let f as SMTPClientFailure {
                    last = f
                    // A throttling refusal is the destination's answer, not this host's: stop here.
                    if f.isThrottle { throw f }
                }
            }
        }
        throw last
    }
}

/// Per-destination connection pools and windows.
actor DestinationPool {
    enum Slot {
        case reuse(SMTPClientConnection, String?)
        case open
        case parked(Date, String?)
    }

    enum Signal {
        case success
        case throttle
        case failure
    }

    struct Destination {
        var concurrency: DestinationConcurrency
        var sessions = 0
        var waiters: [CheckedContinuation<Slot, Never>] = []
        var delivered = 0
        var deferred = 0
        var lastError: String?
    }

    let settings: OutboundSettings
    let now: @Sendable () -> Date
    var destinations: [String: Destination] = [:]

    init(settings: OutboundSettings, now: @escaping @Sendable () -> Date = OutboundDelivery.monotonicNow) {
        self.settings = settings
        self.now = now
    }

    func acquire(_ key: String) async -> Slot {
        var d =
            destinations[key]
            ?? Destination(
                concurrency: DestinationConcurrency(initial: settings.initialWindow, maximum: settings.maxWindow))
        if let until = d.concurrency.parkedUntilIfParked(now()) {
            destinations[key] = d
            return .parked(until, d.lastError)
        }
        if d.sessions < d.concurrency.window {
            d.sessions += 1
            destinations[key] = d
            return .open
        }
        destinations[key] = d
        return await withCheckedContinuation { c in destinations[key]?.waiters.append(c) }
    }

    /// Gives back a session slot and records how it went. Returns how many other sessions were
    /// open to the destination at that moment.
    @discardableResult
    func release(
        _ key: String, connection: SMTPClientConnection?, host: String?, signal: Signal, error: SMTPReply?,
        openedAt: Date? = nil
    ) async -> Int {
        guard var d = destinations[key] else {
            if let connection { await connection.close() }
            return 0
        }
        let others = max(0, d.sessions - 1)
        let now = self.now()
        switch signal {
        case .success:
            d.concurrency.recordSuccess(now: now)
            d.delivered += 1
        case .throttle:
            d.concurrency.recordThrottle(working: others, now: now, openedAt: openedAt)
            d.deferred += 1
        case .failure:
            d.concurrency.recordFailure(now: now)
            d.deferred += 1
        }
        if let error { d.lastError = error.description }
        var toClose: SMTPClientConnection?
        if let connection, !d.waiters.isEmpty, d.sessions <= d.concurrency.window {
            // Hand the open session straight to the next message: connection reuse.
            let w = d.waiters.removeFirst()
            destinations[key] = d
            w.resume(returning: .reuse(connection, host))
            return others
        }
        toClose = connection
        if toClose == nil { d.sessions -= 1 }
        destinations[key] = d
        wakeWaiters(key, now: now)
        if let toClose {
            // The session counts until the remote has seen QUIT and closed, so a remote that counts
            // its sessions never sees one too many; the delivery that used it does not wait.
            Task {
                await toClose.close()
                self.sessionClosed(key)
            }
        }
        return others
    }

    /// A time on `now`'s timeline (monotonic by default) as wall-clock time, for people.
    func wallTime(_ t: Date) -> Date { Date().addingTimeInterval(t.timeIntervalSince(now())) }

    func sessionClosed(_ key: String) {
        destinations[key]?.sessions -= 1
        wakeWaiters(key, now: now())
    }

    /// The window may have grown or a session ended: let waiters open new sessions (or learn that
    /// the destination is parked).
    func wakeWaiters(_ key: String, now: Date) {
        guard var d = destinations[key] else { return }
        while d.sessions < d.concurrency.window, !d.waiters.isEmpty {
            d.sessions += 1
            d.waiters.removeFirst().resume(returning: .open)
        }
        if let until = d.concurrency.parkedUntilIfParked(now) {
            for w in d.waiters { w.resume(returning: .parked(until, d.lastError)) }
            d.waiters = []
        }
        destinations[key] = d
    }

    func statuses() -> [DestinationStatus] {
        destinations.map { k, d in
            DestinationStatus(
                key: k, window: d.concurrency.window, ceiling: d.concurrency.ceiling, sessions: d.sessions,
                waiting: d.waiters.count, delivered: d.delivered, deferred: d.deferred,
                throttles: d.concurrency.throttles,
                parkedUntil: d.concurrency.parkedUntil.map(wallTime), lastError: d.lastError)
        }.sorted { $0.key < $1.key }
    }
}

extension DestinationConcurrency {
    func parkedUntilIfParked(_ now: Date) -> Date? {
        isParked(at: now) ? parkedUntil : nil
    }
}

extension SMTPClientFailure {
    /// Whether the remote itself asked to slow down (a `421`, a busy or rate reply at greeting or
    /// EHLO). Only a remote's reply can say so: Mailflow's own words for a failure ("reply has too
    /// many lines", a timeout) never do, whatever they contain.
    var isThrottle: Bool {
        if case .refused(let reply) = self { return DestinationConcurrency.isThrottle(reply) }
        return false
    }

    /// Whether Mailflow ended the session (a deadline, a reply it could not take, a failed
    /// handshake), rather than the remote (a reply, a dropped connection).
    var isMailflowsOwn: Bool {
        switch self {
        case .timeout, .replyParse, .tlsHandshake: return true
        case .connect, .noAddress, .addressLookup, .closed, .refused: return false
        }
    }
}
