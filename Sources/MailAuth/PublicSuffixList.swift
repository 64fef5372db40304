/// The Public Suffix List (https://publicsuffix.org/list/) and the organizational domain it gives
/// DMARC (RFC 7489 §3.2).
///
/// Rules are read from the list's text: one rule a line, `//` comments, `*.` wildcard rules and `!`
/// exception rules, matched label by label from the right; an exception rule prevails, otherwise the
/// rule with the most labels, otherwise the implicit rule `*` (the last label is the suffix).
/// Mailflow reads Debian's copy (package `publicsuffix`, ``debianPath``). Without it, ``fallback``
/// has no rules, so only the implicit `*` applies: the organizational domain is the last two labels,
/// one level too high under suffixes such as `co.uk` (``isFallback`` says so).
///
///     let psl = PublicSuffixList(parsing: "uk\nco.uk\n")
///     psl.organizationalDomain(of: "mail.example.co.uk")  // "example.co.uk"
public struct PublicSuffixList: Sendable {
    /// Where Debian's `publicsuffix` package installs the list.
    public static let debianPath = "/usr/share/publicsuffix/public_suffix_list.dat"

    var rules: Set<String> = []
    /// Wildcard rules `*.ck` stored as `ck`.
    var wildcards: Set<String> = []
    /// Exception rules `!www.ck` stored as `www.ck`.
    var exceptions: Set<String> = []
    /// True when no list was loaded and only the implicit `*` rule applies.
    public let isFallback: Bool

    /// Parses the list's text (rules are the first word of a line; comments and blank lines skipped).
    public init(parsing text: String) {
        for line in text.split(whereSeparator: \.isNewline) {
            guard let word = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first,
                !word.hasPrefix("//")
            else { continue }
            let rule = word.lowercased()
            if rule.hasPrefix("!") {
                exceptions.insert(String(rule.dropFirst()))
            } else if rule.hasPrefix("*.") {
                wildcards.insert(String(rule.dropFirst(2)))
            } else {
                rules.insert(rule)
            }
        }
        isFallback = false
    }

    init(fallback: Void) { isFallback = true }

    /// The list with no rules: the organizational domain is the last two labels.
    public static let fallback = PublicSuffixList(fallback: ())

    /// The list at `path`, or nil when it cannot be read.
    public static func load(path: String = debianPath) -> PublicSuffixList? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return PublicSuffixList(parsing: String(decoding: bytes, as: UTF8.self))
    }

    /// Debian's list when installed, else ``fallback``; read once per process.
    public static let system: PublicSuffixList = load() ?? fallback

    /// The public suffix of `domain` (`co.uk` for `mail.example.co.uk`).
    public func publicSuffix(of domain: String) -> String {
        let labels = Self.labels(domain)
        guard !labels.isEmpty else { return "" }
        return labels.suffix(suffixLength(labels)).joined(separator: ".")
    }

    /// The organizational domain (RFC 7489 §3.2): the public suffix and one more label; the domain
    /// itself when it is a public suffix or shorter.
    public func organizationalDomain(of domain: String) -> String {
        let labels = Self.labels(domain)
        let length = suffixLength(labels)
        guard labels.count > length else { return labels.joined(separator: ".") }
        return labels.suffix(length + 1).joined(separator: ".")
    }

    /// How many labels from the right the prevailing rule covers.
    func suffixLength(_ labels: [String]) -> Int {
        let n = labels.count
        // An exception rule prevails: its suffix is the rule without its leftmost label.
        for i in 0..<n where exceptions.contains(labels[i...].joined(separator: ".")) {
            return n - i - 1
        }
        for i in 0..<n {
            let candidate = labels[i...].joined(separator: ".")
            if rules.contains(candidate) { return n - i }
            if i + 1 < n, wildcards.contains(labels[(i + 1)...].joined(separator: ".")) { return n - i }
        }
        return 1
    }

    static func labels(_ domain: String) -> [String] {
        var name = Substring(domain.lowercased())
        while name.hasSuffix(".") { name = name.dropLast() }
        return name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif
