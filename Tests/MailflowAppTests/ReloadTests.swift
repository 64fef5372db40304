import Foundation
import Logging
import Testing

@testable import Delivery
@testable import Ingress
@testable import MailflowApp

/// A reload (SIGHUP) reaches every reader of the tenants, not only new sessions: the scheduler's
/// outbound connectors and DSN routes ask the current configuration each time.
struct ReloadTests {
    func config(smartHostPort: Int, tenants extra: [MailflowConfig.TenantConfig] = []) -> MailflowConfig {
        var c = MailflowConfig()
        c.dataDirectory =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("mailflow-reload-\(UUID().uuidString)").path
        c.smtpListen = ["127.0.0.1:0"]
        c.adminListen = nil
        c.healthEnabled = false
        c.dnsServers = ["127.0.0.1:53"]
        c.tenants =
            [
                MailflowConfig.TenantConfig(
                    name: "contoso", domains: ["contoso.test"], mailboxes: ["alice"], catchAll: false,
                    connector: OutboundConnector(
                        host: "127.0.0.1", port: smartHostPort, tls: .disabled, verifyName: nil))
            ] + extra
        return c
    }

    func withService(_ c: MailflowConfig, _ body: (MailflowService) throws -> Void) async throws {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let service = try MailflowService(config: c, logger: logger)
        defer { try? FileManager.default.removeItem(atPath: c.dataDirectory) }
        do {
            // Started as `serve` starts it (a scheduler never started cannot be shut down).
            _ = try await service.start()
            try body(service)
        } catch {
            await service.shutdown()
            throw error
        }
        await service.shutdown()
    }

    @Test func connectorsAndDSNRoutesFollowAReload() async throws {
        let before = config(smartHostPort: 2601)
        try await withService(before) { service in
            #expect(service.scheduler.connectorFor("alice@contoso.test")?.port == 2601)
            #expect(service.scheduler.dsnRoute?("alice@fabrikam.test")?.description == "relay:fabrikam.test")

            var after = before
            after.tenants =
                config(
                    smartHostPort: 2602,
                    tenants: [
                        MailflowConfig.TenantConfig(
                            name: "fabrikam", domains: ["fabrikam.test"], mailboxes: [], catchAll: true)
                    ]
                ).tenants
            try service.reload(after)
            #expect(service.scheduler.connectorFor("alice@contoso.test")?.port == 2602)
            #expect(service.scheduler.dsnRoute?("alice@fabrikam.test")?.description == "local:fabrikam.test/alice")
            #expect(service.policy.current.directory.tenant(forDomain: "fabrikam.test") != nil)
        }
    }

    @Test func aBadNetworkIsRefusedAtStartAndOnReloadKeepingTheRunningConfig() async throws {
        var bad = config(smartHostPort: 2601)
        bad.trustedNetworks = ["10.0.0.0/33"]
        #expect(throws: MailflowConfig.ConfigError.self) {
            _ = try MailflowService(config: bad, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        }
        try? FileManager.default.removeItem(atPath: bad.dataDirectory)

        var good = config(smartHostPort: 2601)
        good.trustedNetworks = ["192.0.2.0/24"]
        try await withService(good) { service in
            var next = good
            next.trustedNetworks = ["192.0.2.0/24", "bogus"]
            next.tenants = config(smartHostPort: 2602).tenants
            do {
                try service.reload(next)
                Issue.record("a bad network was accepted on reload")
            } catch {
                #expect("\(error)" == "relay.trusted_networks: 'bogus' is not an IP address or CIDR block")
            }
            // Nothing of the refused file applied.
            #expect(service.currentConfig.mutex.withLock { $0 } == good)
            #expect(service.scheduler.connectorFor("alice@contoso.test")?.port == 2601)
            #expect(service.policy.current.trustedNetworks.contains("192.0.2.7"))
        }
    }

    @Test func settingsReadOnlyAtStartAreNamedOnReload() {
        let a = MailflowConfig()
        var b = a
        b.tenants = []
        b.admissionLimits.maxConnections = 1
        b.commandTimeout = 10
        #expect(MailflowService.restartOnlyChanges(from: a, to: b).isEmpty)
        b.dnsAttempts = 5
        b.retryIntervals = [1]
        b.smtpListen = ["127.0.0.1:1"]
        b.healthPolicy.bucketSeconds = 5
        #expect(MailflowService.restartOnlyChanges(from: a, to: b) == ["server.smtp", "dns", "delivery", "health"])
        var c = a
        c.hostname = "mx2.example.test"  // the outbound EHLO name follows the hostname
        #expect(MailflowService.restartOnlyChanges(from: a, to: c) == ["delivery"])
    }
}
