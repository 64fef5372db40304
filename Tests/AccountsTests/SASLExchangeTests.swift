import Testing

@testable import Accounts

/// SCRAM-SHA-256, PLAIN and LOGIN against the RFC examples and the failures a client can cause.
struct SASLExchangeTests {
    /// RFC 7677 §3: user "user", password "pencil", 4096 iterations.
    static let rfcSalt = SASLText.unbase64("W22ZaJ0SNY7soEsUEjb6gQ==")!
    static let rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    static let rfcAccount = UserAccount(
        username: "user", tenant: "t",
        credential: try! SCRAMCredential.derive(password: "pencil", salt: rfcSalt, iterations: 4096))

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func scramFollowsTheRFC7677Example() {
        var x = SASLExchange(mechanism: .scramSHA256, serverNonce: Self.rfcServerNonce)
        #expect(x.start(initialResponse: Self.bytes("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")) == .lookup(username: "user"))
        #expect(
            x.account(Self.rfcAccount)
                == .challenge(
                    Self.bytes("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
                ))
        let final =
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        #expect(
            x.response(Self.bytes(final)) == .challenge(Self.bytes("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")))
        #expect(x.response([]) == .succeeded(Self.rfcAccount))
    }

    @Test func scramWithAWrongProofFails() {
        var x = SASLExchange(mechanism: .scramSHA256, serverNonce: Self.rfcServerNonce)
        _ = x.start(initialResponse: Self.bytes("n,,n=user,r=rOprNGfwEbeRWgbNEkqO"))
        _ = x.account(Self.rfcAccount)
        let wrong =
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        #expect(x.response(Self.bytes(wrong)) == .failed(.invalidCredentials))
    }

    @Test func scramForAnUnknownUserLooksTheSameUntilTheProof() {
        var a = SASLExchange(mechanism: .scramSHA256, serverNonce: "N", standInSecret: [1, 2, 3])
        var b = SASLExchange(mechanism: .scramSHA256, serverNonce: "N", standInSecret: [1, 2, 3])
        _ = a.start(initialResponse: Self.bytes("n,,n=ghost,r=abc"))
        _ = b.start(initialResponse: Self.bytes("n,,n=ghost,r=abc"))
        let first = a.account(nil)
        // Same salt and rounds on every attempt, like a real user's; the proof then fails.
        #expect(first == b.account(nil))
        guard case .challenge(let text) = first else {
            Issue.record("expected a server-first-message")
            return
        }
        #expect(String(decoding: text, as: UTF8.self).hasSuffix(",i=\(SCRAMCredential.defaultIterations)"))
        let final = "c=biws,r=abcN,p=" + SASLText.base64([UInt8](repeating: 7, count: 32))
        #expect(a.response(Self.bytes(final)) == .failed(.invalidCredentials))
    }

    @Test(arguments: [
        ("p=tls-unique,,n=user,r=x", SASLExchange.Failure.unsupported("channel binding")),
        ("n,,r=x,n=user", .malformed("expected n= first")),
        ("n,,n=us=41er,r=x", .malformed("bad user name encoding")),
        ("n,,n=user", .malformed("missing n= or r=")),
        ("n,,m=ext,n=user,r=x", .unsupported("mandatory extension m=")),
        ("n,a=other,n=user,r=x", .invalidCredentials),
        ("q,,n=user,r=x", .malformed("bad GS2 channel-binding flag")),
    ])
    func scramRefusesBadClientFirstMessages(_ message: String, _ failure: SASLExchange.Failure) {
        var x = SASLExchange(mechanism: .scramSHA256, serverNonce: "N")
        #expect(x.start(initialResponse: Self.bytes(message)) == .failed(failure))
    }

    @Test func scramRefusesAForeignNonceAndAWrongChannelBindingEcho() {
        for final in [
            "c=biws,r=abcX,p=" + SASLText.base64([UInt8](repeating: 0, count: 32)),
            "c=eSws,r=abcN,p=" + SASLText.base64([UInt8](repeating: 0, count: 32)),
        ] {
            var x = SASLExchange(mechanism: .scramSHA256, serverNonce: "N")
            _ = x.start(initialResponse: Self.bytes("n,,n=user,r=abc"))
            _ = x.account(Self.rfcAccount)
            guard case .failed(.malformed) = x.response(Self.bytes(final)) else {
                Issue.record("\(final) was not refused as malformed")
                continue
            }
        }
    }

    @Test func plainChecksThePasswordAndHidesWhichPartWasWrong() throws {
        let account = UserAccount(
            username: "alice@example.test", tenant: "example",
            credential: try SCRAMCredential.derive(password: "right", iterations: 4096))
        var ok = SASLExchange(mechanism: .plain, serverNonce: "N")
        #expect(
            ok.start(initialResponse: Self.bytes("\0Alice@Example.test\0right"))
                == .lookup(username: "alice@example.test"))
        #expect(ok.account(account) == .succeeded(account))

        var wrong = SASLExchange(mechanism: .plain, serverNonce: "N")
        _ = wrong.start(initialResponse: Self.bytes("\0alice@example.test\0wrong"))
        #expect(wrong.account(account) == .failed(.invalidCredentials))

        var unknown = SASLExchange(mechanism: .plain, serverNonce: "N")
        _ = unknown.start(initialResponse: Self.bytes("\0bob@example.test\0right"))
        #expect(unknown.account(nil) == .failed(.invalidCredentials))

        var other = SASLExchange(mechanism: .plain, serverNonce: "N")
        #expect(
            other.start(initialResponse: Self.bytes("bob@example.test\0alice@example.test\0right"))
                == .failed(.invalidCredentials))
    }

    @Test(arguments: ["", "\0\0", "alice\0right", "\0alice\0", "\0\0right", "a\0b\0c\0d"])
    func plainRefusesMalformedMessages(_ message: String) {
        var x = SASLExchange(mechanism: .plain, serverNonce: "N")
        #expect(
            x.start(initialResponse: Self.bytes(message))
                == .failed(.malformed("expected [authzid] NUL user NUL password")))
    }

    @Test func plainWithoutAnInitialResponseAsksWithAnEmptyChallenge() {
        var x = SASLExchange(mechanism: .plain, serverNonce: "N")
        #expect(x.start(initialResponse: nil) == .challenge([]))
        #expect(x.response(Self.bytes("\0u@x.test\0pw")) == .lookup(username: "u@x.test"))
    }

    @Test func loginAsksForUserThenPassword() throws {
        let account = UserAccount(
            username: "u@x.test", tenant: "x", credential: try SCRAMCredential.derive(password: "pw", iterations: 4096))
        var x = SASLExchange(mechanism: .login, serverNonce: "N")
        #expect(x.start(initialResponse: nil) == .challenge(Self.bytes("Username:")))
        #expect(x.response(Self.bytes("U@X.test")) == .challenge(Self.bytes("Password:")))
        #expect(x.response(Self.bytes("pw")) == .lookup(username: "u@x.test"))
        #expect(x.account(account) == .succeeded(account))
    }

    @Test func aCredentialSurvivesItsStoredForm() throws {
        let c = try SCRAMCredential.derive(password: "pencil", salt: Self.rfcSalt, iterations: 4096)
        #expect(c.stored.hasPrefix("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"))
        #expect(try SCRAMCredential(stored: c.stored) == c)
        #expect(c.matches(password: "pencil"))
        #expect(!c.matches(password: "Pencil"))
        #expect(throws: SCRAMCredential.Failure.tooFewIterations(1000)) {
            try SCRAMCredential(stored: "SCRAM-SHA-256$1000:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA")
        }
        #expect(throws: SCRAMCredential.Failure.emptyPassword) { try SCRAMCredential.derive(password: "") }
    }
}

/// SASLprep's mappings (RFC 4013) before hashing: what a SCRAM client sends matches what PLAIN checks.
struct PasswordPreparationTests {
    @Test(arguments: [
        ("I\u{00AD}X", "IX"),  // soft hyphen: mapped to nothing
        ("a\u{00A0}b", "a b"),  // no-break space: a space
        ("\u{2168}", "IX"),  // ROMAN NUMERAL NINE: NFKC
        ("\u{00AA}", "a"),  // FEMININE ORDINAL INDICATOR: NFKC
        ("user", "user"),
    ])
    func rfc4013Examples(_ given: String, _ prepared: String) throws {
        #expect(SCRAMCredential.prepared(given) == prepared)
        let c = try SCRAMCredential.derive(password: given, iterations: 4096)
        #expect(c.matches(password: prepared))
    }
}

struct UsernameTests {
    @Test(arguments: [
        ("alice@contoso.test", true), ("a@b", true), ("no-at", false), ("@contoso.test", false), ("alice@", false),
        ("al ice@contoso.test", false), ("alice@contoso.test\r\nX: y", false), ("a\u{0}b@c.test", false),
        ("a@b@c.test", false), (String(repeating: "a", count: 320) + "@c.test", false),
    ])
    func validUsernames(_ name: String, _ valid: Bool) {
        #expect(UserAccount.isValidUsername(name) == valid)
    }
}
