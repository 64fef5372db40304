import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Testing
import X509

@testable import Diagnostics

/// A scriptable SMTP server on 127.0.0.1 with STARTTLS (NIOSSL), for probing without a real MTA.
final class FakeSMTPServer: Sendable {
    struct Behaviour: Sendable {
        var offerSTARTTLS = true
        var sendBanner = true
        var banner = "220 fake.test ESMTP\r\n"
        /// Answer STARTTLS with 220, then close without TLS.
        var closeAfterSTARTTLS = false
        /// Keep bytes pipelined after STARTTLS and answer them inside TLS (CVE-2011-0411).
        var answerPipelined = false
        var tls: NIOSSLContext?
    }

    let channel: Channel
    var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: Channel) { self.channel = channel }

    static func start(_ behaviour: Behaviour) async throws -> FakeSMTPServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FakeSMTPHandler(behaviour))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return FakeSMTPServer(channel: channel)
    }

    func stop() async { try? await channel.close() }
}

final class FakeSMTPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let behaviour: FakeSMTPServer.Behaviour
    var buffer = ByteBuffer()
    var waitingForTLS = false
    var inTLS = false

    init(_ behaviour: FakeSMTPServer.Behaviour) { self.behaviour = behaviour }

    func channelActive(context: ChannelHandlerContext) {
        if behaviour.sendBanner { write(context, behaviour.banner) }
        context.fireChannelActive()
    }

    func write(_ context: ChannelHandlerContext, _ s: String) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: s)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        buffer.writeBuffer(&b)
        process(context)
    }

    func process(_ context: ChannelHandlerContext) {
        while !waitingForTLS, let crlf = buffer.readableBytesView.firstRange(of: [0x0D, 0x0A]) {
            let length = crlf.lowerBound - buffer.readerIndex
            let line = buffer.readString(length: length)!.uppercased()
            buffer.moveReaderIndex(forwardBy: 2)
            if line.hasPrefix("EHLO") {
                write(
                    context,
                    "250-fake.test\r\n250-PIPELINING\r\n"
                        + (behaviour.offerSTARTTLS && !inTLS ? "250 STARTTLS\r\n" : "250 8BITMIME\r\n"))
            } else if line == "STARTTLS", behaviour.offerSTARTTLS, let tls = behaviour.tls {
                write(context, "220 2.0.0 Ready to start TLS\r\n")
                if behaviour.closeAfterSTARTTLS {
                    context.close(promise: nil)
                    return
                }
                if !behaviour.answerPipelined { buffer.clear() }
                waitingForTLS = true
                try? context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
                return
            } else if line == "NOOP" {
                write(context, "250 2.0.0 Ok\r\n")
            } else if line == "QUIT" {
                write(context, "221 2.0.0 Bye\r\n")
                context.close(promise: nil)
                return
            } else {
                write(context, "502 5.5.2 Error: command not recognized\r\n")
            }
        }
        buffer.discardReadBytes()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            waitingForTLS = false
            inTLS = true
            process(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}

@Suite struct TLSProbeTests {
    let pki = TestPKI()

    /// A CA file and a server context whose leaf names 127.0.0.1 and mx.good.test.
    func serverTLS(
        minimum: TLSVersion = .tlsv12, maximum: TLSVersion? = nil, ciphers: String? = nil
    ) throws -> (NIOSSLContext, caFile: String, root: TestPKI.Issued) {
        let root = try pki.ca()
        let leaf = try pki.leaf(["mx.good.test"], issuer: root, ips: [[127, 0, 0, 1]])
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try NIOSSLCertificate(bytes: leaf.der, format: .der))],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(leaf.key.pemRepresentation.utf8), format: .pem)))
        config.minimumTLSVersion = minimum
        config.maximumTLSVersion = maximum
        if let ciphers { config.cipherSuites = ciphers }
        let caFile = FileManager.default.temporaryDirectory.appendingPathComponent("mf-ca-\(UUID().uuidString).pem")
        try root.certificate.serializeAsPEM().pemString.write(to: caFile, atomically: true, encoding: .utf8)
        return (try NIOSSLContext(configuration: config), caFile.path, root)
    }

    /// `timeout` is long by default: no test with the default waits for it to pass (each server
    /// answers or closes), and a fresh-clone CI run with 735 tests in parallel on two cores (the
    /// PostgreSQL tests among them) saw a good server's TLS replies miss a 5 s probe timeout.
    func probe(_ behaviour: FakeSMTPServer.Behaviour, caFile: String? = nil, timeout: Duration = .seconds(30))
        async throws
        -> (HostProbeResult, [String: CheckFinding])
    {
        let server = try await FakeSMTPServer.start(behaviour)
        let options = ProbeOptions(port: server.port, probeTimeout: timeout, caFile: caFile, heloName: "probe.test")
        let result = await HostProbe().probe(
            host: "127.0.0.1", address: "127.0.0.1", port: server.port, options: options)
        await server.stop()
        var byCheck: [String: CheckFinding] = [:]
        for f in result.findings { byCheck[f.check] = f }
        return (result, byCheck)
    }

    @Test func goodServer() async throws {
        let (tls, caFile, _) = try serverTLS()
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        let (result, f) = try await probe(.init(tls: tls), caFile: caFile)
        #expect(result.starttlsOffered)
        #expect(result.presentedChainDER.count == 1)
        #expect(f["smtp.banner"]?.summary == "banner: 220 fake.test ESMTP")
        #expect(f["smtp.ehlo"]?.detail?.contains("STARTTLS") == true)
        #expect(f["starttls.offered"]?.severity == .ok)
        #expect(f["starttls.handshake"]?.summary.contains("TLSv1.3") == true)
        #expect(f["starttls.ehlo"]?.severity == .ok)
        #expect(f["starttls.pipelining"]?.severity == .ok)
        #expect(f["tls.version.tls1_3"]?.ncsc == .good)
        #expect(f["tls.version.tls1_3"]?.summary.contains("accepted") == true)
        #expect(f["tls.version.tls1_2"]?.ncsc == .sufficient)
        #expect(f["tls.version.tls1_0"]?.summary == "TLSv1.0 not accepted")
        #expect(f["tls.version.tls1_1"]?.summary == "TLSv1.1 not accepted")
        #expect(f["tls.cipher.tls1_3"]?.summary.contains("TLS_AES_") == true)
        #expect(f["tls.cipher.tls1_2"]?.summary.contains("TLS_ECDHE_ECDSA_WITH_") == true)
        #expect(f["tls.forward-secrecy"]?.severity == .ok)
        #expect(f["tls.cipher.weak.3des"]?.severity == .ok)
        // The hand-made ClientHellos: BoringSSL refuses each with an alert.
        #expect(f["tls.version.ssl3"]?.summary == "SSLv3 not accepted")
        #expect(f["tls.version.ssl3"]?.severity == .ok)
        for (id, name) in [
            ("rc4", "RC4"), ("null", "NULL encryption"), ("export", "EXPORT (40/56-bit)"),
            ("des", "single DES (56-bit)"), ("anon", "anonymous key exchange (ADH, AECDH)"),
            ("dhe", "DHE key exchange"),
        ] {
            #expect(f["tls.cipher.weak." + id]?.summary == "\(name) not accepted", "\(id)")
        }
        #expect(f["certificate.trust"]?.severity == .ok)
        #expect(f["certificate.name"]?.severity == .ok)
        #expect(
            result.findings.allSatisfy { $0.severity <= .info }, "\(result.findings.filter { $0.severity > .info })")
    }

    @Test func oldVersionsAndCBCAreSeen() async throws {
        let (tls, caFile, _) = try serverTLS(minimum: .tlsv1, maximum: .tlsv12)
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        let (_, f) = try await probe(.init(tls: tls), caFile: caFile)
        // BoringSSL as a client still speaks TLS 1.0 and 1.1 when asked to.
        #expect(f["tls.version.tls1_0"]?.severity == .warning)
        #expect(f["tls.version.tls1_0"]?.ncsc == .phaseOut)
        #expect(f["tls.version.tls1_1"]?.ncsc == .phaseOut)
        #expect(f["tls.version.tls1_3"]?.summary == "TLSv1.3 not accepted")
        #expect(f["tls.cipher.tls1_0"]?.summary.contains("CBC") == true)
        #expect(f["tls.cipher.weak.cbc-sha1"]?.ncsc == .sufficient)
        #expect(f["tls.versions"]?.severity == .warning)
    }

    @Test func noSTARTTLS() async throws {
        let (result, f) = try await probe(.init(offerSTARTTLS: false))
        #expect(!result.starttlsOffered)
        #expect(f["starttls.offered"]?.severity == .failure)
        #expect(f.keys.allSatisfy { !$0.hasPrefix("tls.") && !$0.hasPrefix("certificate.") })
    }

    @Test func dropsAfterSTARTTLS() async throws {
        let (tls, caFile, _) = try serverTLS()
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        let (_, f) = try await probe(.init(closeAfterSTARTTLS: true, tls: tls), caFile: caFile)
        #expect(f["starttls.dropped"]?.severity == .failure)
        #expect(f["starttls.dropped"]?.summary == "drops the session after STARTTLS")
    }

    @Test func answersPipelinedCommandsAfterSTARTTLS() async throws {
        let (tls, caFile, _) = try serverTLS()
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        let (_, f) = try await probe(.init(answerPipelined: true, tls: tls), caFile: caFile)
        #expect(f["starttls.pipelining"]?.severity == .failure)
        #expect(f["starttls.pipelining"]?.summary.contains("CVE-2011-0411") == true)
    }

    @Test func silentServerIsBoundedByTheTimeout() async throws {
        let server = try await FakeSMTPServer.start(.init(sendBanner: false))
        let options = ProbeOptions(port: server.port, probeTimeout: .milliseconds(500))
        let started = ContinuousClock.now
        let result = await HostProbe().probe(
            host: "127.0.0.1", address: "127.0.0.1", port: server.port, options: options)
        let took = ContinuousClock.now - started
        await server.stop()
        // One connection, one 500 ms deadline: the probe ends by itself and says why. The bound only
        // catches a hang: CI runs with 583-689 tests in parallel on two cores took 5.9 s and 14 s to
        // get back to the awaiting task after the 0.5 s deadline, so wall time here measures the
        // machine and cannot tell the 500 ms deadline from the 10 s default.
        #expect(took < .seconds(60), "\(took)")
        let f = Dictionary(result.findings.map { ($0.check, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(f["smtp.banner"]?.severity == .failure)
        #expect(f["smtp.banner"]?.summary.contains("within the probe timeout") == true)
    }

    @Test(arguments: [
        (String(repeating: "x", count: 5000), "reply line too long"),
        (String(repeating: "220-fake.test\r\n", count: 500) + "220 fake.test\r\n", "too many lines"),
        ("HTTP/1.1 400 Bad Request\r\n", "malformed reply line"),
    ])
    func oversizedOrMalformedBannerIsBounded(banner: String, words: String) async throws {
        let (result, f) = try await probe(.init(banner: banner), timeout: .seconds(5))
        #expect(result.findings.map(\.check) == ["smtp.banner"])
        #expect(f["smtp.banner"]?.severity == .failure)
        #expect(f["smtp.banner"]?.summary.contains(words) == true, "\(f["smtp.banner"]?.summary ?? "")")
    }

    @Test func refusedBannerIsNamed() async throws {
        let (_, f) = try await probe(.init(banner: "554 5.7.1 no service for you\r\n"))
        #expect(f["smtp.banner"]?.severity == .failure)
        #expect(f["smtp.banner"]?.summary.contains("554") == true)
    }

    @Test func closedPortIsAConnectFailure() async throws {
        // A port bound but not listening: connecting is refused, and no other test's listener can
        // take it meanwhile (a stopped server's port could be reused by one running in parallel).
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, len) == 0 && getsockname(fd, p, &len) == 0
            }
        }
        #expect(bound)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let result = await HostProbe().probe(
            host: "127.0.0.1", address: "127.0.0.1", port: port,
            options: ProbeOptions(port: port, probeTimeout: .seconds(2)))
        #expect(result.findings.map(\.check) == ["smtp.connect"])
        #expect(result.findings.first?.severity == .failure)
    }

    @Test func serverHelloIsParsed() {
        // A TLS 1.3 ServerHello: legacy_version 1.2, 32-byte random, empty session id,
        // TLS_AES_256_GCM_SHA384, no compression, supported_versions = 1.3.
        var b = ByteBuffer()
        var body: [UInt8] = [0x03, 0x03] + [UInt8](repeating: 7, count: 32) + [0x00, 0x13, 0x02, 0x00]
        body += [0x00, 0x06, 0x00, 0x2B, 0x00, 0x02, 0x03, 0x04]
        b.writeBytes([0x02, 0x00, 0x00, UInt8(body.count)] + body)
        let hello = ServerHelloSniffer.parseServerHello(b)
        #expect(hello?.version == .tls13)
        #expect(hello?.cipher.name == "TLS_AES_256_GCM_SHA384")
        // Truncated: nothing yet.
        #expect(ServerHelloSniffer.parseServerHello(b.getSlice(at: 0, length: 20)!) == nil)
    }
}
