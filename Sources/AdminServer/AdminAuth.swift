import Crypto
import Foundation
import Hummingbird
import Logging
import MailQueue
import Synchronization

/// Admin tokens: random, shown once, stored as SHA-256 hashes only. A token has 256 random bits, so a
/// fast hash is enough (there is nothing to brute-force as with a password).
public enum AdminTokens {
    /// A new token: `mf_` and 43 base64url characters.
    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return "mf_" + base64URL(Data(bytes))
    }

    public static func hash(_ token: String) -> Data {
        Data(SHA256.hash(data: Data(token.utf8)))
    }

    static func base64URL(_ d: Data) -> String {
        d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The token `presented` is (its name and scope), or nil. Looks the hash up (an index lookup on a
    /// hash of a high-entropy secret leaks nothing useful through timing), compares the stored hash
    /// with the presented one in constant time all the same, and notes its last use at most once a
    /// minute. Throws `StoreUnavailable` when the store cannot be read: that is not an
    /// invalid token, and a caller must not answer as if it were.
    static func verify(_ presented: String, store: SQLiteQueueStore, lastUse: LastUse) throws
        -> SQLiteQueueStore.AdminToken?
    {
        guard presented.hasPrefix("mf_"), presented.utf8.count < 200 else { return nil }
        let presentedHash = hash(presented)
        let found: (token: SQLiteQueueStore.AdminToken, storedHash: Data)?
        do {
            found = try store.adminTokenRecord(hash: presentedHash)
        } catch {
            throw StoreUnavailable(underlying: error)
        }
        guard let found, ConstantTime.equal(found.storedHash, presentedHash) else { return nil }
        let token = found.token
        if lastUse.shouldRecord(token.name) {
            // Bookkeeping for `mailflow admin token list`, not access control: a failed write must
            // not refuse a valid token, and a later use writes it again.
            try? store.markAdminTokenUsed(name: token.name)
        }
        return token
    }

    /// The admin tokens could not be read (the queue database is locked past its busy timeout, or
    /// failed). Answered `503` with `Retry-After`, never `401`: the caller's token may be valid.
    struct StoreUnavailable: Error, CustomStringConvertible {
        var underlying: any Error
        var description: String { "admin tokens could not be read: \(underlying)" }

        /// What the caller is told; the cause goes to the log only (the caller may not be signed in).
        static let message = "admin tokens cannot be read right now; try again shortly"

        /// The `503` for `error`, logged with its cause.
        static func response(_ error: any Error, logger: Logger) -> HTTPError {
            logger.error("admin request refused: \(error)")
            return HTTPError(.serviceUnavailable, headers: [.retryAfter: "5"], message: message)
        }
    }

    final class LastUse: Sendable {
        let seen = Mutex<[String: Date]>([:])
        func shouldRecord(_ name: String, now: Date = Date()) -> Bool {
            seen.withLock { s in
                if let t = s[name], now.timeIntervalSince(t) < 60 { return false }
                s[name] = now
                return true
            }
        }
    }
}

/// Comparison of secrets (token hashes, CSRF tokens) whose time depends only on the lengths, never
/// on where the first difference is: every octet is looked at and the differences OR-ed together.
///
/// ```swift
/// ConstantTime.equal(Array("abc".utf8), Array("abd".utf8))  // false, after all three octets
/// ```
enum ConstantTime {
    static func equal<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }

    static func equal(_ a: String, _ b: String) -> Bool { equal(Array(a.utf8), Array(b.utf8)) }
}

/// Browser sessions of the web admin center: a random session ID in an HttpOnly, SameSite=Strict
/// cookie, and a per-session CSRF token every form posts back. Kept in memory: a restart logs
/// everyone out. Sessions are kept under the SHA-256 of their ID, so finding one compares hashes,
/// never the secret itself.
final class AdminSessions: Sendable {
    struct Session: Sendable {
        var tokenName: String
        var actor: String
        var csrf: String
        var expires: Date
    }

    let lifetime: TimeInterval
    let sessions = Mutex<[String: Session]>([:])

    init(lifetime: TimeInterval) { self.lifetime = lifetime }

    func create(tokenName: String, now: Date = Date()) -> (id: String, session: Session) {
        let id = String(AdminTokens.generate().dropFirst(3))
        let s = Session(
            tokenName: tokenName, actor: "web:\(tokenName)", csrf: String(AdminTokens.generate().dropFirst(3)),
            expires: now + lifetime)
        let key = Self.key(id)
        sessions.withLock { all in
            all = all.filter { $0.value.expires > now }
            all[key] = s
        }
        return (id, s)
    }

    static func key(_ id: String) -> String { AdminTokens.base64URL(AdminTokens.hash(id)) }

    func lookup(_ id: String, now: Date = Date()) -> Session? {
        let key = Self.key(id)
        return sessions.withLock { all in
            guard let s = all[key] else { return nil }
            if s.expires <= now {
                all[key] = nil
                return nil
            }
            return s
        }
    }

    func remove(_ id: String) { _ = sessions.withLock { $0.removeValue(forKey: Self.key(id)) } }
}
