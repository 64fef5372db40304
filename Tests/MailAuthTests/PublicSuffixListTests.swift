import Testing

@testable import MailAuth

@Suite struct PublicSuffixListTests {
    /// A list with the rule kinds of the real one (from its own test examples).
    static let list = PublicSuffixList(
        parsing: """
            // ===BEGIN ICANN DOMAINS===
            com
            uk
            co.uk
            jp
            kyoto.jp
            ide.kyoto.jp
            *.kobe.jp
            !city.kobe.jp
            *.ck
            !www.ck
            // a comment
            example.invalid   trailing words are ignored
            """)

    @Test(arguments: [
        ("example.com", "example.com"),
        ("www.example.com", "example.com"),
        ("a.b.example.com.", "example.com"),
        ("EXAMPLE.CO.UK", "example.co.uk"),
        ("mail.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("b.ide.kyoto.jp", "b.ide.kyoto.jp"),
        ("a.b.ide.kyoto.jp", "b.ide.kyoto.jp"),
        ("c.kobe.jp", "c.kobe.jp"),
        ("b.c.kobe.jp", "b.c.kobe.jp"),
        ("a.b.c.kobe.jp", "b.c.kobe.jp"),
        ("city.kobe.jp", "city.kobe.jp"),
        ("www.city.kobe.jp", "city.kobe.jp"),
        ("www.ck", "www.ck"),
        ("www.www.ck", "www.ck"),
        ("test.ck", "test.ck"),
        ("b.test.ck", "b.test.ck"),
        ("example.unlisted", "example.unlisted"),
        ("a.example.unlisted", "example.unlisted"),
    ])
    func organizationalDomains(domain: String, expected: String) {
        #expect(Self.list.organizationalDomain(of: domain) == expected)
    }

    @Test func publicSuffixes() {
        #expect(Self.list.publicSuffix(of: "mail.example.co.uk") == "co.uk")
        #expect(Self.list.publicSuffix(of: "a.b.c.kobe.jp") == "c.kobe.jp")
        #expect(Self.list.publicSuffix(of: "www.city.kobe.jp") == "kobe.jp")
        #expect(Self.list.publicSuffix(of: "x.example.unlisted") == "unlisted")
    }

    @Test func theFallbackTakesTheLastTwoLabels() {
        let fallback = PublicSuffixList.fallback
        #expect(fallback.isFallback)
        #expect(fallback.organizationalDomain(of: "mail.example.co.uk") == "co.uk")
        #expect(fallback.organizationalDomain(of: "a.b.example.org") == "example.org")
    }

    @Test func debiansListLoadsWhenInstalled() throws {
        // scripts/install-test-deps installs Debian's publicsuffix package; the test needs it.
        let system = try #require(
            PublicSuffixList.load(), "\(PublicSuffixList.debianPath) is missing: run scripts/install-test-deps")
        #expect(system.organizationalDomain(of: "mail.example.co.uk") == "example.co.uk")
        #expect(system.organizationalDomain(of: "foo.bar.github.io") == "bar.github.io")
        #expect(!system.isFallback)
    }
}
