import Crypto
import Foundation
import _CryptoExtras

/// Checks the DKIM signatures of a message (RFC 6376 §6), each on its own: the first
/// ``maxSignatures`` are checked (the rest reported `neutral`, not checked), keys come through a
/// ``DKIMKeyResolver``, and each gets a ``DKIMResult``.
///
/// Beyond RFC 6376: RSA keys under 1024 bits are `permerror` (RFC 8301 §3.2), `rsa-sha1` is
/// `permerror` (RFC 8301 §3.1), and a signature with `l=` that leaves body content unsigned is
/// `policy`, never `pass` (§8.2: anyone can append to such a body).
public struct DKIMVerifier: Sendable {
    /// Signatures checked per message; each costs a DNS lookup and a public-key operation.
    public static let defaultMaxSignatures = 5
    /// How far in the future `t=` may be (clock skew) before the signature fails.
    public static let allowedClockSkew: Int64 = 300

    public var resolver: any DKIMKeyResolver
    public var maxSignatures: Int

    public init(resolver: any DKIMKeyResolver, maxSignatures: Int = Self.defaultMaxSignatures) {
        self.resolver = resolver
        self.maxSignatures = maxSignatures
    }

    /// One result per DKIM-Signature field, top to bottom; empty when the message has none.
    public func verify(_ message: [UInt8], now: Date) async -> [DKIMResult] {
        let parsed: DKIMMessage
        do {
            parsed = try DKIMMessage(normalizing: message)
        } catch {
            let count = Self.countSignatureLines(message)
            return Array(repeating: DKIMResult(status: .permerror, reason: .malformedMessage("\(error)")), count: count)
        }
        return await verify(parsed, now: now)
    }

    public func verify(_ message: DKIMMessage, now: Date) async -> [DKIMResult] {
        let indices = message.headerFields.indices.filter {
            message.headerFields[$0].lowercasedName == "dkim-signature"
        }
        // Only the body forms the checked signatures use are made (each costs a pass over the body).
        var forms: Set<DKIMCanonicalization> = []
        for index in indices.prefix(maxSignatures) {
            if let c = Self.prepare(message, fieldIndex: index).signature?.bodyCanonicalization { forms.insert(c) }
        }
        let bodies = BodyHashes(body: message.body, forms: forms)
        return await withTaskGroup(of: (Int, DKIMResult).self) { group in
            for (n, index) in indices.enumerated() {
                if n >= maxSignatures {
                    group.addTask {
                        var r = Self.prepare(message, fieldIndex: index).summary
                        r.status = .neutral
                        r.reason = .notChecked(limit: maxSignatures)
                        return (n, r)
                    }
                    continue
                }
                group.addTask {
                    (n, await self.check(message, fieldIndex: index, bodies: bodies, now: now))
                }
            }
            var results = [DKIMResult?](repeating: nil, count: indices.count)
            for await (n, r) in group { results[n] = r }
            return results.compactMap { $0 }
        }
    }

    /// A parsed signature, or the failure and whatever tags could be read.
    struct Prepared {
        var signature: DKIMSignature?
        var summary: DKIMResult
    }

    static func prepare(_ message: DKIMMessage, fieldIndex: Int) -> Prepared {
        let field = message.headerFields[fieldIndex]
        var summary = DKIMResult(status: .pass)
        let list: DKIMTagList
        do {
            list = try DKIMTagList(parsing: Array(field.value))
        } catch {
            summary.status = .permerror
            summary.reason = .malformedSignature("tag list: \(error)")
            return Prepared(signature: nil, summary: summary)
        }
        summary.domain = list["d"]?.lowercased()
        summary.selector = list["s"]
        summary.algorithm = list["a"]
        summary.identity = list["i"]
        do {
            return Prepared(signature: try DKIMSignature(tags: list), summary: summary)
        } catch {
            summary.reason = error == .rsaSHA1 ? .rsaSHA1Refused : .malformedSignature("\(error)")
            summary.status = .permerror
            return Prepared(signature: nil, summary: summary)
        }
    }

    func check(_ message: DKIMMessage, fieldIndex: Int, bodies: BodyHashes, now: Date) async -> DKIMResult {
        let prepared = Self.prepare(message, fieldIndex: fieldIndex)
        guard let signature = prepared.signature else { return prepared.summary }
        let lookup = await resolver.keyRecords(selector: signature.selector, domain: signature.domain)
        return Self.check(
            message, fieldIndex: fieldIndex, signature: signature, summary: prepared.summary, lookup: lookup,
            bodies: bodies, now: now)
    }

    /// Everything after the key lookup, pure: key record, times, body hash, header signature.
    static func check(
        _ message: DKIMMessage, fieldIndex: Int, signature: DKIMSignature, summary: DKIMResult,
        lookup: DKIMKeyLookup, bodies: BodyHashes, now: Date
    ) -> DKIMResult {
        var result = summary
        func finish(_ failure: DKIMFailure?) -> DKIMResult {
            result.reason = failure
            result.status = failure?.status ?? .pass
            return result
        }
        let name = "\(signature.selector)._domainkey.\(signature.domain)"
        let texts: [String]
        switch lookup {
        case .notFound: return finish(.keyNotFound(name))
        case .temporaryFailure(let why): return finish(.keyLookupFailed(why))
        case .records(let r): texts = r
        }
        // Several records: the first that parses as a key record is used (§3.6.2.2 leaves it open).
        var record: DKIMKeyRecord?
        var firstError: DKIMKeyRecord.ParseError?
        for text in texts {
            do {
                record = try DKIMKeyRecord(parsing: text)
                break
            } catch {
                firstError = firstError ?? error
            }
        }
        guard let record else { return finish(.keyRecordMalformed(firstError.map { "\($0)" } ?? "empty")) }
        result.testing = record.testing
        let keyType: String
        switch record.key {
        case .revoked: return finish(.keyRevoked)
        case .rsa(let bits):
            keyType = "rsa"
            result.keyBits = bits
        case .ed25519: keyType = "ed25519"
        }
        guard keyType == signature.algorithm.keyType else {
            return finish(.keyTypeMismatch(keyType: keyType, algorithm: signature.algorithm.rawValue))
        }
        if let hashes = record.hashAlgorithms, !hashes.contains("sha256") { return finish(.keyHashNotAllowed) }
        guard record.servesEmail else { return finish(.keyNotForEmail) }
        if record.strictIdentity, signature.identityDomain != signature.domain { return finish(.keyStrictIdentity) }
        let key: DKIMPublicKey
        switch record.key {
        case .rsa(let bits) where bits < 1024: return finish(.rsaKeyTooSmall(bits: bits))
        case .rsa(let bits) where bits > DKIMPrivateKey.maximumRSABits: return finish(.rsaKeyTooLarge(bits: bits))
        case .rsa:
            do {
                key = .rsa(try _RSA.Signing.PublicKey(unsafeDERRepresentation: record.publicKeyData))
            } catch {
                return finish(.keyUnusable("\(error)"))
            }
        default:
            do {
                key = .ed25519(try Curve25519.Signing.PublicKey(rawRepresentation: record.publicKeyData))
            } catch {
                return finish(.keyUnusable("\(error)"))
            }
        }
        let nowSeconds = Int64(now.timeIntervalSince1970)
        if let x = signature.expiration, x < nowSeconds { return finish(.expired(at: x)) }
        if let t = signature.timestamp, t > nowSeconds + allowedClockSkew { return finish(.timestampInFuture(t)) }

        // Body hash (§3.7), over at most l= canonical octets.
        let canonical = bodies.canonical(signature.bodyCanonicalization)
        var signedLength = canonical.count
        if let l = signature.bodyLength {
            guard l <= canonical.count else { return finish(.bodyLengthBeyondBody(signed: l, body: canonical.count)) }
            signedLength = l
        }
        let bodyHash = SHA256.hash(data: canonical[0..<signedLength])
        guard Array(bodyHash) == signature.bodyHash else { return finish(.bodyHashMismatch) }

        // Data hash: the h= fields, then this field with b= emptied.
        let field = message.headerFields[fieldIndex]
        guard let b = signature.tags.tag("b") else { return finish(.malformedSignature("no b=")) }
        let stripped = DKIMHash.removingSignatureValue(field, valueRange: b.rawValueRange)
        let selected = DKIMHash.selectHeaders(
            message.headerFields, names: signature.signedHeaders, excluding: fieldIndex)
        let input = DKIMHash.headerHashInput(
            selected: selected, signatureField: stripped[...], colon: field.colon - field.raw.startIndex,
            canonicalization: signature.headerCanonicalization)
        guard key.isValid(signature: signature.signature, digest: SHA256.hash(data: input)) else {
            return finish(.signatureMismatch)
        }
        if signedLength < canonical.count {
            return finish(.unsignedBodyContent(signed: signedLength, body: canonical.count))
        }
        return finish(nil)
    }

    /// The canonical body in each form, made once per message however many signatures use it.
    final class BodyHashes: Sendable {
        let simple: [UInt8]?
        let relaxed: [UInt8]?
        let body: ArraySlice<UInt8>

        init(body: ArraySlice<UInt8>, forms: Set<DKIMCanonicalization> = Set(DKIMCanonicalization.allCases)) {
            self.body = body
            simple = forms.contains(.simple) ? DKIMCanonicalization.simple.body(body) : nil
            relaxed = forms.contains(.relaxed) ? DKIMCanonicalization.relaxed.body(body) : nil
        }

        func canonical(_ c: DKIMCanonicalization) -> [UInt8] {
            (c == .simple ? simple : relaxed) ?? c.body(body)
        }
    }

    /// Lines starting with `DKIM-Signature:` in a message that could not be parsed, so each still
    /// gets a result.
    static func countSignatureLines(_ bytes: [UInt8]) -> Int {
        let prefix = Array("dkim-signature:".utf8)
        var count = 0
        var lineStart = 0
        for i in 0...bytes.count where i == bytes.count || bytes[i] == 0x0A {
            let line = bytes[lineStart..<i]
            if line.count >= prefix.count, zip(line.prefix(prefix.count), prefix).allSatisfy({ $0 | 0x20 == $1 | 0x20 })
            {
                count += 1
            }
            if line.isEmpty || line == [0x0D] { break }
            lineStart = i + 1
        }
        return max(count, 1)
    }
}
