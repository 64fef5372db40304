import Foundation
import NIOCore
import SMTPCore
import Synchronization
import Testing

@testable import Ingress

/// A clock the test moves by hand: rate limits are tested without sleeping.
final class FakeClock: Sendable {
    let now = Mutex(NIODeadline.uptimeNanoseconds(1_000_000_000))
    func advance(_ t: TimeAmount) { now.withLock { $0 = $0 + t } }
    var read: @Sendable () -> NIODeadline { { [self] in self.now.withLock { $0 } } }
}

final class EventLog: Sendable {
    let events = Mutex<[ThrottleEvent]>([])
    var record: @Sendable (ThrottleEvent) -> Void { { [self] e in self.events.withLock { $0.append(e) } } }
    var all: [ThrottleEvent] { events.withLock { $0 } }
}

struct AdmissionControlTests {
    static let forestText =
        "The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel"

    func limits() -> AdmissionLimits {
        var l = AdmissionLimits()
        l.maxConnections = 100
        l.perSourceMaxConnections = 3
        l.perSourceConnectionsPerMinute = 60
        l.perSourceMessagesPerMinute = 6
        l.mailboxMessagesPerHour = 9
        l.mailboxMessagesPerHourPerSender = 3
        l.forests = [
            ResourceForest(
                name: "NAMPR01", region: "north-america", tenants: ["contoso"], maxConnections: 2,
                maxMessagesPerMinute: 4),
            ResourceForest(
                name: "DEUPR01", region: "germany", tenants: ["fabrikam"], maxConnections: 2, maxMessagesPerMinute: 0),
        ]
        return l
    }

    @Test func forestCapRefusesWithExchangeReplyAndReleases() {
        let log = EventLog()
        let a = AdmissionControl(limits: limits(), onThrottle: log.record)
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.2", holdsOtherForest: false).0 == .admit)
        let (third, forest) = a.admitForestSession(tenant: "contoso", source: "192.0.2.3", holdsOtherForest: false)
        #expect(third == .refuseAndClose(SMTPReply(421, .init(4, 3, 2), Self.forestText)))
        #expect(forest.name == "NAMPR01")
        // Another forest is unaffected.
        #expect(a.admitForestSession(tenant: "fabrikam", source: "192.0.2.3", holdsOtherForest: false).0 == .admit)
        // A session already holding a forest only has the recipient deferred.
        if case .refuse(let r) = a.admitForestSession(tenant: "contoso", source: "192.0.2.3", holdsOtherForest: true).0
        {
            #expect(r.code == 451)
            #expect(r.enhancedCode == .init(4, 3, 2))
        } else {
            Issue.record("expected a deferral")
        }
        a.releaseForestSession("NAMPR01")
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.3", holdsOtherForest: false).0 == .admit)
        let events = log.all
        #expect(events.count == 2)
        #expect(events[0].forest == "NAMPR01")
        #expect(events[0].region == "north-america")
        #expect(events[0].tenant == "contoso")
        #expect(events[0].source == "192.0.2.3")
        #expect(events[0].reply.hasPrefix("421 4.3.2 The maximum number"))
        #expect(a.usage().forests.first { $0.name == "NAMPR01" }?.refused == 2)
    }

    /// In a cluster a node admits up to its part of the forest; a smaller part stops new sessions
    /// until the node is below it, and a rate part of 0 refuses every message.
    @Test func aClusterPartCapsTheForestOnThisNode() {
        var l = limits()
        l.forests[0].maxConnections = 10
        let clock = FakeClock()
        let a = AdmissionControl(limits: l, clock: clock.read)
        a.setForestShares(["NAMPR01": ForestShare(connections: 3, messagesPerMinute: 1, nodes: 3)])
        for _ in 0..<3 {
            #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        }
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 != .admit)
        #expect(a.forestSessions == ["NAMPR01": 3])
        #expect(a.usage().forests.first { $0.name == "NAMPR01" }?.share?.connections == 3)
        // A node gone: this one's part grows to 5.
        a.setForestShares(["NAMPR01": ForestShare(connections: 5, messagesPerMinute: 2, nodes: 2)])
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        // A node joined: the part shrinks below what is held; nobody new until below it.
        a.setForestShares(["NAMPR01": ForestShare(connections: 2, messagesPerMinute: 0, nodes: 5)])
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 != .admit)
        #expect(a.admitForestMessage(tenant: "contoso", source: "192.0.2.1") != .admit, "a rate part of 0")
        a.setForestShares(nil)
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        // The bucket keeps the tokens it had (none) and refills at the whole forest's rate.
        clock.advance(.seconds(20))
        #expect(a.admitForestMessage(tenant: "contoso", source: "192.0.2.1") == .admit, "the whole forest's rate")
    }

    @Test func tenantsOutsideForestsShareTheDefault() {
        let a = AdmissionControl(limits: limits())
        #expect(a.forest(forTenant: "unlisted").name == ResourceForest.defaultName)
        #expect(a.admitForestSession(tenant: "unlisted", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        #expect(a.usage().forests.first { $0.name == "default" }?.sessions == 1)
    }

    @Test func connectionCapsPerSourceAndServer() {
        var l = limits()
        l.maxConnections = 4
        let a = AdmissionControl(limits: l)
        for _ in 0..<3 { #expect(a.admitConnection(source: "192.0.2.1") == .admit) }
        guard case .refuseAndClose(let r) = a.admitConnection(source: "192.0.2.1") else {
            Issue.record("expected refusal")
            return
        }
        #expect(r.code == 421 && r.enhancedCode == .init(4, 7, 0))
        #expect(a.admitConnection(source: "192.0.2.2") == .admit)
        guard case .refuseAndClose(let s) = a.admitConnection(source: "192.0.2.3") else {
            Issue.record("expected server cap")
            return
        }
        #expect(s.code == 421 && s.enhancedCode == .init(4, 3, 2))
        for _ in 0..<3 { a.releaseConnection(source: "192.0.2.1") }
        a.releaseConnection(source: "192.0.2.2")
        let u = a.usage()
        #expect(u.connections == 0)
        #expect(u.busiestSources.isEmpty)
    }

    @Test func ipv6SourcesAggregatePerSlash64() {
        let a = AdmissionControl(limits: limits())
        #expect(AdmissionControl.sourceKey("2001:db8:1:2::5") == "2001:db8:1:2::/64")
        #expect(AdmissionControl.sourceKey("::ffff:192.0.2.7") == "192.0.2.7")
        #expect(AdmissionControl.sourceKey("192.0.2.7") == "192.0.2.7")
        for i in 1...3 { #expect(a.admitConnection(source: "2001:db8:1:2::\(i)") == .admit) }
        // A fourth address in the same /64 counts against the same source.
        if case .admit = a.admitConnection(source: "2001:db8:1:2:ffff::9") { Issue.record("/64 not aggregated") }
        #expect(a.admitConnection(source: "2001:db8:1:3::1") == .admit)
    }

    @Test func connectionRateOnAFakeClock() {
        let clock = FakeClock()
        var l = limits()
        l.perSourceMaxConnections = 1000
        l.maxConnections = 1000
        let a = AdmissionControl(limits: l, clock: clock.read)
        for _ in 0..<60 { #expect(a.admitConnection(source: "192.0.2.1") == .admit) }
        if case .admit = a.admitConnection(source: "192.0.2.1") { Issue.record("rate not enforced") }
        // One second brings back one connection (60 a minute).
        clock.advance(.seconds(1))
        #expect(a.admitConnection(source: "192.0.2.1") == .admit)
        if case .admit = a.admitConnection(source: "192.0.2.1") { Issue.record("rate not enforced") }
        clock.advance(.minutes(1))
        for _ in 0..<60 { #expect(a.admitConnection(source: "192.0.2.1") == .admit) }
    }

    @Test func messageRatePerSource() {
        let clock = FakeClock()
        let a = AdmissionControl(limits: limits(), clock: clock.read)
        for _ in 0..<6 { #expect(a.admitMessage(source: "192.0.2.1") == .admit) }
        guard case .refuse(let r) = a.admitMessage(source: "192.0.2.1") else {
            Issue.record("expected refusal")
            return
        }
        #expect(r.code == 451 && r.enhancedCode == .init(4, 7, 1))
        #expect(a.admitMessage(source: "192.0.2.2") == .admit)
        clock.advance(.seconds(10))  // 6 a minute: one every 10 s
        #expect(a.admitMessage(source: "192.0.2.1") == .admit)
    }

    @Test func forestMessageRate() {
        let clock = FakeClock()
        let a = AdmissionControl(limits: limits(), clock: clock.read)
        for _ in 0..<4 { #expect(a.admitForestMessage(tenant: "contoso", source: "192.0.2.1") == .admit) }
        if case .admit = a.admitForestMessage(tenant: "contoso", source: "192.0.2.1") { Issue.record("not enforced") }
        // 0 means no limit.
        for _ in 0..<100 { #expect(a.admitForestMessage(tenant: "fabrikam", source: "192.0.2.1") == .admit) }
        clock.advance(.seconds(20))
        #expect(a.admitForestMessage(tenant: "contoso", source: "192.0.2.1") == .admit)
    }

    @Test func mailboxReceiveRateWithAThirdPerSender() {
        let clock = FakeClock()
        let a = AdmissionControl(limits: limits(), clock: clock.read)
        let box = "alice@contoso.test"
        for _ in 0..<3 {
            #expect(
                a.admitRecipient(mailbox: box, sender: "s1@x.test", tenant: "contoso", source: "192.0.2.1") == .admit)
        }
        guard
            case .refuse(let r) = a.admitRecipient(
                mailbox: box, sender: "s1@x.test", tenant: "contoso", source: "192.0.2.1")
        else {
            Issue.record("per-sender share not enforced")
            return
        }
        #expect(r.code == 450 && r.enhancedCode == .init(4, 2, 1))
        for _ in 0..<3 {
            #expect(
                a.admitRecipient(mailbox: box, sender: "s2@x.test", tenant: "contoso", source: "192.0.2.1") == .admit)
        }
        for _ in 0..<3 {
            #expect(
                a.admitRecipient(mailbox: box, sender: "s3@x.test", tenant: "contoso", source: "192.0.2.1") == .admit)
        }
        // The mailbox's 9 an hour are used up, whoever sends.
        if case .admit = a.admitRecipient(mailbox: box, sender: "s4@x.test", tenant: "contoso", source: "192.0.2.1") {
            Issue.record("mailbox rate not enforced")
        }
        #expect(
            a.admitRecipient(mailbox: "bob@contoso.test", sender: "s1@x.test", tenant: "contoso", source: "192.0.2.1")
                == .admit)
        clock.advance(.minutes(20))  // 9 an hour: 3 back after 20 minutes
        #expect(a.admitRecipient(mailbox: box, sender: "s4@x.test", tenant: "contoso", source: "192.0.2.1") == .admit)
    }

    @Test func reloadKeepsLiveCounters() {
        let a = AdmissionControl(limits: limits())
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        var bigger = limits()
        bigger.forests[0].maxConnections = 3
        a.update(bigger)
        #expect(a.usage().forests.first { $0.name == "NAMPR01" }?.sessions == 2)
        #expect(a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 == .admit)
        if case .admit = a.admitForestSession(tenant: "contoso", source: "192.0.2.1", holdsOtherForest: false).0 {
            Issue.record("new cap not applied")
        }
    }

    @Test func tokenBucketRefillsEvenly() {
        let t0 = NIODeadline.uptimeNanoseconds(0)
        var b = TokenBucket(capacity: 2, period: .seconds(2), now: t0)
        let taken = [
            b.take(now: t0), b.take(now: t0), b.take(now: t0), b.take(now: t0 + .milliseconds(999)),
            b.take(now: t0 + .milliseconds(1001)),
        ]
        #expect(taken == [true, true, false, false, true])
    }
}
