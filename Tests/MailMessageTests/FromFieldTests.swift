import MailMessage
import Testing

/// The RFC5322.From identity DMARC judges: one field, one address, display names set aside.
struct FromFieldTests {
    @Test(arguments: [
        ("News <news@Good.Example>", FromField.Identity.domain("good.example")),
        ("news@good.example", .domain("good.example")),
        ("\"help@bank.example\" <x@evil.example>", .domain("evil.example")),
        ("x@evil.example (help@bank.example)", .domain("evil.example")),
        ("\"a, b\" <a@b.example>", .domain("b.example")),
        ("a@b.example, c@d.example", .invalid("the From field names more than one address")),
        ("Group: a@b.example;", .invalid("the From field names more than one address")),
        ("<>", .invalid("the From field does not name one address")),
        ("nobody", .invalid("the From field does not name one address")),
        ("<a@b.example> <c@d.example>", .invalid("the From field's address does not parse")),
    ])
    func identity(_ value: String, _ expected: FromField.Identity) {
        #expect(FromField.identity(value: value) == expected)
    }

    @Test func headerSectionsAreReadLenientlyAndFromMustBeSingle() {
        let two = Array("From: a@x.example\r\nbroken line\r\nFrom: b@y.example\r\n\r\nbody\r\n".utf8)
        #expect(FromField.identity(header: FromField.headerSection(two)) == .invalid("the message has 2 From fields"))
        let none = Array("Subject: hi\r\n\r\nFrom: a@x.example\r\n".utf8)
        #expect(FromField.identity(header: FromField.headerSection(none)) == .invalid("the message has no From field"))
        let folded = Array("From: Someone\r\n <s@folded.example>\r\n\r\n".utf8)
        #expect(FromField.identity(header: FromField.headerSection(folded)) == .domain("folded.example"))
        #expect(FromField.headerSection(Array("A: b\r\n\r\nbody".utf8)) == Array("A: b\r\n\r\n".utf8))
    }
}
