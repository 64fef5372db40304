import SMTPCore
import Testing

struct RouteTests {
    @Test(arguments: [
        (Route.local(domain: "contoso.test", mailbox: "alice"), "local:contoso.test/alice"),
        (Route.local(domain: "contoso.test", mailbox: "a/b"), "local:contoso.test/a/b"),
        (Route.relay(domain: "remote.test"), "relay:remote.test"),
    ])
    func storedFormRoundTrips(route: Route, stored: String) {
        #expect(route.stored == stored)
        #expect(Route(stored: stored) == route)
    }

    @Test(arguments: ["", "local:", "local:contoso.test", "local:/alice", "local:contoso.test/", "relay:", "smtp:x"])
    func anythingElseIsNotARoute(text: String) {
        #expect(Route(stored: text) == nil)
    }

    @Test func domainsByKind() {
        let local = Route.local(domain: "contoso.test", mailbox: "alice")
        let relay = Route.relay(domain: "remote.test")
        #expect(local.localDomain == "contoso.test" && local.relayDomain == nil && local.domain == "contoso.test")
        #expect(relay.relayDomain == "remote.test" && relay.localDomain == nil && relay.domain == "remote.test")
    }
}
