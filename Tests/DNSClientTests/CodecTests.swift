import DNSClient
import Testing

/// Header for a response with the given counts: ID 0xBEEF, QR RD RA, plus extra flag bits.
private func header(
    qd: UInt8 = 1, an: UInt8 = 0, ns: UInt8 = 0, ar: UInt8 = 0, flags2: UInt8 = 0x80, rcode: UInt8 = 0
) -> [UInt8] {
    [0xBE, 0xEF, 0x81, flags2 | rcode, 0, qd, 0, an, 0, ns, 0, ar]
}

/// Question `example.com` of `type` at offset 12 (so `example.com` can be pointed to with 0xC00C).
private func question(_ type: UInt8) -> [UInt8] {
    [7] + Array("example".utf8) + [3] + Array("com".utf8) + [0, 0, type, 0, 1]
}

private let ttl300: [UInt8] = [0, 0, 0x01, 0x2C]

@Suite("Wire codec")
struct CodecTests {
    @Test("a query encodes to the exact RFC 1035 bytes with an EDNS0 OPT advertising 1232")
    func encodeQuery() {
        let query = DNSMessage.query(id: 0x1234, name: name("Example.COM"), type: .mx)
        let expected: [UInt8] =
            [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]
            + [7] + Array("Example".utf8) + [3] + Array("COM".utf8) + [0, 0, 15, 0, 1]
            + [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
        #expect(query.encode() == expected)
    }

    @Test("the DO bit sets bit 15 of the OPT TTL; edns false omits OPT")
    func encodeDOAndNoEDNS() {
        let withDO = DNSMessage.query(id: 1, name: name("a.b"), type: .tlsa, dnssecOK: true).encode()
        #expect(Array(withDO.suffix(11)) == [0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0])
        let plain = DNSMessage.query(id: 1, name: name("a.b"), type: .a, edns: false).encode()
        #expect(plain.count == 12 + 5 + 4)
        #expect(plain[11] == 0)
    }

    @Test("MX answers with compression pointers decode, including a pointer inside RDATA")
    func decodeCompressedMX() throws {
        var packet = header(an: 2) + question(15)
        // example.com MX 10 mx1.example.com (owner 0xC00C, exchange "mx1" + 0xC00C)
        packet += [0xC0, 0x0C, 0, 15, 0, 1] + ttl300 + [0, 8, 0, 10, 3] + Array("mx1".utf8) + [0xC0, 0x0C]
        let firstExchange = 12 + 17 + 12 + 2  // offset of "mx1" label
        // example.com MX 20 mx1.example.com via a pointer to the previous exchange name
        packet += [0xC0, 0x0C, 0, 15, 0, 1] + ttl300 + [0, 4, 0, 20, 0xC0, UInt8(firstExchange)]
        let message = try DNSMessage.decode(packet)
        #expect(message.header.id == 0xBEEF)
        #expect(message.header.isResponse)
        #expect(message.questions == [DNSQuestion(name: name("example.com"), type: .mx)])
        #expect(message.answers.count == 2)
        #expect(message.answers[0].name == name("EXAMPLE.com"))
        #expect(message.answers[0].ttl == 300)
        #expect(message.answers[0].data == .mx(MXRecord(preference: 10, exchange: name("mx1.example.com"))))
        #expect(message.answers[1].data == .mx(MXRecord(preference: 20, exchange: name("mx1.example.com"))))
    }

    @Test("TXT with several character-strings keeps them apart")
    func decodeTXT() throws {
        let rdata: [UInt8] = [11] + Array("v=spf1 -all".utf8) + [0] + [3] + Array("abc".utf8)
        let packet =
            header(an: 1) + question(16) + [0xC0, 0x0C, 0, 16, 0, 1] + ttl300 + [0, UInt8(rdata.count)] + rdata
        let message = try DNSMessage.decode(packet)
        #expect(message.answers.first?.data == .txt([Array("v=spf1 -all".utf8), [], Array("abc".utf8)]))
    }

    @Test("TLSA usage, selector, matching type and data")
    func decodeTLSA() throws {
        let digest: [UInt8] = (0..<32).map { UInt8($0) }
        let rdata: [UInt8] = [3, 1, 1] + digest
        let packet =
            header(an: 1) + question(52) + [0xC0, 0x0C, 0, 52, 0, 1] + ttl300 + [0, UInt8(rdata.count)] + rdata
        let message = try DNSMessage.decode(packet)
        #expect(message.answers.first?.data == .tlsa(TLSARecord(usage: 3, selector: 1, matchingType: 1, data: digest)))
    }

    @Test("A and AAAA RDATA, CNAME owner chains and AAAA text form")
    func decodeAddresses() throws {
        var packet = header(an: 3) + question(1)
        packet += [0xC0, 0x0C, 0, 5, 0, 1] + ttl300 + [0, 6, 3] + Array("www".utf8) + [0xC0, 0x0C]
        packet += [0xC0, 41, 0, 1, 0, 1] + ttl300 + [0, 4, 192, 0, 2, 1]
        packet +=
            [0xC0, 41, 0, 28, 0, 1] + ttl300 + [0, 16, 0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11)
            + [1]
        let message = try DNSMessage.decode(packet)
        #expect(message.answers[0].data == .cname(name("www.example.com")))
        #expect(message.answers[1].name == name("www.example.com"))
        #expect(message.answers[1].data == .a(ip("192.0.2.1")))
        #expect(message.answers[2].data == .aaaa(ip("2001:db8::1")))
        #expect(ip("2001:db8::1").description == "2001:db8::1")
    }

    @Test("NXDOMAIN with an SOA in authority, AD and CD bits, extended RCODE from OPT")
    func decodeSOAAndFlags() throws {
        let soaRdata: [UInt8] =
            [2] + Array("ns".utf8) + [0xC0, 0x0C] + [4] + Array("host".utf8) + [0xC0, 0x0C]
            + [0, 0, 0, 7, 0, 0, 0x0E, 0x10, 0, 0, 0x02, 0x58, 0, 0x09, 0x3A, 0x80, 0, 0, 0, 60]
        var packet = header(ns: 1, ar: 1, flags2: 0x80 | 0x20 | 0x10, rcode: 3) + question(1)
        packet += [0xC0, 0x0C, 0, 6, 0, 1, 0, 0, 0x0E, 0x10, 0, UInt8(soaRdata.count)] + soaRdata
        packet += [0, 0, 41, 0x04, 0xD0, 0, 0, 0x80, 0, 0, 0]
        let message = try DNSMessage.decode(packet)
        #expect(message.header.authenticData)
        #expect(message.header.checkingDisabled)
        #expect(message.header.recursionAvailable)
        #expect(message.responseCode == .nameError)
        let soa = SOARecord(
            primaryServer: name("ns.example.com"), responsibleMailbox: name("host.example.com"), serial: 7,
            refresh: 3600, retry: 600, expire: 604_800, minimum: 60)
        #expect(message.authority.first?.data == .soa(soa))
        #expect(message.authority.first?.ttl == 3600)
        #expect(message.optRecord?.recordClass.rawValue == 1232)

        var extended = packet
        extended[extended.count - 6] = 1  // extended RCODE high bits = 1 → 16 + 3
        #expect(try DNSMessage.decode(extended).responseCode.rawValue == 19)
    }

    @Test("encode then decode gives back every record type")
    func roundTrip() throws {
        let owner = name("example.org")
        let message = DNSMessage(
            header: DNSHeader(id: 77, isResponse: true, authoritative: true, authenticData: true),
            questions: [DNSQuestion(name: owner, type: DNSRecordType(rawValue: 255))],
            answers: [
                DNSResourceRecord(name: owner, type: .a, ttl: 1, data: .a(ip("10.1.2.3"))),
                DNSResourceRecord(name: owner, type: .aaaa, ttl: 2, data: .aaaa(ip("::1"))),
                DNSResourceRecord(
                    name: owner, type: .mx, ttl: 3, data: .mx(MXRecord(preference: 5, exchange: name("mx.example.org")))
                ),
                DNSResourceRecord(name: owner, type: .txt, ttl: 4, data: .txt([Array("a".utf8), Array("b".utf8)])),
                DNSResourceRecord(
                    name: name("_25._tcp.mx.example.org"), type: .tlsa, ttl: 5,
                    data: .tlsa(TLSARecord(usage: 2, selector: 0, matchingType: 2, data: [1, 2, 3]))),
                DNSResourceRecord(name: name("4.3.2.1.in-addr.arpa"), type: .ptr, ttl: 6, data: .ptr(owner)),
                DNSResourceRecord(name: name("www.example.org"), type: .cname, ttl: 7, data: .cname(owner)),
                DNSResourceRecord(
                    name: owner, type: DNSRecordType(rawValue: 99), ttl: 8, data: .raw([9, 9])),
            ],
            authority: [
                DNSResourceRecord(name: owner, type: .ns, ttl: 9, data: .ns(name("ns1.example.org"))),
                DNSResourceRecord(
                    name: owner, type: .soa, ttl: 10,
                    data: .soa(
                        SOARecord(
                            primaryServer: name("ns1.example.org"), responsibleMailbox: name("h.example.org"),
                            serial: 1, refresh: 2, retry: 3, expire: 4, minimum: 5))),
            ],
            additional: [
                DNSResourceRecord(
                    name: .root, type: .opt, recordClass: DNSClass(rawValue: 1232), ttl: 0,
                    data: .opt([EDNSOption(code: 10, data: [1, 2, 3, 4, 5, 6, 7, 8])]))
            ]
        )
        #expect(try DNSMessage.decode(message.encode()) == message)
    }

    /// Each malformed packet must throw a DNSDecodingError of the expected kind, and never crash.
    static let malformed: [(String, [UInt8], @Sendable (DNSDecodingError) -> Bool)] = [
        (
            "truncated header", [0xBE, 0xEF, 0x81, 0x80, 0, 1],
            { if case .truncatedHeader = $0 { true } else { false } }
        ),
        ("empty packet", [], { if case .truncatedHeader(length: 0) = $0 { true } else { false } }),
        ("question cut short", header() + [7] + Array("exa".utf8), { if case .truncated = $0 { true } else { false } }),
        ("question type missing", header() + [1, 0x61, 0, 0], { if case .truncated = $0 { true } else { false } }),
        (
            "pointer to itself (loop)", header() + [0xC0, 0x0C, 0, 1, 0, 1],
            { if case .compressionLoop(target: 12, offset: 12) = $0 { true } else { false } }
        ),
        (
            "backward pointer to the start of its own name (x.x.x… loop)",
            header(an: 1) + question(1) + [1, 0x78, 0xC0, 29, 0, 1, 0, 1] + ttl300 + [0, 4, 1, 2, 3, 4],
            { if case .compressionLoop(target: 29, offset: 31) = $0 { true } else { false } }
        ),
        (
            "forward pointer", header(an: 1) + question(1) + [0xC0, 35, 0, 1, 0, 1] + ttl300 + [0, 4, 1, 2, 3, 4],
            { if case .compressionLoop(target: 35, offset: 29) = $0 { true } else { false } }
        ),
        (
            "pointer out of bounds", header() + [0xC3, 0xFF, 0, 1, 0, 1],
            { if case .pointerOutOfBounds(target: 1023, offset: 12) = $0 { true } else { false } }
        ),
        (
            "pointer missing its second byte", header() + [0xC0],
            { if case .truncated(field: "pointer", offset: 12) = $0 { true } else { false } }
        ),
        (
            "label length 64 (> 63)", header() + [64] + [UInt8](repeating: 0x61, count: 64) + [0, 0, 1, 0, 1],
            { if case .unsupportedLabelType(offset: 12) = $0 { true } else { false } }
        ),
        (
            "label runs past the end", header() + [10, 0x61, 0x62],
            { if case .truncated(field: "label", offset: 12) = $0 { true } else { false } }
        ),
        (
            "name longer than 255 octets",
            header() + Array([[UInt8]](repeating: [63] + [UInt8](repeating: 0x61, count: 63), count: 5).joined())
                + [0, 0, 1, 0, 1],
            { if case .nameTooLong(offset: 12) = $0 { true } else { false } }
        ),
        (
            "rdlength past the end", header(an: 1) + question(1) + [0xC0, 0x0C, 0, 1, 0, 1] + ttl300 + [0, 200, 1, 2],
            { if case .rdataOutOfBounds(type: 1, length: 200, offset: _) = $0 { true } else { false } }
        ),
        (
            "A record with 5 bytes",
            header(an: 1) + question(1) + [0xC0, 0x0C, 0, 1, 0, 1] + ttl300 + [0, 5, 1, 2, 3, 4, 5],
            { if case .badRdata(type: 1, offset: _) = $0 { true } else { false } }
        ),
        (
            "TXT string longer than rdlength",
            header(an: 1) + question(16) + [0xC0, 0x0C, 0, 16, 0, 1] + ttl300 + [0, 3, 9, 0x61, 0x62, 0x63, 0x64],
            { if case .badRdata(type: 16, offset: _) = $0 { true } else { false } }
        ),
        (
            "MX exchange overruns rdlength",
            header(an: 1) + question(15) + [0xC0, 0x0C, 0, 15, 0, 1] + ttl300 + [0, 4, 0, 10, 3, 0x61, 0x62, 0x63, 0],
            { if case .badRdata(type: 15, offset: _) = $0 { true } else { false } }
        ),
        (
            "answer count larger than the records present", header(an: 3) + question(1),
            { if case .truncated = $0 { true } else { false } }
        ),
        (
            "TTL cut short", header(an: 1) + question(1) + [0xC0, 0x0C, 0, 1, 0, 1, 0, 0],
            { if case .truncated(field: "TTL", offset: _) = $0 { true } else { false } }
        ),
    ]

    @Test("malformed packets throw a precise error", arguments: 0..<malformed.count)
    func malformedPackets(index: Int) {
        let (label, packet, matches) = Self.malformed[index]
        do {
            let message = try DNSMessage.decode(packet)
            Issue.record("\(label): decoded as \(message)")
        } catch {
            #expect(matches(error), "\(label): unexpected \(error)")
        }
    }

    @Test("random corruption of a valid packet never crashes the decoder")
    func mutationFuzz() {
        var packet = header(an: 2) + question(15)
        packet += [0xC0, 0x0C, 0, 15, 0, 1] + ttl300 + [0, 8, 0, 10, 3] + Array("mx1".utf8) + [0xC0, 0x0C]
        packet += [0xC0, 0x0C, 0, 16, 0, 1] + ttl300 + [0, 4, 3] + Array("abc".utf8)
        let random = seededRandom(42)
        var decoded = 0
        var rejected = 0
        for _ in 0..<5_000 {
            var mutated = packet
            for _ in 0...random.next(upperBound: 3) {
                mutated[random.next(upperBound: mutated.count)] = UInt8(truncatingIfNeeded: random.next())
            }
            if random.next(upperBound: 4) == 0 {
                mutated.removeLast(random.next(upperBound: mutated.count))
            }
            if (try? DNSMessage.decode(mutated)) != nil { decoded += 1 } else { rejected += 1 }
        }
        #expect(decoded + rejected == 5_000)
        #expect(rejected > 0)
    }
}

@Suite("Names and addresses")
struct NameTests {
    @Test("names compare and hash case-insensitively and print with a trailing dot")
    func caseInsensitive() throws {
        let upper = try DNSName("MX1.Example.COM.")
        let lower = try DNSName("mx1.example.com")
        #expect(upper == lower)
        #expect(Set([upper, lower]).count == 1)
        #expect(lower.description == "mx1.example.com.")
        #expect(lower.unrooted == "mx1.example.com")
        #expect(try DNSName(".").isRoot)
        #expect(DNSName.root.description == ".")
    }

    @Test(
        "invalid names are rejected",
        arguments: [
            ("bücher.example", DNSNameError.nonASCII("bücher.example")),
            ("a..b", .emptyLabel),
            (String(repeating: "x", count: 64) + ".com", .labelTooLong(64)),
            (Array(repeating: String(repeating: "y", count: 63), count: 4).joined(separator: "."), .nameTooLong(257)),
        ])
    func invalidNames(text: String, expected: DNSNameError) {
        #expect(throws: expected) { try DNSName(text) }
    }

    @Test("IP literals parse, print (RFC 5952) and reverse (in-addr.arpa / ip6.arpa)")
    func addresses() {
        #expect(DNSIPAddress("192.0.2.10")?.reverseName == name("10.2.0.192.in-addr.arpa"))
        #expect(
            DNSIPAddress("2001:db8::567:89ab")?.reverseName.description
                == "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.")
        #expect(DNSIPAddress("::ffff:192.0.2.1")?.bytes == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 1])
        #expect(DNSIPAddress("2001:0:0:1:0:0:0:1")?.description == "2001:0:0:1::1")
        #expect(DNSIPAddress("::")?.description == "::")
        for bad in ["1.2.3", "256.1.1.1", "1:2:3:4:5:6:7:8:9", "1::2::3", "example.com", "", "12345::"] {
            #expect(DNSIPAddress(bad) == nil, "\(bad)")
        }
    }
}

@Suite("resolv.conf")
struct ResolvConfTests {
    @Test("nameserver lines and options timeout/attempts are read; the rest is ignored")
    func parse() throws {
        let text = """
            # comment
            search example.com
            nameserver 127.0.0.53
            nameserver ::1 ; trailing comment
            nameserver not-an-ip
            options edns0 timeout:3 attempts:4 rotate
            """
        let config = ResolvConf.parse(text)
        #expect(config.servers == [try DNSServer(ip: "127.0.0.53"), try DNSServer(ip: "::1")])
        #expect(config.servers.first?.address.port == 53)
        #expect(config.timeout == .seconds(3))
        #expect(config.attempts == 4)
        let defaults = ResolvConf.parse("nameserver 10.0.0.1\noptions attempts:99")
        #expect(defaults.timeout == .seconds(2))
        #expect(defaults.attempts == 5)
    }
}
