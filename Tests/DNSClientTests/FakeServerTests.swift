import DNSClient
import NIOCore
import Testing

/// A resolver for the fake servers. The default per-attempt timeout is generous (5 s): a loaded CI
/// machine once took over 500 ms to answer on loopback, and once more than 2 s while 400 other tests
/// ran beside it; tests about timeouts pass their own.
private func resolver(
    _ servers: [FakeDNSServer], timeout: TimeAmount = .seconds(5), attempts: Int = 1,
    clock: ManualClock = ManualClock(), random: DNSRandomSource = .system
) -> DNSResolver {
    DNSResolver(
        configuration: DNSResolverConfiguration(
            servers: servers.map(\.server), timeout: timeout, attempts: attempts),
        clock: clock.source, random: random)
}

private func aRecord(_ owner: String, _ address: String, ttl: UInt32 = 300) -> DNSResourceRecord {
    DNSResourceRecord(name: name(owner), type: .a, ttl: ttl, data: .a(ip(address)))
}

private func mxRecord(_ owner: String, _ preference: UInt16, _ exchange: String) -> DNSResourceRecord {
    DNSResourceRecord(
        name: name(owner), type: .mx, ttl: 300,
        data: .mx(MXRecord(preference: preference, exchange: name(exchange))))
}

private func soa(_ zone: String, ttl: UInt32, minimum: UInt32) -> DNSResourceRecord {
    DNSResourceRecord(
        name: name(zone), type: .soa, ttl: ttl,
        data: .soa(
            SOARecord(
                primaryServer: name("ns." + zone), responsibleMailbox: name("hostmaster." + zone), serial: 1,
                refresh: 3600, retry: 600, expire: 86_400, minimum: minimum)))
}

@Suite("Resolver against fake servers (fault injection)")
struct FakeServerTests {
    @Test("TC=1 over UDP makes the same query go over TCP to the same server")
    func truncationFallsBackToTCP() async throws {
        let server = try await FakeDNSServer.start { query, overTCP in
            if overTCP {
                return [response(to: query, answers: [aRecord("big.example", "192.0.2.44")]).encode()]
            }
            return [response(to: query, truncated: true).encode()]
        }
        try await server.use {
            let answer = try await resolver([server]).query("big.example", .a)
            #expect(answer.addresses == [ip("192.0.2.44")])
            #expect(server.received.udp.count == 1)
            #expect(server.received.tcp.count == 1)
            #expect(server.received.tcp.first?.questions == server.received.udp.first?.questions)
        }
    }

    @Test("queries carry RD, a random ID from the injected source, and EDNS0 with 1232 bytes")
    func queryShape() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            [response(to: query, answers: [aRecord("shape.example", "192.0.2.1")]).encode()]
        }
        try await server.use {
            let expectedID = UInt16(truncatingIfNeeded: seededRandom(7).next())
            _ = try await resolver([server], random: seededRandom(7)).query("shape.example", .a)
            let query = try #require(server.received.udp.first)
            #expect(query.header.id == expectedID)
            #expect(query.header.recursionDesired)
            #expect(!query.header.isResponse)
            #expect(query.optRecord?.recordClass.rawValue == 1232)
            #expect(query.questions == [DNSQuestion(name: name("shape.example"), type: .a)])
        }
    }

    @Test("SERVFAIL is a transient serverFailure, and a temporary MX planning failure")
    func servfail() async throws {
        let server = try await FakeDNSServer.start { query, _ in [response(to: query, rcode: 2).encode()] }
        try await server.use {
            let dns = resolver([server], attempts: 2)
            let error = await #expect(throws: DNSError.self) { try await dns.query("broken.example", .a) }
            #expect(error == .serverFailure(.serverFailure))
            #expect(error?.isPermanent == false)
            #expect(server.received.udp.count == 2)  // two rounds, one server

            let planError = await #expect(throws: MXPlanError.self) {
                try await dns.mailExchangers(for: "broken.example")
            }
            guard case .temporary = planError else {
                Issue.record("expected .temporary, got \(String(describing: planError))")
                return
            }
            #expect(planError?.isPermanent == false)
        }
    }

    @Test("a silent server gives .timeout within the configured per-attempt timeout")
    func timeout() async throws {
        let server = try await FakeDNSServer.start { _, _ in [] }
        try await server.use {
            let dns = resolver([server], timeout: .milliseconds(200), attempts: 2)
            let started = NIODeadline.now()
            let error = await #expect(throws: DNSError.self) { try await dns.query("silent.example", .a) }
            let elapsed = NIODeadline.now() - started
            #expect(error == .timeout)
            #expect(elapsed >= .milliseconds(380))
            #expect(elapsed < .seconds(9))  // bounded; slack for a loaded machine (5.9 s seen elsewhere)
            #expect(server.received.udp.count == 2)

            let planError = await #expect(throws: MXPlanError.self) {
                try await dns.mailExchangers(for: "silent.example")
            }
            #expect(planError == .temporary("DNS timeout"))
        }
    }

    @Test("datagrams with a wrong ID or a wrong question are ignored; the matching one is used")
    func mismatchedIDIgnored() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            var wrongID = response(to: query, answers: [aRecord("spoof.example", "6.6.6.6")])
            wrongID.header.id = query.header.id &+ 1
            var wrongQuestion = response(to: query, answers: [aRecord("spoof.example", "6.6.6.7")])
            wrongQuestion.questions = [DNSQuestion(name: name("other.example"), type: .a)]
            let good = response(to: query, answers: [aRecord("spoof.example", "192.0.2.9")])
            return [wrongID.encode(), wrongQuestion.encode(), [0xFF, 0xFF, 0x00], good.encode()]
        }
        try await server.use {
            let answer = try await resolver([server]).query("spoof.example", .a)
            #expect(answer.addresses == [ip("192.0.2.9")])
            #expect(server.received.udp.count == 1)
        }
    }

    @Test("an answer from another address (same port space, right ID and question) is ignored")
    func spoofedSourceIgnored() async throws {
        let server = try await FakeDNSServer.start { _, _ in [] }  // answers by hand below
        let spoofer = try await FakeDNSServer.start { _, _ in [] }
        try await server.use {
            try await spoofer.use {
                let dns = resolver([server], timeout: .seconds(3))
                let lookup = Task { try await dns.query("target.example", .a) }
                var client: (SocketAddress, DNSMessage)?
                for _ in 0..<300 where client == nil {
                    try await Task.sleep(for: .milliseconds(10))
                    let log = server.received
                    if let address = log.udpClients.first, let query = log.udp.first { client = (address, query) }
                }
                let (address, query) = try #require(client)
                let forged = response(to: query, answers: [aRecord("target.example", "6.6.6.6")])
                try await spoofer.sendUDP(forged.encode(), to: address)
                try await Task.sleep(for: .milliseconds(50))
                let genuine = response(to: query, answers: [aRecord("target.example", "192.0.2.8")])
                try await server.sendUDP(genuine.encode(), to: address)
                let answer = try await lookup.value
                #expect(answer.addresses == [ip("192.0.2.8")])
            }
        }
    }

    @Test("cache lifetimes are capped: 1 day for answers, 1 hour for negative answers")
    func ttlCaps() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            if query.questions.first?.name == name("long.example") {
                return [response(to: query, answers: [aRecord("long.example", "192.0.2.1", ttl: 864_000)]).encode()]
            }
            return [response(to: query, rcode: 3, authority: [soa("example", ttl: 86_400, minimum: 86_400)]).encode()]
        }
        try await server.use {
            let clock = ManualClock()
            let dns = resolver([server], clock: clock)
            _ = try await dns.query("long.example", .a)
            _ = try? await dns.query("gone.example", .a)
            clock.advance(seconds: 3_599)
            _ = try await dns.query("long.example", .a)
            _ = try? await dns.query("gone.example", .a)
            #expect(server.received.udp.count == 2)
            clock.advance(seconds: 2)  // past 1 hour: the negative entry has expired
            _ = try? await dns.query("gone.example", .a)
            #expect(server.received.udp.count == 3)
            clock.advance(seconds: 86_400 - 3_601 - 1)
            #expect(try await dns.query("long.example", .a).ttl == 1)
            #expect(server.received.udp.count == 3)
            clock.advance(seconds: 2)  // past 1 day
            _ = try await dns.query("long.example", .a)
            #expect(server.received.udp.count == 4)
        }
    }

    @Test("a garbled response carrying our ID is .malformed")
    func malformedResponse() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            let id = query.header.id
            return [[UInt8(id >> 8), UInt8(id & 0xFF), 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0]]
        }
        try await server.use {
            let error = await #expect(throws: DNSError.self) { try await resolver([server]).query("bad.example", .a) }
            guard case .malformed = error else {
                Issue.record("expected .malformed, got \(String(describing: error))")
                return
            }
        }
    }

    @Test("REFUSED from the first server, answer from the second: servers rotate within an attempt")
    func rotation() async throws {
        let refusing = try await FakeDNSServer.start { query, _ in [response(to: query, rcode: 5).encode()] }
        try await refusing.use {
            let working = try await FakeDNSServer.start { query, _ in
                [response(to: query, answers: [aRecord("rotate.example", "192.0.2.5")]).encode()]
            }
            try await working.use {
                let answer = try await resolver([refusing, working]).query("rotate.example", .a)
                #expect(answer.addresses == [ip("192.0.2.5")])
                #expect(refusing.received.udp.count == 1)
                #expect(working.received.udp.count == 1)
            }
        }
    }

    @Test("FORMERR to an EDNS query is retried without the OPT record")
    func formerrRetriesWithoutEDNS() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            if query.optRecord != nil { return [response(to: query, rcode: 1).encode()] }
            return [response(to: query, answers: [aRecord("old.example", "192.0.2.6")]).encode()]
        }
        try await server.use {
            let answer = try await resolver([server]).query("old.example", .a)
            #expect(answer.addresses == [ip("192.0.2.6")])
            #expect(server.received.udp.map { $0.optRecord == nil } == [false, true])
        }
    }

    @Test("Null MX (RFC 7505) is a permanent .nullMX")
    func nullMX() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            [response(to: query, answers: [mxRecord("nomail.example", 0, ".")]).encode()]
        }
        try await server.use {
            let error = await #expect(throws: MXPlanError.self) {
                try await resolver([server]).mailExchangers(for: "nomail.example")
            }
            #expect(error == .nullMX(name("nomail.example")))
            #expect(error?.isPermanent == true)
        }
    }

    @Test("the AD bit becomes authenticated == true, and false without it")
    func authenticData() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            let secure = query.questions.first?.name == name("_25._tcp.secure.example")
            let tlsa = DNSResourceRecord(
                name: query.questions.first?.name ?? .root, type: .tlsa, ttl: 300,
                data: .tlsa(TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [0xAB, 0xCD])))
            return [response(to: query, authenticData: secure, answers: [tlsa]).encode()]
        }
        try await server.use {
            let dns = resolver([server])
            let secure = try await dns.tlsa(host: "secure.example")
            #expect(secure.authenticated)
            #expect(secure.tlsaRecords == [TLSARecord(usage: 3, selector: 1, matchingType: 1, data: [0xAB, 0xCD])])
            #expect(server.received.udp.first?.header.authenticData == true)  // AD requested (RFC 6840 §5.7)
            let insecure = try await dns.tlsa(host: "plain.example")
            #expect(!insecure.authenticated)
            #expect(insecure.name == name("_25._tcp.plain.example"))
        }
    }

    @Test("a CNAME whose target is not in the response is chased with a second query")
    func cnameChase() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            let asked = query.questions.first?.name
            if asked == name("alias.example") {
                let cname = DNSResourceRecord(
                    name: name("alias.example"), type: .cname, ttl: 50, data: .cname(name("target.other")))
                return [response(to: query, answers: [cname]).encode()]
            }
            return [response(to: query, answers: [aRecord("target.other", "192.0.2.77", ttl: 900)]).encode()]
        }
        try await server.use {
            let answer = try await resolver([server]).query("ALIAS.example", .a)
            #expect(answer.canonicalName == name("target.other"))
            #expect(answer.addresses == [ip("192.0.2.77")])
            #expect(answer.ttl == 50)
            #expect(server.received.udp.count == 2)
        }
    }

    @Test("a CNAME loop is detected")
    func cnameLoop() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            let records = [
                DNSResourceRecord(name: name("a.loop"), type: .cname, ttl: 60, data: .cname(name("b.loop"))),
                DNSResourceRecord(name: name("b.loop"), type: .cname, ttl: 60, data: .cname(name("a.loop"))),
            ]
            return [response(to: query, answers: records).encode()]
        }
        try await server.use {
            let error = await #expect(throws: DNSError.self) { try await resolver([server]).query("a.loop", .a) }
            #expect(error == .cnameChainTooLong(name("a.loop")))
        }
    }

    @Test("NXDOMAIN is cached for min(SOA TTL, SOA MINIMUM), then asked again")
    func negativeCacheUsesSOA() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            [response(to: query, rcode: 3, authority: [soa("example", ttl: 600, minimum: 60)]).encode()]
        }
        try await server.use {
            let clock = ManualClock()
            let dns = resolver([server], clock: clock)
            for _ in 0..<3 {
                let error = await #expect(throws: DNSError.self) { try await dns.query("gone.example", .mx) }
                #expect(error == .nxdomain(name("gone.example")))
                #expect(error?.isPermanent == true)
            }
            #expect(server.received.udp.count == 1)
            clock.advance(seconds: 59)
            _ = try? await dns.query("gone.example", .mx)
            #expect(server.received.udp.count == 1)
            clock.advance(seconds: 2)
            _ = try? await dns.query("gone.example", .mx)
            #expect(server.received.udp.count == 2)
        }
    }

    @Test("NODATA is cached too; a NODATA without SOA is not (RFC 2308 §5)")
    func noDataCaching() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            let withSOA = query.questions.first?.name == name("soa.example")
            return [response(to: query, authority: withSOA ? [soa("example", ttl: 30, minimum: 300)] : []).encode()]
        }
        try await server.use {
            let dns = resolver([server])
            for _ in 0..<2 {
                let error = await #expect(throws: DNSError.self) { try await dns.query("soa.example", .aaaa) }
                #expect(error == .noData(name("soa.example"), .aaaa))
            }
            #expect(server.received.udp.count == 1)
            for _ in 0..<2 {
                _ = try? await dns.query("nosoa.example", .aaaa)
            }
            #expect(server.received.udp.count == 3)
        }
    }

    @Test("positive answers are cached for the smallest TTL, reported as the remaining TTL")
    func positiveCacheTTL() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            [
                response(
                    to: query,
                    answers: [
                        aRecord("ttl.example", "192.0.2.1", ttl: 30), aRecord("ttl.example", "192.0.2.2", ttl: 90),
                    ]
                ).encode()
            ]
        }
        try await server.use {
            let clock = ManualClock()
            let dns = resolver([server], clock: clock)
            #expect(try await dns.query("ttl.example", .a).ttl == 30)
            clock.advance(seconds: 20)
            let cached = try await dns.query("TTL.example.", .a)
            #expect(cached.ttl == 10)
            #expect(cached.addresses.count == 2)
            #expect(server.received.udp.count == 1)
            clock.advance(seconds: 11)
            #expect(try await dns.query("ttl.example", .a).ttl == 30)
            #expect(server.received.udp.count == 2)
        }
    }

    @Test("MX hosts are ordered by preference, equal preferences shuffled by the injected RNG")
    func mxOrdering() async throws {
        let exchanges = ["a", "b", "c", "d", "e", "f"].map { "\($0).mx.example" }
        let server = try await FakeDNSServer.start { query, _ in
            var records = exchanges.map { mxRecord("shuffle.example", 10, $0) }
            records.append(mxRecord("shuffle.example", 5, "first.mx.example"))
            records.append(mxRecord("shuffle.example", 50, "last.mx.example"))
            records.append(mxRecord("shuffle.example", 60, "a.mx.example"))  // duplicate at worse preference
            return [response(to: query, answers: records).encode()]
        }
        try await server.use {
            var orders: Set<[String]> = []
            for seed in UInt64(1)...8 {
                let plan = try await resolver([server], random: seededRandom(seed)).mailExchangers(
                    for: "shuffle.example")
                #expect(!plan.isImplicit)
                #expect(plan.hosts.map(\.preference) == [5, 10, 10, 10, 10, 10, 10, 50])
                #expect(plan.hosts.first?.name == name("first.mx.example"))
                #expect(plan.hosts.last?.name == name("last.mx.example"))
                #expect(Set(plan.hosts.map(\.name)).count == 8)
                orders.insert(plan.hosts.map(\.name.unrooted))
                let again = try await resolver([server], random: seededRandom(seed)).mailExchangers(
                    for: "shuffle.example")
                #expect(again.hosts == plan.hosts)  // same seed, same order
            }
            #expect(orders.count > 1)
        }
    }

    @Test("addresses(_:) returns IPv4 first even when AAAA arrives first, and survives one family failing")
    func addressOrder() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            let asked = query.questions.first
            if asked?.name == name("half.example") && asked?.type == .aaaa {
                return [response(to: query, rcode: 2).encode()]
            }
            if asked?.type == .aaaa {
                let record = DNSResourceRecord(
                    name: asked?.name ?? .root, type: .aaaa, ttl: 60, data: .aaaa(ip("2001:db8::1")))
                return [response(to: query, answers: [record]).encode()]
            }
            return [response(to: query, answers: [aRecord(asked?.name.unrooted ?? "", "192.0.2.1")]).encode()]
        }
        try await server.use {
            let dns = resolver([server])
            let dual = try await dns.addresses("dual.example")
            let half = try await dns.addresses("half.example")
            #expect(dual == [ip("192.0.2.1"), ip("2001:db8::1")])
            #expect(half == [ip("192.0.2.1")])
        }
    }

    @Test("invalid input never reaches the network")
    func invalidInput() async throws {
        let server = try await FakeDNSServer.start { _, _ in [] }
        try await server.use {
            let dns = resolver([server])
            await #expect(throws: DNSError.invalidName(.nonASCII("exämple.com"))) {
                try await dns.query("exämple.com", .mx)
            }
            await #expect(throws: DNSError.invalidAddress("300.1.1.1")) { try await dns.ptr(for: "300.1.1.1") }
            await #expect(throws: MXPlanError.invalidDomain("a..b")) { try await dns.mailExchangers(for: "a..b") }
            #expect(server.received.udp.isEmpty)
        }
    }

    @Test("PTR queries use in-addr.arpa and ip6.arpa names")
    func ptrNames() async throws {
        let server = try await FakeDNSServer.start { query, _ in
            let owner = query.questions.first?.name ?? .root
            let record = DNSResourceRecord(name: owner, type: .ptr, ttl: 60, data: .ptr(name("host.example")))
            return [response(to: query, answers: [record]).encode()]
        }
        try await server.use {
            let dns = resolver([server])
            let v4 = try await dns.ptr(for: "192.0.2.3")
            let v6 = try await dns.ptr(for: "2001:db8::1")
            #expect(v4 == [name("host.example")])
            #expect(v6 == [name("host.example")])
            #expect(
                server.received.udp.map(\.questions.first?.name) == [
                    name("3.2.0.192.in-addr.arpa"),
                    name("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
                ])
        }
    }
}
