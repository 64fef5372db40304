import NIOCore
import NIOSSL
import SMTPCore

// The TLS side of a host probe: which protocol versions the server accepts (one handshake per
// version, minimum == maximum), the cipher it picks at each, which weak cipher classes it accepts
// (one handshake per class with only that class offered), and forward secrecy.
//
// swift-nio-ssl has no public accessor for the negotiated cipher suite (and CNIOBoringSSL is not a
// product it exports), so the cipher is read from the server's ServerHello, which travels in the
// clear in every TLS version (RFC 5246 §7.4.1.3, RFC 8446 §4.1.3): `ServerHelloSniffer` sits in front
// of the TLS handler and reads it off the raw bytes.
//
// What BoringSSL (inside swift-nio-ssl) cannot offer as a client (SSL 3.0, RC4, DHE, NULL, EXPORT,
// DES and anonymous suites) is probed with a hand-made ClientHello instead (TLSProbe+HandMade.swift,
// TLSClientHello.swift): the server's first answer is all that is read.

/// Reads the ServerHello (version and cipher suite) and a first TLS alert off the raw bytes of a
/// connection, passing every byte on unchanged. It keeps at most `maxObservedBytes`.
final class ServerHelloSniffer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let maxObservedBytes = 16 * 1024
    static let keptBytes = 64

    /// The server's first bytes after the 220 to STARTTLS.
    private(set) var firstBytes: [UInt8] = []
    private(set) var receivedBytes = 0
    private(set) var serverHello: ServerHello?
    /// The description code of a TLS alert the server sent before its ServerHello (RFC 8446 §6).
    private(set) var alert: UInt8?

    private var records = ByteBuffer()
    private var handshake = ByteBuffer()
    private var done = false

    struct ServerHello: Sendable, Equatable {
        var version: TLSProtocolVersion?
        var cipher: TLSCipherSuite
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if firstBytes.count < Self.keptBytes {
            firstBytes += bytes.readableBytesView.prefix(Self.keptBytes - firstBytes.count)
        }
        receivedBytes += bytes.readableBytes
        if !done {
            var copy = bytes
            records.writeBuffer(&copy)
            observe()
        }
        context.fireChannelRead(data)
    }

    /// TLS records start with content type 20...23 and major version 3 (RFC 8446 §5.1).
    static func looksLikeTLS(_ bytes: [UInt8]) -> Bool {
        guard let t = bytes.first else { return false }
        return (20...23).contains(t) && (bytes.count < 2 || bytes[1] == 3)
    }

    private func observe() {
        if records.readableBytes > Self.maxObservedBytes || !Self.looksLikeTLS(firstBytes) {
            done = true
            return
        }
        while records.readableBytes >= 5 {
            let type = records.getInteger(at: records.readerIndex, as: UInt8.self)!
            let length = Int(records.getInteger(at: records.readerIndex + 3, as: UInt16.self)!)
            guard records.readableBytes >= 5 + length else { return }
            records.moveReaderIndex(forwardBy: 5)
            var payload = records.readSlice(length: length)!
            switch type {
            case 21 where length >= 2:
                alert = payload.getInteger(at: payload.readerIndex + 1, as: UInt8.self)
                done = true
                return
            case 22:
                handshake.writeBuffer(&payload)
                if let hello = Self.parseServerHello(handshake) {
                    serverHello = hello
                    done = true
                    return
                }
            default:
                done = true
                return
            }
        }
    }

    /// Parses a complete ServerHello at the start of `buffer` (RFC 8446 §4.1.3; the selected version
    /// is in the supported_versions extension for TLS 1.3, in legacy_version before).
    static func parseServerHello(_ buffer: ByteBuffer) -> ServerHello? {
        guard let codes = parseServerHelloCodes(buffer) else { return nil }
        return ServerHello(
            version: TLSProtocolVersion(wireValue: codes.version), cipher: TLSCipherSuite(code: codes.cipher))
    }

    /// The chosen version and suite of a complete ServerHello at the start of `buffer`, as codes.
    static func parseServerHelloCodes(_ buffer: ByteBuffer) -> (version: UInt16, cipher: UInt16)? {
        var b = buffer
        guard let type = b.readInteger(as: UInt8.self), type == 2,
            let l0 = b.readInteger(as: UInt8.self), let l1 = b.readInteger(as: UInt16.self)
        else { return nil }
        let length = Int(l0) << 16 | Int(l1)
        guard var body = b.readSlice(length: length) else { return nil }
        guard let legacyVersion = body.readInteger(as: UInt16.self), body.readSlice(length: 32) != nil,
            let sessionIDLength = body.readInteger(as: UInt8.self), body.readSlice(length: Int(sessionIDLength)) != nil,
            let cipher = body.readInteger(as: UInt16.self), body.readInteger(as: UInt8.self) != nil
        else { return nil }
        var version = legacyVersion
        if let extensionsLength = body.readInteger(as: UInt16.self),
            var extensions = body.readSlice(length: Int(extensionsLength))
        {
            while let extType = extensions.readInteger(as: UInt16.self),
                let extLength = extensions.readInteger(as: UInt16.self),
                var ext = extensions.readSlice(length: Int(extLength))
            {
                if extType == 0x002B, let selected = ext.readInteger(as: UInt16.self) {
                    version = selected
                }
            }
        }
        return (version, cipher)
    }

    /// TLS alert names (RFC 8446 §6, RFC 5246 §7.2) for the ones a refusing server sends.
    static func alertName(_ code: UInt8) -> String {
        switch code {
        case 0: "close_notify"
        case 10: "unexpected_message"
        case 40: "handshake_failure"
        case 42: "bad_certificate"
        case 47: "illegal_parameter"
        case 50: "decode_error"
        case 70: "protocol_version"
        case 71: "insufficient_security"
        case 80: "internal_error"
        case 86: "inappropriate_fallback"
        case 112: "unrecognized_name"
        default: "alert \(code)"
        }
    }
}

/// Why a probe was not run: what this TLS library cannot offer.
struct NotProbed: Error, Sendable, Equatable {
    var reason: String
}

/// How one STARTTLS handshake went.
enum TLSHandshakeOutcome: Sendable, Equatable {
    /// `dhGroupBits`: the size of a finite-field DH group the server sent (hand-made probes only).
    case established(version: TLSProtocolVersion?, cipher: TLSCipherSuite?, dhGroupBits: Int? = nil)
    /// The server answered our ClientHello with an alert, or closed after it.
    case refused(String)
    /// The server closed the connection after the 220 to STARTTLS without a single TLS byte.
    case dropped
    /// STARTTLS itself was refused, or the conversation stopped before it.
    case stopped(SMTPProbeStop)
    /// This TLS library cannot offer what was asked (the reason says what); nothing was sent.
    case notProbed(String)
    case timedOut
}

enum TLSProbe {
    /// The cipher list offered when probing versions: everything BoringSSL has (the server picks).
    static let allCiphers = "ALL"

    /// The weak cipher classes probed one handshake each (TLS 1.3 has none). Those BoringSSL can
    /// offer go through swift-nio-ssl (TLS 1.0 to 1.2, only that class offered); the rest through a
    /// hand-made ClientHello (`TLSClientHello`) read up to the ServerHello.
    struct WeakClass: Sendable {
        enum Offer: Sendable {
            /// A BoringSSL cipher string offering only this class.
            case library(String)
            /// A hand-made ClientHello at this `client_version` offering these suites.
            case handMade(TLSProtocolVersion, [UInt16])
        }
        var id: String
        var name: String
        var offer: Offer
    }

    static let weakClasses: [WeakClass] = [
        WeakClass(id: "3des", name: "3DES (64-bit block, Sweet32)", offer: .library("DES-CBC3-SHA")),
        WeakClass(
            id: "rsa-kx", name: "RSA key exchange (no forward secrecy)",
            offer: .library("AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA")),
        WeakClass(
            id: "cbc-sha1", name: "ECDHE with CBC and SHA-1",
            offer: .library(
                "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA")),
        WeakClass(id: "rc4", name: "RC4", offer: .handMade(.tls12, HandMadeSuites.rc4)),
        WeakClass(id: "null", name: "NULL encryption", offer: .handMade(.tls12, HandMadeSuites.null)),
        // EXPORT suites were removed in TLS 1.1 (RFC 4346 appendix A.5), so they are offered at 1.0.
        WeakClass(id: "export", name: "EXPORT (40/56-bit)", offer: .handMade(.tls10, HandMadeSuites.export)),
        WeakClass(id: "des", name: "single DES (56-bit)", offer: .handMade(.tls12, HandMadeSuites.des)),
        WeakClass(
            id: "anon", name: "anonymous key exchange (ADH, AECDH)", offer: .handMade(.tls12, HandMadeSuites.anon)),
        WeakClass(id: "dhe", name: "DHE key exchange", offer: .handMade(.tls12, HandMadeSuites.dhe)),
    ]

    /// A client context for exactly one version (minimum == maximum).
    static func setup(version: TLSProtocolVersion, ciphers: String?, host: String) -> Result<ProbeTLSSetup, NotProbed> {
        setup(minimum: version, maximum: version, ciphers: ciphers, host: host)
    }

    /// A client context for one probe: versions `minimum...maximum` (no upper bound when nil), only
    /// `ciphers` (swift-nio-ssl's default list when nil), every certificate accepted (judged later by
    /// `CertificateCheck`).
    static func setup(
        minimum: TLSProtocolVersion, maximum: TLSProtocolVersion?, ciphers: String?, host: String
    ) -> Result<ProbeTLSSetup, NotProbed> {
        var config = TLSConfiguration.makeClientConfiguration()
        config.certificateVerification = .noHostnameVerification
        if let ciphers { config.cipherSuites = ciphers }
        for v in [minimum] + (maximum.map { [$0] } ?? []) where nioVersion(v) == nil {
            return .failure(NotProbed(reason: "swift-nio-ssl's BoringSSL does not implement \(v.rawValue)"))
        }
        config.minimumTLSVersion = nioVersion(minimum)!
        config.maximumTLSVersion = maximum.flatMap(nioVersion)
        do {
            let context = try NIOSSLContext(configuration: config)
            return .success(ProbeTLSSetup(context: context, serverHostname: sniName(host)))
        } catch {
            return .failure(NotProbed(reason: "swift-nio-ssl refused the configuration (\(error))"))
        }
    }

    static func nioVersion(_ v: TLSProtocolVersion) -> TLSVersion? {
        switch v {
        case .ssl3: nil
        case .tls10: .tlsv1
        case .tls11: .tlsv11
        case .tls12: .tlsv12
        case .tls13: .tlsv13
        }
    }

    /// SNI carries a host name, never an address literal (RFC 6066 §3).
    static func sniName(_ host: String) -> String? {
        if (try? SocketAddress(ipAddress: host, port: 0)) != nil { return nil }
        let trimmed = host.hasSuffix(".") ? String(host.dropLast()) : host
        return trimmed.isEmpty ? nil : trimmed
    }

    /// Sends STARTTLS on a greeted connection and runs the handshake.
    static func startTLS(on connection: SMTPProbeConnection, setup: ProbeTLSSetup) async -> TLSHandshakeOutcome {
        if let stopped = await sendSTARTTLS(on: connection, setup: setup, hello: nil) { return stopped }
        let event = await connection.next()
        struct Seen: Sendable {
            var received: Int
            var hello: ServerHelloSniffer.ServerHello?
            var alert: UInt8?
            var version: TLSVersion?
        }
        let seen =
            await connection.read { h in
                Seen(
                    received: h.sniffer?.receivedBytes ?? 0, hello: h.sniffer?.serverHello, alert: h.sniffer?.alert,
                    version: h.negotiatedVersion)
            } ?? Seen(received: 0)
        switch event {
        case .tlsEstablished:
            let version = seen.hello?.version ?? seen.version.map(protocolVersion)
            return .established(version: version, cipher: seen.hello?.cipher)
        case .timedOut:
            return .timedOut
        case .tlsFailed(let why), .protocolError(let why):
            if seen.received == 0 { return .dropped }
            if let alert = seen.alert {
                return .refused("the server sent the TLS alert \(ServerHelloSniffer.alertName(alert))")
            }
            return .refused(why)
        case .closed:
            if seen.received == 0 { return .dropped }
            if let alert = seen.alert {
                return .refused("the server sent the TLS alert \(ServerHelloSniffer.alertName(alert))")
            }
            return .refused("the server closed the connection during the handshake")
        case .reply:
            return .refused("a plaintext reply where the handshake was expected")
        case .tlsAnswer:
            return .refused("an unexpected event where the handshake was expected")
        }
    }

    /// Sends STARTTLS, armed to start swift-nio-ssl (`setup`) or to send a hand-made ClientHello
    /// (`hello`) on its 220, and waits for that reply; nil when it was 220 and TLS has begun, else
    /// how the attempt ended.
    static func sendSTARTTLS(
        on connection: SMTPProbeConnection, setup: ProbeTLSSetup?, hello: [UInt8]?
    ) async -> TLSHandshakeOutcome? {
        do {
            try await connection.send([.startTLS], startingTLS: setup, hello: hello)
        } catch {
            return .stopped(SMTPProbeStop(step: .starttls, reason: .cannotEncode(error.description)))
        }
        switch await connection.next() {
        case .reply(let r) where r.code == 220: return nil
        case .reply(let r): return .stopped(SMTPProbeStop(step: .starttls, reason: .refused(r)))
        case .closed: return .dropped
        case .timedOut: return .timedOut
        case .protocolError(let why), .tlsFailed(let why):
            return .stopped(SMTPProbeStop(step: .starttls, reason: .protocolError(why)))
        case .tlsEstablished, .tlsAnswer:
            return .stopped(SMTPProbeStop(step: .starttls, reason: .protocolError("unexpected TLS event")))
        }
    }

    static func protocolVersion(_ v: TLSVersion) -> TLSProtocolVersion {
        switch v {
        case .tlsv1: .tls10
        case .tlsv11: .tls11
        case .tlsv12: .tls12
        case .tlsv13: .tls13
        }
    }

    /// One connection: greet, STARTTLS with `setup`, QUIT.
    static func handshake(
        setup: Result<ProbeTLSSetup, NotProbed>, address: String, port: Int, options: ProbeOptions
    ) async -> TLSHandshakeOutcome {
        let tls: ProbeTLSSetup
        switch setup {
        case .failure(let why): return .notProbed(why.reason)
        case .success(let s): tls = s
        }
        let deadline = NIODeadline.now() + TimeAmount(options.probeTimeout)
        switch await SMTPProbe.greet(address: address, port: port, heloName: options.heloName, deadline: deadline) {
        case .failure(let stop):
            return .stopped(stop)
        case .success(let (connection, _)):
            let outcome = await startTLS(on: connection, setup: tls)
            await connection.close(quit: outcome.isEstablished)
            return outcome
        }
    }

    /// The finding for one protocol version, and (when accepted) the one for the cipher chosen at it.
    static func versionFindings(
        _ version: TLSProtocolVersion, outcome: TLSHandshakeOutcome, subject: String
    ) -> [CheckFinding] {
        let check = "tls.version." + version.checkSuffix
        let level = version.ncscLevel
        switch outcome {
        case .established(let negotiated, let cipher, _):
            var out: [CheckFinding] = []
            if let negotiated, negotiated != version {
                out.append(
                    CheckFinding(
                        category: .tls, subject: subject, check: check, severity: .warning,
                        summary: "\(version.rawValue) asked, \(negotiated.rawValue) negotiated",
                        detail: "the server answered a \(version.rawValue)-only ClientHello with another version"))
            } else {
                out.append(
                    CheckFinding(
                        category: .tls, subject: subject, check: check, severity: level.severityWhenAccepted,
                        summary: "\(version.rawValue) accepted (NCSC-NL: \(level.rawValue))", ncsc: level))
            }
            if let cipher {
                let cl = cipher.ncscLevel
                out.append(
                    CheckFinding(
                        category: .tls, subject: subject, check: "tls.cipher." + version.checkSuffix,
                        severity: cl.severityWhenAccepted,
                        summary: "\(version.rawValue): server chose \(cipher.name) (NCSC-NL: \(cl.rawValue))",
                        detail: cipher.isForwardSecret ? "forward secret" : "no forward secrecy", ncsc: cl))
            }
            return out
        case .refused(let why):
            let severity: CheckSeverity = version >= .tls12 ? .info : .ok
            return [
                CheckFinding(
                    category: .tls, subject: subject, check: check, severity: severity,
                    summary: "\(version.rawValue) not accepted", detail: why, ncsc: level)
            ]
        case .notProbed(let why):
            return [
                CheckFinding(
                    category: .tls, subject: subject, check: check, severity: .info,
                    summary: "\(version.rawValue) not probed", detail: why)
            ]
        case .dropped:
            return [
                CheckFinding(
                    category: .tls, subject: subject, check: check, severity: .info,
                    summary: "\(version.rawValue) not probed: the server closed the connection after STARTTLS")
            ]
        case .timedOut:
            return [
                CheckFinding(
                    category: .tls, subject: subject, check: check, severity: .info,
                    summary: "\(version.rawValue) not probed: the handshake timed out")
            ]
        case .stopped(let stop):
            return [
                CheckFinding(
                    category: .tls, subject: subject, check: check, severity: .info,
                    summary: "\(version.rawValue) not probed: \(stop.text)")
            ]
        }
    }

    /// The finding for one weak cipher class.
    static func weakClassFinding(_ weak: WeakClass, outcome: TLSHandshakeOutcome, subject: String) -> CheckFinding {
        let check = "tls.cipher.weak." + weak.id
        switch outcome {
        case .established(let version, let cipher, let dhGroupBits):
            var level = cipher?.ncscLevel ?? .insufficient
            var group = ""
            var detail: String?
            if let dhGroupBits {
                let groupLevel = NCSCLevel.finiteFieldDHGroup(bits: dhGroupBits)
                level = level.worse(groupLevel)
                group = " with a \(dhGroupBits)-bit DH group"
                detail =
                    "DH group of \(dhGroupBits) bits (NCSC-NL: \(groupLevel.rawValue); 3072 bits or more is "
                    + "sufficient, 2048 phase-out)"
            }
            return CheckFinding(
                category: .tls, subject: subject, check: check, severity: level.severityWhenAccepted,
                summary: "\(weak.name) accepted: \(cipher?.name ?? "?") over \(version?.rawValue ?? "?")\(group) "
                    + "(NCSC-NL: \(level.rawValue))",
                detail: detail, ncsc: level)
        case .refused:
            return CheckFinding(
                category: .tls, subject: subject, check: check, severity: .ok, summary: "\(weak.name) not accepted")
        case .notProbed(let why):
            return CheckFinding(
                category: .tls, subject: subject, check: check, severity: .info, summary: "\(weak.name) not probed",
                detail: why)
        case .dropped, .timedOut, .stopped:
            return CheckFinding(
                category: .tls, subject: subject, check: check, severity: .info,
                summary: "\(weak.name) not probed: the probe connection did not reach a handshake")
        }
    }

    /// Forward secrecy: the suite negotiated with a normal offer is (EC)DHE or TLS 1.3, and no suite
    /// without it (RSA key exchange) is accepted.
    static func forwardSecrecyFinding(
        main: TLSCipherSuite?, rsaKeyExchange: TLSHandshakeOutcome?, subject: String
    ) -> CheckFinding? {
        guard let main else { return nil }
        let check = "tls.forward-secrecy"
        if !main.isForwardSecret {
            return CheckFinding(
                category: .tls, subject: subject, check: check, severity: .failure,
                summary: "no forward secrecy: the server chose \(main.name) over a forward-secret suite",
                ncsc: main.ncscLevel)
        }
        if case .established(_, let cipher, _) = rsaKeyExchange {
            return CheckFinding(
                category: .tls, subject: subject, check: check, severity: .warning,
                summary: "forward secrecy preferred, but RSA key exchange (\(cipher?.name ?? "?")) is also accepted",
                ncsc: .phaseOut)
        }
        return CheckFinding(
            category: .tls, subject: subject, check: check, severity: .ok,
            summary: "forward secrecy: \(main.name)", ncsc: main.ncscLevel)
    }
}

extension TLSHandshakeOutcome {
    var isEstablished: Bool {
        if case .established = self { return true }
        return false
    }
}
