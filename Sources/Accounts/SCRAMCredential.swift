import Crypto
import _CryptoExtras

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A user's password as SCRAM-SHA-256 keeps it (RFC 5802 §3, RFC 7677): a random salt, the PBKDF2
/// iteration count, and `StoredKey` and `ServerKey` derived from the salted password. The password
/// itself is never stored. One credential serves every mechanism: PLAIN and LOGIN derive the same
/// keys from the password they are given and compare; SCRAM proves knowledge without sending it.
///
/// Stored as text, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts), the
/// form Dovecot uses for the same scheme, so an operator can recognise it.
///
/// ```swift
/// let c = try SCRAMCredential.derive(password: "s3cret", iterations: 210_000)
/// c.matches(password: "s3cret")   // true
/// c.stored                         // "SCRAM-SHA-256$210000:...$...:..."
/// ```
public struct SCRAMCredential: Sendable, Equatable {
    public var salt: [UInt8]
    public var iterations: Int
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]

    /// PBKDF2 rounds for new passwords: the floor swift-crypto's checked PBKDF2 accepts (OWASP's
    /// 2023 figure for PBKDF2-HMAC-SHA256 is 600,000; 210,000 keeps one login near 50-100 ms on a
    /// small server core, which the brute-force lockout makes affordable).
    public static let defaultIterations = 210_000
    /// Fewer rounds are refused when reading a stored credential: RFC 7677 §4 asks for at least 4,096.
    public static let minimumIterations = 4096
    static let scheme = "SCRAM-SHA-256"

    public init(salt: [UInt8], iterations: Int, storedKey: [UInt8], serverKey: [UInt8]) {
        self.salt = salt
        self.iterations = iterations
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case emptyPassword
        case tooFewIterations(Int)
        case malformed(String)

        public var description: String {
            switch self {
            case .emptyPassword: return "the password is empty"
            case .tooFewIterations(let n):
                return "\(n) PBKDF2 iterations is below the minimum of \(SCRAMCredential.minimumIterations)"
            case .malformed(let why): return "not a SCRAM-SHA-256 credential: \(why)"
            }
        }
    }

    /// A new credential for `password` with a fresh 16-octet salt.
    public static func derive(
        password: String, iterations: Int = defaultIterations,
        using rng: inout some RandomNumberGenerator
    ) throws -> SCRAMCredential {
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return try derive(password: password, salt: salt, iterations: iterations)
    }

    public static func derive(password: String, iterations: Int = defaultIterations) throws -> SCRAMCredential {
        var rng = SystemRandomNumberGenerator()
        return try derive(password: password, iterations: iterations, using: &rng)
    }

    /// The credential for `password` with the given salt (RFC 5802 §3: SaltedPassword = Hi(password,
    /// salt, i); ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey = H(ClientKey);
    /// ServerKey = HMAC(SaltedPassword, "Server Key")).
    public static func derive(password: String, salt: [UInt8], iterations: Int) throws -> SCRAMCredential {
        guard !password.isEmpty else { throw Failure.emptyPassword }
        guard iterations >= minimumIterations else { throw Failure.tooFewIterations(iterations) }
        let salted = try saltedPassword(password, salt: salt, iterations: iterations)
        let clientKey = hmac(salted, Array("Client Key".utf8))
        return SCRAMCredential(
            salt: salt, iterations: iterations, storedKey: Array(SHA256.hash(data: clientKey)),
            serverKey: hmac(salted, Array("Server Key".utf8)))
    }

    static func saltedPassword(_ password: String, salt: [UInt8], iterations: Int) throws -> SymmetricKey {
        try KDF.Insecure.PBKDF2.deriveKey(
            from: Array(prepared(password).utf8), salt: salt, using: .sha256, outputByteCount: 32,
            unsafeUncheckedRounds: iterations)
    }

    /// The password as SCRAM clients prepare it before hashing (RFC 5802 §2.2, SASLprep, RFC 4013):
    /// non-ASCII spaces become a space, characters "commonly mapped to nothing" go, then NFKC. So the
    /// same password works with PLAIN, LOGIN and SCRAM. (The prohibited-character checks of SASLprep
    /// are not applied: a password is only ever compared, never displayed.)
    static func prepared(_ password: String) -> String {
        let spaces = Set<UInt32>([0xA0, 0x1680, 0x202F, 0x205F, 0x3000]).union(0x2000...0x200B)
        let nothing = Set<UInt32>([0xAD, 0x34F, 0x1806, 0x180B, 0x180C, 0x180D, 0x200C, 0x200D, 0x2060, 0xFEFF])
            .union(0xFE00...0xFE0F)
        var out = String.UnicodeScalarView()
        for u in password.unicodeScalars {
            if spaces.contains(u.value) {
                out.append(" ")
            } else if !nothing.contains(u.value) {
                out.append(u)
            }
        }
        return String(out).precomposedStringWithCompatibilityMapping
    }

    static func hmac(_ key: SymmetricKey, _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: key))
    }

    static func hmac(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        hmac(SymmetricKey(data: key), data)
    }

    /// Whether `password` derives this credential's `StoredKey` (PLAIN, LOGIN), compared in constant
    /// time. Costs one PBKDF2: run it off the event loop.
    public func matches(password: String) -> Bool {
        guard let other = try? Self.derive(password: password, salt: salt, iterations: iterations) else {
            return false
        }
        return Self.constantTimeEqual(other.storedKey, storedKey)
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    /// The stored text form.
    public var stored: String {
        "\(Self.scheme)$\(iterations):\(SASLText.base64(salt))$\(SASLText.base64(storedKey)):\(SASLText.base64(serverKey))"
    }

    /// Reads the stored text form back.
    public init(stored text: String) throws {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == Self.scheme else { throw Failure.malformed("unknown scheme") }
        let a = parts[1].split(separator: ":", omittingEmptySubsequences: false)
        let b = parts[2].split(separator: ":", omittingEmptySubsequences: false)
        guard a.count == 2, b.count == 2, let iterations = Int(a[0]) else {
            throw Failure.malformed("expected <iterations>:<salt>$<StoredKey>:<ServerKey>")
        }
        guard iterations >= Self.minimumIterations else { throw Failure.tooFewIterations(iterations) }
        guard let salt = SASLText.unbase64(a[1]), !salt.isEmpty, let stored = SASLText.unbase64(b[0]),
            stored.count == 32, let server = SASLText.unbase64(b[1]), server.count == 32
        else { throw Failure.malformed("a part is not base64 of the right length") }
        self.init(salt: salt, iterations: iterations, storedKey: stored, serverKey: server)
    }
}

/// Base64 for the SASL layer (standard alphabet, padded), on Foundation's strict decoder.
enum SASLText {
    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func unbase64<S: StringProtocol>(_ text: S) -> [UInt8]? {
        guard let d = Data(base64Encoded: String(text)) else { return nil }
        return Array(d)
    }
}
