import DNSClient
import Synchronization
import Testing

@testable import Diagnostics

/// A host prober that records what it was asked and answers at once.
final class FakeProber: HostProbing {
    let asked = Mutex<[String]>([])

    func probe(host: String, address: String, port: Int, options: ProbeOptions) async -> HostProbeResult {
        asked.withLock { $0.append("\(host) \(address):\(port)") }
        return HostProbeResult(
            findings: [
                CheckFinding(
                    category: .smtp, subject: "\(host) [\(address)]:\(port)", check: "smtp.banner", severity: .ok,
                    summary: "220")
            ], starttlsOffered: true)
    }
}

@Suite struct DomainCheckTests {
    static let options = ProbeOptions(port: 2525, probeTimeout: .seconds(1))

    static func run(_ dns: FakeDNS, _ domain: String = "example.org") async -> ([CheckFinding], [String]) {
        let prober = FakeProber()
        let findings = await DomainCheck(dns: dns, prober: prober, options: options).mailExchangers(domain).0
        let all = await DomainCheck(dns: dns, prober: prober, options: options).run(domain: domain)
        _ = findings
        return (all, prober.asked.withLock { $0 }.sorted())
    }

    @Test func twoMXProbedEachAddress() async {
        let dns = FakeDNS(
            a: ["mx1.example.org": ["192.0.2.1"], "mx2.example.org": ["192.0.2.2", "192.0.2.3"]],
            mx: ["example.org": [(20, "mx2.example.org"), (10, "mx1.example.org")]])
        let (findings, asked) = await Self.run(dns)
        #expect(findings.severity("mx.records") == .ok)
        #expect(findings.first { $0.check == "mx.records" }?.detail == "10 mx1.example.org\n20 mx2.example.org")
        #expect(
            asked == [
                "mx1.example.org 192.0.2.1:2525", "mx2.example.org 192.0.2.2:2525", "mx2.example.org 192.0.2.3:2525",
            ])
        #expect(findings.filter { $0.check == "smtp.banner" }.count == 3)
        #expect(findings.filter { $0.check == "dane.tlsa" }.count == 2)
    }

    @Test func nullMX() async {
        let (findings, asked) = await Self.run(FakeDNS(mx: ["example.org": [(0, ".")]]))
        #expect(findings.severity("mx.null") == .info)
        #expect(asked.isEmpty)
        let (mixed, _) = await Self.run(FakeDNS(mx: ["example.org": [(0, "."), (10, "mx.example.org")]]))
        #expect(mixed.severity("mx.null-invalid") == .failure)
    }

    @Test func implicitMX() async {
        var dns = FakeDNS(a: ["example.org": ["192.0.2.9"]])
        dns.existing = ["example.org"]
        let (findings, asked) = await Self.run(dns)
        #expect(findings.severity("mx.implicit") == .warning)
        #expect(asked == ["example.org 192.0.2.9:2525"])
    }

    @Test func missingDomainAndAddresslessMX() async {
        let (gone, _) = await Self.run(FakeDNS())
        #expect(gone.severity("mx.domain") == .failure)
        let (noAddress, asked) = await Self.run(FakeDNS(mx: ["example.org": [(10, "mx.example.org")]]))
        #expect(noAddress.severity("address.none") == .failure)
        #expect(asked.isEmpty)
    }

    @Test func boundedParallelism() async {
        var a: [String: [String]] = [:]
        var mx: [(UInt16, String)] = []
        for i in 1...6 {
            a["mx\(i).example.org"] = ["192.0.2.\(i)"]
            mx.append((UInt16(i), "mx\(i).example.org"))
        }
        var options = Self.options
        options.maxParallelProbes = 2
        let prober = FakeProber()
        _ = await DomainCheck(dns: FakeDNS(a: a, mx: ["example.org": mx]), prober: prober, options: options)
            .run(domain: "example.org")
        #expect(prober.asked.withLock { $0.count } == 6)
    }
}
