import NIOCore
import Testing

@testable import Diagnostics

/// The hand-made ClientHello (encoder and its decoder) and the decoder of the server's first answer.
@Suite struct TLSClientHelloTests {
    static let random = [UInt8](0..<32)

    /// Every class the probe offers this way, and what the encoding looks like.
    @Test(arguments: [
        (TLSProtocolVersion.ssl3, HandMadeSuites.ssl3, String?.none),
        (.tls10, HandMadeSuites.export, "mx.good.test"),
        (.tls12, HandMadeSuites.rc4, "mx.good.test"),
        (.tls12, HandMadeSuites.null, nil),
        (.tls12, HandMadeSuites.des, "mx.good.test"),
        (.tls12, HandMadeSuites.anon, "mx.good.test"),
        (.tls12, HandMadeSuites.dhe, "mx.good.test"),
        (.tls11, [UInt16(0x002F)], "a.b"),
    ])
    func roundTrip(version: TLSProtocolVersion, suites: [UInt16], name: String?) throws {
        let hello = TLSClientHello(version: version, cipherSuites: suites, serverName: name, random: Self.random)
        let bytes = hello.encoded()
        #expect(bytes[0] == 22)
        #expect(UInt16(bytes[1]) << 8 | UInt16(bytes[2]) == (version == .ssl3 ? 0x0300 : 0x0301))
        #expect(Int(bytes[3]) << 8 | Int(bytes[4]) == bytes.count - 5)
        #expect(bytes[5] == 1)  // client_hello
        #expect(Int(bytes[6]) << 16 | Int(bytes[7]) << 8 | Int(bytes[8]) == bytes.count - 9)
        #expect(UInt16(bytes[9]) << 8 | UInt16(bytes[10]) == version.wireValue)
        #expect(Array(bytes[11..<43]) == Self.random)
        #expect(TLSClientHello.decode(bytes) == hello)
    }

    @Test func sslv3HelloIsExactlyThis() {
        let hello = TLSClientHello(version: .ssl3, cipherSuites: [0x0035, 0x000A], random: Self.random)
        // record(22, 3.0, 47) handshake(1, 43) 3.0 random session_id(0) suites(4) compression(1: null)
        let expected: [UInt8] =
            [22, 3, 0, 0, 47, 1, 0, 0, 43, 3, 0] + Self.random + [0, 0, 4, 0x00, 0x35, 0x00, 0x0A, 1, 0]
        #expect(hello.encoded() == expected)
    }

    @Test func tlsHelloCarriesTheUsualExtensions() {
        let bytes = TLSClientHello(
            version: .tls12, cipherSuites: [0x009E], serverName: "mx.good.test", random: Self.random
        ).encoded()
        let text = bytes.map { String($0, radix: 16) }.joined(separator: " ")
        // server_name with the name; supported_groups with x25519; signature_algorithms; renegotiation_info.
        #expect(
            contains(bytes, [0x00, 0x00, 0x00, 0x11, 0x00, 0x0F, 0x00, 0x00, 0x0C] + Array("mx.good.test".utf8)),
            "\(text)")
        #expect(contains(bytes, [0x00, 0x0A, 0x00, 0x0A, 0x00, 0x08, 0x00, 0x1D]))
        #expect(contains(bytes, [0x00, 0x0B, 0x00, 0x02, 0x01, 0x00]))
        #expect(contains(bytes, [0x00, 0x0D]))
        #expect(contains(bytes, [0xFF, 0x01, 0x00, 0x01, 0x00]))
        // No SNI for an address literal, no signature_algorithms before TLS 1.2.
        let byAddress = TLSClientHello(version: .tls10, cipherSuites: [0x0003], serverName: "127.0.0.1").encoded()
        #expect(TLSClientHello.decode(byAddress)?.serverName == nil)
        #expect(!contains(byAddress, Array("127.0.0.1".utf8)))
    }

    @Test(arguments: [
        [UInt8](),
        [22, 3, 1, 0, 5, 1, 0, 0, 1, 3],  // truncated body
        [23, 3, 1, 0, 1, 0],  // application data
    ])
    func decodeRefusesWhatIsNotAHello(bytes: [UInt8]) {
        #expect(TLSClientHello.decode(bytes) == nil)
    }

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
    }

    // MARK: the server's answer

    /// A ServerHello handshake message (RFC 5246 §7.4.1.3), optionally with supported_versions.
    static func serverHello(version: UInt16, suite: UInt16, selected: UInt16? = nil) -> [UInt8] {
        var body: [UInt8] = [UInt8(version >> 8), UInt8(version & 0xFF)] + [UInt8](repeating: 7, count: 32)
        body += [0, UInt8(suite >> 8), UInt8(suite & 0xFF), 0]
        if let selected {
            body += [0, 6, 0x00, 0x2B, 0, 2, UInt8(selected >> 8), UInt8(selected & 0xFF)]
        }
        return [2, 0, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    static func record(_ type: UInt8, _ payload: [UInt8], version: UInt16 = 0x0303) -> [UInt8] {
        [type, UInt8(version >> 8), UInt8(version & 0xFF), UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
            + payload
    }

    static let hello12 = serverHello(version: 0x0303, suite: 0xC02F)

    @Test(arguments: [
        ("ServerHello", record(22, hello12), TLSServerAnswer?.some(.serverHello(version: 0x0303, cipherSuite: 0xC02F))),
        (
            "ServerHello then Certificate", record(22, hello12 + [11, 0, 0, 3, 0, 0, 0]),
            .serverHello(version: 0x0303, cipherSuite: 0xC02F)
        ),
        (
            "ServerHello split over two records", record(22, Array(hello12[..<10])) + record(22, Array(hello12[10...])),
            .serverHello(version: 0x0303, cipherSuite: 0xC02F)
        ),
        (
            "SSL 3.0 ServerHello", record(22, serverHello(version: 0x0300, suite: 0x0005), version: 0x0300),
            .serverHello(version: 0x0300, cipherSuite: 0x0005)
        ),
        (
            "TLS 1.3 ServerHello", record(22, serverHello(version: 0x0303, suite: 0x1301, selected: 0x0304)),
            .serverHello(version: 0x0304, cipherSuite: 0x1301)
        ),
        ("fatal handshake_failure", record(21, [2, 40], version: 0x0301), .alert(level: 2, description: 40)),
        ("protocol_version alert", record(21, [2, 70], version: 0x0300), .alert(level: 2, description: 70)),
        (
            "an SMTP reply", Array("454 4.7.0 TLS not available\r\n".utf8),
            .notTLS(Array("454 4.7.0 TLS not available\r\n".utf8))
        ),
        ("application data first", record(23, [1, 2, 3]), .unexpected("a record of type 23 before a ServerHello")),
        ("a Certificate first", record(22, [11, 0, 0, 0]), .unexpected("handshake message 11 before a ServerHello")),
        ("a short alert", record(21, [2]), .unexpected("a short alert")),
        ("an empty record", record(22, []), .unexpected("an empty record")),
        ("a broken ServerHello", record(22, [2, 0, 0, 2, 3, 3]), .unexpected("a malformed ServerHello")),
        ("half a header", [22, 3, 3], nil),
        ("half a ServerHello", record(22, hello12).dropLast(5).map { $0 }, nil),
        ("nothing", [], nil),
    ])
    func answers(name: String, bytes: [UInt8], expected: TLSServerAnswer?) {
        #expect(TLSServerAnswerDecoder.decode(bytes) == expected, "\(name)")
    }

    /// A ServerKeyExchange with DH parameters (RFC 5246 §7.4.3): a prime of `bytes` octets, its top
    /// bit set, g = 2, a public value, no signature (enough for the decoder).
    static func dhKeyExchange(primeBytes: Int) -> [UInt8] {
        let p = [0xFF] + [UInt8](repeating: 0xAB, count: primeBytes - 1)
        let body: [UInt8] =
            [UInt8(primeBytes >> 8), UInt8(primeBytes & 0xFF)] + p + [0, 1, 2] + [0, 2, 9, 9]
        return [12, 0, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    static let certificate: [UInt8] = [11, 0, 0, 6, 0, 0, 3, 0, 0, 0]
    static let dheHello = serverHello(version: 0x0303, suite: 0x009E)

    @Test(arguments: [
        ("DHE, 2048-bit group", record(22, dheHello + certificate + dhKeyExchange(primeBytes: 256)), 2048),
        (
            "DHE, 3072-bit group",
            record(22, dheHello) + record(22, certificate) + record(22, dhKeyExchange(primeBytes: 384)), 3072
        ),
        ("DHE, 1024-bit group", record(22, dheHello + certificate + dhKeyExchange(primeBytes: 128)), 1024),
    ])
    func dheGroupSize(name: String, bytes: [UInt8], bits: Int) {
        #expect(
            TLSServerAnswerDecoder.decode(bytes)
                == .serverHello(version: 0x0303, cipherSuite: 0x009E, dhGroupBits: bits),
            "\(name)")
        // Without the key exchange yet, more is needed; when the server closes there, the ServerHello stands.
        let cut = Self.record(22, Self.dheHello + Self.certificate)
        #expect(TLSServerAnswerDecoder.decode(cut) == nil)
        #expect(TLSServerAnswerDecoder.decode(cut, atEnd: true) == .serverHello(version: 0x0303, cipherSuite: 0x009E))
    }

    @Test func dhAnonHasNoCertificateAndHelloDoneEndsTheSearch() {
        let anon = Self.serverHello(version: 0x0303, suite: 0x00A7)
        #expect(
            TLSServerAnswerDecoder.decode(Self.record(22, anon + Self.dhKeyExchange(primeBytes: 512)))
                == .serverHello(version: 0x0303, cipherSuite: 0x00A7, dhGroupBits: 4096))
        #expect(
            TLSServerAnswerDecoder.decode(Self.record(22, Self.dheHello + Self.certificate + [14, 0, 0, 0]))
                == .serverHello(version: 0x0303, cipherSuite: 0x009E))
        // ECDHE needs nothing after the ServerHello.
        #expect(
            TLSServerAnswerDecoder.decode(Self.record(22, Self.serverHello(version: 0x0303, suite: 0xC02F)))
                == .serverHello(version: 0x0303, cipherSuite: 0xC02F))
        #expect(TLSServerAnswerDecoder.bitLength([0, 0, 1]) == 1 && TLSServerAnswerDecoder.bitLength([0x7F, 0]) == 15)
    }

    @Test(arguments: [(4096, NCSCLevel.sufficient), (3072, .sufficient), (2048, .phaseOut), (1024, .insufficient)])
    func dhGroupLevels(bits: Int, level: NCSCLevel) {
        #expect(NCSCLevel.finiteFieldDHGroup(bits: bits) == level)
        let dhe = TLSProbe.weakClasses.first { $0.id == "dhe" }!
        let f = TLSProbe.weakClassFinding(
            dhe, outcome: .established(version: .tls12, cipher: TLSCipherSuite(code: 0x009E), dhGroupBits: bits),
            subject: "s")
        #expect(f.ncsc == level)
        #expect(f.summary.contains("with a \(bits)-bit DH group"))
    }

    @Test func answerArrivesByteByByte() {
        var decoder = TLSServerAnswerDecoder()
        let bytes = Self.record(22, Self.hello12)
        for b in bytes.dropLast() { #expect(decoder.feed([b]) == nil) }
        #expect(decoder.feed([bytes.last!]) == .serverHello(version: 0x0303, cipherSuite: 0xC02F))
    }

    @Test func endlessHandshakeIsBounded() {
        // A handshake message that claims 16 MB and never ends.
        var bytes = Self.record(22, [2, 0xFF, 0xFF, 0xFF])
        while bytes.count < TLSServerAnswerDecoder.maxBytes + 10 {
            bytes += Self.record(22, [UInt8](repeating: 0, count: 1000))
        }
        guard case .unexpected = TLSServerAnswerDecoder.decode(bytes) else {
            Issue.record("an endless handshake was not cut off")
            return
        }
    }

    // MARK: what an answer means

    @Test(arguments: [
        (
            TLSProtocolVersion.tls12, TLSServerAnswer.serverHello(version: 0x0303, cipherSuite: 0x009E),
            "established TLSv1.2 TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"
        ),
        (
            .tls12, .serverHello(version: 0x0301, cipherSuite: 0x009E),
            "established TLSv1.0 TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"
        ),
        (
            .tls12, .serverHello(version: 0x0303, cipherSuite: 0xC02F),
            "refused: the server chose TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, which was not offered"
        ),
        (
            .ssl3, .serverHello(version: 0x0300, cipherSuite: 0x009E),
            "established SSLv3 TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"
        ),
        (
            .ssl3, .serverHello(version: 0x0301, cipherSuite: 0x009E),
            "refused: the server answered a ClientHello for SSLv3 with version 0x301"
        ),
        (.tls12, .alert(level: 2, description: 40), "refused: the server sent the TLS alert handshake_failure"),
        (
            .tls12, .notTLS(Array("454 no\r\n".utf8)),
            "refused: the server answered the ClientHello with bytes that are not TLS: 454 no  "
        ),
        (.tls12, .unexpected("x"), "refused: the server's answer is not a ServerHello: x"),
    ])
    func outcome(version: TLSProtocolVersion, answer: TLSServerAnswer, expected: String) {
        let hello = TLSClientHello(version: version, cipherSuites: [0x009E])
        let text: String
        switch TLSProbe.outcome(of: answer, offered: hello) {
        case .established(let v, let c, let bits):
            text = "established \(v?.rawValue ?? "?") \(c?.name ?? "?")" + (bits.map { " DH \($0)" } ?? "")
        case .refused(let why): text = "refused: \(why)"
        default: text = "other"
        }
        #expect(text == expected)
    }

    /// Every suite a hand-made hello offers has a name, and its class's level.
    @Test func everyOfferedSuiteIsNamedAndRated() {
        let classes: [(String, [UInt16], Set<NCSCLevel>)] = [
            ("rc4", HandMadeSuites.rc4, [.insufficient]),
            ("null", HandMadeSuites.null, [.insufficient]),
            ("export", HandMadeSuites.export, [.insufficient]),
            ("des", HandMadeSuites.des, [.insufficient]),
            ("anon", HandMadeSuites.anon, [.insufficient]),
            ("dhe", HandMadeSuites.dhe, [.sufficient, .phaseOut, .insufficient]),
        ]
        for (id, suites, levels) in classes {
            for code in suites {
                let suite = TLSCipherSuite(code: code)
                #expect(suite.name.hasPrefix("TLS_"), "\(id): 0x\(String(code, radix: 16)) has no name")
                #expect(levels.contains(suite.ncscLevel), "\(id): \(suite.name) is \(suite.ncscLevel)")
            }
        }
        #expect(HandMadeSuites.dhe.allSatisfy { TLSCipherSuite(code: $0).keyExchange == .dhe })
        #expect(HandMadeSuites.anon.allSatisfy { TLSCipherSuite(code: $0).keyExchange == .anonymous })
        #expect(HandMadeSuites.null.allSatisfy { TLSCipherSuite(code: $0).bulkCipher == .null })
        #expect(HandMadeSuites.export.allSatisfy { TLSCipherSuite(code: $0).isExport })
        #expect(HandMadeSuites.rc4.allSatisfy { TLSCipherSuite(code: $0).bulkCipher == .rc4 })
        #expect(HandMadeSuites.des.allSatisfy { TLSCipherSuite(code: $0).bulkCipher == .des })
    }
}
