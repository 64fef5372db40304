import Testing

@testable import MailflowApp

struct ConfigTests {
    @Test func emptyConfigIsTheEmbeddedDefault() throws {
        let c = try MailflowConfig.parse(yaml: "")
        #expect(c == MailflowConfig())
        #expect(c.smtpListen == ["127.0.0.1:2525"])
        #expect(c.tenants.first?.domains == ["example.test"])
    }

    @Test func fullConfigParses() throws {
        let c = try MailflowConfig.parse(
            yaml: """
                server:
                  hostname: mx.contoso.test
                  smtp: ["127.0.0.1:2525", "[::1]:2526"]
                  data: /var/lib/mailflow
                tls:
                  certificate: cert.pem
                  key: key.pem
                limits:
                  max_message_size: 10MB
                  recipients_per_message: 100
                timeouts:
                  command: 5m
                  data: 90s
                delivery:
                  retry_intervals: [1m, 5m, 1h]
                  expiry: 2d
                tenants:
                  - name: contoso
                    domains: [contoso.test]
                    mailboxes: [alice, bob]
                  - name: fabrikam
                    domains: [fabrikam.test]
                    catch_all: true
                """, baseDirectory: "/etc/mailflow")
        #expect(c.hostname == "mx.contoso.test")
        #expect(c.smtpListen.count == 2)
        #expect(c.tlsCertificate == "/etc/mailflow/cert.pem")
        #expect(c.maxMessageSize == 10 * 1024 * 1024)
        #expect(c.commandTimeout == 300)
        #expect(c.dataTimeout == 90)
        #expect(c.retryIntervals == [60, 300, 3600])
        #expect(c.expiry == 2 * 86400)
        #expect(c.tenants.map(\.name) == ["contoso", "fabrikam"])
        #expect(c.tenants[1].catchAll)
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        var yaml: String
        var message: String
        var testDescription: String { message }
    }

    static let bad: [Bad] = [
        Bad(yaml: "server:\n  hostnme: x\n", message: "server.hostnme: unknown key"),
        Bad(yaml: "colour: blue\n", message: "colour: unknown key"),
        Bad(yaml: "server:\n  smtp: [\"localhost\"]\n", message: "server.smtp[0]: 'localhost' is not host:port"),
        Bad(yaml: "server:\n  smtp: []\n", message: "server.smtp: needs at least one"),
        Bad(
            yaml: "server:\n  hostname: \"bad host\"\n", message: "server.hostname: 'bad host' is not a valid host name"
        ),
        Bad(yaml: "server:\n  log_level: loud\n", message: "server.log_level: 'loud' is not one of"),
        Bad(
            yaml: "limits:\n  recipients_per_message: 0\n",
            message: "limits.recipients_per_message: must be between 1 and 1000"),
        Bad(
            yaml: "limits:\n  recipients_per_message: many\n",
            message: "limits.recipients_per_message: expected a whole number"),
        Bad(yaml: "limits:\n  max_message_size: huge\n", message: "limits.max_message_size: expected a size"),
        Bad(yaml: "timeouts:\n  command: soon\n", message: "timeouts.command: expected a duration"),
        Bad(yaml: "tls:\n  certificate: c.pem\n", message: "tls.key: is required"),
        Bad(yaml: "tenants:\n  - name: a\n", message: "tenants[0].domains: is required"),
        Bad(yaml: "tenants:\n  - domains: [a.test]\n", message: "tenants[0].name: is required"),
        Bad(
            yaml: "tenants:\n  - name: a\n    domains: [a.test]\n  - name: b\n    domains: [A.test]\n",
            message: "tenants[1].domains[0]: 'A.test' already belongs to tenant 'a'"),
        Bad(
            yaml: "tenants:\n  - name: a\n    domains: [a.test]\n    mailboxes: [\"a b\"]\n",
            message: "tenants[0].mailboxes[0]"),
        Bad(
            yaml: "tenants:\n  - name: a\n    domains: [a.test]\n    catch_all: maybe\n",
            message: "tenants[0].catch_all: expected true or false"),
        Bad(yaml: "server: [1, 2]\n", message: "server: expected a mapping"),
        Bad(yaml: "server: {\n", message: "not valid YAML"),
    ]

    @Test(arguments: bad)
    func badConfigNamesTheKey(_ b: Bad) {
        do {
            _ = try MailflowConfig.parse(yaml: b.yaml)
            Issue.record("accepted: \(b.yaml)")
        } catch {
            #expect("\(error)".contains(b.message), "\(error)")
        }
    }

    @Test func errorsCarryTheLine() {
        do {
            _ = try MailflowConfig.parse(yaml: "server:\n  hostname: ok.test\n  bogus: 1\n")
        } catch {
            #expect("\(error)".hasPrefix("line 3: server.bogus"))
        }
    }

    @Test(arguments: [("127.0.0.1:25", "127.0.0.1", 25), ("[::1]:2525", "::1", 2525), ("0.0.0.0:0", "0.0.0.0", 0)])
    func listenAddresses(_ text: String, _ host: String, _ port: Int) {
        let p = ListenAddress.parse(text)
        #expect(p?.host == host)
        #expect(p?.port == port)
    }
}

struct AdminConfigTests {
    @Test func adminListenerIsLoopbackByDefaultAndCanBeTurnedOff() throws {
        #expect(MailflowConfig().adminListen == "127.0.0.1:8025")
        #expect(MailflowConfig().traceRetention == 90 * 86400)
        let c = try MailflowConfig.parse(
            yaml: """
                admin:
                  listen: "[::1]:9000"
                  session_lifetime: 1h
                trace:
                  retention: 30d
                  prune_interval: 10m
                  sample_interval: 30s
                """)
        #expect(c.adminListen == "[::1]:9000" && c.adminSessionLifetime == 3600)
        #expect(c.traceRetention == 30 * 86400 && c.tracePruneInterval == 600 && c.queueSampleInterval == 30)
        #expect(try MailflowConfig.parse(yaml: "admin:\n  enabled: false\n").adminListen == nil)
    }

    @Test func badAdminAndTraceValuesAreRefusedWithTheirPath() {
        let table: [(String, String)] = [
            ("admin:\n  listen: localhost:8025\n", "admin.listen"),
            ("admin:\n  listen: 127.0.0.1\n", "admin.listen"),
            ("admin:\n  port: 1\n", "admin.port"),
            ("trace:\n  retention: 10m\n", "trace.retention"),
            ("trace:\n  retention: forever\n", "trace.retention"),
        ]
        for (yaml, path) in table {
            do {
                _ = try MailflowConfig.parse(yaml: yaml)
                Issue.record("accepted \(yaml)")
            } catch let e as MailflowConfig.ConfigError {
                #expect(e.path == path, "\(yaml): \(e)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }
}
