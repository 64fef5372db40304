import Crypto
import Foundation
import Logging
import NIOSSL
import X509

/// Loads the configured certificate and key, or generates a self-signed P-256 pair into the data
/// directory on first start (and reuses it after), and builds the server TLS context: TLS 1.2 and
/// 1.3 only.
public enum TLSSetup {
    public static func serverContext(
        certificate: String?, key: String?, dataDirectory: String, hostname: String, logger: Logger
    ) throws -> NIOSSLContext {
        try NIOSSLContext(
            configuration: serverConfiguration(
                certificate: certificate, key: key, dataDirectory: dataDirectory, hostname: hostname, logger: logger))
    }

    /// The admin listener's TLS: `generated` takes the SMTP side's pair (`tls.certificate` and
    /// `tls.key` when set, else the generated one in `<data>/tls`), `files` its own.
    public static func adminConfiguration(
        _ admin: MailflowConfig.AdminTLS, config: MailflowConfig, logger: Logger
    ) throws -> TLSConfiguration {
        switch admin {
        case .generated:
            return try serverConfiguration(
                certificate: config.tlsCertificate, key: config.tlsKey, dataDirectory: config.dataDirectory,
                hostname: config.hostname, logger: logger)
        case .files(let certificate, let key):
            return try serverConfiguration(
                certificate: certificate, key: key, dataDirectory: config.dataDirectory, hostname: config.hostname,
                logger: logger)
        }
    }

    static func serverConfiguration(
        certificate: String?, key: String?, dataDirectory: String, hostname: String, logger: Logger
    ) throws -> TLSConfiguration {
        var certPath = certificate
        var keyPath = key
        if certPath == nil {
            let dir = "\(dataDirectory)/tls"
            certPath = "\(dir)/cert.pem"
            keyPath = "\(dir)/key.pem"
            if !FileManager.default.fileExists(atPath: certPath!) || !FileManager.default.fileExists(atPath: keyPath!) {
                try generateSelfSigned(hostname: hostname, certPath: certPath!, keyPath: keyPath!)
                logger.notice("generated a self-signed TLS certificate for \(hostname) at \(certPath!)")
            }
        }
        let chain: [NIOSSLCertificate]
        let privateKey: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certPath!)
        } catch {
            throw StartupError("cannot load TLS certificate \(certPath!): \(error)")
        }
        do {
            privateKey = try NIOSSLPrivateKey(file: keyPath!, format: .pem)
        } catch {
            throw StartupError("cannot load TLS key \(keyPath!): \(error)")
        }
        var config = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        config.minimumTLSVersion = .tlsv12
        config.maximumTLSVersion = .tlsv13
        return config
    }

    public static func generateSelfSigned(hostname: String, certPath: String, keyPath: String) throws {
        let dir = URL(fileURLWithPath: certPath).deletingLastPathComponent().path
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(hostname) }
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(825 * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([.dnsName(hostname)])
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        let certPEM = try cert.serializeAsPEM().pemString
        // The key is 0600 from its first byte (a half-made pair from an earlier start is replaced).
        try? FileManager.default.removeItem(atPath: keyPath)
        try DataDirectoryPermissions.writeSecret(Data(key.pemRepresentation.utf8), to: keyPath)
        guard FileManager.default.createFile(atPath: certPath, contents: Data(certPEM.utf8)) else {
            throw StartupError("cannot write the generated TLS pair into \(dir)")
        }
    }
}

/// A start-up failure with a message for one CLI line.
public struct StartupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
