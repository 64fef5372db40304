import Foundation
import NIOCore
import SMTPCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A resource forest: a pool of tenants with its own capacity, the partition behind Exchange
/// Online's `421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded
/// a limit` (incident EX1331830; the model and its replies: docs/admission.md).
public struct ResourceForest: Sendable, Hashable, Codable {
    public var name: String
    public var region: String
    public var tenants: [String]
    /// Concurrent inbound sessions landing on this forest.
    public var maxConnections: Int
    /// Messages a minute into this forest; 0 means no limit.
    public var maxMessagesPerMinute: Int

    public init(name: String, region: String, tenants: [String], maxConnections: Int, maxMessagesPerMinute: Int) {
        self.name = name
        self.region = region
        self.tenants = tenants
        self.maxConnections = maxConnections
        self.maxMessagesPerMinute = maxMessagesPerMinute
    }

    /// Tenants in no configured forest share this one, bounded only by the server-wide cap.
    public static let defaultName = "default"
}

/// The admission limits (docs/configuration.md has every default and the reply each produces).
public struct AdmissionLimits: Sendable, Equatable {
    public var maxConnections = 5000
    public var perSourceMaxConnections = 20
    public var perSourceConnectionsPerMinute = 1200
    public var perSourceMessagesPerMinute = 600
    public var mailboxMessagesPerHour = 3600
    public var mailboxMessagesPerHourPerSender = 1200
    public var forests: [ResourceForest] = []
    /// Descriptors new sessions may not take (`limits.descriptor_reserve`); nil: a tenth of the
    /// limit, at least 64 (`DescriptorTable.defaultReserve`).
    public var descriptorReserve: Int?

    public init() {}
}

/// A refusal or deferral made by admission control, for the trace stream.
public struct ThrottleEvent: Sendable, Hashable, Codable {
    public var time: Date
    public var forest: String?
    public var region: String?
    public var tenant: String?
    public var source: String
    public var reply: String

    public init(time: Date, forest: String?, region: String?, tenant: String?, source: String, reply: String) {
        self.time = time
        self.forest = forest
        self.region = region
        self.tenant = tenant
        self.source = source
        self.reply = reply
    }
}

/// What admission control says to a request.
public enum AdmissionDecision: Sendable, Equatable {
    case admit
    /// Refuse this request; the session goes on.
    case refuse(SMTPReply)
    /// Refuse and close the connection.
    case refuseAndClose(SMTPReply)
}

/// Live usage, for `mailflow limits` and tests (every counter back to zero after churn).
public struct AdmissionUsage: Sendable, Codable, Equatable {
    public struct Forest: Sendable, Codable, Equatable {
        public var name: String
        public var region: String
        public var sessions: Int
        public var maxConnections: Int
        public var maxMessagesPerMinute: Int
        public var refused: Int
        /// This node's part of the forest's limits in a cluster (nil: the whole forest).
        public var share: ForestShare?
    }

    public struct Source: Sendable, Codable, Equatable {
        public var source: String
        public var sessions: Int
        public var maxConnections: Int
    }

    public var time: Date
    public var connections: Int
    public var maxConnections: Int
    public var forests: [Forest]
    public var busiestSources: [Source]
    public var refusals: [String: Int]
    /// Open descriptors against the process limit, as last counted (nil before the first count).
    public var descriptors: Descriptors?

    /// Open descriptors (`/proc/self/fd`), the soft `RLIMIT_NOFILE` (nil: unlimited) and the
    /// reserve new sessions may not take: connections are refused with `421 4.3.2` from
    /// `limit - reserve` open descriptors on.
    public struct Descriptors: Sendable, Codable, Equatable {
        public var open: Int
        public var limit: Int?
        public var reserve: Int
    }
}

/// Admission control shared by every session of a server: server-wide and per-source connection
/// caps, per-source connection and message rates (IPv6 aggregated per /64), forest session caps and
/// message rates, and per-mailbox receive rates.
///
/// Every grant is released by the session that holds it on every path (QUIT, RSET, timeout, TLS
/// failure, reset, shutdown), so counters return to zero. Time comes from `clock`, so rate tests run
/// on a fake clock. Limits can be replaced while running (SIGHUP); counters are kept.
public final class AdmissionControl: Sendable {
    struct State: Sendable {
        var limits: AdmissionLimits
        var forestByTenant: [String: ResourceForest] = [:]
        var connections = 0
        var perSource: [String: Int] = [:]
        var forestSessions: [String: Int] = [:]
        var forestRefused: [String: Int] = [:]
        var connectionRate: [String: TokenBucket] = [:]
        var messageRate: [String: TokenBucket] = [:]
        var forestMessageRate: [String: TokenBucket] = [:]
        var mailboxRate: [String: TokenBucket] = [:]
        var mailboxSenderRate: [String: TokenBucket] = [:]
        var refusals: [String: Int] = [:]
        var operations = 0
        var descriptors: DescriptorSample?
        /// Each forest's part held by this node in a cluster (`setForestShares`); empty: the whole
        /// forest.
        var forestShares: [String: ForestShare] = [:]
    }

    /// The last count of open descriptors, and the sessions open at that moment: until the next
    /// count, the descriptors in use are estimated as the count plus the sessions opened since.
    struct DescriptorSample: Sendable {
        var open: Int
        var limit: Int?
        var connections: Int
    }

    let state: Mutex<State>
    let clock: @Sendable () -> NIODeadline
    let wallClock: @Sendable () -> Date
    let onThrottle: @Sendable (ThrottleEvent) -> Void

    public init(
        limits: AdmissionLimits, clock: @escaping @Sendable () -> NIODeadline = { .now() },
        wallClock: @escaping @Sendable () -> Date = { Date() },
        onThrottle: @escaping @Sendable (ThrottleEvent) -> Void = { _ in }
    ) {
        var s = State(limits: limits)
        Self.index(&s)
        self.state = Mutex(s)
        self.clock = clock
        self.wallClock = wallClock
        self.onThrottle = onThrottle
    }

    static func index(_ s: inout State) {
        s.forestByTenant = [:]
        for f in s.limits.forests { for t in f.tenants { s.forestByTenant[t] = f } }
    }

    /// New limits for new requests; live grants and counters stay.
    public func update(_ limits: AdmissionLimits) {
        state.withLock { s in
            s.limits = limits
            Self.index(&s)
        }
    }

    public var limits: AdmissionLimits { state.withLock { $0.limits } }

    /// This node's part of each forest's limits, from the cluster membership after each heartbeat
    /// (nil or empty: the whole forest). Sessions already held stay; a node holding more than a new,
    /// smaller share admits nobody into that forest until it is below it.
    public func setForestShares(_ shares: [String: ForestShare]?) {
        let now = clock()
        state.withLock { s in
            s.forestShares = shares ?? [:]
            // Each message-rate bucket takes its new size now, so the time from here on refills at
            // the new rate (the bucket keeps the tokens it has, up to the new size).
            for f in s.limits.forests where f.maxMessagesPerMinute > 0 {
                let rate = s.forestShares[f.name]?.messagesPerMinute ?? f.maxMessagesPerMinute
                s.forestMessageRate[f.name] = s.forestMessageRate[f.name]?.resized(to: rate, now: now)
            }
        }
    }

    /// This node's part of each forest, as last set (empty: the whole forest).
    public var forestShares: [String: ForestShare] { state.withLock { $0.forestShares } }

    /// The sessions this node holds in each forest (what a cluster heartbeat publishes).
    public var forestSessions: [String: Int] { state.withLock { $0.forestSessions } }

    /// The forest a tenant's mail lands on.
    public func forest(forTenant tenant: String) -> ResourceForest {
        state.withLock { s in Self.forest(s, tenant) }
    }

    static func forest(_ s: State, _ tenant: String) -> ResourceForest {
        s.forestByTenant[tenant]
            ?? ResourceForest(
                name: ResourceForest.defaultName, region: "default", tenants: [],
                maxConnections: s.limits.maxConnections,
                maxMessagesPerMinute: 0)
    }

    /// The key a source is counted under: the address for IPv4, its /64 for IPv6.
    public static func sourceKey(_ address: String) -> String {
        guard address.contains(":"), let sa = try? SocketAddress(ipAddress: address, port: 0),
            case .v6(let v6) = sa
        else { return address }
        var a = v6.address.sin6_addr
        let bytes = withUnsafeBytes(of: &a) { Array($0) }
        // IPv4-mapped addresses count as the IPv4 source.
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return bytes[12..<16].map(String.init).joined(separator: ".")
        }
        // The /64 in canonical text form (RFC 5952), e.g. `2001:db8:1:2::/64`.
        var prefix = in6_addr()
        withUnsafeMutableBytes(of: &prefix) { raw in
            for i in 0..<8 { raw[i] = bytes[i] }
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &prefix, &text, socklen_t(text.count)) != nil else { return address }
        let utf8 = text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: utf8, as: UTF8.self) + "/64"
    }

    func throttle(
        _ s: inout State, kind: String, forest: ResourceForest?, tenant: String?, source: String, reply: SMTPReply
    ) {
        s.refusals[kind, default: 0] += 1
        if let forest { s.forestRefused[forest.name, default: 0] += 1 }
        let event = ThrottleEvent(
            time: wallClock(), forest: forest?.name, region: forest?.region, tenant: tenant, source: source,
            reply: reply.description)
        onThrottle(event)
    }

    // MARK: connections

    /// At connect, before the greeting: server-wide cap (`421 4.3.2`), per-source cap and connection
    /// rate (`421 4.7.0`). On `.admit` the caller must `releaseConnection(source:)` when it closes.
    public func admitConnection(source address: String) -> AdmissionDecision {
        let key = Self.sourceKey(address)
        let now = clock()
        return state.withLock { s in
            s.operations += 1
            if s.operations % 4096 == 0 { Self.prune(&s, now) }
            if let d = s.descriptors, let limit = d.limit,
                d.open - d.connections + s.connections + 1 > limit - Self.reserve(s.limits, limit: limit)
            {
                // Refused while a descriptor is still there to refuse with: what is left is kept for
                // the queue, the spool and the deliveries of the sessions already in.
                let r = SMTPReply(
                    421, .init(4, 3, 2),
                    "Too many open connections to this server (descriptor limit), try again later, "
                        + "closing transmission channel")
                throttle(&s, kind: "descriptors", forest: nil, tenant: nil, source: address, reply: r)
                return .refuseAndClose(r)
            }
            if s.connections >= s.limits.maxConnections {
                let r = SMTPReply(
                    421, .init(4, 3, 2),
                    "Too many concurrent connections to this server, closing transmission channel")
                throttle(&s, kind: "server_connections", forest: nil, tenant: nil, source: address, reply: r)
                return .refuseAndClose(r)
            }
            if s.perSource[key, default: 0] >= s.limits.perSourceMaxConnections {
                let r = SMTPReply(
                    421, .init(4, 7, 0), "Too many concurrent connections from \(key), closing transmission channel")
                throttle(&s, kind: "source_connections", forest: nil, tenant: nil, source: address, reply: r)
                return .refuseAndClose(r)
            }
            let rate = s.limits.perSourceConnectionsPerMinute
            var bucket = s.connectionRate[key] ?? TokenBucket(capacity: rate, period: .minutes(1), now: now)
            guard bucket.take(now: now) else {
                s.connectionRate[key] = bucket
                let r = SMTPReply(
                    421, .init(4, 7, 0),
                    "Connection rate limit exceeded for \(key), server busy, try again later")
                throttle(&s, kind: "source_connection_rate", forest: nil, tenant: nil, source: address, reply: r)
                return .refuseAndClose(r)
            }
            s.connectionRate[key] = bucket
            s.connections += 1
            s.perSource[key, default: 0] += 1
            return .admit
        }
    }

    static func reserve(_ limits: AdmissionLimits, limit: Int) -> Int {
        limits.descriptorReserve ?? DescriptorTable.defaultReserve(limit: limit)
    }

    /// A fresh count of open descriptors (`DescriptorTable`): new connections are refused with
    /// `421 4.3.2` once the count, plus the sessions opened since, reaches the limit less the
    /// reserve. Called every second with the `limits.json` snapshot; never on an event loop (it
    /// reads `/proc`).
    public func sampleDescriptors() {
        guard let open = DescriptorTable.openCount() else { return }
        noteDescriptors(open: open, limit: DescriptorTable.limit())
    }

    /// Records a count of open descriptors taken now (tests hand in their own).
    public func noteDescriptors(open: Int, limit: Int?) {
        state.withLock { s in s.descriptors = DescriptorSample(open: open, limit: limit, connections: s.connections) }
    }

    public func releaseConnection(source address: String) {
        let key = Self.sourceKey(address)
        state.withLock { s in
            s.connections = max(0, s.connections - 1)
            let n = s.perSource[key, default: 0] - 1
            if n <= 0 { s.perSource.removeValue(forKey: key) } else { s.perSource[key] = n }
        }
    }

    // MARK: messages and recipients

    /// At MAIL: the per-source message rate (`451 4.7.1`).
    public func admitMessage(source address: String) -> AdmissionDecision {
        let key = Self.sourceKey(address)
        let now = clock()
        return state.withLock { s in
            let rate = s.limits.perSourceMessagesPerMinute
            var bucket = s.messageRate[key] ?? TokenBucket(capacity: rate, period: .minutes(1), now: now)
            defer { s.messageRate[key] = bucket }
            guard bucket.take(now: now) else {
                let r = SMTPReply(
                    451, .init(4, 7, 1), "Message rate limit exceeded for \(key), server busy, try again later")
                throttle(&s, kind: "source_message_rate", forest: nil, tenant: nil, source: address, reply: r)
                return .refuse(r)
            }
            return .admit
        }
    }

    /// At the first accepted RCPT for a forest in a session: the forest's session cap. A session
    /// holding no forest yet is closed with Exchange's `421 4.3.2`; a session already holding another
    /// forest has only this recipient deferred (`451 4.3.2`), so one full forest does not cost the
    /// recipients of a healthy one. On `.admit` the session holds the forest until it ends.
    public func admitForestSession(
        tenant: String, source address: String, holdsOtherForest: Bool
    ) -> (AdmissionDecision, ResourceForest) {
        state.withLock { s in
            let f = Self.forest(s, tenant)
            let cap = s.forestShares[f.name]?.connections ?? f.maxConnections
            if s.forestSessions[f.name, default: 0] >= cap {
                let text =
                    "The maximum number of concurrent connections per resource forest has exceeded a limit"
                if holdsOtherForest {
                    let r = SMTPReply(451, .init(4, 3, 2), "\(text), try this recipient again later")
                    throttle(&s, kind: "forest_connections", forest: f, tenant: tenant, source: address, reply: r)
                    return (.refuse(r), f)
                }
                let r = SMTPReply(421, .init(4, 3, 2), "\(text), closing transmission channel")
                throttle(&s, kind: "forest_connections", forest: f, tenant: tenant, source: address, reply: r)
                return (.refuseAndClose(r), f)
            }
            s.forestSessions[f.name, default: 0] += 1
            return (.admit, f)
        }
    }

    public func releaseForestSession(_ forest: String) {
        state.withLock { s in
            let n = s.forestSessions[forest, default: 0] - 1
            if n <= 0 { s.forestSessions.removeValue(forKey: forest) } else { s.forestSessions[forest] = n }
        }
    }

    /// At the first RCPT of a transaction for a forest: the forest's message rate (`451 4.7.1`).
    public func admitForestMessage(tenant: String, source address: String) -> AdmissionDecision {
        let now = clock()
        return state.withLock { s in
            let f = Self.forest(s, tenant)
            guard f.maxMessagesPerMinute > 0 else { return .admit }
            let rate = s.forestShares[f.name]?.messagesPerMinute ?? f.maxMessagesPerMinute
            var bucket =
                s.forestMessageRate[f.name].map { $0.resized(to: rate, now: now) }
                ?? TokenBucket(capacity: rate, period: .minutes(1), now: now)
            defer { s.forestMessageRate[f.name] = bucket }
            guard bucket.take(now: now) else {
                let r = SMTPReply(
                    451, .init(4, 7, 1), "Resource forest \(f.name) is receiving too many messages, try again later")
                throttle(&s, kind: "forest_message_rate", forest: f, tenant: tenant, source: address, reply: r)
                return .refuse(r)
            }
            return .admit
        }
    }

    /// At RCPT: the mailbox's receive rate (Exchange: 3,600 an hour, a third from any one sender),
    /// `450 4.2.1`, transient.
    public func admitRecipient(mailbox: String, sender: String, tenant: String, source address: String)
        -> AdmissionDecision
    {
        let now = clock()
        let box = mailbox.lowercased()
        let pair = box + "\u{0}" + sender.lowercased()
        return state.withLock { s in
            var all =
                s.mailboxRate[box]
                ?? TokenBucket(capacity: s.limits.mailboxMessagesPerHour, period: .hours(1), now: now)
            var one =
                s.mailboxSenderRate[pair]
                ?? TokenBucket(capacity: s.limits.mailboxMessagesPerHourPerSender, period: .hours(1), now: now)
            defer {
                s.mailboxRate[box] = all
                s.mailboxSenderRate[pair] = one
            }
            guard all.available(now: now) else {
                let r = SMTPReply(
                    450, .init(4, 2, 1), "Mailbox <\(mailbox)> is receiving messages too fast, try again later")
                throttle(
                    &s, kind: "mailbox_rate", forest: Self.forest(s, tenant), tenant: tenant, source: address, reply: r)
                return .refuse(r)
            }
            guard one.available(now: now) else {
                let r = SMTPReply(
                    450, .init(4, 2, 1),
                    "Mailbox <\(mailbox)> is receiving messages too fast from this sender, try again later")
                throttle(
                    &s, kind: "mailbox_sender_rate", forest: Self.forest(s, tenant), tenant: tenant, source: address,
                    reply: r)
                return .refuse(r)
            }
            _ = all.take(now: now)
            _ = one.take(now: now)
            return .admit
        }
    }

    /// Records a session-level refusal made outside admission control (too many errors, too many
    /// recipients, talking before the greeting) as a throttle event.
    public func recordRefusal(kind: String, reply: SMTPReply, source: String, tenant: String? = nil) {
        state.withLock { s in
            throttle(
                &s, kind: kind, forest: tenant.map { Self.forest(s, $0) }, tenant: tenant, source: source, reply: reply)
        }
    }

    /// Forgets buckets that are full again, so memory follows the active sources, not history.
    static func prune(_ s: inout State, _ now: NIODeadline) {
        s.connectionRate = s.connectionRate.filter {
            var b = $0.value
            return !b.isFull(now: now)
        }
        s.messageRate = s.messageRate.filter {
            var b = $0.value
            return !b.isFull(now: now)
        }
        s.mailboxRate = s.mailboxRate.filter {
            var b = $0.value
            return !b.isFull(now: now)
        }
        s.mailboxSenderRate = s.mailboxSenderRate.filter {
            var b = $0.value
            return !b.isFull(now: now)
        }
    }

    public func usage(topSources: Int = 10) -> AdmissionUsage {
        let now = wallClock()
        return state.withLock { s in
            var forests = s.limits.forests.map { f in
                AdmissionUsage.Forest(
                    name: f.name, region: f.region, sessions: s.forestSessions[f.name, default: 0],
                    maxConnections: f.maxConnections, maxMessagesPerMinute: f.maxMessagesPerMinute,
                    refused: s.forestRefused[f.name, default: 0], share: s.forestShares[f.name])
            }
            forests.append(
                AdmissionUsage.Forest(
                    name: ResourceForest.defaultName, region: "default",
                    sessions: s.forestSessions[ResourceForest.defaultName, default: 0],
                    maxConnections: s.limits.maxConnections, maxMessagesPerMinute: 0,
                    refused: s.forestRefused[ResourceForest.defaultName, default: 0], share: nil))
            let sources = s.perSource.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }
                .prefix(topSources)
                .map {
                    AdmissionUsage.Source(
                        source: $0.key, sessions: $0.value, maxConnections: s.limits.perSourceMaxConnections)
                }
            let descriptors = s.descriptors.map {
                AdmissionUsage.Descriptors(
                    open: $0.open, limit: $0.limit, reserve: $0.limit.map { Self.reserve(s.limits, limit: $0) } ?? 0)
            }
            return AdmissionUsage(
                time: now, connections: s.connections, maxConnections: s.limits.maxConnections, forests: forests,
                busiestSources: Array(sources), refusals: s.refusals, descriptors: descriptors)
        }
    }
}
