import Crypto
import Foundation

/// A user who may authenticate: the login name (an address of the tenant's, lower-cased), the
/// tenant it belongs to, and its credential.
public struct UserAccount: Sendable, Equatable {
    public var username: String
    public var tenant: String
    public var credential: SCRAMCredential

    public init(username: String, tenant: String, credential: SCRAMCredential) {
        self.username = username
        self.tenant = tenant
        self.credential = credential
    }

    /// Login names are compared lower-cased (addresses are case-insensitive in practice).
    public static func normalize(_ username: String) -> String { username.lowercased() }

    /// A login name a user may be given: an address (`local@domain`, one `@`, both parts non-empty),
    /// at most 320 octets, without spaces, controls or NUL (which PLAIN could never carry).
    public static func isValidUsername(_ name: String) -> Bool {
        guard (3...320).contains(name.utf8.count),
            !name.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F || $0.properties.isWhitespace }
            ),
            name.filter({ $0 == "@" }).count == 1, let at = name.firstIndex(of: "@")
        else { return false }
        return at != name.startIndex && name.index(after: at) != name.endIndex
    }
}

/// One SASL exchange on the server side (RFC 4422) for PLAIN (RFC 4616), LOGIN (the
/// draft-murchison-sasl-login mechanism every client has) and SCRAM-SHA-256 (RFC 5802, RFC 7677),
/// free of I/O: it takes the client's decoded responses and the account the shell looked up, and
/// says what to send or what was decided.
///
/// ```swift
/// var x = SASLExchange(mechanism: .plain, serverNonce: nonce)
/// x.start(initialResponse: Array("\0alice@example.test\0pw".utf8))  // .lookup("alice@example.test")
/// x.account(found)                                                  // .succeeded(...) or .failed(...)
/// ```
///
/// An unknown user is answered exactly like a wrong password, after the same work (a PBKDF2 on a
/// stand-in credential): the reply and its timing never say whether the user exists.
public struct SASLExchange: Sendable {
    public enum Mechanism: String, Sendable, CaseIterable {
        case plain = "PLAIN"
        case login = "LOGIN"
        case scramSHA256 = "SCRAM-SHA-256"
    }

    public enum Step: Sendable, Equatable {
        /// Send this challenge (the shell base64-encodes it into `334 ...`).
        case challenge([UInt8])
        /// Find this user's account (off the event loop) and call `account(_:)` with it, nil if none.
        case lookup(username: String)
        case succeeded(UserAccount)
        case failed(Failure)
    }

    public enum Failure: Sendable, Equatable {
        /// The client's message is not what the mechanism allows (`501 5.5.2`).
        case malformed(String)
        /// Wrong user or password, or a proof that does not verify (`535 5.7.8`); which one is
        /// never said.
        case invalidCredentials
        /// Something the mechanism has but Mailflow does not offer (channel binding) (`535 5.7.8`).
        case unsupported(String)
    }

    enum State: Sendable {
        case start
        case loginUsername
        case loginPassword(username: String)
        case checkingPassword(username: String, password: String)
        case scramFirst
        case scramLookup(ScramClientFirst)
        case scramFinal(ScramClientFirst, serverFirst: String, credential: SCRAMCredential, account: UserAccount?)
        case scramAcknowledge(UserAccount)
        case done
    }

    struct ScramClientFirst: Sendable {
        var gs2Header: String
        var bare: String
        var username: String
        var clientNonce: String
    }

    public let mechanism: Mechanism
    let serverNonce: String
    /// Salt and rounds for a user that does not exist, so SCRAM's first answer looks the same.
    let standInSecret: [UInt8]
    var state: State = .start

    /// `serverNonce`: printable ASCII without `,` (RFC 5802 §5.1), fresh for every exchange.
    /// `standInSecret`: a per-server secret the stand-in salt of unknown users is derived from.
    public init(mechanism: Mechanism, serverNonce: String, standInSecret: [UInt8] = []) {
        self.mechanism = mechanism
        self.serverNonce = serverNonce
        self.standInSecret = standInSecret
    }

    /// A nonce of `count` random octets, base64 (no `,` in its alphabet).
    public static func makeNonce(count: Int = 18, using rng: inout some RandomNumberGenerator) -> String {
        SASLText.base64((0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) })
    }

    /// The AUTH command arrived; `initialResponse` is nil when the client sent none and `[]` for `=`.
    public mutating func start(initialResponse: [UInt8]?) -> Step {
        guard case .start = state else { return fail(.malformed("exchange already started")) }
        switch mechanism {
        case .plain:
            guard let initialResponse else { return .challenge([]) }
            return plain(initialResponse)
        case .login:
            guard let initialResponse else {
                state = .loginUsername
                return .challenge(Array("Username:".utf8))
            }
            return loginUsername(initialResponse)
        case .scramSHA256:
            state = .scramFirst
            guard let initialResponse else { return .challenge([]) }
            return scramFirst(initialResponse)
        }
    }

    /// A response line from the client, decoded.
    public mutating func response(_ bytes: [UInt8]) -> Step {
        switch state {
        case .start where mechanism == .plain: return plain(bytes)
        case .loginUsername: return loginUsername(bytes)
        case .loginPassword(let username):
            guard let password = String(validating: bytes, as: UTF8.self), !password.isEmpty else {
                return fail(.malformed("the password is not UTF-8 text"))
            }
            state = .checkingPassword(username: username, password: password)
            return .lookup(username: username)
        case .scramFirst: return scramFirst(bytes)
        case .scramFinal(let first, let serverFirst, let credential, let account):
            return scramFinal(bytes, first: first, serverFirst: serverFirst, credential: credential, account: account)
        case .scramAcknowledge(let account):
            // RFC 5802 §5: after the server's `v=`, the client has nothing more to say.
            guard bytes.isEmpty else { return fail(.malformed("expected an empty response after v=")) }
            state = .done
            return .succeeded(account)
        default:
            return fail(.malformed("no response expected"))
        }
    }

    /// The account the shell found for the username of `.lookup`, nil when there is none. PLAIN and
    /// LOGIN run a PBKDF2 here: call it off the event loop.
    public mutating func account(_ found: UserAccount?) -> Step {
        switch state {
        case .checkingPassword(let username, let password):
            state = .done
            guard let found, found.username == username else {
                // The same work as a real check, then the same answer.
                _ = standIn(for: username).matches(password: password)
                return .failed(.invalidCredentials)
            }
            return found.credential.matches(password: password) ? .succeeded(found) : .failed(.invalidCredentials)
        case .scramLookup(let first):
            let credential = found.map(\.credential) ?? standIn(for: first.username)
            let serverFirst =
                "r=\(first.clientNonce)\(serverNonce),s=\(SASLText.base64(credential.salt)),i=\(credential.iterations)"
            state = .scramFinal(first, serverFirst: serverFirst, credential: credential, account: found)
            return .challenge(Array(serverFirst.utf8))
        default:
            return fail(.malformed("no lookup pending"))
        }
    }

    mutating func fail(_ f: Failure) -> Step {
        state = .done
        return .failed(f)
    }

    // MARK: PLAIN (RFC 4616 §2: [authzid] NUL authcid NUL passwd)

    mutating func plain(_ bytes: [UInt8]) -> Step {
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: false)
        guard parts.count == 3, let authzid = String(validating: parts[0], as: UTF8.self),
            let authcid = String(validating: parts[1], as: UTF8.self),
            let password = String(validating: parts[2], as: UTF8.self), !authcid.isEmpty, !password.isEmpty
        else { return fail(.malformed("expected [authzid] NUL user NUL password")) }
        let username = UserAccount.normalize(authcid)
        // Acting as another user is not offered: an authorization identity must be the user's own.
        guard authzid.isEmpty || UserAccount.normalize(authzid) == username else {
            return fail(.invalidCredentials)
        }
        state = .checkingPassword(username: username, password: password)
        return .lookup(username: username)
    }

    // MARK: LOGIN

    mutating func loginUsername(_ bytes: [UInt8]) -> Step {
        guard let name = String(validating: bytes, as: UTF8.self), !name.isEmpty else {
            return fail(.malformed("the user name is not UTF-8 text"))
        }
        state = .loginPassword(username: UserAccount.normalize(name))
        return .challenge(Array("Password:".utf8))
    }

    // MARK: SCRAM-SHA-256 (RFC 5802 §7)

    mutating func scramFirst(_ bytes: [UInt8]) -> Step {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return fail(.malformed("client-first-message is not UTF-8"))
        }
        // gs2-header: gs2-cbind-flag "," [authzid] ","
        let fields = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3 else { return fail(.malformed("client-first-message has no GS2 header")) }
        switch fields[0] {
        case "n", "y": break
        default:
            if fields[0].hasPrefix("p=") { return fail(.unsupported("channel binding")) }
            return fail(.malformed("bad GS2 channel-binding flag"))
        }
        let bare = String(fields[2])
        var username: String?
        var nonce: String?
        for (i, attribute) in bare.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            if attribute.hasPrefix("m=") {
                // RFC 5802 §5.1: a mandatory extension (it comes first) the server does not know
                // fails the exchange.
                return fail(.unsupported("mandatory extension m="))
            }
            if i == 0 {
                guard attribute.hasPrefix("n=") else { return fail(.malformed("expected n= first")) }
                guard let name = Self.saslName(attribute.dropFirst(2)), !name.isEmpty else {
                    return fail(.malformed("bad user name encoding"))
                }
                username = UserAccount.normalize(name)
            } else if i == 1 {
                guard attribute.hasPrefix("r="), attribute.count > 2,
                    attribute.dropFirst(2).utf8.allSatisfy({ (0x21...0x7E).contains($0) && $0 != 0x2C })
                else { return fail(.malformed("expected a printable r= nonce second")) }
                nonce = String(attribute.dropFirst(2))
            }
        }
        guard let username, let nonce else { return fail(.malformed("missing n= or r=")) }
        if fields[1].hasPrefix("a=") {
            guard let authzid = Self.saslName(fields[1].dropFirst(2)), UserAccount.normalize(authzid) == username
            else { return fail(.invalidCredentials) }
        } else if !fields[1].isEmpty {
            return fail(.malformed("bad GS2 authzid"))
        }
        let first = ScramClientFirst(
            gs2Header: "\(fields[0]),\(fields[1]),", bare: bare, username: username, clientNonce: nonce)
        state = .scramLookup(first)
        return .lookup(username: username)
    }

    mutating func scramFinal(
        _ bytes: [UInt8], first: ScramClientFirst, serverFirst: String, credential: SCRAMCredential,
        account: UserAccount?
    ) -> Step {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return fail(.malformed("client-final-message is not UTF-8"))
        }
        guard let proofRange = text.range(of: ",p=", options: .backwards) else {
            return fail(.malformed("client-final-message has no proof"))
        }
        let withoutProof = String(text[..<proofRange.lowerBound])
        let attributes = withoutProof.split(separator: ",", omittingEmptySubsequences: false)
        guard attributes.count >= 2, attributes[0].hasPrefix("c="), attributes[1].hasPrefix("r=") else {
            return fail(.malformed("expected c= and r= in client-final-message"))
        }
        guard SASLText.unbase64(attributes[0].dropFirst(2)) == Array(first.gs2Header.utf8) else {
            return fail(.malformed("c= does not repeat the GS2 header"))
        }
        guard attributes[1].dropFirst(2) == first.clientNonce + serverNonce else {
            return fail(.malformed("r= is not the combined nonce"))
        }
        guard let proof = SASLText.unbase64(text[proofRange.upperBound...]), proof.count == 32 else {
            return fail(.malformed("p= is not a base64 SHA-256 proof"))
        }
        let authMessage = Array("\(first.bare),\(serverFirst),\(withoutProof)".utf8)
        let clientSignature = SCRAMCredential.hmac(credential.storedKey, authMessage)
        let clientKey = zip(proof, clientSignature).map { $0 ^ $1 }
        let storedKey = Array(SHA256.hash(data: clientKey))
        guard let account, SCRAMCredential.constantTimeEqual(storedKey, credential.storedKey) else {
            return fail(.invalidCredentials)
        }
        let serverSignature = SCRAMCredential.hmac(credential.serverKey, authMessage)
        state = .scramAcknowledge(account)
        return .challenge(Array("v=\(SASLText.base64(serverSignature))".utf8))
    }

    /// `saslname` (RFC 5802 §5.1): `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
    static func saslName(_ text: Substring) -> String? {
        var out = ""
        var i = text.startIndex
        while i < text.endIndex {
            if text[i] == "=" {
                let code = text[text.index(after: i)...].prefix(2)
                switch code {
                case "2C": out.append(",")
                case "3D": out.append("=")
                default: return nil
                }
                i = text.index(i, offsetBy: 3)
            } else {
                out.append(text[i])
                i = text.index(after: i)
            }
        }
        return out
    }

    /// A credential for a user that does not exist: its salt is derived from the name and the server
    /// secret, so asking twice gives the same salt, as for a real user.
    func standIn(for username: String) -> SCRAMCredential {
        let salt = Array(
            HMAC<SHA256>.authenticationCode(
                for: Array(username.utf8), using: SymmetricKey(data: standInSecret.isEmpty ? [0] : standInSecret)
            ).prefix(16))
        return SCRAMCredential(
            salt: salt, iterations: SCRAMCredential.defaultIterations, storedKey: [UInt8](repeating: 0, count: 32),
            serverKey: [UInt8](repeating: 0, count: 32))
    }
}
