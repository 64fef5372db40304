/// An enhanced mail system status code, `class.subject.detail` (RFC 3463, registry from RFC 5248).
///
/// Providers invent detail numbers freely (`4.4.316`, `5.7.233`), so any `d.ddd.ddd` with a class of
/// 2, 4 or 5 parses.
///
/// ```swift
/// let code = EnhancedStatusCode(parsing: "4.3.2")  // EnhancedStatusCode(4, 3, 2)
/// ```
public struct EnhancedStatusCode: Hashable, Sendable, CustomStringConvertible {
    public var statusClass: Int
    public var subject: Int
    public var detail: Int

    public init(_ statusClass: Int, _ subject: Int, _ detail: Int) {
        self.statusClass = statusClass
        self.subject = subject
        self.detail = detail
    }

    /// Parses `class.subject.detail`; `nil` for anything else (RFC 3463 §2: subject and detail are
    /// 1 to 3 digits without leading zeros beyond a single `0`).
    public init?(parsing text: Substring) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3,
            let c = Int(parts[0]), parts[0].count == 1, [2, 4, 5].contains(c),
            let s = Int(parts[1]), (1...3).contains(parts[1].count), parts[1].allSatisfy(\.isASCII),
            let d = Int(parts[2]), (1...3).contains(parts[2].count), parts[2].allSatisfy(\.isASCII)
        else { return nil }
        self.init(c, s, d)
    }

    public init?(parsing text: String) { self.init(parsing: text[...]) }

    public var description: String { "\(statusClass).\(subject).\(detail)" }
}
