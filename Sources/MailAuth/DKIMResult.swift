/// The outcome of checking one DKIM signature, with the values RFC 8601 §2.7.1 reports
/// (`dkim=pass header.d=example.org header.s=s1 header.a=ed25519-sha256`) and DMARC uses (`d=`).
public struct DKIMResult: Sendable, Hashable, Codable {
    /// RFC 8601 §2.7.1 result values, as Mailflow uses them:
    /// - `pass`: the signature verified over the whole body.
    /// - `fail`: the signature is well formed and its key was found, but it did not verify (body or
    ///   headers changed, expired, dated in the future).
    /// - `neutral`: not checked (more signatures than the verifier checks per message).
    /// - `policy`: it verified, but Mailflow does not accept it as a pass: `l=` left body content
    ///   unsigned (RFC 6376 §8.2).
    /// - `temperror`: the key could not be fetched now (DNS timeout, server failure); try later.
    /// - `permerror`: it can never verify: malformed, no key, revoked key, RSA key under 1024 bits
    ///   (RFC 8301 §3.2), rsa-sha1 (RFC 8301 §3.1), a key record that does not fit.
    public enum Status: String, Sendable, Hashable, Codable, CaseIterable {
        case pass, fail, neutral, policy, temperror, permerror
    }

    public var status: Status
    /// Why, when not `pass`.
    public var reason: DKIMFailure?
    /// `d=`, lowercased (DMARC's `header.d`); nil when the signature did not parse far enough.
    public var domain: String?
    /// `s=`.
    public var selector: String?
    /// `a=` as written.
    public var algorithm: String?
    /// `i=`, or nil.
    public var identity: String?
    /// The RSA key size, when an RSA key was fetched.
    public var keyBits: Int?
    /// The key record says `t=y` (the domain is testing DKIM).
    public var testing: Bool

    public init(
        status: Status, reason: DKIMFailure? = nil, domain: String? = nil, selector: String? = nil,
        algorithm: String? = nil, identity: String? = nil, keyBits: Int? = nil, testing: Bool = false
    ) {
        self.status = status
        self.reason = reason
        self.domain = domain
        self.selector = selector
        self.algorithm = algorithm
        self.identity = identity
        self.keyBits = keyBits
        self.testing = testing
    }
}

/// Why a signature did not pass.
public enum DKIMFailure: Sendable, Hashable, Codable, CustomStringConvertible {
    case malformedMessage(String)
    case malformedSignature(String)
    case rsaSHA1Refused
    case notChecked(limit: Int)
    case keyNotFound(String)
    case keyLookupFailed(String)
    case keyRecordMalformed(String)
    case keyRevoked
    case keyTypeMismatch(keyType: String, algorithm: String)
    case keyHashNotAllowed
    case keyNotForEmail
    case keyStrictIdentity
    /// RFC 8301 §3.2: "Verifiers MUST NOT consider signatures using RSA keys of less than 1024 bits as
    /// valid signatures."
    case rsaKeyTooSmall(bits: Int)
    case rsaKeyTooLarge(bits: Int)
    case keyUnusable(String)
    case expired(at: Int64)
    case timestampInFuture(Int64)
    case bodyLengthBeyondBody(signed: Int, body: Int)
    case unsignedBodyContent(signed: Int, body: Int)
    case bodyHashMismatch
    case signatureMismatch

    /// The status a signature with this failure gets.
    public var status: DKIMResult.Status {
        switch self {
        case .keyLookupFailed: .temperror
        case .notChecked: .neutral
        case .unsignedBodyContent: .policy
        case .expired, .timestampInFuture, .bodyHashMismatch, .signatureMismatch: .fail
        default: .permerror
        }
    }

    public var description: String {
        switch self {
        case .malformedMessage(let why): "the message cannot be read: \(why)"
        case .malformedSignature(let why): "malformed signature: \(why)"
        case .rsaSHA1Refused: "rsa-sha1 is not accepted (RFC 8301 §3.1)"
        case .notChecked(let limit): "not checked: only the first \(limit) signatures of a message are checked"
        case .keyNotFound(let name): "no key at \(name)"
        case .keyLookupFailed(let why): "key lookup failed: \(why)"
        case .keyRecordMalformed(let why): "key record does not parse: \(why)"
        case .keyRevoked: "the key is revoked (empty p=)"
        case .keyTypeMismatch(let k, let a): "key record k=\(k) does not fit a=\(a)"
        case .keyHashNotAllowed: "key record h= does not allow sha256"
        case .keyNotForEmail: "key record s= does not allow email"
        case .keyStrictIdentity: "key record t=s requires i= in d= itself, not a subdomain"
        case .rsaKeyTooSmall(let bits): "RSA key of \(bits) bits: below the 1024-bit minimum (RFC 8301 §3.2)"
        case .rsaKeyTooLarge(let bits): "RSA key of \(bits) bits: larger than \(DKIMPrivateKey.maximumRSABits)"
        case .keyUnusable(let why): "the public key cannot be used: \(why)"
        case .expired(let x): "signature expired (x=\(x))"
        case .timestampInFuture(let t): "signature dated in the future (t=\(t))"
        case .bodyLengthBeyondBody(let l, let n): "l=\(l) is longer than the body (\(n) canonical octets)"
        case .unsignedBodyContent(let l, let n):
            "l=\(l): the signature covers \(l) of \(n) body octets; the rest is unsigned and may have been added"
        case .bodyHashMismatch: "body hash did not verify (the body changed)"
        case .signatureMismatch: "signature did not verify (a signed header changed, or the wrong key)"
        }
    }
}
