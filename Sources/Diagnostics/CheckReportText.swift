/// The human form of a ``CheckReport``: findings grouped by category, a severity mark per finding,
/// details of warnings and failures indented below, and a verdict line. Colour only when asked (a
/// terminal); text from remote parties (banners, replies, records) has control characters escaped.
public struct CheckReportText: Sendable {
    public var colour: Bool
    /// Show the detail of every finding, not only of warnings and failures.
    public var verbose: Bool

    public init(colour: Bool, verbose: Bool = false) {
        self.colour = colour
        self.verbose = verbose
    }

    static let titles: [CheckCategory: String] = [
        .mx: "MX", .address: "Addresses", .smtp: "SMTP", .starttls: "STARTTLS", .tls: "TLS",
        .certificate: "Certificate", .mtaSTS: "MTA-STS", .tlsRPT: "TLS-RPT", .dane: "DANE", .spf: "SPF",
        .dmarc: "DMARC", .dkim: "DKIM", .reverseDNS: "Reverse DNS", .blocklist: "Blocklists",
        .trace: "Mailflow's trace",
    ]

    func mark(_ severity: CheckSeverity) -> String {
        let (text, code) =
            switch severity {
            case .ok: ("  ok", "32")
            case .info: ("info", "36")
            case .warning: ("WARN", "33")
            case .failure: ("FAIL", "31;1")
            }
        return colour ? "\u{1b}[\(code)m\(text)\u{1b}[0m" : text
    }

    public func render(_ report: CheckReport) -> String {
        var out = "mailflow check \(report.kind.rawValue) \(Self.escaped(report.target))\n"
        for category in CheckCategory.allCases {
            let findings = report.findings.filter { $0.category == category }
            guard !findings.isEmpty else { continue }
            out +=
                "\n"
                + (colour
                    ? "\u{1b}[1m\(Self.titles[category] ?? category.rawValue)\u{1b}[0m"
                    : Self.titles[category] ?? category.rawValue) + "\n"
            var lastSubject: String?
            for f in findings {
                if f.subject != lastSubject {
                    out += "  \(Self.escaped(f.subject))\n"
                    lastSubject = f.subject
                }
                let ncsc = f.ncsc.map { " [NCSC: \($0.rawValue)]" } ?? ""
                out += "    \(mark(f.severity))  \(Self.escaped(f.summary))\(ncsc)\n"
                if let detail = f.detail, verbose || f.severity >= .warning {
                    for line in detail.split(separator: "\n", omittingEmptySubsequences: false).prefix(40) {
                        out += "          \(Self.escaped(String(line)))\n"
                    }
                }
            }
        }
        var counts: [CheckSeverity: Int] = [:]
        for f in report.findings { counts[f.severity, default: 0] += 1 }
        let tally = CheckSeverity.allCases.reversed().map { "\(counts[$0] ?? 0) \($0.rawValue)" }
            .joined(separator: ", ")
        let seconds = (report.durationSeconds * 100).rounded() / 100
        out +=
            "\nVerdict: \(mark(report.verdict).trimmingWhitespace) (\(tally); \(seconds) s; exit \(report.exitCode))\n"
        return out
    }

    /// Control characters, line separators and bidirectional overrides as escapes.
    static func escaped(_ text: String) -> String {
        var out = ""
        for u in text.unicodeScalars {
            switch u.value {
            case 0..<0x20, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069, 0x200E, 0x200F, 0x061C:
                let hex = String(u.value, radix: 16)
                out += u.value < 0x100 ? "\\x" + String(repeating: "0", count: 2 - hex.count) + hex : "\\u{\(hex)}"
            default:
                out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
