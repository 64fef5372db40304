import NIOCore
import Testing

@testable import SMTPCore

/// AUTH (RFC 4954) in the state machine: when it is offered and accepted, what a SASL exchange looks
/// like to the session, and submission's rule that mail needs it (RFC 6409 §4.3).
struct ServerSessionAuthTests {
    static let offer = AuthenticationOffer(mechanisms: ["PLAIN", "LOGIN", "SCRAM-SHA-256"])

    func session(offer: AuthenticationOffer? = Self.offer, tls: Bool) -> ServerSession {
        var s = ServerSession(
            configuration: ServerSessionConfiguration(hostname: "mx.test", authentication: offer))
        _ = s.greeting()
        if tls {
            _ = s.commandReceived(.ehlo("c.test"))
            _ = s.commandReceived(.startTLS)
            _ = s.tlsEstablished()
        }
        return s
    }

    func ehloLines(_ s: inout ServerSession) -> [String] {
        guard case .send(let r, _) = s.commandReceived(.ehlo("c.test")) else { return [] }
        return r.lines
    }

    @Test func authIsAdvertisedOnlyInsideTLSWhenTLSIsRequired() {
        var plain = session(tls: false)
        #expect(!ehloLines(&plain).contains { $0.hasPrefix("AUTH") })
        #expect(
            plain.commandReceived(.auth(mechanism: "PLAIN", initialResponse: "="))
                == .send(SMTPReply(530, .init(5, 7, 0), "Must issue a STARTTLS command first")))

        var tls = session(tls: true)
        #expect(ehloLines(&tls).contains("AUTH PLAIN LOGIN SCRAM-SHA-256"))

        var open = session(offer: AuthenticationOffer(mechanisms: ["PLAIN"], requireTLS: false), tls: false)
        #expect(ehloLines(&open).contains("AUTH PLAIN"))
    }

    @Test(
        arguments: [
            // (commands before AUTH, the AUTH command, expected reply code)
            ([], SMTPCommand.auth(mechanism: "CRAM-MD5", initialResponse: nil), "504 5.5.4"),
            ([], .auth(mechanism: "PLAIN", initialResponse: nil), "auth"),
            ([SMTPCommand.mail(.null, MailParameters())], .auth(mechanism: "PLAIN", initialResponse: nil), "503 5.5.1"),
        ] as [([SMTPCommand], SMTPCommand, String)])
    func authCommandAnswers(_ before: [SMTPCommand], _ auth: SMTPCommand, _ expected: String) {
        // Not required here, so MAIL can open a transaction without AUTH.
        var s = session(offer: AuthenticationOffer(mechanisms: Self.offer.mechanisms, required: false), tls: true)
        _ = s.commandReceived(.ehlo("c.test"))
        for c in before {
            if case .checkSender(let sender, let params) = s.commandReceived(c) {
                _ = s.senderChecked(sender, params, .accept)
            }
        }
        let action = s.commandReceived(auth)
        switch action {
        case .authenticate: #expect(expected == "auth")
        case .send(let r, _): #expect("\(r.code) \(r.enhancedCode?.description ?? "")" == expected)
        default: Issue.record("unexpected \(action)")
        }
    }

    @Test func aWholeExchangeAuthenticatesAndThenMailIsAllowed() {
        var s = session(tls: true)
        _ = s.commandReceived(.ehlo("c.test"))
        #expect(
            s.commandReceived(.mail(.null, MailParameters()))
                == .send(SMTPReply(530, .init(5, 7, 0), "Authentication required")))
        #expect(
            s.commandReceived(.auth(mechanism: "LOGIN", initialResponse: nil))
                == .authenticate(mechanism: "LOGIN", initialResponse: nil))
        #expect(s.isAuthenticating)
        #expect(s.authenticationChallenge("VXNlcm5hbWU6") == .send(SMTPReply(334, nil, "VXNlcm5hbWU6")))
        #expect(s.authenticationResponse("dUB4LnRlc3Q=") == .continueAuthentication("dUB4LnRlc3Q="))
        #expect(
            s.authenticationFinished(.success(identity: "u@x.test"))
                == .send(SMTPReply(235, .init(2, 7, 0), "Authentication successful")))
        #expect(s.authenticatedIdentity == "u@x.test")
        #expect(!s.isAuthenticating)
        #expect(s.receivedProtocol == "ESMTPSA")
        #expect(
            s.commandReceived(.auth(mechanism: "PLAIN", initialResponse: nil))
                == .send(SMTPReply(503, .init(5, 5, 1), "Already authenticated")))
        #expect(s.commandReceived(.mail(.null, MailParameters())) == .checkSender(.null, MailParameters()))
    }

    @Test func cancelAndBadBase64EndTheExchangeWithAnError() {
        var s = session(tls: true)
        _ = s.commandReceived(.ehlo("c.test"))
        _ = s.commandReceived(.auth(mechanism: "PLAIN", initialResponse: nil))
        #expect(s.authenticationResponse("*") == .send(SMTPReply(501, .init(5, 0, 0), "Authentication cancelled")))
        #expect(!s.isAuthenticating)
        _ = s.commandReceived(.auth(mechanism: "PLAIN", initialResponse: nil))
        #expect(
            s.authenticationResponse("not base64!")
                == .send(SMTPReply(501, .init(5, 5, 2), "Invalid base64 in the authentication response")))
        #expect(s.authenticatedIdentity == nil)
    }

    @Test func aFailedExchangeCountsAsAnErrorAndALockoutCloses() {
        var s = session(tls: true)
        _ = s.commandReceived(.ehlo("c.test"))
        _ = s.commandReceived(.auth(mechanism: "PLAIN", initialResponse: "AGEAYg=="))
        let bad = SMTPReply(535, .init(5, 7, 8), "Authentication credentials invalid")
        #expect(s.authenticationFinished(.failure(bad)) == .send(bad))
        #expect(s.errorCount == 1)
        _ = s.commandReceived(.auth(mechanism: "PLAIN", initialResponse: "AGEAYg=="))
        let lockout = SMTPReply(421, .init(4, 7, 0), "Too many failed authentication attempts")
        #expect(s.authenticationFinished(.failureAndClose(lockout)) == .sendAndClose(lockout))
        #expect(s.isClosed)
    }

    @Test func startTLSForgetsAnEarlierAuthentication() {
        var s = session(offer: AuthenticationOffer(mechanisms: ["PLAIN"], requireTLS: false), tls: false)
        _ = s.commandReceived(.ehlo("c.test"))
        _ = s.commandReceived(.auth(mechanism: "PLAIN", initialResponse: "AGEAYg=="))
        _ = s.authenticationFinished(.success(identity: "a"))
        _ = s.commandReceived(.startTLS)
        _ = s.tlsEstablished()
        #expect(s.authenticatedIdentity == nil)
    }

    @Test func withoutAnOfferAuthIsNotEnabled() {
        var s = session(offer: nil, tls: true)
        _ = s.commandReceived(.ehlo("c.test"))
        #expect(
            s.commandReceived(.auth(mechanism: "PLAIN", initialResponse: nil))
                == .send(SMTPReply(503, .init(5, 5, 1), "Authentication not enabled")))
    }

    @Test(arguments: [
        ("AUTH PLAIN", SMTPCommand.auth(mechanism: "PLAIN", initialResponse: nil), "AUTH PLAIN"),
        (
            "auth scram-sha-256 biwsbj11LHI9eA==",
            .auth(mechanism: "SCRAM-SHA-256", initialResponse: "biwsbj11LHI9eA=="),
            "AUTH SCRAM-SHA-256 biwsbj11LHI9eA=="
        ),
        ("AUTH PLAIN =", .auth(mechanism: "PLAIN", initialResponse: "="), "AUTH PLAIN ="),
    ])
    func parsesAndEncodesAuth(_ line: String, _ command: SMTPCommand, _ encoded: String) throws {
        #expect(try SMTPCommandParser.parse(line[...]) == command)
        #expect(String(buffer: try SMTPCommandEncoder.encode(command)) == encoded + "\r\n")
    }

    @Test(arguments: [
        "AUTH", "AUTH PL@IN", "AUTH PLAIN abc", "AUTH PLAIN a b", "AUTH ABCDEFGHIJKLMNOPQRSTU", "AUTH PLAIN YQ=b",
    ])
    func refusesBadAuthLines(_ line: String) {
        #expect(throws: SMTPCommandError.self) { try SMTPCommandParser.parse(line[...]) }
    }

    @Test func mailKeepsTheAuthParameter() throws {
        let c = try SMTPCommandParser.parse("MAIL FROM:<a@b.test> AUTH=<>"[...])
        guard case .mail(_, let p) = c else { throw SMTPCommandError(SMTPReply(500, nil, "not MAIL")) }
        #expect(p.authenticatedSubmitter == "<>")
        #expect(throws: SMTPCommandError.self) { try SMTPCommandParser.parse("MAIL FROM:<a@b.test> AUTH="[...]) }
    }

    @Test(arguments: [
        ("", [UInt8]()), ("YQ==", [97]), ("YWI=", [97, 98]), ("YWJj", [97, 98, 99]),
    ])
    func base64RoundTrips(_ text: String, _ bytes: [UInt8]) {
        #expect(SASLBase64.decode(text) == bytes)
        #expect(SASLBase64.encode(bytes) == text)
    }

    @Test(arguments: ["Y", "YQ=", "Y===", "YR==", "Y Q==", "YQ==YQ==", "YQ\r\n"])
    func base64RefusesWhatIsNotStrict(_ text: String) {
        #expect(SASLBase64.decode(text) == nil)
    }
}

/// `AUTH=` on MAIL (RFC 4954 §5) only where AUTH is offered, and never after HELO.
struct MailAuthParameterTests {
    @Test func refusedWithoutAnOfferAndAfterHelo() {
        let params = MailParameters(authenticatedSubmitter: "<>")
        var mx = ServerSession(configuration: ServerSessionConfiguration(hostname: "mx.test"))
        _ = mx.greeting()
        _ = mx.commandReceived(.ehlo("c.test"))
        #expect(
            mx.commandReceived(.mail(.null, params))
                == .send(SMTPReply(555, .init(5, 5, 4), "Unsupported parameter AUTH")))
        var helo = ServerSession(configuration: ServerSessionConfiguration(hostname: "mx.test"))
        _ = helo.greeting()
        _ = helo.commandReceived(.helo("c.test"))
        #expect(
            helo.commandReceived(.mail(.null, params))
                == .send(SMTPReply(555, .init(5, 5, 4), "MAIL parameters need EHLO")))
    }
}
