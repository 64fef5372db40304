import Crypto
import Foundation
import _CryptoExtras

/// A DKIM signing algorithm (RFC 6376 §3.3, RFC 8463 §3). `rsa-sha1` is not one: RFC 8301 §3.1 says
/// signers MUST NOT use it and verifiers MUST NOT accept it.
public enum DKIMAlgorithm: String, Sendable, Hashable, CaseIterable, Codable {
    case rsaSHA256 = "rsa-sha256"
    case ed25519SHA256 = "ed25519-sha256"

    /// The key record's `k=` for this algorithm.
    public var keyType: String { self == .rsaSHA256 ? "rsa" : "ed25519" }
}

/// A private key Mailflow signs with: RSA of at least 2048 bits (RFC 8301 §3.2) or Ed25519 (RFC 8463).
/// Stored as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); PKCS#1 RSA PEM is read too.
///
/// An Ed25519 key is held as its 32-byte seed (RFC 8032 §5.1.5): swift-crypto's key type is not
/// `Sendable` on Linux, and a signer is shared between tasks.
public enum DKIMPrivateKey: Sendable {
    case rsa(_RSA.Signing.PrivateKey)
    case ed25519(seed: [UInt8])

    /// An Ed25519 key from swift-crypto's type.
    public static func ed25519(_ key: Curve25519.Signing.PrivateKey) -> DKIMPrivateKey {
        .ed25519(seed: Array(key.rawRepresentation))
    }

    /// Signers use at least this (RFC 8301 §3.2: "Signers MUST use RSA keys of at least 1024 bits" and
    /// SHOULD use 2048; Mailflow does not make weaker ones).
    public static let minimumRSABits = 2048
    /// Keys larger than this are refused when generating (and when verifying, as a cost bound).
    public static let maximumRSABits = 8192

    public enum KeyError: Error, Sendable, Hashable, CustomStringConvertible {
        case notPEM
        case unsupported(String)
        case rsaTooSmall(Int)
        case rsaSize(Int)

        public var description: String {
            switch self {
            case .notPEM: "not a PEM private key (-----BEGIN PRIVATE KEY-----)"
            case .unsupported(let why): "not an RSA or Ed25519 private key: \(why)"
            case .rsaTooSmall(let bits):
                "RSA key of \(bits) bits: Mailflow signs with at least \(DKIMPrivateKey.minimumRSABits) (RFC 8301 §3.2)"
            case .rsaSize(let bits): "RSA key size \(bits): use 2048, 3072 or 4096"
            }
        }
    }

    public var algorithm: DKIMAlgorithm {
        switch self {
        case .rsa: .rsaSHA256
        case .ed25519: .ed25519SHA256
        }
    }

    /// A new key: RSA of `bits` (2048, 3072 or 4096) or Ed25519.
    public static func generate(_ algorithm: DKIMAlgorithm, bits: Int = 2048) throws(KeyError) -> DKIMPrivateKey {
        switch algorithm {
        case .ed25519SHA256:
            return .ed25519(Curve25519.Signing.PrivateKey())
        case .rsaSHA256:
            let size: _RSA.Signing.KeySize
            switch bits {
            case 2048: size = .bits2048
            case 3072: size = .bits3072
            case 4096: size = .bits4096
            default: throw .rsaSize(bits)
            }
            do {
                return .rsa(try _RSA.Signing.PrivateKey(keySize: size))
            } catch {
                throw .unsupported("\(error)")
            }
        }
    }

    // RFC 8410 §7: PKCS#8 PrivateKeyInfo for Ed25519, version 0, OID 1.3.101.112, the 32-byte seed.
    private static let ed25519PKCS8Prefix: [UInt8] = [
        0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]

    /// Reads a PEM private key: PKCS#8 (RSA or Ed25519) or PKCS#1 RSA.
    public init(pem: String) throws(KeyError) {
        guard let der = Self.pemBody(pem) else { throw .notPEM }
        if der.count == 48, Array(der.prefix(16)) == Self.ed25519PKCS8Prefix {
            self = .ed25519(seed: Array(der.suffix(32)))
            return
        }
        if let bits = try? DERReader.rsaPrivateModulusBits(der), bits < Self.minimumRSABits { throw .rsaTooSmall(bits) }
        let key: _RSA.Signing.PrivateKey
        do {
            key = try _RSA.Signing.PrivateKey(unsafePEMRepresentation: pem)
        } catch {
            throw .unsupported("\(error)")
        }
        guard key.keySizeInBits >= Self.minimumRSABits else { throw .rsaTooSmall(key.keySizeInBits) }
        self = .rsa(key)
    }

    /// The key as PKCS#8 PEM.
    public var pkcs8PEM: String {
        switch self {
        case .rsa(let key):
            return key.pkcs8PEMRepresentation
        case .ed25519(let seed):
            let der = Self.ed25519PKCS8Prefix + seed
            // 48 bytes: one 64-character base64 line.
            return "-----BEGIN PRIVATE KEY-----\n" + Data(der).base64EncodedString() + "\n-----END PRIVATE KEY-----\n"
        }
    }

    /// The key record to publish at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1, RFC 8463 §4).
    public var publicKeyRecord: String {
        switch self {
        case .rsa(let key):
            return "v=DKIM1; k=rsa; p=" + key.publicKey.derRepresentation.base64EncodedString()
        case .ed25519(let seed):
            let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: seed)
            return "v=DKIM1; k=ed25519; p=" + (key?.publicKey.rawRepresentation.base64EncodedString() ?? "")
        }
    }

    /// RSA: PKCS#1 v1.5 over SHA-256 of `data` (RFC 6376 §3.3.1). Ed25519: PureEdDSA over the SHA-256
    /// hash of `data` (RFC 8463 §3: the 32-byte hash is the message Ed25519 signs).
    func sign(_ data: [UInt8]) throws -> [UInt8] {
        let digest = SHA256.hash(data: data)
        switch self {
        case .rsa(let key):
            return Array(try key.signature(for: digest, padding: .insecurePKCS1v1_5).rawRepresentation)
        case .ed25519(let seed):
            let key = try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
            return Array(try key.signature(for: Data(digest)))
        }
    }

    static func pemBody(_ pem: String) -> [UInt8]? {
        var inside = false
        var base64 = ""
        for line in pem.split(whereSeparator: \.isNewline) {
            let l = line.trimmingCharacters(in: .whitespaces)
            if l.hasPrefix("-----BEGIN ") {
                inside = true
            } else if l.hasPrefix("-----END ") {
                break
            } else if inside {
                base64 += l
            }
        }
        guard inside, let data = Data(base64Encoded: base64) else { return nil }
        return Array(data)
    }
}

/// A public key from a key record, ready to check signatures.
enum DKIMPublicKey {
    case rsa(_RSA.Signing.PublicKey)
    case ed25519(Curve25519.Signing.PublicKey)

    /// Checks `signature` over SHA-256 of the header hash input (see ``DKIMPrivateKey/sign(_:)``).
    func isValid(signature: [UInt8], digest: SHA256Digest) -> Bool {
        switch self {
        case .rsa(let key):
            return key.isValidSignature(
                _RSA.Signing.RSASignature(rawRepresentation: signature), for: digest, padding: .insecurePKCS1v1_5)
        case .ed25519(let key):
            return key.isValidSignature(signature, for: Data(digest))
        }
    }
}
