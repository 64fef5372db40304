import Testing

@testable import Diagnostics

/// The NCSC-NL TLS guideline (v2.1) tables: version levels (B1-1) and the cipher suite appendix.
@Suite struct NCSCLevelsTests {
    @Test(arguments: [
        (TLSProtocolVersion.tls13, NCSCLevel.good),
        (.tls12, .sufficient),
        (.tls11, .phaseOut),
        (.tls10, .phaseOut),
        (.ssl3, .insufficient),
    ])
    func versionLevels(version: TLSProtocolVersion, level: NCSCLevel) {
        #expect(version.ncscLevel == level)
    }

    @Test(arguments: [
        // TLS 1.3
        (UInt16(0x1301), "TLS_AES_128_GCM_SHA256", NCSCLevel.good, true),
        (0x1302, "TLS_AES_256_GCM_SHA384", .good, true),
        (0x1303, "TLS_CHACHA20_POLY1305_SHA256", .good, true),
        (0x1304, "TLS_AES_128_CCM_SHA256", .sufficient, true),
        (0x1305, "TLS_AES_128_CCM_8_SHA256", .insufficient, true),
        // ECDHE + AEAD: good
        (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", .good, true),
        (0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", .good, true),
        (0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", .good, true),
        (0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", .good, true),
        (0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", .good, true),
        // ECDHE + CBC: sufficient
        (0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", .sufficient, true),
        (0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", .sufficient, true),
        (0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", .sufficient, true),
        // DHE: sufficient
        (0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", .sufficient, true),
        (0xCCAA, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", .sufficient, true),
        (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", .sufficient, true),
        // 3DES with forward secrecy, and RSA key exchange: phase out
        (0xC012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", .phaseOut, true),
        (0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA", .phaseOut, true),
        (0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256", .phaseOut, false),
        (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA", .phaseOut, false),
        (0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256", .phaseOut, false),
        (0x000A, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", .phaseOut, false),
        // Everything the guideline does not list: insufficient
        (0x0005, "TLS_RSA_WITH_RC4_128_SHA", .insufficient, false),
        (0x0004, "TLS_RSA_WITH_RC4_128_MD5", .insufficient, false),
        (0xC011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA", .insufficient, true),
        (0x0009, "TLS_RSA_WITH_DES_CBC_SHA", .insufficient, false),
        (0x0003, "TLS_RSA_EXPORT_WITH_RC4_40_MD5", .insufficient, false),
        (0x0002, "TLS_RSA_WITH_NULL_SHA", .insufficient, false),
        (0xC010, "TLS_ECDHE_RSA_WITH_NULL_SHA", .insufficient, true),
        (0x0034, "TLS_DH_anon_WITH_AES_128_CBC_SHA", .insufficient, false),
        (0xC018, "TLS_ECDH_anon_WITH_AES_128_CBC_SHA", .insufficient, false),
        (0x0041, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", .insufficient, false),
        (0xFFFF, "0xFFFF", .insufficient, false),
    ])
    func cipherLevels(code: UInt16, name: String, level: NCSCLevel, forwardSecret: Bool) {
        let suite = TLSCipherSuite(code: code)
        #expect(suite.name == name)
        #expect(suite.ncscLevel == level)
        #expect(suite.isForwardSecret == forwardSecret)
    }

    @Test func everyNamedSuiteParses() {
        for (code, name) in TLSCipherSuite.ianaNames {
            let suite = TLSCipherSuite(code: code)
            #expect(suite.name == name)
            #expect(suite.bulkCipher != .other, "\(name)")
            #expect(suite.keyExchange != .other, "\(name)")
        }
    }

    @Test(arguments: [
        (NCSCLevel.good, CheckSeverity.ok), (.sufficient, .ok), (.phaseOut, .warning), (.insufficient, .failure),
    ])
    func severityOfAcceptedLevels(level: NCSCLevel, severity: CheckSeverity) {
        #expect(level.severityWhenAccepted == severity)
    }

    @Test(arguments: [
        (UInt16(0x0300), TLSProtocolVersion.ssl3), (0x0301, .tls10), (0x0302, .tls11), (0x0303, .tls12),
        (0x0304, .tls13),
    ])
    func wireVersions(wire: UInt16, version: TLSProtocolVersion) {
        #expect(TLSProtocolVersion(wireValue: wire) == version)
        #expect(version.wireValue == wire)
    }
}
