/// A DMARC policy record (RFC 7489 §6.3, §6.4) parsed and checked tag by tag.
///
/// The one DMARC parser in Mailflow: `DMARCEvaluator` applies what it parses and `mailflow check`
/// (Diagnostics) lints it.
///
///     let record = try DMARCRecord(parsing: "v=DMARC1; p=reject; sp=quarantine; adkim=s")
///     record.policy  // .reject
public struct DMARCRecord: Sendable, Hashable {
    /// The requested handling of failing mail (RFC 7489 §6.3 `p=`, `sp=`).
    public enum Policy: String, Sendable, Hashable {
        case none, quarantine, reject
    }

    /// Identifier alignment mode (RFC 7489 §3.1, `adkim=`, `aspf=`).
    public enum Alignment: String, Sendable, Hashable {
        case relaxed = "r"
        case strict = "s"
    }

    /// A `mailto:` reporting address with its optional size limit (RFC 7489 §6.2).
    public struct ReportURI: Sendable, Hashable {
        public var uri: String
        /// The domain of the mailbox, for the external-destination rule (RFC 7489 §7.1).
        public var domain: String?
    }

    /// Why a record does not parse.
    public enum ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        /// The `tag=value` list itself is malformed (a spec without `=`, a bad name, a repeated tag).
        case tags(String)
        case versionNotFirst
        case badValue(tag: String, value: String, expected: String)

        public var description: String {
            switch self {
            case .tags(let e): e
            case .versionNotFirst: "the record must start with v=DMARC1 (RFC 7489 §6.4)"
            case .badValue(let tag, let value, let expected): "\(tag)=\(value): expected \(expected)"
            }
        }
    }

    /// `p=`; nil when absent (RFC 7489 §6.6.3 then treats a record with a valid rua as p=none).
    public var policy: Policy?
    public var subdomainPolicy: Policy?
    public var percent: Int
    public var dkimAlignment: Alignment
    public var spfAlignment: Alignment
    public var aggregateReports: [ReportURI]
    public var failureReports: [ReportURI]
    /// Tags this parser does not know (RFC 7489 §6.3: ignored).
    public var unknownTags: [String]

    /// True when `text` is a DMARC record at all (RFC 7489 §6.6.3 step 4: starts with `v=DMARC1`).
    public static func isDMARC(_ text: String) -> Bool {
        guard let first = text.split(separator: ";", maxSplits: 1).first else { return false }
        let parts = first.split(separator: "=", maxSplits: 1)
        return parts.count == 2 && trimmed(parts[0]) == "v" && trimmed(parts[1]) == "DMARC1"
    }

    /// Parses a record's text (a TXT record's strings joined).
    public init(parsing text: String) throws(ParseError) {
        let list = try Self.tagList(text)
        guard let first = list.tags.first, first.name == "v", first.value == "DMARC1" else { throw .versionNotFirst }
        func parsePolicy(_ tag: String) throws(ParseError) -> Policy? {
            guard let value = list[tag] else { return nil }
            guard let p = Policy(rawValue: value.lowercased()) else {
                throw .badValue(tag: tag, value: value, expected: "none, quarantine or reject")
            }
            return p
        }
        func parseAlignment(_ tag: String) throws(ParseError) -> Alignment {
            guard let value = list[tag] else { return .relaxed }
            guard let a = Alignment(rawValue: value.lowercased()) else {
                throw .badValue(tag: tag, value: value, expected: "r or s")
            }
            return a
        }
        func parseURIs(_ tag: String) throws(ParseError) -> [ReportURI] {
            guard let value = list[tag] else { return [] }
            return try value.split(separator: ",").map { raw throws(ParseError) -> ReportURI in
                let item = Self.trimmed(raw)
                // A size suffix such as !10m (RFC 7489 §6.2) follows the URI.
                let uri = item.split(separator: "!", maxSplits: 1).first.map(String.init) ?? ""
                if let bang = item.firstIndex(of: "!") {
                    let size = item[item.index(after: bang)...]
                    let digits = size.prefix { $0.isNumber }
                    let unit = size.dropFirst(digits.count)
                    guard !digits.isEmpty, unit.isEmpty || (unit.count == 1 && "kmgtKMGT".contains(unit)) else {
                        throw .badValue(tag: tag, value: String(item), expected: "a URI with an optional !size")
                    }
                }
                guard uri.lowercased().hasPrefix("mailto:") || uri.lowercased().hasPrefix("https:") else {
                    throw .badValue(tag: tag, value: String(item), expected: "mailto: URIs")
                }
                var domain: String?
                if uri.lowercased().hasPrefix("mailto:") {
                    let address = uri.dropFirst("mailto:".count)
                    guard let at = address.lastIndex(of: "@"), at != address.startIndex,
                        address.index(after: at) != address.endIndex
                    else {
                        throw .badValue(tag: tag, value: String(item), expected: "mailto:local@domain")
                    }
                    domain = address[address.index(after: at)...].lowercased()
                }
                return ReportURI(uri: uri, domain: domain)
            }
        }
        policy = try parsePolicy("p")
        subdomainPolicy = try parsePolicy("sp")
        if let value = list["pct"] {
            guard let n = Int(value), (0...100).contains(n) else {
                throw .badValue(tag: "pct", value: value, expected: "an integer 0 to 100")
            }
            percent = n
        } else {
            percent = 100
        }
        dkimAlignment = try parseAlignment("adkim")
        spfAlignment = try parseAlignment("aspf")
        aggregateReports = try parseURIs("rua")
        failureReports = try parseURIs("ruf")
        if let fo = list["fo"] {
            guard fo.split(separator: ":").allSatisfy({ ["0", "1", "d", "s"].contains(Self.trimmed($0)) }) else {
                throw .badValue(tag: "fo", value: fo, expected: "0, 1, d or s, colon-separated")
            }
        }
        if let ri = list["ri"], UInt32(ri) == nil {
            throw .badValue(tag: "ri", value: ri, expected: "a number of seconds")
        }
        if let rf = list["rf"], rf.lowercased() != "afrf" {
            throw .badValue(tag: "rf", value: rf, expected: "afrf")
        }
        let known: Set<String> = ["v", "p", "sp", "pct", "adkim", "aspf", "rua", "ruf", "fo", "ri", "rf"]
        unknownTags = list.tags.map(\.name).filter { !known.contains($0) }
    }

    struct TagList {
        var tags: [(name: String, value: String)]
        subscript(name: String) -> String? { tags.first { $0.name == name }?.value }
    }

    /// RFC 7489 §6.4 `dmarc-record`: `tag=value` specs separated by `;`, whitespace around each
    /// dropped, a trailing `;` allowed, no tag twice.
    static func tagList(_ text: String) throws(ParseError) -> TagList {
        var tags: [(name: String, value: String)] = []
        var seen: Set<String> = []
        let specs = text.split(separator: ";", omittingEmptySubsequences: false)
        for (index, raw) in specs.enumerated() {
            let spec = trimmed(raw)
            if spec.isEmpty {
                if index == specs.count - 1 { continue }
                throw .tags("an empty tag between two ';'")
            }
            guard let eq = spec.firstIndex(of: "=") else { throw .tags("'\(spec)' is not tag=value") }
            let name = trimmed(spec[..<eq])
            let value = trimmed(spec[spec.index(after: eq)...])
            guard let first = name.first, first.isASCII, first.isLetter,
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
            else { throw .tags("'\(name)' is not a valid tag name") }
            guard seen.insert(String(name)).inserted else { throw .tags("tag '\(name)' appears more than once") }
            tags.append((String(name), String(value)))
        }
        return TagList(tags: tags)
    }

    static func trimmed<S: StringProtocol>(_ text: S) -> Substring {
        var s = Substring(text)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" || f == "\r\n" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" || l == "\r\n" { s.removeLast() }
        return s
    }
}
