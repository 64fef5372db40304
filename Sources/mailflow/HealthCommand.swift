import ArgumentParser
import Foundation
import ServiceHealth

/// `mailflow health`: service health (issues detected from mail-flow telemetry and user reports).
struct Health: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Service health: incidents and advisories detected from mail flow and user reports.",
        discussion: "See docs/health.md for the detection rules, thresholds, statuses and the replay format.",
        subcommands: [Replay.self, DetectSeries.self])

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
            data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                let bytes = raw.bindMemory(to: UInt8.self)
                var start = 0
                var lineNumber = 0
                while start < bytes.count {
                    var end = start
                    while end < bytes.count && bytes[end] != 0x0A { end += 1 }
                    lineNumber += 1
                    var line = bytes[start..<end]
                    if line.last == 0x0D { line = line.dropLast() }
                    start = end + 1
                    if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                    do {
                        let signal = try HealthSignalLine.parse(line)
                        if let l = last, signal.time < l {
                            failure =
                                "line \(lineNumber): time goes backwards (\(HealthSignalLine.formatTime(signal.time)))"
                            return
                        }
                        last = signal.time
                        monitor.ingest(signal)
                        lines += 1
                    } catch {
                        failure = "line \(lineNumber): \(error)"
                        return
                    }
                }
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
