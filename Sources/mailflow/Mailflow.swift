import AdminServer
import ArgumentParser
import Delivery
import Foundation
import Ingress
import Logging
import MailQueue
import MailflowApp
import Metrics
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// The `mailflow` command line.
@main
struct Mailflow: AsyncParsableCommand {
    static let version = MailflowService.version
    static let configuration = CommandConfiguration(
        commandName: "mailflow",
        abstract: "Mailflow: an ESMTP gateway, durable queue and delivery pipeline.",
        subcommands: [
            Serve.self, Config.self, Queue.self, Trace.self, Limits.self, Health.self, Admin.self, CheckCommand.self,
            DKIMCommand.self, SPFCommand.self, DMARCCommand.self, UserCommand.self, ClusterCommand.self, Version.self,
        ])
}

struct ConfigOption: ParsableArguments {
    @Option(
        name: .shortAndLong, help: "YAML config file (see docs/configuration.md). Without it, the embedded defaults.")
    var config: String?

    func load() throws -> MailflowConfig {
        guard let config else { return MailflowConfig() }
        do {
            return try MailflowConfig.load(file: config)
        } catch let e as MailflowConfig.ConfigError {
            // One line, exit 1: a config problem is not a usage problem.
            throw FailureMessage(text: "\(config): \(e)")
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the SMTP server, queue, delivery and the admin listener until SIGTERM or SIGINT.",
        discussion:
            "The admin listener (admin.listen, default 127.0.0.1:8025) serves the JSON API, /metrics and the web admin center; see docs/admin.md."
    )

    @OptionGroup var options: ConfigOption

    func run() async throws {
        let config = try options.load()
        let level = Logger.Level(rawValue: config.logLevel) ?? .info
        let json = config.logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var h = JSONLogHandler(label: label)
                h.logLevel = level
                return h
            }
            var h = TextLogHandler(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "mailflow")
        let metrics = MetricsExporter()
        MetricsSystem.bootstrap(metrics.factory)
        let service: MailflowService
        do {
            service = try MailflowService(config: config, logger: logger, metrics: metrics)
        } catch {
            throw CleanExit.message("mailflow: \(error)").asFailure()
        }
        // SIGHUP is trapped before the ports are printed: a reload sent as soon as the server says it
        // listens must reach it, not kill it (the default action) or be lost.
        let hangups = options.config == nil ? nil : await UnixSignalsSequence(trapping: .sighup)
        // SIGTERM and SIGINT likewise: one that arrives after the ports are bound but before the
        // service group below has set up its own handlers must shut down gracefully, not kill.
        let earlyStops = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let addresses = try await service.start()
        for a in addresses { logger.notice("listening for SMTP on \(a)") }
        let submission = try await service.startSubmission()
        let admin = try await service.startAdmin()
        // Tests and scripts read these lines to find ephemeral ports.
        print(
            "mailflow: listening on \(addresses.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" }.joined(separator: " "))"
        )
        for (label, list) in [
            ("submission", submission.starttls), ("submission (implicit TLS)", submission.implicitTLS),
        ]
        where !list.isEmpty {
            print(
                "mailflow: \(label) on \(list.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" }.joined(separator: " "))")
        }
        if let admin {
            let host = admin.ipAddress.map { $0.contains(":") ? "[\($0)]" : $0 } ?? "?"
            let url = "\(service.adminScheme)://\(host):\(admin.port ?? 0)/"
            logger.notice("admin center on \(url)")
            print("mailflow: admin center on \(url)")
            if (try? service.store.adminTokens().isEmpty) ?? false {
                print("mailflow: no admin tokens yet: create one with `mailflow admin token add NAME`")
            }
        }
        fflush(nil)
        // SIGTERM/SIGINT: a graceful shutdown of the group (MailflowService.run stops in order);
        // SIGHUP: the config file read again.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: service)]
        if let file = options.config {
            services.append(
                .init(service: ConfigReloadOnHangup(file: file, signals: hangups, service: service, logger: logger)))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask {
                for await _ in earlyStops {
                    await group.triggerGracefulShutdown()
                    return
                }
            }
            try await group.run()
            tasks.cancelAll()
        }
    }
}

struct Trace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Message trace: one row per recipient with its status and event timeline.",
        discussion:
            "Every filter is optional and they combine. Times: ISO 8601 or a duration back from now (30m, 24h, 7d).")
    @OptionGroup var options: ConfigOption
    @Option(help: "Sender address (substring).") var sender: String?
    @Option(help: "Recipient address (substring).") var recipient: String?
    @Option(name: .customLong("message-id"), help: "Message-ID header (substring).") var messageID: String?
    @Option(name: .customLong("queue-id"), help: "Queue ID.") var queueID: String?
    @Option(help: "pending, held, delivered or failed.") var status: String?
    @Option(name: .customLong("client-ip"), help: "The sending client's IP address.") var clientIP: String?
    @Option(help: "Tenant name.") var tenant: String?
    @Option(help: "inbound (local mailboxes) or outbound (relayed).") var direction: String?
    @Option(help: "Received at or after (ISO 8601 or e.g. 24h ago as 24h).") var since: String?
    @Option(help: "Received at or before (ISO 8601 or a duration back from now).") var until: String?
    @Option(help: "SPF result at receipt: pass, fail, softfail, neutral, none, temperror, permerror.") var spf: String?
    @Option(help: "DKIM result at receipt: pass, fail, neutral, policy, none, temperror, permerror.") var dkim: String?
    @Option(help: "DMARC result at receipt: pass, fail, none, temperror, permerror.") var dmarc: String?
    @Option(help: "At most this many rows.") var limit = 100
    @Flag(help: "Print JSON instead of a table.") var json = false
    @Flag(help: "Show each row's event timeline.") var events = false

    func validate() throws {
        _ = try query()
    }

    /// The options as a trace query, checked by the admin API's rules (`TraceQuery(parameters:)`).
    func query() throws -> SQLiteQueueStore.TraceQuery {
        let given: [String: String?] = [
            "sender": sender, "recipient": recipient, "message_id": messageID, "queue_id": queueID,
            "status": status, "client_ip": clientIP, "tenant": tenant, "direction": direction, "since": since,
            "until": until, "spf": spf, "dkim": dkim, "dmarc": dmarc, "limit": String(limit),
        ]
        do {
            return try SQLiteQueueStore.TraceQuery(parameters: given.compactMapValues { $0 })
        } catch {
            throw ValidationError("--\(error.description)")
        }
    }

    /// A `--since` / `--until` time (`mailflow health export`), read as `mailflow trace` and the admin
    /// API read theirs: ISO 8601 or a duration back from now (`TraceQuery.time`).
    static func time(_ text: String) throws -> Date {
        guard let t = SQLiteQueueStore.TraceQuery.time(text) else {
            throw ValidationError("'\(text)' is neither an ISO 8601 time nor a duration such as 30m, 24h, 7d")
        }
        return t
    }

    func run() async throws {
        let rows = try await QueueSource.open(options).trace(try query())
        if json {
            let enc = JSONEncoder()
            enc.dateEncodingStrategy = .iso8601
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(rows), as: UTF8.self))
            return
        }
        printTable(
            ["RECEIVED", "QUEUE ID", "SENDER", "RECIPIENT", "STATUS", "DIRECTION", "SUBJECT", "LAST REPLY"],
            rows.map { r in
                [
                    isoDate(r.received), r.queueID, r.sender.isEmpty ? "<>" : r.sender, r.recipient, r.status,
                    r.direction, String((r.subject ?? "-").prefix(40)), String((r.lastReply ?? "-").prefix(60)),
                ]
            })
        if events {
            for r in rows {
                print("\n\(r.queueID) <\(shown(r.recipient))>:")
                for e in r.events {
                    print("  \(isoDate(e.time)) \(e.kind.rawValue) \(shown(e.detail ?? e.reply ?? ""))")
                }
            }
        }
        print("\(rows.count) row(s)")
    }
}

struct Limits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show live usage against limits: the server, each resource forest, the busiest sources.",
        discussion: "Reads the snapshot the running server rewrites every second in <data>/limits.json.")
    @OptionGroup var options: ConfigOption
    @Flag(help: "Print JSON instead of tables.") var json = false

    func run() throws {
        let config = try options.load()
        let path = MailflowService.limitsSnapshotPath(dataDirectory: config.dataDirectory)
        guard let u = try readSnapshot(AdmissionUsage.self, path: path, what: "live usage", json: json) else { return }
        let age = Date().timeIntervalSince(u.time)
        print("Snapshot \(isoDate(u.time))" + (age > 5 ? " (\(Int(age)) s old: is the server running?)" : ""))
        print("Server: \(u.connections) of \(u.maxConnections) connections")
        if let d = u.descriptors {
            if let limit = d.limit {
                print(
                    "Descriptors: \(d.open) of \(limit) open (\(d.open * 100 / max(1, limit))%); new sessions refused "
                        + "from \(max(0, limit - d.reserve)) (\(d.reserve) kept for the queue, spool and deliveries)")
            } else {
                print("Descriptors: \(d.open) open (no limit)")
            }
        }
        let storagePath = MailflowService.storageSnapshotPath(dataDirectory: config.dataDirectory)
        if FileManager.default.fileExists(atPath: storagePath),
            let s = try readSnapshot(StorageStatus.self, path: storagePath, what: "storage status", json: false)
        {
            print(Self.storageLine(s))
        }
        print("")
        // In a cluster the limits are the whole cluster's; THIS NODE is this node's part of them.
        let clustered = u.forests.contains { $0.share != nil }
        printTable(
            ["FOREST", "REGION", "SESSIONS", "LIMIT"] + (clustered ? ["THIS NODE"] : []) + [
                "USE", "MSGS/MIN LIMIT", "REFUSED",
            ],
            u.forests.map { f in
                let cap = f.share?.connections ?? f.maxConnections
                let part = f.share.map { s in
                    "\(s.connections) of \(f.maxConnections), \(s.nodes) node\(s.nodes == 1 ? "" : "s")"
                        + (s.messagesPerMinute.map { ", \($0) msgs/min" } ?? "")
                }
                return [f.name, f.region, String(f.sessions), String(f.maxConnections)]
                    + (clustered ? [part ?? "-"] : []) + [
                        "\(cap > 0 ? f.sessions * 100 / cap : (f.sessions > 0 ? 100 : 0))%",
                        f.maxMessagesPerMinute == 0 ? "-" : String(f.maxMessagesPerMinute), String(f.refused),
                    ]
            })
        print("")
        printTable(
            ["SOURCE", "SESSIONS", "LIMIT"],
            u.busiestSources.map { [$0.source, String($0.sessions), String($0.maxConnections)] })
        if !u.refusals.isEmpty {
            print("")
            printTable(
                ["REFUSED BY", "COUNT"], u.refusals.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
        }
    }

    /// `Storage: 1.2 GB free of 20.0 GB (reserve 52.4 MB); accepting`, or `REFUSING new mail (why)`.
    static func storageLine(_ s: StorageStatus) -> String {
        func size(_ b: Int64) -> String {
            let units = ["B", "KB", "MB", "GB", "TB"]
            var v = Double(b)
            var i = 0
            while v >= 1000, i < units.count - 1 {
                v /= 1000
                i += 1
            }
            return i == 0 ? "\(b) B" : String(format: "%.1f %@", v, units[i])
        }
        let space =
            if let free = s.freeBytes, let total = s.totalBytes {
                "\(size(free)) free of \(size(total))"
            } else {
                "free space unknown"
            }
        let state = s.acceptancePaused ? "REFUSING new mail with 452 4.3.1 (\(s.reason ?? "no room"))" : "accepting"
        let faults = s.faults.values.reduce(0, +)
        return "Storage: \(space) (reserve \(size(s.minimumFreeBytes))); \(state)"
            + (faults > 0 ? "; \(faults) failed writes since start" : "")
    }
}

struct Config: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with config files.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a config file without starting; exit 1 with the key and problem if it is bad.")

        @Argument(help: "The YAML config file.") var file: String

        func run() throws {
            do {
                let c = try MailflowConfig.load(file: file)
                print(
                    "\(file): OK (hostname \(c.hostname), listening on \(c.smtpListen.joined(separator: ", ")), "
                        + "admin center \(c.adminListen.map { "on \($0)" } ?? "off"), "
                        + "\(c.tenants.count) tenant(s), data in \(c.dataDirectory)"
                        + "\(c.sharedQueue.map { ", queue shared in \($0.database) as node \($0.node)" } ?? ""))")
                if !c.openRelayNetworks.isEmpty {
                    print(
                        "warning: relay.trusted_networks makes this server an open relay for "
                            + "\(c.openRelayNetworks.prefix(5).map { MailflowConfig.excerpt($0) }.joined(separator: ", ")) "
                            + "(confirmed by relay.allow_open_relay)")
                }
            } catch {
                throw CleanExit.message("\(file): \(error)").asFailure()
            }
        }
    }
}

struct Queue: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and control the queue.",
        subcommands: [
            List.self, Show.self, Destinations.self, Shape.self, Hold.self, Release.self, Retry.self, Bounce.self,
            Delete.self,
        ])

    /// The options every queue-control command takes.
    struct ControlOptions: ParsableArguments {
        @OptionGroup var options: ConfigOption
        @Option(help: "Who is acting, recorded in the trace (default: $USER).") var actor: String?
        @Argument(help: "Queue IDs.") var ids: [String]

        func validate() throws {
            guard !ids.isEmpty else { throw ValidationError("give at least one queue ID") }
            for id in ids where !QueueID.isValid(id) {
                throw ValidationError("'\(id)' is not a queue ID (16 characters)")
            }
        }

        /// Applies `action` to each ID through the queue store's `control`, which also removes a
        /// released spool file; prints one line per message (`ID: held: no delivery attempts until
        /// released`), errors to stderr.
        func apply(_ action: SQLiteQueueStore.ControlAction) async throws {
            let store = try QueueSource.open(options)
            let who = actor ?? ProcessInfo.processInfo.environment["USER"] ?? "cli"
            var failed = false
            for id in ids {
                do {
                    let result = try await store.control(action, id: id, actor: who)
                    print("\(result.queueID): \(result.outcome.summary)")
                } catch {
                    FileHandle.standardError.write(Data("mailflow: \(error)\n".utf8))
                    failed = true
                }
            }
            // Wakes the running server's scheduler, as postqueue and postsuper wake Postfix's qmgr:
            // released, retried and bounced messages are due now.
            if action != .hold && action != .delete, let config = try? options.load() {
                DeliveryTrigger.poke(dataDirectory: config.dataDirectory)
            }
            if failed { throw ExitCode(1) }
        }
    }

    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hold messages: no attempts until released.")
        @OptionGroup var control: ControlOptions
        func run() async throws { try await control.apply(.hold) }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Release held messages; they are due at once.")
        @OptionGroup var control: ControlOptions
        func run() async throws { try await control.apply(.release) }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make queued messages due now.")
        @OptionGroup var control: ControlOptions
        func run() async throws { try await control.apply(.retry) }
    }

    struct Bounce: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Return messages to their senders: pending recipients fail (5.3.0) with a DSN.")
        @OptionGroup var control: ControlOptions
        func run() async throws { try await control.apply(.bounce) }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete messages without telling the sender (the trace keeps the record).")
        @OptionGroup var control: ControlOptions
        func run() async throws { try await control.apply(.delete) }
    }

    struct Shape: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pending recipients per destination domain by age, like Postfix's qshape.")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() async throws {
            let rows = try await QueueSource.open(options).shape()
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(rows), as: UTF8.self))
                return
            }
            let bounds = SQLiteQueueStore.QueueShape.bucketMinutes
            let header = ["DOMAIN", "TOTAL"] + bounds.map { "<\($0)m" } + ["older"]
            var total = Array(repeating: 0, count: bounds.count + 1)
            for r in rows { for (i, n) in r.buckets.enumerated() { total[i] += n } }
            let body =
                [["TOTAL", String(total.reduce(0, +))] + total.map(String.init)]
                + rows.map { [$0.domain, String($0.total)] + $0.buckets.map(String.init) }
            printTable(header, body)
        }
    }

    static func open(_ options: ConfigOption) throws -> SQLiteQueueStore {
        let config = try options.load()
        let path = MailflowService.paths(dataDirectory: config.dataDirectory).queue
        guard FileManager.default.fileExists(atPath: path) else {
            throw CleanExit.message("no queue at \(path): has `mailflow serve` run with this data directory?")
                .asFailure()
        }
        return try SQLiteQueueStore(path: path)
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List queued messages: ID, sender, recipients, state, attempts, next attempt.")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Include messages that are done (delivered or failed).") var all = false
        @Flag(help: "Print JSON instead of a table.") var json = false
        @Option(help: "Show at most this many messages, oldest first.") var limit = 1000

        func validate() throws {
            guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
        }

        func run() async throws {
            let rows = try await QueueSource.open(options).list(includeDone: all, limit: limit)
            if rows.count == limit {
                // Say so: a silent cut reads as lost mail.
                FileHandle.standardError.write(
                    Data("mailflow: showing the first \(limit) messages; use --limit for more\n".utf8))
            }
            if json {
                let enc = JSONEncoder()
                enc.dateEncodingStrategy = .iso8601
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(rows), as: UTF8.self))
                return
            }
            let header = ["ID", "SENDER", "RECIPIENTS", "STATE", "ATTEMPTS", "NEXT ATTEMPT"]
            let table = rows.map { r in
                [
                    r.id, r.sender.isEmpty ? "<>" : r.sender, r.recipients.joined(separator: ","), r.state,
                    String(r.attempts), r.nextAttempt.map(isoDate) ?? "-",
                ]
            }
            printTable(header, table)
            print("\(rows.count) message(s)")
        }
    }

    struct Destinations: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Show each outbound destination (and the LMTP mailbox server): window, sessions, waiting, deferrals, parking.",
            discussion: "Reads the snapshot the running server rewrites every second in <data>/destinations.json.")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() throws {
            let config = try options.load()
            let path = MailflowService.destinationsSnapshotPath(dataDirectory: config.dataDirectory)
            guard
                let rows = try readSnapshot([DestinationStatus].self, path: path, what: "destination data", json: json)
            else { return }
            printTable(
                [
                    "DESTINATION", "WINDOW", "CEILING", "SESSIONS", "WAITING", "DELIVERED", "DEFERRED", "THROTTLES",
                    "NEXT ATTEMPT", "LAST ERROR",
                ],
                rows.map { d in
                    [
                        d.key, String(d.window), d.ceiling.map(String.init) ?? "-", String(d.sessions),
                        String(d.waiting),
                        String(d.delivered), String(d.deferred), String(d.throttles),
                        // A parked destination takes sessions again at this time; otherwise now.
                        d.parkedUntil.map { "parked until " + isoDate($0) } ?? "when due",
                        d.lastError ?? "-",
                    ]
                })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one message: envelope, recipients with status, and its trace events.")
        @OptionGroup var options: ConfigOption
        @Argument(help: "The queue ID from `250 2.0.0 Ok: queued as <ID>`.") var id: String
        @Flag(help: "Also print the header section as stored (while the message is queued or held).")
        var headers = false

        func validate() throws {
            guard QueueID.isValid(id) else { throw ValidationError("'\(id)' is not a queue ID (16 characters)") }
        }

        func run() async throws {
            let store = try QueueSource.open(options)
            guard let m = try await store.message(id) else {
                throw CleanExit.message("no message with queue ID \(id)").asFailure()
            }
            print("Queue ID:     \(m.id)")
            print(
                "Received:     \(isoDate(m.receivedAt)) from \(m.clientAddress) (helo \(shown(m.helo))) with \(m.protocolName)\(m.tls.map { " \($0)" } ?? "")"
            )
            print("Sender:       <\(shown(m.sender))>")
            print("Message-ID:   \(shown(m.messageID))")
            print("Subject:      \(shown(m.subject))")
            if let auth = m.authentication { print("Sender auth:  \(auth.summary)") }
            print("Size:         \(m.size) octets")
            print("DSN:          RET=\(m.ret?.rawValue ?? "-") ENVID=\(shown(m.envelopeID))")
            print(
                "State:        \(m.state.rawValue), \(m.attempts) attempt(s), next \(m.nextAttempt.map(isoDate) ?? "-")"
            )
            if let lease = try await store.leaseLine(id) { print(lease) }
            print("Recipients:")
            for r in m.recipients {
                print(
                    "  <\(shown(r.recipient.address))> \(r.status.rawValue) attempts=\(r.attempts)"
                        + (r.recipient.notify.map { " NOTIFY=\($0)" } ?? "")
                        + (r.recipient.originalRecipient.map { " ORCPT=\(shown($0.stored))" } ?? "")
                        + (r.lastReply.map { " last: \(shown($0))" } ?? ""))
            }
            print("Trace:")
            for e in try await store.traceEvents(queueID: id) {
                print(
                    "  \(isoDate(e.time)) \(e.kind.rawValue)\(e.recipient.map { " <\(shown($0))>" } ?? "") \(shown(e.detail ?? ""))"
                )
            }
            if headers {
                let fields = AdminHTTPServer.headerFields(m.body)
                print("Headers:" + (fields.isEmpty ? " (none stored: the message is done)" : ""))
                for f in fields { print("  \(shown(f.name)): \(shown(f.value))") }
            }
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("mailflow \(Mailflow.version)") }
}

/// Reads a snapshot the running server rewrites every second (`limits.json`, `destinations.json`):
/// prints it as is for `--json` (returning nil), or decodes it for a table.
func readSnapshot<T: Decodable>(_ type: T.Type, path: String, what: String, json: Bool) throws -> T? {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CleanExit.message("no \(what) at \(path): is `mailflow serve` running with this data directory?")
            .asFailure()
    }
    if json {
        print(String(decoding: data, as: UTF8.self))
        return nil
    }
    let dec = JSONDecoder()
    dec.dateDecodingStrategy = .iso8601
    return try dec.decode(type, from: data)
}

func isoDate(_ d: Date) -> String {
    let f = ISO8601DateFormatter()
    return f.string(from: d)
}

/// A table with each cell made terminal-safe (`shown`): cells hold remote parties' text.
func printTable(_ header: [String], _ rows: [[String]]) {
    let rows = rows.map { $0.map { shown($0) } }
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }
        .joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}

extension CleanExit {
    func asFailure() -> Error { FailureMessage(text: "\(self)") }
}

/// An error whose text is the whole message, printed by ArgumentParser with exit code 1.
struct FailureMessage: Error, CustomStringConvertible {
    var text: String
    var description: String { text }
}
