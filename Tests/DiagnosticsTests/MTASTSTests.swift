import Testing

@testable import Diagnostics

@Suite struct MTASTSTests {
    // RFC 8461 §3.2's example policy.
    static let example =
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n"

    @Test func rfcExample() throws {
        let p = try MTASTSPolicy(parsing: Self.example)
        #expect(p.mode == .enforce)
        #expect(p.maxAge == 604_800)
        #expect(p.mx == ["mail.example.com", "*.example.net", "backupmx.example.com"])
    }

    @Test(arguments: [
        "mode: enforce\nmx: a.example.com\nmax_age: 86400\n",
        "version: STSv2\nmode: enforce\nmx: a.example.com\nmax_age: 86400\n",
        "version: STSv1\nmode: strict\nmx: a.example.com\nmax_age: 86400\n",
        "version: STSv1\nmode: enforce\nmax_age: 86400\n",
        "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: 31557601\n",
        "version: STSv1\nmode: enforce\nmx: a.example.com\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmx: a.example.com\n",
        "version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 1\n",
        "version STSv1\n",
    ])
    func refuses(text: String) {
        #expect(throws: MTASTSPolicy.ParseError.self) { try MTASTSPolicy(parsing: text) }
    }

    @Test func modeNoneNeedsNoMX() throws {
        #expect(try MTASTSPolicy(parsing: "version: STSv1\nmode: none\nmax_age: 86400\n").mode == .none)
    }

    // RFC 8461 §4.1: a wildcard covers exactly one leftmost label.
    @Test(arguments: [
        ("mail.example.com", "mail.example.com", true),
        ("MAIL.Example.COM.", "mail.example.com", true),
        ("mx1.example.net", "*.example.net", true),
        ("example.net", "*.example.net", false),
        ("a.b.example.net", "*.example.net", false),
        ("mail.example.com", "*.mail.example.com", false),
        ("mail.example.org", "mail.example.com", false),
    ])
    func matching(host: String, pattern: String, matches: Bool) {
        #expect(MTASTSPolicy.matches(host: host, pattern: pattern) == matches)
    }

    @Test(arguments: [
        ("v=STSv1; id=20160831085700Z;", "20160831085700Z"),
        ("v=STSv1;id=abc", "abc"),
    ])
    func records(text: String, id: String) throws {
        #expect(try TXTRecordKind.mtaSTSID(text) == id)
    }

    @Test(arguments: [
        "v=STSv1;", "v=STSv1; id=has-dash", "id=abc; v=STSv1", "v=STSv1; id=\(String(repeating: "a", count: 33))",
    ])
    func badRecords(text: String) {
        #expect(throws: TagRecordError.self) { try TXTRecordKind.mtaSTSID(text) }
    }

    // RFC 8460 §3's examples.
    @Test(arguments: [
        ("v=TLSRPTv1;rua=mailto:reports@example.com", 1),
        ("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt", 1),
        ("v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/x", 2),
    ])
    func tlsRPT(text: String, count: Int) throws {
        #expect(try TXTRecordKind.tlsRPTDestinations(text).count == count)
    }

    @Test(arguments: ["v=TLSRPTv1;", "v=TLSRPTv1; rua=http://r.example.com/", "v=TLSRPTv1; rua=mailto:nobody"])
    func badTLSRPT(text: String) {
        #expect(throws: TagRecordError.self) { try TXTRecordKind.tlsRPTDestinations(text) }
    }

    @Test func httpParsing() throws {
        let raw = Array(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .utf8)
        let r = try HTTPSFetcher.parse(raw, maxBodyBytes: 100)
        #expect(r.status == 200)
        #expect(String(decoding: r.body, as: UTF8.self) == "hello world")
        #expect(r.header("Content-Type") == "text/plain")
        let long = Array("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789".utf8)
        #expect(throws: HTTPSFetcher.FetchError.self) { try HTTPSFetcher.parse(long, maxBodyBytes: 5) }
    }
}
