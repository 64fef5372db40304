import ArgumentParser
import Cluster
import Dispatch
import Foundation
import Ingress
import Logging
import MailQueue
import MailflowApp
import NIOPosix
import ServiceHealth
import Synchronization

/// `mailflow health`: service health (issues detected from mail-flow telemetry and user reports).
struct Health: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Service health: incidents and advisories detected from mail flow and user reports.",
        discussion: "See docs/health.md for the detection rules, thresholds, statuses and the replay format.",
        subcommands: [
            Overview.self, Issues.self, Show.self, Report.self, Post.self, Status.self, Review.self, Export.self,
            Replay.self, DetectSeries.self,
        ],
        defaultSubcommand: Overview.self)

    /// Where the issues, reports and actions are: with `storage.postgres`, the shared queue's
    /// database (the cluster's service health, whichever node leads it); otherwise this node's
    /// queue database.
    static func store(_ options: ConfigOption) throws -> any HealthStore {
        let config = try options.load()
        guard let settings = config.sharedQueue else { return try Queue.open(options) }
        return SharedHealthStore(
            settings: settings, group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "mailflow.health"),
            timeout: max(settings.timeout, 10), keepConnection: false)
    }

    static func issues(_ options: ConfigOption) throws -> [HealthIssue] {
        try HealthService.storedIssues(store(options))
    }

    static func issue(_ id: String, _ options: ConfigOption) throws -> HealthIssue {
        guard let i = try issues(options).first(where: { $0.id.caseInsensitiveCompare(id) == .orderedSame }) else {
            throw FailureMessage(text: "no service-health issue \(id)")
        }
        return i
    }

    static func printJSON(_ docs: [HealthIssueDocument]) throws {
        print(String(decoding: try HealthIssueDocument.encode(docs), as: UTF8.self))
    }

    struct Overview: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Each service's status (the worst open issue, or serviceOperational) and the open issues.")
        @OptionGroup var options: ConfigOption

        func run() throws {
            let all = try Health.issues(options)
            let open = all.filter { !$0.isResolved }
            let services = ["Inbound mail flow", "Outbound mail flow"]
            printTable(
                ["SERVICE", "STATUS", "OPEN ISSUES"],
                services.map { s in
                    let mine = open.filter { $0.service == s }
                    let worst = mine.map(\.status).max { Health.rank($0) < Health.rank($1) }
                    return [s, worst?.rawValue ?? "serviceOperational", mine.map(\.id).joined(separator: ", ")]
                })
            if !open.isEmpty {
                print("")
                printIssues(open.map(HealthIssueDocument.init))
            }
        }
    }

    /// How bad a status is, for the overview's worst-of.
    static func rank(_ s: IssueStatus) -> Int {
        switch s {
        case .serviceInterruption: return 5
        case .serviceDegradation: return 4
        case .investigating: return 3
        case .restoringService: return 2
        case .extendedRecovery: return 1
        default: return 0
        }
    }

    struct Issues: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List service-health issues, open ones by default.")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Include ended issues (restored, false positive, reviewed).") var all = false
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() throws {
            let docs = try Health.issues(options).filter { all || !$0.isResolved }.reversed().map(
                HealthIssueDocument.init)
            if json { return try Health.printJSON(Array(docs)) }
            printIssues(Array(docs))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one issue: fields, scope, evidence and posts.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The issue ID (MF...).") var id: String
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let d = HealthIssueDocument(try Health.issue(id, options))
            if json { return try Health.printJSON([d]) }
            print("\(d.id)  \(shown(d.title))")
            print(
                "Classification: \(d.classification)    Status: \(d.status)    Origin: \(d.origin)    Service: \(d.service)"
            )
            print("Start: \(d.startDateTime)    Detected: \(d.detectedDateTime)    End: \(d.endDateTime ?? "-")")
            print("Signature: \(shown(d.signature))")
            print("User impact: \(shown(d.impactDescription))")
            let s = d.scope
            let scope = IssueScope(
                direction: MailDirection(rawValue: s.direction) ?? .inbound, forests: s.forests, regions: s.regions,
                tenants: s.tenants, destinations: s.destinations, peakFailureShare: s.peakFailureShare)
            print("Scope: \(s.direction); \(shown(HealthMonitor.scopeText(scope)))")
            print(
                "Evidence: \(d.evidence.failures) failures in \(d.evidence.total) outcomes since \(d.evidence.firstSeen); usual share \(String(format: "%.1f", d.evidence.baselineShare * 100))%"
                    + (d.evidence.relatedSignatures.isEmpty
                        ? "" : "; related: \(shown(d.evidence.relatedSignatures.joined(separator: "; ")))"))
            print(
                "Reports: \(d.reports)"
                    + (d.reportsByRegion.isEmpty
                        ? ""
                        : " ("
                            + d.reportsByRegion.sorted { $0.key < $1.key }.map { "\(shown($0.key)) \($0.value)" }
                            .joined(separator: ", ") + ")"))
            for p in d.posts.reversed() {
                print("\n--- \(p.createdDateTime) \(p.postType) by \(shown(p.author))")
                for line in p.description.split(separator: "\n", omittingEmptySubsequences: false) {
                    print(shown(String(line)))
                }
            }
        }
    }

    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Report a problem for a tenant (as a tenant admin would with \"Report an issue\").")
        @OptionGroup var options: ConfigOption
        @Option(help: "The tenant reporting.") var tenant: String
        @Option(help: "The region the users are in.") var region: String
        @Option(help: "The error text users see, if any (matched to signatures).") var error: String?
        @Option(help: "Who reports (default: $USER).") var reporter: String?
        @Argument(help: "What is wrong, in the user's words.") var text: String

        func validate() throws {
            guard !text.trimmingCharacters(in: .whitespaces).isEmpty, text.count <= 2000 else {
                throw ValidationError("the text must be 1 to 2,000 characters")
            }
            guard !tenant.isEmpty, tenant.count <= 100, !region.isEmpty, region.count <= 100 else {
                throw ValidationError("--tenant and --region must be 1 to 100 characters")
            }
        }

        func run() throws {
            let store = try Health.store(options)
            let config = try options.load()
            guard config.tenants.contains(where: { $0.name == tenant }) else {
                throw FailureMessage(text: "no tenant \(tenant) in the config")
            }
            let id = try store.addProblemReport(
                time: Date(), tenant: tenant, region: region, text: text, error: error,
                reporter: reporter ?? ProcessInfo.processInfo.environment["USER"] ?? "cli")
            print("report \(id) recorded for \(tenant) in \(region); the running server reads it within seconds")
        }
    }

    /// Queues an admin action for the running server (the only writer of issues; the health leader
    /// in a cluster) and waits for it. `HealthActionQueue` checks it first with the server's rules,
    /// for a precise refusal.
    static func act(_ options: ConfigOption, _ id: String, _ kind: String, _ value: String, _ actor: String?) throws {
        let issue = try Health.issue(id, options)
        let action: HealthAdminAction
        switch kind {
        case "post": action = .post(value)
        case "review": action = .postIncidentReview(value.isEmpty ? HealthMonitor.draftReview(issue) : value)
        default:
            guard let s = IssueStatus(rawValue: value) else {
                throw FailureMessage(
                    text:
                        "unknown status \(value) (one of \(IssueStatus.allCases.map(\.rawValue).joined(separator: ", ")))"
                )
            }
            action = .status(s)
        }
        let who = actor ?? ProcessInfo.processInfo.environment["USER"] ?? "cli"
        let outcome: HealthActionQueue.Outcome
        do {
            outcome = try HealthActionQueue(store: Health.store(options)).queue(action, on: issue, by: who)
        } catch let e as HealthActionError {
            throw FailureMessage(text: "\(issue.id): \(e)")
        }
        switch outcome {
        case .applied: print("\(issue.id): \(kind) applied")
        case .refused: throw FailureMessage(text: "\(issue.id): the server refused the \(kind) (see its log)")
        case .waiting:
            throw FailureMessage(
                text:
                    "\(issue.id): the \(kind) was not applied within 15 s and is withdrawn: is the server (with service health on) running?"
            )
        }
    }

    struct Post: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a post (an update) to an issue.")
        @OptionGroup var options: ConfigOption
        @Option(help: "Who writes (default: $USER).") var actor: String?
        @Argument(help: "The issue ID.") var id: String
        @Argument(help: "The text of the post.") var text: String
        func run() throws { try Health.act(options, id, "post", text, actor) }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change an issue's status (e.g. extendedRecovery, serviceRestored, falsePositive).")
        @OptionGroup var options: ConfigOption
        @Option(help: "Who acts (default: $USER).") var actor: String?
        @Argument(help: "The issue ID.") var id: String
        @Argument(help: "The new status.") var status: String
        func run() throws { try Health.act(options, id, "status", status, actor) }
    }

    struct Review: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Publish the post-incident review of a restored issue (without text: the drafted timeline and evidence)."
        )
        @OptionGroup var options: ConfigOption
        @Option(help: "Who publishes (default: $USER).") var actor: String?
        @Argument(help: "The issue ID.") var id: String
        @Argument(help: "The review text (default: a draft from the issue's record).") var text: String = ""
        func run() throws { try Health.act(options, id, "review", text, actor) }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the trace stream (and problem reports) as the JSON Lines that `health replay` reads.")
        @OptionGroup var options: ConfigOption
        @Option(help: "From (ISO 8601, or a duration ago such as 24h).") var since: String = "24h"
        @Option(help: "Until (ISO 8601, or a duration ago).") var until: String?

        func run() throws {
            let from = try Trace.time(since)
            let to = try until.map(Trace.time) ?? Date()
            let config = try options.load()
            let admission = AdmissionControl(limits: config.admissionLimits)
            let store = try Health.store(options)
            var signals: [HealthSignal] = []
            // In write order (about time order): read to the end, keeping the window.
            var position = try store.healthTraceStart(atOrAfter: from)
            while true {
                let batch = try store.healthTrace(from: position, limit: 50_000)
                for r in batch.rows where r.time >= from && r.time <= to {
                    let s = HealthTraceMapping.signal(r) { tenant in
                        let f = admission.forest(forTenant: tenant)
                        return TenantPlacement(forest: f.name, region: f.region)
                    }
                    if let s { signals.append(s) }
                }
                position = batch.next
                if !batch.more { break }
            }
            for r in try store.problemReports(from: 0, limit: 1_000_000).reports where r.time >= from && r.time <= to {
                signals.append(HealthTraceMapping.signal(r))
            }
            signals.sort { $0.time < $1.time }
            for s in signals { print(HealthSignalLine.encode(s)) }
        }
    }

    struct Replay: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the detector over a JSON Lines file on a virtual clock and print the issues it would open.",
            discussion: """
                Each line: {"time": RFC 3339, "kind": "smtp"|"report", ...}; for smtp: direction (inbound|outbound), \
                forest, region, tenant, client_ip (inbound), destination (outbound), reply, optional latency_ms; for \
                report: tenant, region, text, optional error. Lines in time order. Status is as at the end of the file.
                """)
        @Argument(help: "The JSON Lines file ('-' for standard input).") var file: String
        @Flag(help: "Print the issues as JSON.") var json = false
        @Flag(help: "Print how many lines were read, and how fast, on stderr.") var stats = false

        func run() throws {
            let data: Data
            if file == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard let d = try? Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped) else {
                    throw FailureMessage(text: "\(file): cannot read the file")
                }
                data = d
            }
            let started = Date()
            var monitor = HealthMonitor()
            var lines = 0
            var last: Date?
            var failure: String?
            // Parsing is a third of the work: the next block is parsed on another thread while the
            // monitor takes this one.
            var block = ReplayBlock.parse(data, from: 0, firstLine: 1)
            blocks: while true {
                let upcoming = ReplaySlot()
                let group = DispatchGroup()
                if block.next < data.count {
                    let (from, line) = (block.next, block.nextLine)
                    DispatchQueue.global().async(group: group) {
                        upcoming.set(ReplayBlock.parse(data, from: from, firstLine: line))
                    }
                }
                for (lineNumber, signal) in block.signals {
                    if let l = last, signal.time < l {
                        failure =
                            "line \(lineNumber): time goes backwards (\(HealthSignalLine.formatTime(signal.time)))"
                        break blocks
                    }
                    last = signal.time
                    monitor.ingest(signal)
                    lines += 1
                }
                if let e = block.error {
                    failure = e
                    break
                }
                group.wait()
                guard let next = upcoming.take() else { break }
                block = next
            }
            if let failure { throw FailureMessage(text: "\(file): \(failure)") }
            // Close the last bucket so the file's final minute counts.
            if let last { monitor.advance(to: last.addingTimeInterval(monitor.policy.bucketSeconds)) }
            let elapsed = Date().timeIntervalSince(started)
            if stats {
                FileHandle.standardError.write(
                    Data(
                        "mailflow: \(lines) lines in \(String(format: "%.2f", elapsed)) s (\(Int(Double(lines) / max(elapsed, 1e-6))) lines/s), \(monitor.issues.count) issue(s)\n"
                            .utf8))
            }
            let docs = monitor.issues.map(HealthIssueDocument.init)
            if json {
                print(String(decoding: try HealthIssueDocument.encode(docs), as: UTF8.self))
                return
            }
            printIssues(docs)
        }
    }

    struct DetectSeries: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "detect-series",
            abstract: "Run the detector core on a timestamp,value CSV (NAB format) and print its alerts.")
        @Argument(help: "The CSV file (header line, then timestamp,value).") var file: String
        @Flag(help: "Print the alerts as JSON.") var json = false

        func run() throws {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw FailureMessage(text: "\(file): cannot read the file")
            }
            var stamps: [String] = []
            var values: [Double] = []
            for (n, line) in text.split(whereSeparator: \.isNewline).enumerated() where n > 0 {
                let parts = line.split(separator: ",", maxSplits: 1)
                guard parts.count == 2, let v = Double(parts[1].trimmingCharacters(in: .whitespaces)) else {
                    throw FailureMessage(text: "\(file): line \(n + 1): expected timestamp,value")
                }
                stamps.append(String(parts[0]))
                values.append(v)
            }
            let alerts = SeriesDetector.sized(for: values.count).alerts(values)
            if json {
                struct Alert: Encodable {
                    var timestamp: String
                    var score: Double
                }
                let enc = JSONEncoder()
                enc.outputFormatting = [.sortedKeys]
                print(
                    String(
                        decoding: try enc.encode(alerts.map { Alert(timestamp: stamps[$0.index], score: 1.0) }),
                        as: UTF8.self))
                return
            }
            for a in alerts { print("\(stamps[a.index])  z=\(String(format: "%.1f", a.score))") }
            print("\(alerts.count) alert(s) in \(values.count) points")
        }
    }
}

/// Up to 20,000 parsed lines of a replay file, where the next block starts, or the error that
/// stopped parsing (with its line number).
struct ReplayBlock: Sendable {
    var signals: [(Int, HealthSignal)] = []
    var next = 0
    var nextLine = 1
    var error: String?

    static func parse(_ data: Data, from start: Int, firstLine: Int, lines limit: Int = 20_000) -> ReplayBlock {
        var out = ReplayBlock()
        out.signals.reserveCapacity(limit)
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            var position = start
            var lineNumber = firstLine
            while position < bytes.count && out.signals.count < limit {
                var end = position
                while end < bytes.count && bytes[end] != 0x0A { end += 1 }
                var line = bytes[position..<end]
                if line.last == 0x0D { line = line.dropLast() }
                position = end + 1
                defer { lineNumber += 1 }
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                do {
                    out.signals.append((lineNumber, try HealthSignalLine.parse(line)))
                } catch {
                    out.error = "line \(lineNumber): \(error)"
                    return
                }
            }
            out.next = position
            out.nextLine = lineNumber
        }
        return out
    }
}

/// Hands one parsed block from the parsing thread to the replay loop.
final class ReplaySlot: Sendable {
    let value = Mutex<ReplayBlock?>(nil)
    func set(_ b: ReplayBlock) { value.withLock { $0 = b } }
    func take() -> ReplayBlock? {
        value.withLock { v in
            defer { v = nil }
            return v
        }
    }
}

/// The issue table of `health issues` and `health replay`.
func printIssues(_ docs: [HealthIssueDocument]) {
    printTable(
        ["ID", "CLASSIFICATION", "STATUS", "ORIGIN", "START", "DETECTED", "END", "SCOPE", "SIGNATURE"],
        docs.map { d in
            let scope = [
                d.scope.direction, d.scope.forests.joined(separator: ","), d.scope.regions.joined(separator: ","),
                d.scope.destinations.joined(separator: ","),
            ].filter { !$0.isEmpty }.joined(separator: " ")
            return [
                d.id, d.classification, d.status, d.origin, d.startDateTime, d.detectedDateTime, d.endDateTime ?? "-",
                scope, String(d.signature.prefix(70)),
            ]
        })
    print("\(docs.count) issue(s)")
}
