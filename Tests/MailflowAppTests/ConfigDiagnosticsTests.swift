import Testing
import Yams

@testable import MailflowApp

/// The `diagnostics` section: the DNS blocklist zones `mailflow check ip` and the admin API ask.
struct ConfigDiagnosticsTests {
    @Test func noBlocklistsByDefault() throws {
        #expect(MailflowConfig().diagnosticsBlocklists == [])
        #expect(try MailflowConfig.parse(yaml: "diagnostics: {}\n").diagnosticsBlocklists == [])
    }

    @Test(arguments: [
        ("blocklists: [bl.example.net]", ["bl.example.net"]),
        ("blocklists: [BL.Example.NET., dnsbl.example.org]", ["bl.example.net", "dnsbl.example.org"]),
        ("blocklists: []", []),
        ("blocklists:\n  - a.test\n  - b.test\n", ["a.test", "b.test"]),
    ])
    func accepted(yaml: String, zones: [String]) throws {
        let indented = yaml.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")
        let c = try MailflowConfig.parse(yaml: "diagnostics:\n" + indented + "\n")
        #expect(c.diagnosticsBlocklists == zones)
    }

    @Test(arguments: [
        ("blocklists: [bad_zone!]", "diagnostics.blocklists[0]: 'bad_zone!' is not a valid host name"),
        ("blocklists: [a.test, A.test.]", "diagnostics.blocklists[1]: 'A.test.' is listed twice"),
        ("blocklists: a.test", "diagnostics.blocklists"),
        ("blocklist: [a.test]", "diagnostics"),
        (
            "blocklists: [" + (0..<21).map { "z\($0).test" }.joined(separator: ", ") + "]",
            "diagnostics.blocklists: lists 21 zones; at most 20 are asked"
        ),
    ])
    func refused(yaml: String, message: String) {
        do {
            _ = try MailflowConfig.parse(yaml: "diagnostics:\n  " + yaml + "\n")
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
    }
}
