import Testing

@testable import MailAuth

@Suite struct AuthenticationResultsTests {
    @Test func allThreeMethods() {
        let header = AuthenticationResults(
            authservID: "mx.example.net",
            spf: .init(result: .pass, mailFrom: "alice@example.org", helo: "mail.example.org"),
            dkim: [
                .init(result: "pass", domain: "example.org", selector: "sel1", signature: "abc/12+xyz=="),
                .init(result: "fail", domain: "other.example", selector: "s2", signature: "QUJD REVG"),
            ],
            dmarc: .init(result: .fail, fromDomain: "example.org", requestedPolicy: .reject, appliedPolicy: .quarantine)
        )
        #expect(
            header.value
                == "mx.example.net; spf=pass smtp.mailfrom=alice@example.org smtp.helo=mail.example.org; "
                + "dkim=pass header.d=example.org header.s=sel1 header.b=\"abc/12+x\"; "
                + "dkim=fail header.d=other.example header.s=s2 header.b=QUJDREVG; "
                + "dmarc=fail (p=reject dis=quarantine) header.from=example.org")
        #expect(header.field.hasPrefix("Authentication-Results: mx.example.net;\r\n\tspf=pass "))
        #expect(header.field.hasSuffix("header.from=example.org\r\n"))
    }

    @Test func nothingEvaluatedIsNone() {
        #expect(AuthenticationResults(authservID: "mx.example.net").value == "mx.example.net; none")
    }

    @Test(arguments: [
        ("alice@example.org", "alice@example.org"),
        ("postmaster@mail.example.org", "postmaster@mail.example.org"),
        ("\"odd local\"@example.org", "\"\\\"odd local\\\"@example.org\""),
        ("a;b@example.org", "\"a;b@example.org\""),
        ("plain-token", "plain-token"),
        ("with space", "\"with space\""),
        ("back\\slash", "\"back\\\\slash\""),
        ("line\r\nbreak", "\"linebreak\""),
    ])
    func quoting(value: String, written: String) {
        #expect(AuthenticationResults.pvalue(value) == written)
    }

    @Test func reasonsAreQuotedStrings() {
        let header = AuthenticationResults(
            authservID: "mx.example.net",
            spf: .init(result: .fail, mailFrom: "a@example.org", reason: "not \"allowed\""))
        #expect(header.value == "mx.example.net; spf=fail reason=\"not \\\"allowed\\\"\" smtp.mailfrom=a@example.org")
    }

    @Test func fromAResult() {
        let result = DMARCResult(
            kind: .pass, fromDomain: "example.org", organizationalDomain: "example.org", recordDomain: "example.org",
            requestedPolicy: DMARCRecord.Policy.none, policy: .none, sampledOut: false, spfAligned: true,
            alignedDKIMDomain: nil, reason: "")
        let header = AuthenticationResults(authservID: "mx.example.net", dmarc: .init(result))
        #expect(header.value == "mx.example.net; dmarc=pass (p=none dis=none) header.from=example.org")
    }

    // RFC 8601 §5: our id's fields are removed, whatever their case, folding, comments or quoting.
    @Test(arguments: [
        ("Authentication-Results: mx.example.net; spf=pass\r\n", 1),
        ("authentication-results: MX.Example.NET; dkim=pass\r\n", 1),
        ("Authentication-Results:\r\n  mx.example.net;\r\n  spf=pass smtp.mailfrom=a@b.example\r\n", 1),
        ("Authentication-Results: (forged) mx.example.net; spf=pass\r\n", 1),
        ("Authentication-Results: (nested (comment)) mx.example.net; none\r\n", 1),
        ("Authentication-Results: \"mx.example.net\"; spf=pass\r\n", 1),
        ("Authentication-Results: mx.example.net 1; spf=pass\r\n", 1),
        ("Authentication-Results : mx.example.net; spf=pass\r\n", 1),
        ("Authentication-Results: mx.example.net;spf=pass\n", 1),
        ("Authentication-Results: other.example; spf=pass\r\n", 0),
        ("Authentication-Results: mx.example.net.evil.example; spf=pass\r\n", 0),
        ("ARC-Authentication-Results: i=1; mx.example.net; spf=pass\r\n", 0),
        ("X-Authentication-Results: mx.example.net; spf=pass\r\n", 0),
        ("Subject: Authentication-Results: mx.example.net; spf=pass\r\n", 0),
    ])
    func forgedFields(field: String, removed: Int) {
        let block = "Received: from a by b; Tue, 1 Dec 2026 10:00:00 +0000\r\n" + field + "Subject: hi\r\n"
        let filter = AuthenticationResultsFilter(authservIDs: ["mx.example.net"])
        let out = filter.filter(block)
        #expect(out.removed == removed)
        if removed == 1 {
            #expect(out.header == "Received: from a by b; Tue, 1 Dec 2026 10:00:00 +0000\r\nSubject: hi\r\n")
        } else {
            #expect(out.header == block)
        }
    }

    @Test func everyForgedFieldGoesAndOthersStayByteForByte() {
        let block: [UInt8] =
            Array("Authentication-Results: mx.example.net; spf=pass\r\n".utf8)
            + Array("Authentication-Results: upstream.example; dkim=pass\r\n".utf8)
            + [0x58, 0x2D, 0x42, 0x69, 0x6E, 0x3A, 0x20, 0xFF, 0xFE, 0x0D, 0x0A]  // X-Bin: with non-UTF-8 bytes
            + Array("AUTHENTICATION-RESULTS: mx.example.net; dmarc=pass\r\n".utf8)
        let out = AuthenticationResultsFilter(authservIDs: ["mx.example.net", "mx2.example.net"]).filter(block)
        #expect(out.removed == 2)
        #expect(
            out.header
                == Array("Authentication-Results: upstream.example; dkim=pass\r\n".utf8)
                + [0x58, 0x2D, 0x42, 0x69, 0x6E, 0x3A, 0x20, 0xFF, 0xFE, 0x0D, 0x0A])
    }

    @Test func whatWeWriteIsWhatWeRemove() {
        let ours = AuthenticationResults(
            authservID: "mx.example.net", spf: .init(result: .pass, mailFrom: "a@b.example"))
        let out = AuthenticationResultsFilter(authservIDs: ["mx.example.net"]).filter(ours.field + "Subject: x\r\n")
        #expect(out.removed == 1)
        #expect(out.header == "Subject: x\r\n")
    }
}

@Suite struct DKIMResultAdaptationTests {
    @Test func dkimResultsBecomeHeaderEntriesAndDMARCInputs() {
        let passed = DKIMResult(status: .pass, domain: "example.org", selector: "s1")
        let limited = DKIMResult(status: .policy, domain: "example.org", selector: "s2")
        let broken = DKIMResult(status: .permerror)
        #expect(DMARCDKIMInput(passed) == DMARCDKIMInput(domain: "example.org", passed: true))
        #expect(DMARCDKIMInput(limited) == DMARCDKIMInput(domain: "example.org", passed: false))
        #expect(DMARCDKIMInput(broken) == nil)
        let header = AuthenticationResults(
            authservID: "mx.example.net", dkim: [.init(passed, signature: "AbCdEfGhIj")])
        #expect(header.value == "mx.example.net; dkim=pass header.d=example.org header.s=s1 header.b=AbCdEfGh")
    }
}
