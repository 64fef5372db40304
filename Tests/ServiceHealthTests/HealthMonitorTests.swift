import Foundation
import Testing

@testable import ServiceHealth

/// A small mail-flow world on a virtual clock: two regions, three forests, six tenants, many clients.
struct World {
    static let forests: [(forest: String, region: String, tenants: [String])] = [
        ("NAMPR01", "north-america", ["contoso", "fabrikam"]),
        ("NAMPR02", "north-america", ["adatum", "litware"]),
        ("EURPR01", "europe", ["tailspin", "wingtip"]),
    ]
    static let destinations = ["gmail.com", "outlook.com", "yahoo.com", "gmx.de"]
    static let forestText =
        "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel"

    var monitor = HealthMonitor()
    var rng = SplitMix(seed: 7)
    var changes: [HealthChange] = []

    /// `perMinute` inbound and outbound outcomes per forest for `minutes`, starting at `start`;
    /// `fault` decides a reply instead of the normal one.
    mutating func run(
        from start: Date, minutes: Int, perMinute: Int = 12,
        fault: (Date, MailDirection, String, String, String, String?) -> String? = { _, _, _, _, _, _ in nil }
    ) {
        for m in 0..<minutes {
            for i in 0..<perMinute {
                for (forest, region, tenants) in Self.forests {
                    let t = start.addingTimeInterval(Double(m * 60) + Double(i) * 60 / Double(perMinute))
                    let tenant = tenants[Int(rng.next() % UInt64(tenants.count))]
                    let client = "198.51.100.\(rng.next() % 200)"
                    let dest = Self.destinations[Int(rng.next() % UInt64(Self.destinations.count))]
                    let inboundNormal =
                        rng.next() % 100 == 0
                        ? "550 5.1.1 <x\(i)@\(tenant).test>: no such user"
                        : "250 2.0.0 Ok: queued as 5XQKPVG483DHYM\(i)"
                    let inbound = fault(t, .inbound, forest, region, tenant, client) ?? inboundNormal
                    if inbound != "drop" {
                        changes += monitor.ingest(
                            HealthSignal(
                                time: t,
                                kind: .smtp(
                                    SMTPOutcome(
                                        direction: .inbound, forest: forest, region: region, tenant: tenant,
                                        clientIP: client, reply: inbound))))
                    }
                    let outbound = fault(t, .outbound, forest, region, tenant, dest) ?? "250 2.0.0 OK id=\(i)"
                    changes += monitor.ingest(
                        HealthSignal(
                            time: t.addingTimeInterval(0.5),
                            kind: .smtp(
                                SMTPOutcome(
                                    direction: .outbound, forest: forest, region: region, tenant: tenant,
                                    destination: dest, reply: outbound, latencyMilliseconds: 800))))
                }
            }
        }
        changes += monitor.advance(to: start.addingTimeInterval(Double(minutes * 60)))
    }
}

/// A fixed pseudo-random sequence, so the world is the same every run.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

struct HealthMonitorTests {
    let day0 = HealthSignalLine.parseTime("2026-06-08T00:00:00Z")!

    @Test func aForestRefusingSessionsIsAnIncidentWithinTwoMinutesScopedToItsForestAndRegion() throws {
        var w = World()
        w.run(from: day0, minutes: 6 * 60)  // history
        #expect(w.monitor.issues.isEmpty)
        let onset = day0.addingTimeInterval(6 * 3600)
        var n = 0
        w.run(from: onset, minutes: 30) { _, dir, forest, _, _, _ in
            n += 1
            return dir == .inbound && forest == "NAMPR01" && n % 4 != 0 ? World.forestText : nil
        }
        let issue = try #require(w.monitor.issues.first)
        #expect(w.monitor.issues.count == 1)
        #expect(issue.classification == .incident)
        #expect(issue.origin == .mailflow)
        #expect(issue.status == .serviceInterruption)
        #expect(issue.scope.forests == ["NAMPR01"] && issue.scope.regions == ["north-america"])
        #expect(Set(issue.scope.tenants) == ["contoso", "fabrikam"])
        #expect(issue.signature == World.forestText)
        #expect(issue.detectedDateTime.timeIntervalSince(onset) <= 120)
        #expect(issue.id == "MF1")
        #expect(issue.posts.first?.description.contains("Preliminary root cause: Signature") == true)
        // The chart's series: every point above the anomaly threshold, which is above the baseline.
        let series = try #require(issue.evidence.series)
        #expect(series.count >= 2)
        #expect(series.allSatisfy { $0.share >= $0.threshold && $0.threshold > $0.baseline })
    }

    @Test func itRestoresByItselfOnceTheSignalStaysAtBaseline() throws {
        var w = World()
        w.run(from: day0, minutes: 4 * 60)
        let onset = day0.addingTimeInterval(4 * 3600)
        w.run(from: onset, minutes: 20) { _, dir, forest, _, _, _ in
            dir == .inbound && forest == "EURPR01" ? World.forestText : nil
        }
        w.run(from: onset.addingTimeInterval(20 * 60), minutes: 30)
        let issue = try #require(w.monitor.issues.first)
        #expect(issue.status == .serviceRestored)
        let end = try #require(issue.endDateTime)
        #expect(abs(end.timeIntervalSince(onset.addingTimeInterval(20 * 60))) <= 60)
        #expect(w.changes.map(\.kind).contains(.restored))
    }

    /// A monitor started again while an issue is open (a restart, or another cluster node taking
    /// the leadership over) carries the issue on and restores it once the fault ends, without a
    /// second issue.
    @Test func anIssueOpenAtARestartRestoresAfterIt() throws {
        var w = World()
        w.run(from: day0, minutes: 4 * 60)
        let onset = day0.addingTimeInterval(4 * 3600)
        w.run(from: onset, minutes: 10) { _, dir, forest, _, _, _ in
            dir == .inbound && forest == "EURPR01" ? World.forestText : nil
        }
        let open = try #require(w.monitor.issues.first)
        #expect(!open.isResolved)
        var restarted = World()
        restarted.monitor = HealthMonitor(existing: w.monitor.issues, nextNumber: 2, learntFrom: w.monitor)
        restarted.run(from: onset.addingTimeInterval(10 * 60), minutes: 5) { _, dir, forest, _, _, _ in
            dir == .inbound && forest == "EURPR01" ? World.forestText : nil
        }
        restarted.run(from: onset.addingTimeInterval(15 * 60), minutes: 30)
        #expect(restarted.monitor.issues.map(\.id) == [open.id], "the same issue, not a second one")
        let issue = try #require(restarted.monitor.issues.first)
        #expect(issue.status == .serviceRestored)
        let end = try #require(issue.endDateTime)
        #expect(abs(end.timeIntervalSince(onset.addingTimeInterval(15 * 60))) <= 60)
    }

    /// Restarted after the fault ended: the open issue restores after `restoreAfter` of quiet.
    @Test func anIssueOpenAtARestartAfterTheFaultEndedRestores() throws {
        var w = World()
        w.run(from: day0, minutes: 4 * 60)
        let onset = day0.addingTimeInterval(4 * 3600)
        w.run(from: onset, minutes: 10) { _, dir, forest, _, _, _ in
            dir == .inbound && forest == "EURPR01" ? World.forestText : nil
        }
        var restarted = World()
        restarted.monitor = HealthMonitor(existing: w.monitor.issues, nextNumber: 2, learntFrom: w.monitor)
        restarted.run(from: onset.addingTimeInterval(10 * 60), minutes: 30)
        let issue = try #require(restarted.monitor.issues.first)
        #expect(issue.status == .serviceRestored)
        #expect(restarted.changes.map(\.kind).contains(.restored))
    }

    @Test func aOneMinuteBlipOpensNothing() {
        var w = World()
        w.run(from: day0, minutes: 4 * 60)
        let onset = day0.addingTimeInterval(4 * 3600 + 10)
        w.run(from: day0.addingTimeInterval(4 * 3600), minutes: 20) { t, dir, forest, _, _, _ in
            dir == .inbound && forest == "NAMPR01" && t >= onset && t < onset.addingTimeInterval(60)
                ? World.forestText : nil
        }
        #expect(w.monitor.issues.isEmpty)
    }

    @Test func oneMisbehavingClientIsNotAnIncident() {
        var w = World()
        w.run(from: day0, minutes: 4 * 60)
        var n = 0
        w.run(from: day0.addingTimeInterval(4 * 3600), minutes: 60) { _, dir, forest, _, _, client in
            n += 1
            // Every third inbound session of NAMPR01 is the same client, refused by its rate limit.
            guard dir == .inbound, forest == "NAMPR01", n % 3 == 0 else { return nil }
            _ = client
            return nil
        }
        // The same, with the refusals: one client only.
        var w2 = World()
        w2.run(from: day0, minutes: 4 * 60)
        for m in 0..<60 {
            for s in 0..<30 {
                let t = day0.addingTimeInterval(Double(4 * 3600 + m * 60 + s * 2))
                w2.monitor.ingest(
                    HealthSignal(
                        time: t,
                        kind: .smtp(
                            SMTPOutcome(
                                direction: .inbound, forest: "NAMPR01", region: "north-america", tenant: "contoso",
                                clientIP: "203.0.113.9",
                                reply: "421 4.7.0 Connection rate limit exceeded for 203.0.113.9, try again later"))))
            }
        }
        w2.monitor.advance(to: day0.addingTimeInterval(5 * 3600 + 60))
        #expect(w2.monitor.issues.isEmpty)
    }

    @Test func oneDestinationDeferringIsARemoteProviderAdvisory() throws {
        var w = World()
        w.run(from: day0, minutes: 4 * 60)
        w.run(from: day0.addingTimeInterval(4 * 3600), minutes: 30) { _, dir, _, _, _, dest in
            dir == .outbound && dest == "outlook.com"
                ? "451 4.7.500 Server busy. Please try again later. [BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]"
                : nil
        }
        let issue = try #require(w.monitor.issues.first)
        #expect(w.monitor.issues.count == 1)
        #expect(issue.classification == .advisory && issue.origin == .remoteProvider)
        #expect(issue.scope.destinations == ["outlook.com"])
        #expect(issue.signature == "451 4.7.500 Server busy. Please try again later. [<host>]")
    }

    @Test func mailThatStopsWithoutErrorsIsAVolumeIncidentOnceAWeekIsKnown() throws {
        var policy = HealthDetectionPolicy()
        policy.volumeMinimumExpected = 10
        var w = World()
        w.monitor = HealthMonitor(policy: policy)
        // Eight days of history: every hour of the week seen once.
        w.run(from: day0, minutes: 8 * 1440, perMinute: 4)
        #expect(w.monitor.issues.isEmpty)
        let onset = day0.addingTimeInterval(8 * 86400)
        // NAMPR02's inbound mail stops: no refusals, nothing at all.
        w.run(from: onset, minutes: 20, perMinute: 4) { _, dir, forest, _, _, _ in
            dir == .inbound && forest == "NAMPR02" ? "drop" : nil
        }
        let issue = try #require(w.monitor.issues.first)
        #expect(w.monitor.issues.count == 1)
        #expect(issue.signature == "volume: traffic far below its usual level")
        #expect(issue.classification == .incident && issue.origin == .mailflow)
        #expect(issue.scope.forests == ["NAMPR02"] && issue.scope.direction == .inbound)
        #expect(issue.detectedDateTime.timeIntervalSince(onset) <= 15 * 60)
    }

    @Test func aColdStartWithItsUsualErrorsPagesNoOne() {
        var w = World()
        w.run(from: day0, minutes: 3 * 60)
        #expect(w.monitor.issues.isEmpty)
    }

    @Test func aSurgeOfReportsJoinsTheMatchingIssue() throws {
        var w = World()
        w.run(from: day0, minutes: 4 * 60)
        let onset = day0.addingTimeInterval(4 * 3600)
        w.run(from: onset, minutes: 10) { _, dir, forest, _, _, _ in
            dir == .inbound && forest == "NAMPR02" ? World.forestText : nil
        }
        for (i, tenant) in ["adatum", "litware", "contoso", "fabrikam"].enumerated() {
            w.monitor.ingest(
                HealthSignal(
                    time: onset.addingTimeInterval(600 + Double(i)),
                    kind: .report(
                        ProblemReport(tenant: tenant, region: "north-america", text: "mail to us bounces"))))
        }
        let issue = try #require(w.monitor.issues.first)
        #expect(w.monitor.issues.count == 1)
        #expect(issue.reportsByRegion == ["north-america": 4])
    }

    @Test func aSurgeOfReportsAloneOpensAnAdvisory() throws {
        var w = World()
        w.run(from: day0, minutes: 60)
        let t = day0.addingTimeInterval(3600)
        for (i, tenant) in ["tailspin", "wingtip", "contoso", "adatum", "litware"].enumerated() {
            w.monitor.ingest(
                HealthSignal(
                    time: t.addingTimeInterval(Double(i * 20)),
                    kind: .report(
                        ProblemReport(
                            tenant: tenant, region: "europe", text: "can't send",
                            errorText: "451 4.4.0 DNS query failed"))))
        }
        w.monitor.advance(to: t.addingTimeInterval(300))
        let issue = try #require(w.monitor.issues.first)
        #expect(issue.origin == .customer && issue.classification == .advisory && issue.status == .investigating)
        #expect(issue.scope.regions == ["europe"] && issue.reports == 5)
    }
}

struct ErrorSignatureTests {
    @Test(arguments: [
        (
            "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel",
            "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel"
        ),
        ("250 2.0.0 Ok: queued as 5XQKPVG483DHYM44", "250 2.0.0 Ok: queued as <id>"),
        ("550 5.1.1 <bob@contoso.test>: Recipient address rejected", "550 5.1.1 <addr>: Recipient address rejected"),
        (
            "421 4.7.0 Too many connections from 203.0.113.9, try later",
            "421 4.7.0 Too many connections from <ip>, try later"
        ),
        (
            "451 4.7.500 Server busy [BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]",
            "451 4.7.500 Server busy [<host>]"
        ),
        (
            "Connection was closed abruptly (SuspiciousRemoteServerError)",
            "Connection was closed abruptly (SuspiciousRemoteServerError)"
        ),
        ("452 4.5.3 Too many recipients (limit 100)", "452 4.5.3 Too many recipients (limit <n>)"),
        ("421   4.4.2   mx.test   Timeout", "421 4.4.2 <host> Timeout"),
        ("554 5.7.1 [2001:db8::1] blocked", "554 5.7.1 [<ip>] blocked"),
    ])
    func normalises(_ reply: String, _ expected: String) {
        #expect(ErrorSignature(reply).text == expected)
    }

    @Test func failuresAreEverythingButTwoAndThreeHundreds() {
        #expect(!ErrorSignature.isFailure("250 ok"))
        #expect(!ErrorSignature.isFailure("354 go"))
        #expect(ErrorSignature.isFailure("421 4.3.2 x"))
        #expect(ErrorSignature.isFailure("Connection refused"))
    }
}

struct HealthSignalLineTests {
    @Test func roundTrips() throws {
        let t = try #require(HealthSignalLine.parseTime("2026-06-10T08:00:03.250Z"))
        let signals = [
            HealthSignal(
                time: t,
                kind: .smtp(
                    SMTPOutcome(
                        direction: .outbound, forest: "NAMPR01", region: "north-america", tenant: "contoso",
                        destination: "gmail.com", reply: "451 \"quoted\" \\ back\nslash", latencyMilliseconds: 1200))),
            HealthSignal(
                time: t,
                kind: .report(
                    ProblemReport(tenant: "contoso", region: "europe", text: "ünïcode ✓", errorText: "421 4.3.2"))),
        ]
        for s in signals {
            let line = HealthSignalLine.encode(s)
            #expect(try HealthSignalLine.parse(Array(line.utf8)) == s)
        }
    }

    @Test(arguments: [
        "2026-06-10T08:00:03Z", "2026-06-10T10:00:03+02:00", "2026-06-10T03:30:03-04:30", "2026-06-10T08:00:03.000Z",
    ])
    func parsesRFC3339(_ text: String) {
        #expect(HealthSignalLine.parseTime(text) == HealthSignalLine.parseTime("2026-06-10T08:00:03Z"))
        #expect(HealthSignalLine.parseTime(text)?.timeIntervalSince1970 == 1_781_078_403)
    }

    @Test(arguments: [
        "", "{", "{\"time\":\"2026-06-10T08:00:03Z\"}", "{\"time\":\"yesterday\",\"kind\":\"smtp\"}",
        "{\"time\":\"2026-06-10T08:00:03Z\",\"kind\":\"smtp\",\"direction\":\"sideways\",\"reply\":\"250\"}",
        "{\"time\":\"2026-06-10T08:00:03Z\",\"kind\":\"smtp\",\"direction\":\"inbound\"}",
        "{\"time\":\"2026-06-10T08:00:03Z\",\"kind\":\"smtp\",\"a\":{\"nested\":1}}",
        "{\"time\":\"2026-06-10T08:00:03Z\",\"kind\":\"report\"} trailing",
    ])
    func refusesBadLines(_ line: String) {
        #expect(throws: HealthSignalLine.ParseError.self) { try HealthSignalLine.parse(Array(line.utf8)) }
    }
}

struct SeriesDetectorTests {
    @Test func findsAStepAndStaysQuietOnNoise() {
        var rng = SplitMix(seed: 3)
        var values = (0..<2000).map { _ in 50 + Double(rng.next() % 100) / 10 }
        for i in 1500..<1600 { values[i] += 200 }
        let alerts = SeriesDetector.sized(for: values.count).alerts(values)
        #expect(alerts.count == 1)
        #expect((1500..<1510).contains(alerts.first?.index ?? -1))
    }
}
