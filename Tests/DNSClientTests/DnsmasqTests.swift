import DNSClient
import NIOCore
import Testing

/// A 5 s timeout: dnsmasq answers in a millisecond, but a two-core machine running the whole suite in
/// parallel was seen to miss 500 ms. The cache tests, which end by asking a stopped server, pass 1 s.
private func resolver(
    _ dnsmasq: Dnsmasq, clock: ManualClock = ManualClock(), timeout: TimeAmount = .seconds(5)
) -> DNSResolver {
    DNSResolver(
        configuration: DNSResolverConfiguration(servers: [dnsmasq.server], timeout: timeout, attempts: 1),
        clock: clock.source)
}

@Suite("Resolver against a real dnsmasq on loopback")
struct DnsmasqTests {
    @Test("MX records come back by preference and plan as mx1 then mx2")
    func mxOrder() async throws {
        try await Dnsmasq.with { dnsmasq in
            let dns = resolver(dnsmasq)
            let records = try await dns.mx("remote.test")
            #expect(
                records == [
                    MXRecord(preference: 10, exchange: name("mx1.remote.test")),
                    MXRecord(preference: 20, exchange: name("mx2.remote.test")),
                ])
            let plan = try await dns.mailExchangers(for: "Remote.Test")
            #expect(
                plan.hosts == [
                    MXHost(name: name("mx1.remote.test"), preference: 10),
                    MXHost(name: name("mx2.remote.test"), preference: 20),
                ])
            #expect(!plan.isImplicit)
            #expect(!plan.authenticated)
            let firstHost = try #require(plan.hosts.first)
            #expect(try await dns.addresses(for: firstHost) == [ip("127.0.0.2")])
        }
    }

    @Test("A and AAAA: IPv4 first, then IPv6; NODATA for a missing AAAA")
    func addresses() async throws {
        try await Dnsmasq.with { dnsmasq in
            let dns = resolver(dnsmasq)
            let mx2 = try await dns.addresses("mx2.remote.test")
            let dual = try await dns.addresses("dual.test")
            let mx1 = try await dns.addresses("mx1.remote.test")
            #expect(mx2 == [ip("127.0.0.3"), ip("::3")])
            #expect(dual == [ip("127.0.0.7"), ip("::7")])
            #expect(mx1 == [ip("127.0.0.2")])
            let error = await #expect(throws: DNSError.self) { try await dns.query("mx1.remote.test", .aaaa) }
            #expect(error == .noData(name("mx1.remote.test"), .aaaa))
        }
    }

    @Test("TXT with two character-strings")
    func txt() async throws {
        try await Dnsmasq.with { dnsmasq in
            let dns = resolver(dnsmasq)
            let answer = try await dns.query("remote.test", .txt)
            #expect(answer.records.map(\.data) == [.txt([Array("v=spf1 -all".utf8), Array("second string".utf8)])])
            #expect(try await dns.txt("remote.test") == ["v=spf1 -allsecond string"])
        }
    }

    @Test("a CNAME is followed to its target")
    func cname() async throws {
        try await Dnsmasq.with { dnsmasq in
            let answer = try await resolver(dnsmasq).query("alias.remote.test", .a)
            #expect(answer.name == name("alias.remote.test"))
            #expect(answer.canonicalName == name("mx1.remote.test"))
            #expect(answer.addresses == [ip("127.0.0.2")])
            #expect(answer.ttl == UInt32(Dnsmasq.ttl))
        }
    }

    @Test("an unknown .test name is NXDOMAIN, and plans as .noSuchDomain")
    func nxdomain() async throws {
        try await Dnsmasq.with { dnsmasq in
            let dns = resolver(dnsmasq)
            let error = await #expect(throws: DNSError.self) { try await dns.query("nosuch.test", .a) }
            #expect(error == .nxdomain(name("nosuch.test")))
            let planError = await #expect(throws: MXPlanError.self) { try await dns.mailExchangers(for: "nosuch.test") }
            #expect(planError == .noSuchDomain(name("nosuch.test")))
        }
    }

    @Test("a name with only an A record gets the implicit MX (RFC 5321 §5.1)")
    func implicitMX() async throws {
        try await Dnsmasq.with { dnsmasq in
            let plan = try await resolver(dnsmasq).mailExchangers(for: "onlya.test")
            #expect(plan.isImplicit)
            #expect(plan.hosts == [MXHost(name: name("onlya.test"), preference: 0)])
        }
    }

    @Test("dnsmasq's Null MX (MX 0 .) is .nullMX")
    func nullMX() async throws {
        try await Dnsmasq.with { dnsmasq in
            let error = await #expect(throws: MXPlanError.self) {
                try await resolver(dnsmasq).mailExchangers(for: "nullmx.test")
            }
            #expect(error == .nullMX(name("nullmx.test")))
        }
    }

    @Test("a second query within the TTL is served from cache after dnsmasq is stopped")
    func cacheHit() async throws {
        try await Dnsmasq.with { dnsmasq in
            let clock = ManualClock()
            let dns = resolver(dnsmasq, clock: clock, timeout: .seconds(1))
            let first = try await dns.query("mx2.remote.test", .a)
            dnsmasq.stop()
            clock.advance(seconds: 100)
            let cached = try await dns.query("mx2.remote.test", .a)
            #expect(cached.addresses == first.addresses)
            #expect(cached.ttl == UInt32(Dnsmasq.ttl - 100))
            clock.advance(seconds: Int64(Dnsmasq.ttl))
            let error = await #expect(throws: DNSError.self) { try await dns.query("mx2.remote.test", .a) }
            #expect(error == .timeout)  // expired: the stopped server is asked, and stays silent
        }
    }

    @Test("NXDOMAIN is cached from the zone's SOA after dnsmasq is stopped")
    func negativeCache() async throws {
        try await Dnsmasq.with { dnsmasq in
            let clock = ManualClock()
            let dns = resolver(dnsmasq, clock: clock, timeout: .seconds(1))
            await #expect(throws: DNSError.nxdomain(name("missing.test"))) { try await dns.query("missing.test", .mx) }
            await #expect(throws: DNSError.noData(name("onlya.test"), .mx)) { try await dns.query("onlya.test", .mx) }
            dnsmasq.stop()
            clock.advance(seconds: Int64(Dnsmasq.ttl - 1))
            await #expect(throws: DNSError.nxdomain(name("missing.test"))) { try await dns.query("missing.test", .mx) }
            await #expect(throws: DNSError.noData(name("onlya.test"), .mx)) { try await dns.query("onlya.test", .mx) }
            clock.advance(seconds: 2)
            await #expect(throws: DNSError.timeout) { try await dns.query("missing.test", .mx) }
        }
    }

    @Test("TCP exchange with dnsmasq (the fallback path against a real server)")
    func tcp() async throws {
        try await Dnsmasq.with { dnsmasq in
            let query = DNSMessage.query(id: 0x4242, name: name("remote.test"), type: .mx)
            let response = try await DNSTransport().tcpExchange(query, with: dnsmasq.server, timeout: .seconds(2))
            #expect(response.header.id == 0x4242)
            #expect(response.answers.count == 2)
        }
    }
}
