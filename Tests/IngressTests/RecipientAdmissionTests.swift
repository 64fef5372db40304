import Foundation
import SMTPCore
import Synchronization
import Testing

@testable import Ingress

/// Admission control as a script: each check answers what the test set, and every call is logged,
/// so a test sees which slot was taken and which was given back.
final class ScriptedAdmission: RecipientAdmissionChecks, Sendable {
    struct Script: Sendable {
        var forestSession: AdmissionDecision = .admit
        var forestMessage: AdmissionDecision = .admit
        var mailbox: AdmissionDecision = .admit
    }

    let script: Mutex<Script>
    let log = Mutex<[String]>([])
    /// Forest sessions held, as `AdmissionControl` would count them.
    let held = Mutex<[String: Int]>([:])

    init(_ script: Script = Script()) { self.script = Mutex(script) }

    var calls: [String] { log.withLock { $0 } }
    var holding: [String: Int] { held.withLock { $0.filter { $0.value != 0 } } }

    func forest(forTenant tenant: String) -> ResourceForest {
        ResourceForest(name: "F-\(tenant)", region: "r", tenants: [tenant], maxConnections: 1, maxMessagesPerMinute: 1)
    }

    func admitForestSession(tenant: String, source: String, holdsOtherForest: Bool) -> (
        AdmissionDecision, ResourceForest
    ) {
        let answer = script.withLock { $0.forestSession }
        log.withLock { $0.append("session \(tenant) other=\(holdsOtherForest)") }
        if answer == .admit { held.withLock { $0["F-\(tenant)", default: 0] += 1 } }
        return (answer, forest(forTenant: tenant))
    }

    func releaseForestSession(_ forest: String) {
        log.withLock { $0.append("release \(forest)") }
        held.withLock { $0[forest, default: 0] -= 1 }
    }

    func admitForestMessage(tenant: String, source: String) -> AdmissionDecision {
        log.withLock { $0.append("message \(tenant)") }
        return script.withLock { $0.forestMessage }
    }

    func admitRecipient(mailbox: String, sender: String, tenant: String, source: String) -> AdmissionDecision {
        log.withLock { $0.append("mailbox \(mailbox) from=\(sender)") }
        return script.withLock { $0.mailbox }
    }
}

struct RecipientAdmissionTests {
    static let directory = TenantDirectory(tenants: [
        Tenant(name: "contoso", domains: ["contoso.test"], mailboxes: ["alice"], maxMessageSize: 1000),
        Tenant(name: "fabrikam", domains: ["fabrikam.test"], mailboxes: ["bob"]),
    ])

    static let busy = SMTPReply(451, .init(4, 7, 1), "busy")
    static let slow = SMTPReply(450, .init(4, 2, 1), "slow")
    static let full = SMTPReply(421, .init(4, 3, 2), "full")
    static let deferred = SMTPReply(451, .init(4, 3, 2), "deferred")

    static func path(_ address: String) -> ForwardPath {
        guard case .rcpt(let p, _) = try? SMTPCommandParser.parse("RCPT TO:<\(address)>"[...]) else {
            fatalError("bad test address \(address)")
        }
        return p
    }

    static func request(_ address: String, size: Int? = nil, trusted: Bool = false) -> RecipientAdmission.Request {
        .init(path: path(address), sender: "s@x.test", declaredSize: size, relayAllowed: trusted, source: "192.0.2.1")
    }

    /// One recipient, every way it can end, and what it must leave held.
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var request: RecipientAdmission.Request
        var script = ScriptedAdmission.Script()
        var decision: ServerSession.RecipientDecision
        var took: String?
        var charged: String?
        /// Forest sessions still counted by admission control after the verdict.
        var holding: [String: Int]
        var calls: [String]
        var testDescription: String { name }
    }

    static let rows: [Row] = [
        Row(
            name: "local mailbox: slot, message, mailbox", request: request("alice@contoso.test"),
            decision: .accept(route: .local(domain: "contoso.test", mailbox: "alice")), took: "F-contoso",
            charged: "F-contoso", holding: ["F-contoso": 1],
            calls: ["session contoso other=false", "message contoso", "mailbox alice@contoso.test from=s@x.test"]),
        Row(
            name: "unknown mailbox: directory refuses, nothing asked", request: request("nobody@contoso.test"),
            decision: .reject(
                SMTPReply(550, .init(5, 1, 1), "Recipient <nobody@contoso.test> unknown: no such mailbox")),
            holding: [:], calls: []),
        Row(
            name: "other domain, untrusted: relaying denied", request: request("x@elsewhere.test"),
            decision: .reject(
                SMTPReply(550, .init(5, 7, 1), "Relaying denied: elsewhere.test is not a domain of this server")),
            holding: [:], calls: []),
        Row(
            name: "other domain, trusted: relayed, no forest", request: request("x@elsewhere.test", trusted: true),
            decision: .accept(route: .relay(domain: "elsewhere.test")), holding: [:], calls: []),
        Row(
            name: "declared size over the tenant limit", request: request("alice@contoso.test", size: 1001),
            decision: .reject(
                SMTPReply(552, .init(5, 3, 4), "Message size exceeds the limit of 1000 octets for contoso.test"),
                refusal: .messageSize), holding: [:], calls: []),
        Row(
            name: "declared size at the tenant limit", request: request("alice@contoso.test", size: 1000),
            decision: .accept(route: .local(domain: "contoso.test", mailbox: "alice")), took: "F-contoso",
            charged: "F-contoso", holding: ["F-contoso": 1],
            calls: ["session contoso other=false", "message contoso", "mailbox alice@contoso.test from=s@x.test"]),
        Row(
            name: "forest full: close", request: request("alice@contoso.test"),
            script: .init(forestSession: .refuseAndClose(full)), decision: .rejectAndClose(full), holding: [:],
            calls: ["session contoso other=false"]),
        Row(
            name: "forest full, deferred", request: request("alice@contoso.test"),
            script: .init(forestSession: .refuse(deferred)), decision: .reject(deferred), holding: [:],
            calls: ["session contoso other=false"]),
        Row(
            name: "forest message rate: slot given back", request: request("alice@contoso.test"),
            script: .init(forestMessage: .refuse(busy)), decision: .reject(busy), holding: [:],
            calls: ["session contoso other=false", "message contoso", "release F-contoso"]),
        Row(
            name: "mailbox rate: slot given back, message stays charged", request: request("alice@contoso.test"),
            script: .init(mailbox: .refuse(slow)), decision: .reject(slow), charged: "F-contoso", holding: [:],
            calls: [
                "session contoso other=false", "message contoso", "mailbox alice@contoso.test from=s@x.test",
                "release F-contoso",
            ]),
        Row(
            name: "postmaster: slot and message, no mailbox rate",
            request: .init(
                path: .postmaster, sender: "", declaredSize: nil, relayAllowed: false, source: "192.0.2.1"),
            decision: .accept(route: .local(domain: "contoso.test", mailbox: "postmaster")), took: "F-contoso",
            charged: "F-contoso", holding: ["F-contoso": 1], calls: ["session contoso other=false", "message contoso"]),
    ]

    @Test(arguments: rows)
    func firstRecipient(_ row: Row) {
        let admission = ScriptedAdmission(row.script)
        var state = RecipientAdmission()
        let verdict = state.decide(row.request, directory: Self.directory, admission: admission)
        #expect(verdict.decision == row.decision)
        #expect(verdict.tookForestSlot == row.took)
        #expect(verdict.chargedForest == row.charged)
        #expect(admission.holding == row.holding)
        #expect(admission.calls == row.calls)
        state.apply(verdict)
        #expect(state.heldForests == Set([row.took].compactMap { $0 }))
        state.releaseAll(to: admission)
        #expect(admission.holding == [:], "every slot goes back when the session ends")
    }

    @Test func aSecondRecipientOfTheSameForestTakesNothingMore() {
        let admission = ScriptedAdmission()
        var state = RecipientAdmission()
        state.apply(state.decide(Self.request("alice@contoso.test"), directory: Self.directory, admission: admission))
        let second = state.decide(Self.request("alice@contoso.test"), directory: Self.directory, admission: admission)
        #expect(second.tookForestSlot == nil)
        #expect(second.chargedForest == nil)
        #expect(admission.calls.filter { $0.hasPrefix("session") || $0.hasPrefix("message") }.count == 2)
        #expect(admission.holding == ["F-contoso": 1])
    }

    @Test func aSecondForestIsAskedAsHoldingAnother() {
        let admission = ScriptedAdmission()
        var state = RecipientAdmission()
        state.apply(state.decide(Self.request("alice@contoso.test"), directory: Self.directory, admission: admission))
        let second = state.decide(Self.request("bob@fabrikam.test"), directory: Self.directory, admission: admission)
        state.apply(second)
        #expect(second.tookForestSlot == "F-fabrikam")
        #expect(admission.calls.contains("session fabrikam other=true"))
        #expect(state.heldForests == ["F-contoso", "F-fabrikam"])
        state.releaseAll(to: admission)
        state.releaseAll(to: admission)
        #expect(admission.holding == [:], "released once, however often the session ends")
    }

    @Test func theNextTransactionIsChargedAgainButKeepsItsSlot() {
        let admission = ScriptedAdmission()
        var state = RecipientAdmission()
        state.apply(state.decide(Self.request("alice@contoso.test"), directory: Self.directory, admission: admission))
        state.transactionEnded()
        let next = state.decide(Self.request("alice@contoso.test"), directory: Self.directory, admission: admission)
        #expect(next.tookForestSlot == nil)
        #expect(next.chargedForest == "F-contoso")
        #expect(admission.calls.filter { $0.hasPrefix("message") }.count == 2)
        #expect(admission.calls.filter { $0.hasPrefix("session") }.count == 1)
    }

    static func recipient(_ route: Route) -> AcceptedRecipient {
        AcceptedRecipient(path: .postmaster, parameters: RecipientParameters(), route: route)
    }

    @Test(arguments: [
        ([Route](), 5000),
        ([.local(domain: "fabrikam.test", mailbox: "bob")], 5000),
        ([.local(domain: "fabrikam.test", mailbox: "bob"), .local(domain: "CONTOSO.test", mailbox: "alice")], 1000),
        ([.relay(domain: "contoso.test")], 5000),
        ([.local(domain: "unknown.test", mailbox: "x")], 5000),
    ])
    func sizeLimitIsTheSmallestTenantLimit(_ routes: [Route], _ limit: Int) {
        #expect(Self.directory.sizeLimit(for: routes.map(Self.recipient), serverLimit: 5000) == limit)
    }

    @Test(
        arguments: [
            ("a@x.test", [Route.local(domain: "fabrikam.test", mailbox: "bob")], "fabrikam"),
            ("a@contoso.test", [.relay(domain: "elsewhere.test")], "contoso"),
            ("a@contoso.test", [.local(domain: "unknown.test", mailbox: "x")], "contoso"),
            ("a@x.test", [.relay(domain: "elsewhere.test")], nil),
            ("", [.relay(domain: "elsewhere.test")], nil),
        ] as [(String, [Route], String?)])
    func owningTenant(_ sender: String, _ routes: [Route], _ tenant: String?) throws {
        let reverse: ReversePath =
            sender.isEmpty
            ? .null : try #require(try SMTPCommandParser.parse("MAIL FROM:<\(sender)>"[...]).reversePath)
        var tx = MailTransaction(sender: reverse, parameters: MailParameters())
        tx.recipients = routes.map(Self.recipient)
        #expect(Self.directory.owningTenant(of: tx) == tenant)
    }
}

extension SMTPCommand {
    var reversePath: ReversePath? {
        if case .mail(let p, _) = self { return p }
        return nil
    }
}
