import Logging
import Testing

@testable import MailflowApp

/// Text log lines: values from remote parties cannot pose as fields or start new lines (issue 10
/// item 7).
struct TextLogHandlerTests {
    func line(_ message: Logger.Message, _ metadata: Logger.Metadata) -> String {
        let out = Lines()
        let logger = Logger(label: "mailflow") { TextLogHandler(label: $0, write: out.append) }
        logger.info(message, metadata: metadata)
        #expect(out.all.count == 1)
        return out.all.first ?? ""
    }

    /// logfmt fields after the message: key=bare or key="quoted with \" escapes".
    func fields(_ line: String) -> [(String, String)] {
        var out: [(String, String)] = []
        var rest = Substring(line.dropLast())
        while let eq = rest.firstIndex(of: "=") {
            let keyStart = rest[..<eq].lastIndex(of: " ").map { rest.index(after: $0) } ?? rest.startIndex
            let key = String(rest[keyStart..<eq])
            var i = rest.index(after: eq)
            var value = ""
            if i < rest.endIndex, rest[i] == "\"" {
                i = rest.index(after: i)
                while i < rest.endIndex, rest[i] != "\"" {
                    if rest[i] == "\\" { i = rest.index(after: i) }
                    value.append(rest[i])
                    i = rest.index(after: i)
                }
                i = rest.index(after: i)
            } else {
                while i < rest.endIndex, rest[i] != " " {
                    value.append(rest[i])
                    i = rest.index(after: i)
                }
            }
            out.append((key, value))
            rest = rest[i...]
        }
        return out
    }

    @Test func aForgedLocalPartStaysOneQuotedValue() {
        let forged = "\"x [Ingress] client=6.6.6.6 queue_id=FORGED\"@fabrikam.test"
        let l = line("delivered", ["queue_id": "5XQKPVG483DHYM44", "to": "\(forged)"])
        #expect(l.hasSuffix("\n") && l.filter { $0 == "\n" }.count == 1)
        #expect(l.contains(" info mailflow [MailflowAppTests] delivered "))
        let f = fields(l)
        #expect(f.map(\.0) == ["queue_id", "to"])
        #expect(f.first { $0.0 == "to" }?.1 == forged)
        #expect(f.first { $0.0 == "queue_id" }?.1 == "5XQKPVG483DHYM44")
    }

    @Test func controlCharactersNeverReachTheLine() {
        let l = line("reply", ["reply": "550 no\r\nfake 2026 info mailflow [Ingress] queued\u{1b}[2J\u{85}"])
        #expect(l.filter { $0 == "\n" || $0 == "\r" }.count == 1)
        #expect(!l.unicodeScalars.contains { $0 == "\u{1b}" || $0 == "\u{85}" })
        #expect(l.contains(#"reply="550 no\r\nfake 2026 info mailflow [Ingress] queued\x1b[2J\x85""#))
    }

    @Test func plainValuesStayBareAndMessagesWithEqualsAreQuoted() {
        let l = line("queue_id=FORGED looks like a field", ["client": "192.0.2.7", "helo": "mx.example.test"])
        #expect(l.contains(#" "queue_id=FORGED looks like a field" client=192.0.2.7 helo=mx.example.test"#))
    }
}
