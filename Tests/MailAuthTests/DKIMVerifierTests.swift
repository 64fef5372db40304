import Crypto
import Foundation
import Testing
import _CryptoExtras

@testable import MailAuth

@Suite struct DKIMVerifierTests {
    static let ed = DKIMPrivateKey.ed25519(seed: Array(Data(base64Encoded: RFC8463.ed25519Seed)!))
    static let rsa: DKIMPrivateKey = {
        // One 2048-bit key for the suite: generating one per test would cost seconds.
        try! DKIMPrivateKey.generate(.rsaSHA256)
    }()
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let plain = Array(
        """
        From: Alice <alice@example.org>\r
        To: Bob <bob@example.net>\r
        Subject: Lunch\r
        \ton Friday?\r
        Date: Tue, 1 Dec 2026 12:00:00 +0000\r
        Message-ID: <1@example.org>\r
        \r
        Shall we?\r
        \r
        \r

        """.utf8)

    static func keys(_ extra: [String: DKIMKeyLookup] = [:]) -> KeyTable {
        var entries: [String: DKIMKeyLookup] = [
            "ed._domainkey.example.org": .records([ed.publicKeyRecord]),
            "rsa._domainkey.example.org": .records([rsa.publicKeyRecord]),
        ]
        entries.merge(extra) { $1 }
        return KeyTable(entries)
    }

    static func sign(_ message: [UInt8], _ key: DKIMPrivateKey, selector: String, c: DKIMCanonicalization = .relaxed)
        throws -> [UInt8]
    {
        try DKIMSigner(
            domain: "example.org", selector: selector, key: key, headerCanonicalization: c, bodyCanonicalization: c
        ).sign(message, now: now)
    }

    static func verify(_ message: [UInt8], keys: KeyTable = keys(), now: Date = now) async -> [DKIMResult] {
        await DKIMVerifier(resolver: keys).verify(message, now: now)
    }

    /// A signature built by hand from `tags` (everything but bh= and b=), e.g. with l=, which
    /// Mailflow's signer never writes.
    static func handSigned(_ message: [UInt8], tags: String, key: DKIMPrivateKey, bodyLength: Int? = nil) throws
        -> [UInt8]
    {
        let parsed = try DKIMMessage(crlf: message)
        var canonical = DKIMCanonicalization.relaxed.body(parsed.body)
        if let bodyLength { canonical = Array(canonical.prefix(bodyLength)) }
        let bh = Data(SHA256.hash(data: canonical)).base64EncodedString()
        let template = Array("DKIM-Signature: \(tags); bh=\(bh); b=".utf8)
        let list = try DKIMTagList(parsing: Array(template[16...]))
        let names = try #require(list["h"]).colonList.map { $0.lowercased() }
        let input = DKIMHash.headerHashInput(
            selected: DKIMHash.selectHeaders(parsed.headerFields, names: names), signatureField: template[...],
            colon: 14, canonicalization: .relaxed)
        let b = Data(try key.sign(input)).base64EncodedString()
        return template + Array((b + "\r\n").utf8) + message
    }

    // MARK: RFC 8463 Appendix A

    @Test func rfc8463BothSignaturesPass() async {
        let results = await DKIMVerifier(resolver: RFC8463.keys).verify(RFC8463.message, now: RFC8463.now)
        #expect(results.map(\.status) == [.pass, .pass])
        #expect(results.map(\.algorithm) == ["ed25519-sha256", "rsa-sha256"])
        #expect(results.map(\.domain) == ["football.example.com", "football.example.com"])
        #expect(results.map(\.selector) == ["brisbane", "test"])
        #expect(results[1].keyBits == 1024)
    }

    /// Both algorithms are deterministic, so the RFC's b= values come out of the same inputs.
    @Test func rfc8463SignaturesAreReproduced() throws {
        let message = try DKIMMessage(crlf: RFC8463.message)
        let rsaKey = try _RSA.Signing.PrivateKey(unsafePEMRepresentation: RFC8463.rsaPrivatePEM)
        let keys: [DKIMPrivateKey] = [
            .ed25519(seed: Array(Data(base64Encoded: RFC8463.ed25519Seed)!)), .rsa(rsaKey),
        ]
        for (index, key) in keys.enumerated() {
            let field = message.headerFields[index]
            let signature = try DKIMSignature(parsing: Array(field.value))
            let b = try #require(signature.tags.tag("b"))
            let stripped = DKIMHash.removingSignatureValue(field, valueRange: b.rawValueRange)
            let input = DKIMHash.headerHashInput(
                selected: DKIMHash.selectHeaders(
                    message.headerFields, names: signature.signedHeaders, excluding: index),
                signatureField: stripped[...], colon: 14, canonicalization: .relaxed)
            #expect(try key.sign(input) == signature.signature)
            #expect(Array(SHA256.hash(data: DKIMCanonicalization.relaxed.body(message.body))) == signature.bodyHash)
        }
    }

    @Test func rfc8463PublicKeyFromSeed() {
        #expect(Self.ed.publicKeyRecord == RFC8463.ed25519Record)
    }

    // MARK: Round trips

    @Test(arguments: [("ed", DKIMCanonicalization.relaxed), ("rsa", .relaxed), ("ed", .simple), ("rsa", .simple)])
    func signThenVerify(selector: String, c: DKIMCanonicalization) async throws {
        let key = selector == "ed" ? Self.ed : Self.rsa
        let signed = try Self.sign(Self.plain, key, selector: selector, c: c)
        let results = await Self.verify(signed)
        #expect(results.map(\.status) == [.pass], "\(results)")
        #expect(results.first?.domain == "example.org")
        let text = signed.text
        #expect(!text.contains("l="))
        // Folded: no line of the signature field is longer than 78 characters.
        let fieldLines = text.components(separatedBy: "\r\n").prefix { !$0.hasPrefix("From:") }
        #expect(fieldLines.allSatisfy { $0.count <= 78 })
    }

    @Test func fromIsOversigned() throws {
        let signer = DKIMSigner(domain: "example.org", selector: "ed", key: Self.ed)
        let names = signer.headerNames(for: try DKIMMessage(crlf: Self.plain))
        #expect(names.filter { $0 == "from" }.count == 2)
        #expect(names.filter { $0 == "message-id" }.count == 1)
        #expect(!names.contains("dkim-signature"))
    }

    @Test func relaxedSurvivesRefoldingAndTrailingBlankLines() async throws {
        let signed = try Self.sign(Self.plain, Self.ed, selector: "ed").text
        let changed =
            signed.replacingOccurrences(of: "Subject: Lunch\r\n\ton Friday?", with: "Subject:   Lunch on\r\n Friday?")
            + "\r\n\r\n"
        #expect(await Self.verify(Array(changed.utf8)).map(\.status) == [.pass])
    }

    @Test func simpleBodySurvivesTrailingBlankLinesOnly() async throws {
        let signed = try Self.sign(Self.plain, Self.rsa, selector: "rsa", c: .simple).text
        #expect(await Self.verify(Array((signed + "\r\n\r\n").utf8)).map(\.status) == [.pass])
        let spaced = signed.replacingOccurrences(of: "Shall we?", with: "Shall  we?")
        #expect(await Self.verify(Array(spaced.utf8)).first?.reason == .bodyHashMismatch)
    }

    @Test func unsignedMessagesHaveNoResults() async {
        #expect(await Self.verify(Self.plain).isEmpty)
    }

    // MARK: Failures

    @Test func bodyChangeFails() async throws {
        let signed = try Self.sign(Self.plain, Self.ed, selector: "ed").text
        let results = await Self.verify(Array(signed.replacingOccurrences(of: "Shall we?", with: "Shall we not?").utf8))
        #expect(results.map(\.status) == [.fail])
        #expect(results.first?.reason == .bodyHashMismatch)
    }

    @Test func headerChangeFails() async throws {
        let signed = try Self.sign(Self.plain, Self.rsa, selector: "rsa").text
        let results = await Self.verify(Array(signed.replacingOccurrences(of: "Lunch", with: "Dinner").utf8))
        #expect(results.first?.reason == .signatureMismatch)
    }

    @Test func anAddedFromFails() async throws {
        let signed = try Self.sign(Self.plain, Self.ed, selector: "ed").text
        let added = signed.replacingOccurrences(of: "To: Bob", with: "From: Mallory <m@evil.test>\r\nTo: Bob")
        #expect(await Self.verify(Array(added.utf8)).first?.reason == .signatureMismatch)
    }

    @Test func bodyLengthWithAppendedContentIsPolicyNotPass() async throws {
        let tags = "v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.org; s=ed; h=from:to:subject; l=11"
        let signed = try Self.handSigned(Self.plain, tags: tags, key: Self.ed, bodyLength: 11)
        // As signed: l= covers the whole canonical body ("Shall we?\r\n"), so it passes.
        #expect(await Self.verify(signed).map(\.status) == [.pass])
        let appended = signed + Array("Click http://evil.test/ now\r\n".utf8)
        let results = await Self.verify(appended)
        #expect(results.map(\.status) == [.policy])
        #expect(results.first?.reason == .unsignedBodyContent(signed: 11, body: 44))
    }

    @Test func bodyLengthLongerThanTheBodyIsPermerror() async throws {
        let tags = "v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.org; s=ed; h=from; l=5000"
        let signed = try Self.handSigned(Self.plain, tags: tags, key: Self.ed)
        #expect(await Self.verify(signed).first?.reason == .bodyLengthBeyondBody(signed: 5000, body: 11))
    }

    @Test func a512BitKeyIsPermerrorPerRFC8301() async throws {
        let signed = try Self.sign(Self.plain, Self.rsa, selector: "rsa")
        let keys = Self.keys(["rsa._domainkey.example.org": .records(["v=DKIM1; k=rsa; p=\(rsa512SPKI)"])])
        let results = await Self.verify(signed, keys: keys)
        #expect(results.map(\.status) == [.permerror])
        #expect(results.first?.reason == .rsaKeyTooSmall(bits: 512))
        #expect(results.first?.keyBits == 512)
        #expect("\(results.first!.reason!)".contains("RFC 8301"))
    }

    @Test(arguments: [
        (DKIMKeyLookup.notFound, DKIMResult.Status.permerror),
        (.temporaryFailure("DNS timeout"), .temperror),
        (.records(["v=DKIM1; k=ed25519; p="]), .permerror),
        (.records(["v=DKIM1; k=rsa; p=\(rsa512SPKI)"]), .permerror),
        (.records(["v=DKIM1; k=ed25519; h=sha1; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]), .permerror),
        (.records(["v=DKIM1; k=ed25519; s=other; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]), .permerror),
        (.records(["garbage", "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]), .pass),
        (.records(["v=DKIM1; p=;p="]), .permerror),
    ])
    func keyLookups(lookup: DKIMKeyLookup, status: DKIMResult.Status) async throws {
        let signed = try Self.sign(Self.plain, Self.ed, selector: "ed")
        let results = await Self.verify(signed, keys: Self.keys(["ed._domainkey.example.org": lookup]))
        #expect(results.map(\.status) == [status], "\(results)")
    }

    @Test func expiryAndFutureTimestamps() async throws {
        let signer = DKIMSigner(domain: "example.org", selector: "ed", key: Self.ed, expiresAfter: 3600)
        let signed = try signer.sign(Self.plain, now: Self.now)
        #expect(await Self.verify(signed, now: Self.now.addingTimeInterval(3000)).map(\.status) == [.pass])
        let late = await Self.verify(signed, now: Self.now.addingTimeInterval(7200))
        #expect(late.first?.reason == .expired(at: 1_800_003_600))
        let early = await Self.verify(signed, now: Self.now.addingTimeInterval(-3600))
        #expect(early.first?.reason == .timestampInFuture(1_800_000_000))
    }

    @Test(arguments: [
        ("v=1; a=rsa-sha1; d=example.org; s=ed; h=from; bh=AA==; b=AA==", DKIMFailure.rsaSHA1Refused),
        (
            "v=1; v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==; b=AA==",
            .malformedSignature("tag list: tag 'v' appears more than once")
        ),
        (
            "v=2; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==; b=AA==",
            .malformedSignature("v=2: only v=1 is defined")
        ),
        (
            "v=1; a=ed25519-sha256; d=example.org; s=ed; h=to:subject; bh=AA==; b=AA==",
            .malformedSignature("h= does not name From (RFC 6376 §5.4: it must be signed)")
        ),
        (
            "v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==; b=AA==; i=a@evil.test",
            .malformedSignature("i=a@evil.test is not in d= or a subdomain of it")
        ),
        (
            "v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==",
            .malformedSignature("no b= tag (RFC 6376 §3.5: required)")
        ),
        ("v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=!!; b=AA==", .malformedSignature("bh= is not base64")),
        (
            "v=1; a=ed25519-sha256; d=exa mple.org; s=ed; h=from; bh=AA==; b=AA==",
            .malformedSignature("d= is not a domain name")
        ),
        (
            "v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==; b=AA==; l=-1",
            .malformedSignature("l= is not a number")
        ),
        (
            "v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==; b=AA==; t=20; x=10",
            .malformedSignature("x= is not after t= (RFC 6376 §3.5)")
        ),
        ("v=1 a=ed25519-sha256", .malformedSignature("v=1 a=ed25519-sha256: only v=1 is defined")),
    ])
    func malformedSignatures(value: String, reason: DKIMFailure) async {
        let message = Array("DKIM-Signature: \(value)\r\n".utf8) + Self.plain
        let results = await Self.verify(message)
        #expect(results.map(\.status) == [.permerror])
        #expect(results.first?.reason == reason)
    }

    @Test func aHugeSignatureFieldIsRefusedCheaply() async {
        let value =
            "v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==; b=" + String(repeating: "A", count: 1_000_000)
        let results = await Self.verify(Array("DKIM-Signature: \(value)\r\n".utf8) + Self.plain)
        #expect(
            results.first?.reason
                == .malformedSignature("tag list: tag list of \(value.utf8.count + 1) bytes: longer than 16384"))
    }

    @Test func aHugeOrdinaryHeaderIsSignedAndVerified() async throws {
        let big = Array("X-Big: \(String(repeating: "word ", count: 200_000))\r\n".utf8) + Self.plain
        let signed = try Self.sign(big, Self.ed, selector: "ed")
        #expect(await Self.verify(signed).map(\.status) == [.pass])
    }

    @Test func onlyTheFirstFiveSignaturesAreChecked() async throws {
        var message = Self.plain
        for _ in 0..<7 { message = try Self.sign(message, Self.ed, selector: "ed") }
        let results = await Self.verify(message)
        #expect(results.count == 7)
        #expect(results.prefix(5).allSatisfy { $0.status == .pass })
        #expect(results.suffix(2).allSatisfy { $0.status == .neutral && $0.reason == .notChecked(limit: 5) })
    }

    @Test func aMessageThatCannotBeReadIsPermerror() async {
        let message = Array("DKIM-Signature: v=1\r\nno colon here\r\n\r\nbody\r\n".utf8)
        let results = await Self.verify(message)
        #expect(results.map(\.status) == [.permerror])
    }

    // MARK: Keys

    @Test func keysRoundTripThroughPKCS8() throws {
        for key in [Self.ed, Self.rsa] {
            let pem = key.pkcs8PEM
            #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----"))
            let back = try DKIMPrivateKey(pem: pem)
            #expect(back.publicKeyRecord == key.publicKeyRecord)
            #expect(
                try DKIMKeyRecord(parsing: key.publicKeyRecord).key
                    == (key.algorithm == .rsaSHA256 ? .rsa(bits: 2048) : .ed25519))
        }
    }

    @Test func signingRefusesSmallRSAKeys() {
        #expect(throws: DKIMPrivateKey.KeyError.rsaTooSmall(1024)) { try DKIMPrivateKey(pem: RFC8463.rsaPrivatePEM) }
        #expect(throws: DKIMPrivateKey.KeyError.notPEM) { try DKIMPrivateKey(pem: "hello") }
        #expect(throws: DKIMPrivateKey.KeyError.rsaSize(1024)) { try DKIMPrivateKey.generate(.rsaSHA256, bits: 1024) }
    }

    @Test func aSmallPKCS8KeyIsNamedAsSuch() throws {
        // The RFC 8463 key is PKCS#1; as PKCS#8 it is still 1024 bits.
        let pkcs8 = try _RSA.Signing.PrivateKey(unsafePEMRepresentation: RFC8463.rsaPrivatePEM).pkcs8PEMRepresentation
        #expect(throws: DKIMPrivateKey.KeyError.rsaTooSmall(1024)) { try DKIMPrivateKey(pem: pkcs8) }
    }

    @Test func signingNeedsAFrom() {
        let message = Array("To: b@example.net\r\n\r\nhi\r\n".utf8)
        #expect(throws: DKIMSigner.SignError.noFrom) { try Self.sign(message, Self.ed, selector: "ed") }
    }
}
