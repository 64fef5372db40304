import SMTPCore
import Testing

@testable import Ingress

/// Postfix's duplicate filter: one envelope recipient per mailbox (issue 10 item 4).
struct DuplicateRecipientFilterTests {
    func local(_ localPart: String, _ domain: String = "contoso.test", notify: DSNNotify? = nil) -> AcceptedRecipient {
        let m = Mailbox(localPart: localPart, domain: domain)
        let directory = TenantDirectory(tenants: [
            Tenant(name: "c", domains: ["contoso.test"], mailboxes: ["alice", "bob"])
        ])
        guard case .accept(let route) = directory.decide(.mailbox(m)) else {
            Issue.record("not accepted: \(m)")
            return AcceptedRecipient(path: .mailbox(m), parameters: RecipientParameters(), route: .relay(domain: ""))
        }
        var p = RecipientParameters()
        p.notify = notify
        return AcceptedRecipient(path: .mailbox(m), parameters: p, route: route)
    }

    func relayed(_ localPart: String, _ domain: String) -> AcceptedRecipient {
        AcceptedRecipient(
            path: .mailbox(Mailbox(localPart: localPart, domain: domain)), parameters: RecipientParameters(),
            route: .relay(domain: domain.lowercased()))
    }

    @Test func oneRecipientPerLocalMailboxWhateverTheCaseOrQuoting() {
        var first = DSNNotify()
        first.failure = true
        let list =
            [local("alice", notify: first)] + Array(repeating: local("alice"), count: 199)
            + [local("ALICE"), local("Alice", "CONTOSO.TEST"), local("\"alice\""), local("bob")]
        let unique = DuplicateRecipientFilter.unique(list)
        #expect(
            unique.map(\.route) == [
                .local(domain: "contoso.test", mailbox: "alice"), .local(domain: "contoso.test", mailbox: "bob"),
            ])
        // The first occurrence wins, with its DSN parameters.
        #expect(unique[0].parameters.notify == first)
    }

    @Test func relayedRecipientsKeepTheirLocalPartCase() {
        let unique = DuplicateRecipientFilter.unique([
            relayed("Joe", "remote.test"), relayed("Joe", "REMOTE.test"), relayed("joe", "remote.test"),
            relayed("\"Joe\"", "remote.test"), relayed("ann", "remote.test"),
        ])
        #expect(unique.map(\.path.description) == ["<Joe@remote.test>", "<joe@remote.test>", "<ann@remote.test>"])
    }

    @Test func distinctRecipientsAreKeptInOrder() {
        let list = [local("bob"), local("alice"), relayed("x", "r.test")]
        #expect(DuplicateRecipientFilter.unique(list) == list)
    }
}
