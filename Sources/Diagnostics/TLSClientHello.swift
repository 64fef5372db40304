import NIOCore

// A hand-made ClientHello for what BoringSSL (inside swift-nio-ssl) will not offer: SSL 3.0, and
// the RC4, NULL, EXPORT, single-DES, DHE and anonymous suites. The probe sends it after STARTTLS and
// reads only the server's first answer (`TLSServerAnswer`): a ServerHello that picks one of the
// offered suites means the server accepts that class; no handshake is finished, no key is made.

/// A TLS (or SSL 3.0) ClientHello record offering exactly the given suites (RFC 5246 §7.4.1.2,
/// RFC 6101 §5.6.1.2), encoded by hand.
///
/// For TLS it carries the extensions an ordinary client sends, so that servers answer it as they
/// would answer a real client: server_name (RFC 6066 §3), supported_groups and ec_point_formats
/// (RFC 8422 §5.1), signature_algorithms for TLS 1.2 (RFC 5246 §7.4.1.4.1) and an empty
/// renegotiation_info (RFC 5746 §3.4). SSL 3.0 has no extensions, so none are sent.
///
/// ```swift
/// let hello = TLSClientHello(version: .tls12, cipherSuites: [0x0005, 0x0004])   // RC4 only
/// channel.writeAndFlush(ByteBuffer(bytes: hello.encoded()))
/// ```
public struct TLSClientHello: Sendable, Equatable {
    /// `client_version`: the highest version the client speaks. TLS 1.3 cannot be offered here.
    public var version: TLSProtocolVersion
    /// The 32 bytes of `random`.
    public var random: [UInt8]
    public var cipherSuites: [UInt16]
    /// The SNI name; nil for none (an address literal is never sent, RFC 6066 §3).
    public var serverName: String?

    /// The record layer's version: 3.0 for SSL 3.0, else 1.0, which every TLS server accepts in a
    /// first record (RFC 5246 appendix E.1).
    public var recordVersion: UInt16 { version == .ssl3 ? 0x0300 : 0x0301 }

    public init(
        version: TLSProtocolVersion, cipherSuites: [UInt16], serverName: String? = nil,
        random: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }
    ) {
        precondition(version != .tls13, "TLS 1.3 is offered through swift-nio-ssl")
        precondition(random.count == 32)
        self.version = version
        self.cipherSuites = cipherSuites
        self.serverName = serverName
        self.random = random
    }

    /// Named groups offered for ECDHE and AECDH: x25519, secp256r1, secp384r1, secp521r1.
    static let supportedGroups: [UInt16] = [0x001D, 0x0017, 0x0018, 0x0019]
    /// Signature schemes offered at TLS 1.2: ECDSA and RSA-PSS, PKCS#1 v1.5 with SHA-2 and SHA-1.
    static let signatureAlgorithms: [UInt16] = [
        0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201, 0x0402, 0x0202,
    ]

    enum ExtensionType: UInt16 {
        case serverName = 0x0000
        case supportedGroups = 0x000A
        case ecPointFormats = 0x000B
        case signatureAlgorithms = 0x000D
        case renegotiationInfo = 0xFF01
    }

    /// The whole record: header, then the handshake message.
    public func encoded() -> [UInt8] {
        var body: [UInt8] = []
        body.appendUInt16(version.wireValue)
        body += random
        body.append(0)  // session_id: empty
        body.appendUInt16(UInt16(cipherSuites.count * 2))
        for s in cipherSuites { body.appendUInt16(s) }
        body += [1, 0]  // compression_methods: null only
        if version != .ssl3 {
            let extensions = encodedExtensions()
            body.appendUInt16(UInt16(extensions.count))
            body += extensions
        }
        var handshake: [UInt8] = [1]  // client_hello
        handshake += [UInt8(body.count >> 16 & 0xFF), UInt8(body.count >> 8 & 0xFF), UInt8(body.count & 0xFF)]
        handshake += body
        var record: [UInt8] = [22]  // handshake
        record.appendUInt16(recordVersion)
        record.appendUInt16(UInt16(handshake.count))
        return record + handshake
    }

    private func encodedExtensions() -> [UInt8] {
        var out: [UInt8] = []
        func add(_ type: ExtensionType, _ data: [UInt8]) {
            out.appendUInt16(type.rawValue)
            out.appendUInt16(UInt16(data.count))
            out += data
        }
        if let name = serverName.flatMap(TLSProbe.sniName), name.utf8.allSatisfy({ $0 < 0x80 }) {
            let bytes = Array(name.utf8)
            var list: [UInt8] = [0]  // host_name
            list.appendUInt16(UInt16(bytes.count))
            list += bytes
            var data: [UInt8] = []
            data.appendUInt16(UInt16(list.count))
            add(.serverName, data + list)
        }
        var groups: [UInt8] = []
        groups.appendUInt16(UInt16(Self.supportedGroups.count * 2))
        for g in Self.supportedGroups { groups.appendUInt16(g) }
        add(.supportedGroups, groups)
        add(.ecPointFormats, [1, 0])  // uncompressed
        if version == .tls12 {
            var algorithms: [UInt8] = []
            algorithms.appendUInt16(UInt16(Self.signatureAlgorithms.count * 2))
            for a in Self.signatureAlgorithms { algorithms.appendUInt16(a) }
            add(.signatureAlgorithms, algorithms)
        }
        add(.renegotiationInfo, [0])
        return out
    }

    /// Reads a ClientHello record as `encoded()` writes it (for tests, and for reading what a probe
    /// sent); nil when `bytes` is not one complete ClientHello record.
    public static func decode(_ bytes: [UInt8]) -> TLSClientHello? {
        var b = ByteBuffer(bytes: bytes)
        guard b.readInteger(as: UInt8.self) == 22, let recordVersion = b.readInteger(as: UInt16.self),
            let recordLength = b.readInteger(as: UInt16.self), var record = b.readSlice(length: Int(recordLength)),
            b.readableBytes == 0,
            record.readInteger(as: UInt8.self) == 1, let l0 = record.readInteger(as: UInt8.self),
            let l1 = record.readInteger(as: UInt16.self), var body = record.readSlice(length: Int(l0) << 16 | Int(l1)),
            let wire = body.readInteger(as: UInt16.self), let version = TLSProtocolVersion(wireValue: wire),
            version != .tls13, let random = body.readBytes(length: 32),
            let sessionIDLength = body.readInteger(as: UInt8.self), body.readSlice(length: Int(sessionIDLength)) != nil,
            let suitesLength = body.readInteger(as: UInt16.self), suitesLength % 2 == 0,
            var suites = body.readSlice(length: Int(suitesLength)),
            let compressionLength = body.readInteger(as: UInt8.self),
            body.readSlice(length: Int(compressionLength)) != nil
        else { return nil }
        var cipherSuites: [UInt16] = []
        while let s = suites.readInteger(as: UInt16.self) { cipherSuites.append(s) }
        var serverName: String?
        if let extensionsLength = body.readInteger(as: UInt16.self) {
            guard var extensions = body.readSlice(length: Int(extensionsLength)) else { return nil }
            while extensions.readableBytes > 0 {
                guard let type = extensions.readInteger(as: UInt16.self),
                    let length = extensions.readInteger(as: UInt16.self),
                    var data = extensions.readSlice(length: Int(length))
                else { return nil }
                if type == ExtensionType.serverName.rawValue {
                    guard data.readInteger(as: UInt16.self) != nil, data.readInteger(as: UInt8.self) == 0,
                        let nameLength = data.readInteger(as: UInt16.self),
                        let name = data.readString(length: Int(nameLength))
                    else { return nil }
                    serverName = name
                }
            }
        }
        guard body.readableBytes == 0 else { return nil }
        let hello = TLSClientHello(
            version: version, cipherSuites: cipherSuites, serverName: serverName, random: random)
        return hello.recordVersion == recordVersion ? hello : nil
    }
}

/// The server's first answer to a ClientHello, read off the first bytes it sends.
public enum TLSServerAnswer: Sendable, Equatable {
    /// A ServerHello: the version it chose (`legacy_version`, or supported_versions for TLS 1.3) and
    /// the suite. The suite may not be one that was offered; the caller judges that. For a
    /// finite-field DH suite (DHE, DH_anon) before TLS 1.3, `dhGroupBits` is the size of the prime
    /// in the ServerKeyExchange that follows (RFC 5246 §7.4.3), when it came within `maxBytes`.
    case serverHello(version: UInt16, cipherSuite: UInt16, dhGroupBits: Int? = nil)
    /// An alert record (RFC 5246 §7.2): level (1 warning, 2 fatal) and description.
    case alert(level: UInt8, description: UInt8)
    /// Bytes that are not a TLS record (e.g. an SMTP reply); the first of them.
    case notTLS([UInt8])
    /// A TLS record whose content is not a ServerHello or an alert, or is malformed.
    case unexpected(String)
}

/// Decodes the server's first answer to a ClientHello from the bytes received so far. Handshake
/// messages may be split across records (RFC 5246 §6.2.1), so handshake payloads are gathered until
/// the first message is complete; for a finite-field DH suite, on to the ServerKeyExchange (after
/// the Certificate) for the size of the DH group. At most `maxBytes` are looked at.
public struct TLSServerAnswerDecoder: Sendable {
    public static let maxBytes = 16 * 1024

    private var received: [UInt8] = []

    public init() {}

    /// Adds `bytes` and returns the answer once it is decided; nil while more bytes are needed.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> TLSServerAnswer? {
        received += bytes
        return Self.decode(received)
    }

    /// The answer from what arrived when the server closed the connection: a ServerHello without
    /// its DH group if the group did not arrive; nil when nothing decidable came.
    public func finish() -> TLSServerAnswer? { Self.decode(received, atEnd: true) }

    /// The answer in `bytes`, or nil when they end before it is decided (`atEnd`: no more will come).
    public static func decode(_ bytes: [UInt8], atEnd: Bool = false) -> TLSServerAnswer? {
        guard let first = bytes.first else { return nil }
        guard (20...23).contains(first), bytes.count < 2 || bytes[1] == 3 else {
            return .notTLS(Array(bytes.prefix(ServerHelloSniffer.keptBytes)))
        }
        let cutOff = atEnd || bytes.count >= maxBytes
        var b = ByteBuffer(bytes: bytes.prefix(maxBytes))
        var handshake = ByteBuffer()
        var hello: (version: UInt16, cipher: UInt16)?
        while b.readableBytes >= 5 {
            let type = b.readInteger(as: UInt8.self)!
            let major = b.readInteger(as: UInt8.self)!
            _ = b.readInteger(as: UInt8.self)!
            let length = Int(b.readInteger(as: UInt16.self)!)
            guard major == 3 else { return .unexpected("a record with version major \(major)") }
            guard length > 0 else { return .unexpected("an empty record") }
            guard var payload = b.readSlice(length: length) else { break }
            switch type {
            case 21:
                if let hello { return .serverHello(version: hello.version, cipherSuite: hello.cipher) }
                guard length >= 2 else { return .unexpected("a short alert") }
                return .alert(level: payload.readInteger()!, description: payload.readInteger()!)
            case 22:
                handshake.writeBuffer(&payload)
                switch handshakeAnswer(handshake) {
                case .decided(let answer): return answer
                case .needMore(let h): hello = h
                }
            default:
                if let hello { return .serverHello(version: hello.version, cipherSuite: hello.cipher) }
                return .unexpected("a record of type \(type) before a ServerHello")
            }
        }
        guard cutOff else { return nil }
        if let hello { return .serverHello(version: hello.version, cipherSuite: hello.cipher) }
        if bytes.count >= maxBytes { return .unexpected("no ServerHello in the first \(maxBytes) bytes") }
        return nil
    }

    private enum HandshakeProgress {
        case decided(TLSServerAnswer)
        /// More is needed; the ServerHello's codes once it has been read.
        case needMore((version: UInt16, cipher: UInt16)?)
    }

    /// Walks the handshake messages gathered so far: the ServerHello, then, for a finite-field DH
    /// suite, up to the ServerKeyExchange (or the ServerHelloDone).
    private static func handshakeAnswer(_ buffer: ByteBuffer) -> HandshakeProgress {
        var h = buffer
        guard let messageType = h.getInteger(at: h.readerIndex, as: UInt8.self) else { return .needMore(nil) }
        guard messageType == 2 else {
            return .decided(.unexpected("handshake message \(messageType) before a ServerHello"))
        }
        guard let first = nextMessage(&h) else { return .needMore(nil) }
        guard let hello = ServerHelloSniffer.parseServerHelloCodes(first) else {
            return .decided(.unexpected("a malformed ServerHello"))
        }
        let suite = TLSCipherSuite(code: hello.cipher)
        let finiteFieldDH = suite.keyExchange == .dhe || suite.name.hasPrefix("TLS_DH_anon_")
        guard finiteFieldDH, hello.version < TLSProtocolVersion.tls13.wireValue else {
            return .decided(.serverHello(version: hello.version, cipherSuite: hello.cipher))
        }
        while let message = nextMessage(&h) {
            var m = message
            switch m.readInteger(as: UInt8.self) {
            case 12:  // ServerKeyExchange: ServerDHParams { dh_p<1..2^16-1>; dh_g; dh_Ys }
                _ = m.readSlice(length: 3)
                guard let pLength = m.readInteger(as: UInt16.self), let p = m.readBytes(length: Int(pLength)) else {
                    return .decided(.serverHello(version: hello.version, cipherSuite: hello.cipher))
                }
                return .decided(
                    .serverHello(version: hello.version, cipherSuite: hello.cipher, dhGroupBits: bitLength(p)))
            case 14:  // ServerHelloDone without a key exchange
                return .decided(.serverHello(version: hello.version, cipherSuite: hello.cipher))
            default:
                continue  // Certificate, CertificateStatus
            }
        }
        return .needMore(hello)
    }

    /// The next complete handshake message (header included), or nil when it has not all arrived.
    private static func nextMessage(_ h: inout ByteBuffer) -> ByteBuffer? {
        guard h.readableBytes >= 4 else { return nil }
        let l0 = Int(h.getInteger(at: h.readerIndex + 1, as: UInt8.self)!)
        let l1 = Int(h.getInteger(at: h.readerIndex + 2, as: UInt16.self)!)
        return h.readSlice(length: 4 + (l0 << 16 | l1))
    }

    /// The size in bits of a big-endian unsigned number.
    static func bitLength(_ bytes: [UInt8]) -> Int {
        guard let i = bytes.firstIndex(where: { $0 != 0 }) else { return 0 }
        return (bytes.count - i - 1) * 8 + (8 - bytes[i].leadingZeroBitCount)
    }
}

extension [UInt8] {
    fileprivate mutating func appendUInt16(_ v: UInt16) {
        append(UInt8(v >> 8))
        append(UInt8(v & 0xFF))
    }
}
