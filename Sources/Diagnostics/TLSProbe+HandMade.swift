import NIOCore

// The classes swift-nio-ssl's BoringSSL cannot offer (SSL 3.0, RC4, NULL, EXPORT, single DES, DHE,
// anonymous key exchange), probed with a hand-made ClientHello after STARTTLS on a connection of
// their own. The server's first answer decides: a ServerHello choosing one of the offered suites
// (at the offered version or below, and exactly 3.0 for SSL 3.0) is acceptance; an alert, a close
// or anything else is refusal. No handshake is finished: the connection is closed after the answer.

/// The suites each hand-made ClientHello offers (IANA TLS Cipher Suites registry). RC4, EXPORT and
/// DES suites of anonymous key exchange are in their cipher's class, not in `anon`.
enum HandMadeSuites {
    static let rc4: [UInt16] = [0xC011, 0xC007, 0x0005, 0x0004, 0xC016, 0x0018, 0x0003, 0x0017]
    static let null: [UInt16] = [0xC010, 0xC006, 0x003B, 0x0002, 0x0001, 0xC015, 0xC001, 0xC00B]
    static let export: [UInt16] = [0x0003, 0x0006, 0x0008, 0x000B, 0x000E, 0x0011, 0x0014, 0x0017, 0x0019]
    static let des: [UInt16] = [0x0009, 0x000C, 0x000F, 0x0012, 0x0015, 0x001A]
    static let anon: [UInt16] = [
        0xC018, 0xC019, 0x00A6, 0x00A7, 0x0034, 0x003A, 0x006C, 0x006D, 0x001B, 0xC017, 0x0046, 0x0089,
    ]
    static let dhe: [UInt16] = [
        0x009E, 0x009F, 0xCCAA, 0x0067, 0x006B, 0x0033, 0x0039, 0x00A2, 0x00A3, 0x0040, 0x006A, 0x0032, 0x0038,
        0xC09E, 0xC09F, 0x0016, 0x0013, 0x0045, 0x0088,
    ]
    /// SSL 3.0: what SSL 3.0 servers had (RSA and DHE with AES, 3DES, RC4, DES).
    static let ssl3: [UInt16] = [0x0035, 0x002F, 0x0039, 0x0033, 0x000A, 0x0016, 0x0005, 0x0004, 0x0009, 0x0015]
}

extension TLSProbe {
    /// One connection: greet, STARTTLS, the hand-made ClientHello, the server's first answer, close.
    static func handMadeHandshake(
        _ hello: TLSClientHello, address: String, port: Int, options: ProbeOptions
    ) async -> TLSHandshakeOutcome {
        let deadline = NIODeadline.now() + TimeAmount(options.probeTimeout)
        switch await SMTPProbe.greet(address: address, port: port, heloName: options.heloName, deadline: deadline) {
        case .failure(let stop):
            return .stopped(stop)
        case .success(let (connection, _)):
            let outcome = await startHandMade(hello, on: connection)
            await connection.close(quit: false)
            return outcome
        }
    }

    /// Sends STARTTLS on a greeted connection, then the ClientHello on its 220.
    static func startHandMade(_ hello: TLSClientHello, on connection: SMTPProbeConnection) async -> TLSHandshakeOutcome
    {
        if let stopped = await sendSTARTTLS(on: connection, setup: nil, hello: hello.encoded()) { return stopped }
        switch await connection.next() {
        case .tlsAnswer(let answer): return outcome(of: answer, offered: hello)
        case .closed: return .refused("the server closed the connection after the ClientHello")
        case .timedOut: return .timedOut
        case .protocolError(let why), .tlsFailed(let why): return .refused(why)
        case .reply, .tlsEstablished: return .refused("an unexpected event after the ClientHello")
        }
    }

    /// What the server's first answer to `hello` means.
    static func outcome(of answer: TLSServerAnswer, offered hello: TLSClientHello) -> TLSHandshakeOutcome {
        switch answer {
        case .serverHello(let version, let suite, let dhGroupBits):
            let cipher = TLSCipherSuite(code: suite)
            guard hello.cipherSuites.contains(suite) else {
                return .refused("the server chose \(cipher.name), which was not offered")
            }
            guard let chosen = TLSProtocolVersion(wireValue: version), chosen <= hello.version else {
                return .refused(
                    "the server answered a ClientHello for \(hello.version.rawValue) with version "
                        + "0x\(String(version, radix: 16))")
            }
            return .established(version: chosen, cipher: cipher, dhGroupBits: dhGroupBits)
        case .alert(_, let description):
            return .refused("the server sent the TLS alert \(ServerHelloSniffer.alertName(description))")
        case .notTLS(let bytes):
            return .refused(
                "the server answered the ClientHello with bytes that are not TLS: " + SMTPProbe.printable(bytes))
        case .unexpected(let why):
            return .refused("the server's answer is not a ServerHello: \(why)")
        }
    }
}
