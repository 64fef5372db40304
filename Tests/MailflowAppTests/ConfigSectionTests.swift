import DNSClient
import Delivery
import Foundation
import Ingress
import SMTPCore
import ServiceHealth
import Testing
import Yams

@testable import MailflowApp

/// Each section decoder on its own, given only its own mapping, and the defaults each reads from
/// the type that owns it.
struct ConfigSectionTests {
    /// `yaml` as the mapping of the section at `path`.
    func section(_ yaml: String, _ path: String) throws -> ConfigReader {
        try ConfigReader(try #require(try Yams.compose(yaml: yaml)), path)
    }

    func refusal(_ decode: () throws -> Void) -> String {
        do {
            try decode()
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func defaultsComeFromTheTypesThatUseThem() {
        let c = MailflowConfig()
        #expect(c.admissionLimits == AdmissionLimits())
        let t = SessionTimeouts()
        #expect(.seconds(c.commandTimeout) == t.command && .seconds(c.dataTimeout) == t.data)
        #expect(.seconds(c.sessionTimeout) == t.session)
        #expect(c.requestDeadline == t.requestDeadline && c.minDataRate == t.minDataRate)
        let s = ServerSessionConfiguration(hostname: c.hostname)
        #expect(c.maxErrorsPerSession == s.maxErrors && c.recipientsPerDomainPerTransaction == s.maxRecipientsPerDomain)
        #expect(c.maxMessageSize == s.maxMessageSize && c.recipientsPerMessage == s.maxRecipients)
        #expect(
            c.retryIntervals == RetrySchedule.exchangeLike.intervals && c.expiry == RetrySchedule.exchangeLike.expiry)
        let o = OutboundSettings(heloName: c.hostname)
        #expect(c.mxPort == o.mxPort && c.destinationInitialConcurrency == o.initialWindow)
        #expect(c.destinationMaxConcurrency == o.maxWindow)
        let d = DNSResolverConfiguration(servers: [])
        #expect(.seconds(c.dnsTimeout) == d.timeout && c.dnsAttempts == d.attempts)
        #expect(c.healthPolicy == HealthDetectionPolicy())
    }

    @Test func limitsFillAdmissionLimitsDirectly() throws {
        var c = MailflowConfig()
        try c.decodeLimits(
            section(
                "max_connections: 7\nper_source: {max_connections: 3, messages_per_minute: 9}\ntarpit: 2s\n", "limits"))
        var expected = AdmissionLimits()
        expected.maxConnections = 7
        expected.perSourceMaxConnections = 3
        expected.perSourceMessagesPerMinute = 9
        #expect(c.admissionLimits == expected && c.tarpit == 2)
        var d = MailflowConfig()
        #expect(
            refusal { try d.decodeLimits(section("per_source:\n  max_connections: 0\n", "limits")) }
                == "line 2: limits.per_source.max_connections: must be between 1 and 1000000")
    }

    @Test func forestsReferToTheTenantsAlreadyDecoded() throws {
        var c = MailflowConfig()
        let forests = try #require(try Yams.compose(yaml: "- {name: F1, tenants: [example]}\n")?.sequence)
        try c.decodeForests(Array(forests), path: "forests")
        #expect(c.admissionLimits.forests.map(\.name) == ["F1"])
        #expect(c.admissionLimits.forests.first?.maxConnections == MailflowConfig.defaultForestMaxConnections)
        var d = MailflowConfig()
        d.tenants = []
        #expect(
            refusal { try d.decodeForests(Array(forests), path: "forests") }
                == "forests[0].tenants[0]: no tenant is named 'example'")
    }

    @Test func tenantsWithAConnector() throws {
        var c = MailflowConfig()
        let list = try #require(
            try Yams.compose(
                yaml: """
                    - name: contoso
                      domains: [Contoso.test]
                      outbound_connector: {smart_host: "127.0.0.1:2600", tls: disabled}
                    - name: fabrikam
                      domains: [fabrikam.test]
                    """)?.sequence)
        try c.decodeTenants(Array(list), path: "tenants")
        #expect(c.tenants.map(\.name) == ["contoso", "fabrikam"])
        #expect(c.connector(forSender: "alice@contoso.TEST")?.port == 2600)
        #expect(c.connector(forSender: "alice@contoso.TEST")?.tls == .disabled)
        #expect(c.connector(forSender: "bob@fabrikam.test") == nil)
        #expect(c.connector(forSender: "no-at-sign") == nil && c.connector(forSender: "") == nil)
    }

    @Test func healthWindowIsCountedInItsOwnBuckets() throws {
        var c = MailflowConfig()
        try c.decodeHealth(section("bucket: 10s\nwindow: 1m\n", "health"))
        #expect(c.healthPolicy.bucketSeconds == 10 && c.healthPolicy.windowBuckets == 6)
        var d = MailflowConfig()
        #expect(
            refusal { try d.decodeHealth(section("webhook: https://hooks.test/x\n", "health")) }
                .hasSuffix("health.webhook_secret: is required with webhook (the receiver checks the signature)"))
    }

    @Test func serverPathsAreTakenFromTheFilesFolder() throws {
        var c = MailflowConfig()
        try c.decodeServer(section("data: spool\nhostname: mx.test\n", "server"), baseDirectory: "/etc/mailflow")
        try c.decodeTLS(section("certificate: c.pem\nkey: /k.pem\n", "tls"), baseDirectory: "/etc/mailflow")
        #expect(c.dataDirectory == "/etc/mailflow/spool" && c.hostname == "mx.test")
        #expect(c.tlsCertificate == "/etc/mailflow/c.pem" && c.tlsKey == "/k.pem")
    }

    @Test func deliveryTimeoutsAdminTraceAndDNS() throws {
        var c = MailflowConfig()
        try c.decodeDelivery(section("retry_intervals: [30, 2m]\ndestination_concurrency: {maximum: 4}\n", "delivery"))
        try c.decodeTimeouts(section("command: 1m\nshutdown_grace: 5\n", "timeouts"))
        try c.decodeAdmin(section("enabled: false\n", "admin"))
        try c.decodeTrace(section("retention: 2d\n", "trace"))
        try c.decodeDNS(section("servers: [\"192.0.2.1\", \"[2001:db8::1]:5353\"]\nattempts: 3\n", "dns"))
        #expect(c.retryIntervals == [30, 120] && c.destinationMaxConcurrency == 4)
        #expect(c.commandTimeout == 60 && c.shutdownGrace == 5 && c.adminListen == nil && c.traceRetention == 172_800)
        #expect(try c.dnsServerAddresses().count == 2 && c.dnsAttempts == 3)
        var d = MailflowConfig()
        #expect(
            refusal { try d.decodeDNS(section("servers: [ns.example.test]\n", "dns")) }
                == "dns.servers[0]: 'ns.example.test' is not an IP address with an optional :port")
    }

    @Test func relayNetworksThatDoNotParseAreAnErrorEvenInCode() throws {
        var c = MailflowConfig()
        try c.decodeRelay(section("trusted_networks: [127.0.0.0/8]\n", "relay"))
        #expect(try c.trustedNetworkBlocks().contains("127.0.0.9"))
        c.trustedNetworks = ["127.0.0.0/8", "not-a-network"]
        #expect(
            refusal { _ = try c.trustedNetworkBlocks() }
                == "relay.trusted_networks: 'not-a-network' is not an IP address or CIDR block")
        #expect(c.openRelayNetworks.isEmpty)
        c.dnsServers = ["localhost"]
        #expect(
            refusal { _ = try c.dnsServerAddresses() }
                == "dns.servers[0]: 'localhost' is not an IP address with an optional :port")
    }
}
