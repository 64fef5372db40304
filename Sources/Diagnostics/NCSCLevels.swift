// The NCSC-NL "IT Security Guidelines for Transport Layer Security (TLS)", version 2.1 (January 2021),
// as tables: the level of a protocol version (guideline B1-1) and of a cipher suite (B2-1..B2-4, and
// the appendix that lists suites by level).
//
// Version 2.1 downgraded TLS 1.2 from Good to Sufficient (the 2019 text had it Good), and lists 3DES
// under Phase out, not Insufficient. What the guideline does not list is Insufficient ("all other
// options"): RC4, DES, NULL, EXPORT, anonymous key exchange, MD5, Camellia and ARIA suites.

/// A TLS protocol version as the probe names it, SSL 3.0 included for completeness of the table.
public enum TLSProtocolVersion: String, Codable, Sendable, CaseIterable, Comparable {
    case ssl3 = "SSLv3"
    case tls10 = "TLSv1.0"
    case tls11 = "TLSv1.1"
    case tls12 = "TLSv1.2"
    case tls13 = "TLSv1.3"

    /// The version's code on the wire (`ProtocolVersion`, RFC 8446 §4.1.2 and appendix E).
    public var wireValue: UInt16 {
        switch self {
        case .ssl3: 0x0300
        case .tls10: 0x0301
        case .tls11: 0x0302
        case .tls12: 0x0303
        case .tls13: 0x0304
        }
    }

    public init?(wireValue: UInt16) {
        guard let v = Self.allCases.first(where: { $0.wireValue == wireValue }) else { return nil }
        self = v
    }

    /// The suffix of the finding ids about this version: `tls.version.tls1_2`.
    public var checkSuffix: String {
        switch self {
        case .ssl3: "ssl3"
        case .tls10: "tls1_0"
        case .tls11: "tls1_1"
        case .tls12: "tls1_2"
        case .tls13: "tls1_3"
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.wireValue < rhs.wireValue }
}

/// A TLS cipher suite by its IANA code point, with the parts the NCSC-NL guideline rates: key
/// exchange, bulk cipher and MAC, read from the IANA name (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`).
///
/// ```swift
/// TLSCipherSuite(code: 0xC02F).name           // "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
/// TLSCipherSuite(code: 0xC02F).ncscLevel      // .good
/// TLSCipherSuite(code: 0x000A).ncscLevel      // .phaseOut (RSA key exchange, 3DES)
/// ```
public struct TLSCipherSuite: Hashable, Sendable, CustomStringConvertible {
    public enum KeyExchange: String, Sendable {
        /// TLS 1.3: always an ephemeral (EC)DHE exchange (RFC 8446 §4.2.8).
        case tls13
        case ecdhe, dhe, rsa, psk, anonymous, other
        /// Static (EC)DH with the certificate's key (`TLS_DH_RSA_`, `TLS_ECDH_ECDSA_`): no forward secrecy.
        case staticDH
    }

    public enum BulkCipher: String, Sendable {
        case aesGCM, chacha20Poly1305, aesCCM, aesCCM8, aesCBC, camellia, aria, tripleDES, rc4, des, rc2, null, other
    }

    public enum MAC: String, Sendable {
        case aead, sha384, sha256, sha1, md5, other
    }

    public var code: UInt16
    /// The IANA name, or `0xC0FF` for a code point the table does not know.
    public var name: String
    public var keyExchange: KeyExchange
    public var bulkCipher: BulkCipher
    public var mac: MAC
    /// An export-grade suite (40/56-bit keys).
    public var isExport: Bool

    public init(code: UInt16) {
        self.code = code
        let hex = "0x" + String(code, radix: 16, uppercase: true).leftPadded(to: 4)
        let name = Self.ianaNames[code] ?? hex
        self.name = name
        (keyExchange, bulkCipher, mac, isExport) = Self.parts(of: name)
    }

    public var description: String { name }

    /// ECDHE, DHE or TLS 1.3: a stolen server key does not decrypt recorded sessions.
    public var isForwardSecret: Bool { [.tls13, .ecdhe, .dhe].contains(keyExchange) }

    /// The level the NCSC-NL guideline (v2.1, appendix tables) gives this suite.
    public var ncscLevel: NCSCLevel {
        if isExport || mac == .md5 { return .insufficient }
        switch bulkCipher {
        case .null, .rc4, .des, .rc2, .other, .camellia, .aria, .aesCCM8: return .insufficient
        default: break
        }
        switch keyExchange {
        case .tls13:
            return bulkCipher == .aesCCM ? .sufficient : .good
        case .ecdhe:
            switch bulkCipher {
            case .aesGCM, .chacha20Poly1305: return .good
            case .aesCBC, .aesCCM: return .sufficient
            case .tripleDES: return .phaseOut
            default: return .insufficient
            }
        case .dhe:
            return bulkCipher == .tripleDES ? .phaseOut : .sufficient
        case .rsa:
            return .phaseOut
        case .psk, .anonymous, .staticDH, .other:
            return .insufficient
        }
    }

    static func parts(of name: String) -> (KeyExchange, BulkCipher, MAC, Bool) {
        guard name.hasPrefix("TLS_") else { return (.other, .other, .other, false) }
        let body = name.dropFirst(4)
        let kxText: Substring
        let cipherText: Substring
        if let with = body.range(of: "_WITH_") {
            kxText = body[..<with.lowerBound]
            cipherText = body[with.upperBound...]
        } else {
            kxText = ""
            cipherText = body
        }
        let keyExchange: KeyExchange
        if kxText.isEmpty {
            keyExchange = .tls13
        } else if kxText.contains("anon") {
            keyExchange = .anonymous
        } else if kxText.hasPrefix("ECDHE_") {
            keyExchange = kxText.hasSuffix("_PSK") ? .psk : .ecdhe
        } else if kxText.hasPrefix("DHE_") {
            keyExchange = kxText.hasSuffix("_PSK") ? .psk : .dhe
        } else if kxText == "RSA" || kxText.hasPrefix("RSA_EXPORT") {
            keyExchange = .rsa
        } else if kxText.hasPrefix("PSK") || kxText.hasPrefix("RSA_PSK") {
            keyExchange = .psk
        } else if kxText.hasPrefix("DH_") || kxText.hasPrefix("ECDH_") {
            keyExchange = .staticDH
        } else {
            keyExchange = .other
        }
        let bulk: BulkCipher
        if cipherText.hasPrefix("AES_128_GCM") || cipherText.hasPrefix("AES_256_GCM") {
            bulk = .aesGCM
        } else if cipherText.hasPrefix("CHACHA20_POLY1305") {
            bulk = .chacha20Poly1305
        } else if cipherText.contains("CCM_8") {
            bulk = .aesCCM8
        } else if cipherText.hasPrefix("AES_") && cipherText.contains("CCM") {
            bulk = .aesCCM
        } else if cipherText.hasPrefix("AES_") {
            bulk = .aesCBC
        } else if cipherText.hasPrefix("CAMELLIA") {
            bulk = .camellia
        } else if cipherText.hasPrefix("ARIA") {
            bulk = .aria
        } else if cipherText.hasPrefix("3DES") {
            bulk = .tripleDES
        } else if cipherText.hasPrefix("RC4") {
            bulk = .rc4
        } else if cipherText.hasPrefix("DES") {
            bulk = .des
        } else if cipherText.hasPrefix("RC2") {
            bulk = .rc2
        } else if cipherText.hasPrefix("NULL") {
            bulk = .null
        } else {
            bulk = .other
        }
        let mac: MAC
        if [.aesGCM, .chacha20Poly1305, .aesCCM, .aesCCM8].contains(bulk) {
            mac = .aead
        } else if cipherText.hasSuffix("_SHA384") {
            mac = .sha384
        } else if cipherText.hasSuffix("_SHA256") {
            mac = .sha256
        } else if cipherText.hasSuffix("_SHA") {
            mac = .sha1
        } else if cipherText.hasSuffix("_MD5") {
            mac = .md5
        } else {
            mac = .other
        }
        return (keyExchange, bulk, mac, kxText.contains("EXPORT"))
    }

    /// IANA names of the suites a mail server is likely to pick, and of every suite the hand-made
    /// ClientHellos offer (TLS Cipher Suites registry).
    static let ianaNames: [UInt16: String] = [
        0x0001: "TLS_RSA_WITH_NULL_MD5",
        0x0002: "TLS_RSA_WITH_NULL_SHA",
        0x0003: "TLS_RSA_EXPORT_WITH_RC4_40_MD5",
        0x0004: "TLS_RSA_WITH_RC4_128_MD5",
        0x0005: "TLS_RSA_WITH_RC4_128_SHA",
        0x0006: "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5",
        0x0008: "TLS_RSA_EXPORT_WITH_DES40_CBC_SHA",
        0x0009: "TLS_RSA_WITH_DES_CBC_SHA",
        0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        0x000B: "TLS_DH_DSS_EXPORT_WITH_DES40_CBC_SHA",
        0x000C: "TLS_DH_DSS_WITH_DES_CBC_SHA",
        0x000E: "TLS_DH_RSA_EXPORT_WITH_DES40_CBC_SHA",
        0x000F: "TLS_DH_RSA_WITH_DES_CBC_SHA",
        0x0011: "TLS_DHE_DSS_EXPORT_WITH_DES40_CBC_SHA",
        0x0012: "TLS_DHE_DSS_WITH_DES_CBC_SHA",
        0x0013: "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA",
        0x0014: "TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA",
        0x0015: "TLS_DHE_RSA_WITH_DES_CBC_SHA",
        0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
        0x0017: "TLS_DH_anon_EXPORT_WITH_RC4_40_MD5",
        0x0018: "TLS_DH_anon_WITH_RC4_128_MD5",
        0x0019: "TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA",
        0x001A: "TLS_DH_anon_WITH_DES_CBC_SHA",
        0x001B: "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA",
        0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
        0x0032: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
        0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
        0x0034: "TLS_DH_anon_WITH_AES_128_CBC_SHA",
        0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
        0x0038: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
        0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
        0x003A: "TLS_DH_anon_WITH_AES_256_CBC_SHA",
        0x003B: "TLS_RSA_WITH_NULL_SHA256",
        0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
        0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
        0x0040: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256",
        0x0041: "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA",
        0x0045: "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA",
        0x0046: "TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA",
        0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
        0x006A: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
        0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
        0x006C: "TLS_DH_anon_WITH_AES_128_CBC_SHA256",
        0x006D: "TLS_DH_anon_WITH_AES_256_CBC_SHA256",
        0x0084: "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA",
        0x0088: "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA",
        0x0089: "TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA",
        0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
        0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
        0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
        0x00A2: "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256",
        0x00A3: "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384",
        0x00A6: "TLS_DH_anon_WITH_AES_128_GCM_SHA256",
        0x00A7: "TLS_DH_anon_WITH_AES_256_GCM_SHA384",
        0x1301: "TLS_AES_128_GCM_SHA256",
        0x1302: "TLS_AES_256_GCM_SHA384",
        0x1303: "TLS_CHACHA20_POLY1305_SHA256",
        0x1304: "TLS_AES_128_CCM_SHA256",
        0x1305: "TLS_AES_128_CCM_8_SHA256",
        0xC001: "TLS_ECDH_ECDSA_WITH_NULL_SHA",
        0xC006: "TLS_ECDHE_ECDSA_WITH_NULL_SHA",
        0xC007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        0xC008: "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
        0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        0xC00B: "TLS_ECDH_RSA_WITH_NULL_SHA",
        0xC010: "TLS_ECDHE_RSA_WITH_NULL_SHA",
        0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        0xC015: "TLS_ECDH_anon_WITH_NULL_SHA",
        0xC016: "TLS_ECDH_anon_WITH_RC4_128_SHA",
        0xC017: "TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA",
        0xC018: "TLS_ECDH_anon_WITH_AES_128_CBC_SHA",
        0xC019: "TLS_ECDH_anon_WITH_AES_256_CBC_SHA",
        0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xC09C: "TLS_RSA_WITH_AES_128_CCM",
        0xC09D: "TLS_RSA_WITH_AES_256_CCM",
        0xC09E: "TLS_DHE_RSA_WITH_AES_128_CCM",
        0xC09F: "TLS_DHE_RSA_WITH_AES_256_CCM",
        0xC0AC: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
        0xC0AD: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
        0xC0AE: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
        0xC0AF: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
        0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ]
}

extension TLSProtocolVersion {
    /// The level guideline B1-1 (v2.1) gives the version.
    public var ncscLevel: NCSCLevel {
        switch self {
        case .tls13: .good
        case .tls12: .sufficient
        case .tls11, .tls10: .phaseOut
        case .ssl3: .insufficient
        }
    }
}

extension NCSCLevel {
    /// The level the guideline (v2.1, key exchange table) gives a finite-field DH group by its size:
    /// ffdhe3072 and ffdhe4096 sufficient, ffdhe2048 phase out, anything smaller insufficient.
    /// Groups are judged by size only; the probe does not check that the prime is a named one.
    public static func finiteFieldDHGroup(bits: Int) -> NCSCLevel {
        switch bits {
        case 3072...: .sufficient
        case 2048..<3072: .phaseOut
        default: .insufficient
        }
    }

    /// The worse of two levels.
    public func worse(_ other: NCSCLevel) -> NCSCLevel {
        let order: [NCSCLevel] = [.good, .sufficient, .phaseOut, .insufficient]
        return order.firstIndex(of: self)! >= order.firstIndex(of: other)! ? self : other
    }

    /// The severity of a finding that something at this level is accepted: Good and Sufficient are
    /// fine, Phase out is a warning (it works today, plan its removal), Insufficient a failure.
    public var severityWhenAccepted: CheckSeverity {
        switch self {
        case .good, .sufficient: .ok
        case .phaseOut: .warning
        case .insufficient: .failure
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
