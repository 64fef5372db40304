import Testing

@testable import MailAuth

@Suite struct DKIMTagListTests {
    @Test func parsesWithFoldingWhiteSpace() throws {
        let list = try DKIMTagList(parsing: " v=1;\r\n\ta = rsa-sha256 ; h=from : to;\r\n b=AB CD\r\n EF;")
        #expect(list.tags.map(\.name) == ["v", "a", "h", "b"])
        #expect(list["a"] == "rsa-sha256")
        #expect(list["h"] == "from : to")
        #expect(list["b"] == "AB CD\r\n EF")
        #expect(list["missing"] == nil)
    }

    @Test func keepsTheRawValueRangeOfEachTag() throws {
        let text = "v=1; b= AB CD ; d=x"
        let list = try DKIMTagList(parsing: text)
        let range: Range<Int> = try #require(list.tag("b")).rawValueRange
        let bytes: [UInt8] = Array(text.utf8)
        #expect(bytes[range].text == " AB CD ")
    }

    @Test(arguments: [
        ("v=1; v=1", DKIMTagList.ParseError.duplicate("v")),
        ("v=1; novalue", .missingEquals("novalue")),
        ("v=1;; a=b", .missingEquals("")),
        ("1v=1", .badTagName("1v")),
        ("=x", .badTagName("")),
        ("a-b=1", .badTagName("a-b")),
        ("v=1; a=\u{7F}", .badValue(tag: "a")),
        ("v=1; a=caf\u{E9}", .badValue(tag: "a")),
    ])
    func refuses(text: String, error: DKIMTagList.ParseError) {
        #expect(throws: error) { try DKIMTagList(parsing: text) }
    }

    @Test func refusesAHugeList() {
        let huge = "v=1; z=" + String(repeating: "A", count: 20_000)
        #expect(throws: DKIMTagList.ParseError.tooLong(huge.utf8.count)) { try DKIMTagList(parsing: huge) }
        let many = (0..<100).map { "t\($0)=x" }.joined(separator: ";")
        #expect(throws: DKIMTagList.ParseError.tooManyTags) { try DKIMTagList(parsing: many) }
    }

    @Test func trailingSeparatorAndEmptyValue() throws {
        let list = try DKIMTagList(parsing: "v=DKIM1; p=;")
        #expect(list["p"] == "")
    }
}
