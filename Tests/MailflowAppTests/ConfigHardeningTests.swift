import Foundation
import Logging
import Testing
import Yams

@testable import Ingress
@testable import MailflowApp

/// Issue 10, items 3 and 12: hostile config files are refused with one short line, before anything
/// recursive runs; an open relay needs to be confirmed.
struct ConfigHardeningTests {
    /// The error `parse` throws, as `config check` prints it.
    func refusal(_ yaml: String) -> String {
        do {
            _ = try MailflowConfig.parse(yaml: yaml)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    func expectOneShortLine(_ message: String, max: Int = 300) {
        #expect(!message.contains("\n") && !message.contains("\r"), "\(message.prefix(200))")
        #expect(message.utf8.count <= max, "\(message.utf8.count) octets: \(message.prefix(200))")
    }

    // MARK: nesting

    @Test func deepFlowSequenceIsRefusedBeforeYams() {
        let m = refusal("server: " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + "\n")
        #expect(m == "line 1: lists and mappings nested more than 64 deep")
    }

    @Test func deepFlowMappingIsRefused() {
        let m = refusal("server: " + String(repeating: "{a: ", count: 5000) + "1" + String(repeating: "}", count: 5000))
        #expect(m == "line 1: lists and mappings nested more than 64 deep")
    }

    @Test func deepBlockMappingIsRefusedOnTheLineThatGoesTooDeep() {
        // One space per level: line n opens level n.
        let yaml = (0..<1000).map { String(repeating: " ", count: $0) + "a:" }.joined(separator: "\n") + " 1\n"
        #expect(refusal(yaml) == "line 65: lists and mappings nested more than 64 deep")
    }

    @Test func deepCompactBlockSequenceIsRefused() {
        #expect(refusal(String(repeating: "- ", count: 5000) + "a\n").hasPrefix("line 1: lists and mappings nested"))
    }

    @Test func deepMultiLineFlowIsRefusedWhereItGoesTooDeep() {
        let yaml = "server:\n" + String(repeating: "  [\n", count: 100) + "  a" + String(repeating: "]", count: 100)
        // Line 1 opens the mapping; line k + 1 opens level k + 1.
        #expect(refusal(yaml) == "line 65: lists and mappings nested more than 64 deep")
    }

    /// Every way YAML nests, as a text `n` levels deep.
    enum Nesting: String, CaseIterable, CustomTestStringConvertible {
        case flowSequences, flowMappings, pairsInFlowSequences, blockMappings, blockSequences, indentlessSequences
        case flowKeysOfBlockMappings, flowKeysInFlowSequences, blockScalarValues, explicitKeys

        var testDescription: String { rawValue }

        func text(_ n: Int) -> String {
            func times(_ s: String, _ k: Int) -> String { String(repeating: s, count: k) }
            switch self {
            case .flowSequences: return times("[", n) + times("]", n)
            case .flowMappings: return times("{a: ", n) + "1" + times("}", n)
            case .pairsInFlowSequences: return times("[a: ", n / 2) + "1" + times("]", n / 2)  // 2 levels each
            case .blockMappings: return (0..<n).map { times(" ", $0) + "a:" }.joined(separator: "\n") + " 1\n"
            case .blockSequences: return times("- ", n) + "a\n"
            case .explicitKeys: return times("? ", n) + "a\n"
            case .indentlessSequences:  // a:\n- a:\n  - a: ...: a mapping and its sequence at one column
                return (0..<(n / 2)).map { "a:\n" + times(" ", 2 * $0) + "- " }.joined() + "x\n"
            case .flowKeysOfBlockMappings: return times("[", n - 1) + "a" + times("]", n - 1) + ": b\n"
            case .flowKeysInFlowSequences:  // [[[a]]: b]: the key's mapping goes around the key
                return "[" + times("[", n - 2) + "a" + times("]", n - 2) + ": b]"
            case .blockScalarValues:
                return (0..<n).map { times(" ", $0) + "a:" }.joined(separator: "\n") + " |\n"
                    + times(" ", n) + times("[", 100) + "\n"
            }
        }
    }

    /// The scan counts what libyaml's parser opens: 64 levels pass, 65 do not, for every way of nesting.
    @Test(arguments: Nesting.allCases)
    func exactlyTheLimitPasses(_ nesting: Nesting) throws {
        let at = nesting.text(MailflowConfig.maxNesting)
        #expect(YAMLNestingScan.check(at, limit: MailflowConfig.maxNesting) == nil)
        #expect(
            YAMLNestingScan.check(nesting.text(MailflowConfig.maxNesting + 2), limit: MailflowConfig.maxNesting) != nil)
        // What Yams composes from the text at the limit really is 64 deep.
        let node = try #require(try Yams.compose(yaml: at))
        #expect(height(node) == MailflowConfig.maxNesting)
    }

    @Test func bracketsInScalarsAndCommentsDoNotCount() {
        let deep = String(repeating: "[", count: 500)
        let yaml = """
            server: # \(deep)
              hostname: "mx.example.test"
            tenants:
              - name: 'a\(deep)'
                domains: [a.test]
                mailboxes:
                  - alice
                  - "\(deep)"
            tls:
              certificate: |
                \(deep)
              key: plain\(deep)
                more\(deep)
            """
        #expect(YAMLNestingScan.check(yaml, limit: MailflowConfig.maxNesting) == nil)
    }

    @Test func aliasesCountAsDeepAsTheirAnchors() {
        // Each anchor wraps the one before in 4 more levels: a15, on line 16, would be 65 deep.
        var yaml = "a0: &a0 [[[[1]]]]\n"
        for i in 1...20 { yaml += "a\(i): &a\(i) [[[[*a\(i - 1)]]]]\n" }
        let m = refusal(yaml)
        #expect(m == "line 16: lists and mappings nested more than 64 deep through the alias *a14", "\(m)")
    }

    @Test func anAliasUsedOftenIsCountedOnlyAsDeepAsItsAnchor() throws {
        var yaml =
            "limits:\n  tarpit: 0\ntenants:\n  - name: t0\n    domains: [t0.test]\n    mailboxes: &boxes [a, b]\n"
        for i in 1..<100 { yaml += "  - name: t\(i)\n    domains: [t\(i).test]\n    mailboxes: *boxes\n" }
        let c = try MailflowConfig.parse(yaml: yaml)
        #expect(c.tenants.count == 100 && c.tenants.last?.mailboxes == ["a", "b"])
    }

    @Test func anchorsOnEmptyValuesEndWithThem() {
        // Lists of anchored empty entries are valid YAML: each anchor ends with its entry.
        let flow = "[" + (0..<300).map { "&a\($0) " }.joined(separator: ", ") + "]"
        #expect(YAMLNestingScan.check(flow, limit: MailflowConfig.maxNesting) == nil)
        let block = (0..<300).map { "- &a\($0)\n" }.joined()
        #expect(YAMLNestingScan.check(block, limit: MailflowConfig.maxNesting) == nil)
        // Anchors with nothing between them are not YAML; the scan refuses them rather than keep them all.
        let started = ContinuousClock.now
        #expect(
            refusal(String(repeating: "&a ", count: 300_000) + "[" + String(repeating: "[],", count: 30_000) + "]")
                == "line 1: anchors (&name) without values")
        #expect(ContinuousClock.now - started < .seconds(20))
    }

    @Test func aliasesThatExpandTooFarAreRefused() {
        // "Billion laughs": 10 aliases of 10 aliases of ... of one value.
        var yaml = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...9 {
            yaml += "l\(i): &l\(i) [" + Array(repeating: "*l\(i - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        let started = ContinuousClock.now
        let m = refusal(yaml)
        #expect(m == "l5[7][8][8][8][8][9]: aliases expand the document past 1000000 values", "\(m)")
        #expect(ContinuousClock.now - started < .seconds(60))
    }

    // MARK: duplicate keys

    @Test func duplicateTopLevelKeyNamesBothLines() {
        let m = refusal("server:\n  hostname: a.test\nlimits:\n  tarpit: 1\nserver:\n  log_level: debug\n")
        #expect(m == "line 5: server: appears twice in the same mapping, on lines 1 and 5 (a key may appear once)")
    }

    @Test func duplicateNestedKeyNamesThePath() {
        let m = refusal(
            "tenants:\n  - name: a\n    domains: [a.test]\n  - name: b\n    domains: [b.test]\n    \"name\": c\n")
        #expect(
            m == "line 6: tenants[1].name: appears twice in the same mapping, on lines 4 and 6 (a key may appear once)")
        #expect(
            refusal("server:\n  hostname: a.test\n  hostname: b.test\n")
                == "line 3: server.hostname: appears twice in the same mapping, on lines 2 and 3 (a key may appear once)"
        )
        #expect(
            refusal("limits: {tarpit: 1, per_source: {max_connections: 2, max_connections: 3}}").hasPrefix(
                "line 1: limits.per_source.max_connections: appears twice"))
    }

    @Test func keysMustBeText() {
        #expect(refusal("[a]: 1\n") == "line 1: a key must be text, not a list or mapping")
    }

    // MARK: value sizes and messages

    @Test func hugeHostnameIsAnsweredFastWithAShortMessage() throws {
        let hostname = String(repeating: "a.", count: 25 * 1024 * 1024) + "test"
        let yaml = "server:\n  hostname: \(hostname)\n"
        let started = ContinuousClock.now
        let m = refusal(yaml)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(m == "the file is larger than 1 MiB (1048576 octets), the most a config file may be")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mailflow-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("big.yaml").path
        #expect(FileManager.default.createFile(atPath: file, contents: Data(yaml.utf8)))
        let loadStarted = ContinuousClock.now
        #expect(throws: MailflowConfig.ConfigError.self) { try MailflowConfig.load(file: file) }
        #expect(ContinuousClock.now - loadStarted < .seconds(10))
    }

    @Test func hostnameOver253OctetsIsRefusedWithoutEchoingIt() {
        let m = refusal("server:\n  hostname: " + String(repeating: "a.", count: 1000) + "test\n")
        #expect(m == "line 2: server.hostname: is 2004 octets long; a host name has at most 253")
        #expect(MailflowConfig.maxHostNameLength == 253)
        #expect(refusal("server:\n  hostname: " + String(repeating: "a.", count: 124) + "test\n") == "accepted")
        #expect(
            refusal("delivery:\n  helo_name: " + String(repeating: "b.", count: 127) + "test\n").contains("at most 253")
        )
    }

    @Test func anyValueOverFourKiBIsRefused() {
        let m = refusal("server:\n  data: " + String(repeating: "d", count: 10_000) + "\n")
        #expect(m.hasPrefix("line 2: server.data: a value of 10000 octets ('dddd"), "\(m)")
        #expect(m.hasSuffix("…'); at most 4096 allowed"), "\(m)")
        expectOneShortLine(m)
        // libyaml takes an implicit key of at most 1024 characters; a longer one needs `?`.
        let key = refusal("server:\n  ? " + String(repeating: "k", count: 5000) + "\n  : 1\n")
        #expect(key.hasPrefix("line 2: server: a key of 5000 octets ('kkk"), "\(key)")
        expectOneShortLine(key)
        expectOneShortLine(refusal("server:\n  " + String(repeating: "k", count: 5000) + ": 1\n"))
        #expect(refusal("server:\n  data: /" + String(repeating: "d", count: 4095) + "\n") == "accepted")
    }

    @Test func quotedValuesAreShortAndOnOneLine() {
        let long = String(repeating: "x", count: 3000)
        for yaml in [
            "server:\n  hostname: \"\(long)\"\n", "server:\n  log_level: \(long)\n",
            "server:\n  smtp: [\"\(long)\"]\n", "relay:\n  trusted_networks: [\"\(long)\"]\n",
            "server:\n  \(long): 1\n", "server:\n  hostname: \"bad\\nhost\\u001b[2J\\u2028x\"\n",
            "server:\n  \"bad\\nkey\": 1\n", "server: {\n",
        ] {
            let m = refusal(yaml)
            #expect(m != "accepted")
            expectOneShortLine(m)
        }
        #expect(
            refusal("server:\n  hostname: \"bad\\nhost\"\n")
                == "line 2: server.hostname: 'bad\\nhost' is not a valid host name")
        #expect(MailflowConfig.excerpt(long).count == 81)
        #expect(MailflowConfig.excerpt("a\u{7}b\u{202E}c") == "a\\u{7}b\\u{202e}c")
    }

    @Test func yamlSyntaxErrorsAreOneLineWithTheLine() {
        let m = refusal("server:\n  hostname: a.test\n limits: 1\n")
        #expect(m.hasPrefix("line 3: not valid YAML: "), "\(m)")
        expectOneShortLine(m)
        #expect(refusal("a: *nothing\n").hasPrefix("line 1: not valid YAML: found undefined alias"))
    }

    @Test func aRealisticConfigStillParses() throws {
        let c = try MailflowConfig.parse(
            yaml: """
                # Mailflow
                server:
                  hostname: mx.contoso.test
                  smtp: ["127.0.0.1:2525"]
                limits:
                  per_source: {max_connections: 10, connections_per_minute: 60}
                delivery:
                  retry_intervals: [1m, 5m]
                  destination_concurrency:
                    initial: 1
                    maximum: 4
                tenants:
                  - name: contoso
                    domains: &contoso [contoso.test]
                    mailboxes:
                    - alice
                    - bob
                    outbound_connector:
                      smart_host: "relay.contoso.test:587"
                forests:
                  - {name: F1, tenants: [contoso], max_connections: 2}
                relay:
                  trusted_networks: [127.0.0.0/8, "::1"]
                """)
        #expect(c.tenants.first?.mailboxes == ["alice", "bob"] && c.admissionLimits.perSourceMaxConnections == 10)
        #expect(c.trustedNetworks == ["127.0.0.0/8", "::1"] && !c.allowOpenRelay && c.openRelayNetworks.isEmpty)
    }

    // MARK: open relay

    @Test(arguments: [
        ("[0.0.0.0/0]", 0, "0.0.0.0/0"), ("[127.0.0.0/8, 0.0.0.0/1, 128.0.0.0/1]", 1, "0.0.0.0/1"),
        ("[10.0.0.0/7]", 0, "10.0.0.0/7"), ("[\"::/0\"]", 0, "::/0"), ("[\"2000::/3\"]", 0, "2000::/3"),
        ("[\"::1\", \"2001::/15\"]", 1, "2001::/15"),
    ])
    func openRelayIsRefusedNamingTheEntry(_ list: String, _ index: Int, _ entry: String) {
        let m = refusal("relay:\n  trusted_networks: \(list)\n")
        #expect(
            m == "line 2: relay.trusted_networks[\(index)]: '\(entry)' is wider than /8 (IPv4) or /16 (IPv6): "
                + "anyone in it may relay, an open relay; narrow it, or confirm with relay.allow_open_relay: true")
    }

    @Test func openRelayConfirmedIsAcceptedAndNamed() throws {
        let c = try MailflowConfig.parse(
            yaml: "relay:\n  trusted_networks: [10.0.0.0/8, 0.0.0.0/0]\n  allow_open_relay: true\n")
        #expect(c.allowOpenRelay && c.openRelayNetworks == ["0.0.0.0/0"])
        // /8 and /16 are the widest blocks that need no confirmation.
        let narrow = try MailflowConfig.parse(yaml: "relay:\n  trusted_networks: [10.0.0.0/8, \"2001:db8::/16\"]\n")
        #expect(narrow.openRelayNetworks.isEmpty && !narrow.allowOpenRelay)
    }

    @Test func openRelayIsWarnedAboutAtStartAndReload() {
        let out = Lines()
        let logger = Logger(label: "mailflow") { JSONLogHandler(label: $0, write: out.append) }
        var c = MailflowConfig()
        MailflowService.warnIfOpenRelay(c, logger)
        #expect(out.all.isEmpty)
        c.trustedNetworks = ["127.0.0.0/8", "::/0"]
        c.allowOpenRelay = true
        MailflowService.warnIfOpenRelay(c, logger)
        #expect(out.all.count == 1)
        #expect(out.all.first?.contains("\"level\":\"warning\"") == true)
        #expect(out.all.first?.contains("open relay: relay.trusted_networks lets every client in ::") == true)
    }

    func height(_ root: Node) -> Int {
        var best = 0
        var stack = [(root, 0)]
        while let (n, d) = stack.popLast() {
            switch n {
            case .scalar: best = max(best, d)
            case .sequence(let s):
                best = max(best, d + 1)
                stack += s.map { ($0, d + 1) }
            case .mapping(let m):
                best = max(best, d + 1)
                stack += m.flatMap { [($0.key, d + 1), ($0.value, d + 1)] }
            }
        }
        return best
    }
}
