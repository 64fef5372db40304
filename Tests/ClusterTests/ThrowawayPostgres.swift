import Cluster
import Foundation
import Logging
import NIOPosix
import PostgresNIO
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One PostgreSQL server for this test process, from Debian's packages (`initdb`, `pg_ctl` under
/// /usr/lib/postgresql/*/bin), started the first time a test asks for it, on a loopback port in a
/// folder of its own (`/tmp/mailflow-sq-pg-<pid>-<random>`), trust authentication for the
/// `postgres` superuser. As root it runs as the `postgres` user (the server refuses root).
///
/// It goes away with the process three ways: `atexit` stops it; a watcher shell started with it
/// stops it once this process is gone (a crashed or killed run); and every start first removes the
/// servers of test processes that no longer exist. Missing binaries fail the test, never skip it.
final class ThrowawayPostgres: Sendable {
    let root: String
    let port: Int
    let bin: String

    static let shared = Result { () throws(ThrowawayPostgresFailure) in try ThrowawayPostgres.start() }

    /// The server, started on first use.
    static func server() throws(ThrowawayPostgresFailure) -> ThrowawayPostgres { try shared.get() }

    /// A new, empty database on the server: each test its own, so tests run in parallel.
    static func freshDatabase() async throws -> PostgresAddress {
        let server = try server()
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try PostgresAddress(url: "postgres://postgres@127.0.0.1:\(server.port)/postgres")
        let q = SharedQueue(database: admin, timeout: .seconds(30), logger: Logger(label: "test"))
        let c = try await q.connect(on: MultiThreadedEventLoopGroup.singleton)
        // FILE_COPY: a cheap checkpoint (no fsync here) instead of the template's every page in
        // the WAL, which dozens of tests at once pay dearly for on two cores.
        try await c.query(
            PostgresQuery(unsafeSQL: "CREATE DATABASE \(name) STRATEGY FILE_COPY"), logger: Logger(label: "test"))
        try await c.close()
        return try PostgresAddress(url: "postgres://postgres@127.0.0.1:\(server.port)/\(name)")
    }

    private init(root: String, port: Int, bin: String) {
        self.root = root
        self.port = port
        self.bin = bin
    }

    static let prefix = "mailflow-sq-pg-"
    /// `pg_ctl stop` commands for `atexit`.
    static let running = Mutex<[[String]]>([])

    static func start() throws(ThrowawayPostgresFailure) -> ThrowawayPostgres {
        removeLeftovers()
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard
            let bin = versions.compactMap({ v -> (Int, String)? in
                let dir = "/usr/lib/postgresql/\(v)/bin"
                guard let n = Int(v), FileManager.default.isExecutableFile(atPath: dir + "/initdb") else { return nil }
                return (n, dir)
            }).max(by: { $0.0 < $1.0 })?.1
        else {
            throw ThrowawayPostgresFailure(
                "PostgreSQL's server is missing (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql "
                    + "(scripts/install-test-deps)")
        }
        let root = "/tmp/\(prefix)\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        let asUser = getuid() == 0 ? [runuser ?? "/usr/sbin/runuser", "-u", "postgres", "--"] : []
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
        } catch {
            throw ThrowawayPostgresFailure("cannot create \(root): \(error)")
        }
        if !asUser.isEmpty {
            guard let pw = getpwnam("postgres"), chown(root, pw.pointee.pw_uid, pw.pointee.pw_gid) == 0 else {
                throw ThrowawayPostgresFailure("running as root, but cannot hand \(root) to the postgres user")
            }
        }
        do {
            return try startServer(root: root, bin: bin, asUser: asUser)
        } catch {
            try? FileManager.default.removeItem(atPath: root)
            throw error
        }
    }

    static func startServer(root: String, bin: String, asUser: [String]) throws(ThrowawayPostgresFailure)
        -> ThrowawayPostgres
    {
        let port = try freePort()
        let data = root + "/data"
        try run(
            asUser + [bin + "/initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"], root)
        let stop = asUser + [bin + "/pg_ctl", "-D", data, "-m", "immediate", "stop"]
        running.withLock { $0.append(stop) }
        try run(
            asUser + [
                bin + "/pg_ctl", "-D", data, "-l", root + "/log", "-w", "-t", "60", "-o",
                // No fsync: what these tests check is the commit protocol (answers, transactions,
                // connections cut), not the disk; dozens of tests making databases at once are slow
                // enough to miss their calls' timeouts with it.
                "-p \(port) -k \(root) -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off "
                    + "-c full_page_writes=off", "start",
            ], root)
        atexit {
            for command in ThrowawayPostgres.running.withLock({ $0 }) {
                _ = try? ThrowawayPostgres.run(command, nil)
            }
            for dir in (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
            where dir.hasPrefix("\(ThrowawayPostgres.prefix)\(getpid())-") {
                try? FileManager.default.removeItem(atPath: "/tmp/" + dir)
            }
        }
        // A crashed or killed test process runs no atexit: this watcher stops the server after it.
        let quoted = stop.map { "'\($0)'" }.joined(separator: " ")
        _ = spawn(
            [
                "/bin/sh", "-c",
                "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(quoted) >/dev/null 2>&1; rm -rf '\(root)'",
            ], output: "/dev/null")
        return ThrowawayPostgres(root: root, port: port, bin: bin)
    }

    /// Stops and removes the servers of test processes that are gone (a run killed before its
    /// watcher could act), so they hold no ports or disk.
    static func removeLeftovers() {
        for dir in (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [] where dir.hasPrefix(prefix) {
            guard let pid = Int32(dir.dropFirst(prefix.count).prefix { $0 != "-" }), pid != getpid(),
                kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            let pidFile = "/tmp/\(dir)/data/postmaster.pid"
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                let line = text.split(separator: "\n").first, let postmaster = Int32(line)
            {
                kill(postmaster, SIGQUIT)
            }
            try? FileManager.default.removeItem(atPath: "/tmp/" + dir)
        }
    }

    /// Runs a command to its end; its output goes to a file (the server it starts must not hold a
    /// pipe of ours open), shown when it fails. `posix_spawn` and `waitpid`, not Foundation's
    /// `Process`: its exit is noticed on a dispatch queue that tests blocked here can starve.
    @discardableResult
    static func run(_ command: [String], _ root: String?) throws(ThrowawayPostgresFailure) -> Int32 {
        let out = (root ?? NSTemporaryDirectory()) + "/command-\(UUID().uuidString).out"
        guard let pid = spawn(command, output: out) else {
            throw ThrowawayPostgresFailure("\(command[0]) could not run: errno \(errno)")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: out)
        let exited = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        guard root == nil || exited == 0 else {
            throw ThrowawayPostgresFailure("\(command.joined(separator: " ")) failed (\(exited)): \(text)")
        }
        return exited
    }

    /// Starts `command` with stdin from /dev/null and stdout and stderr to `output`.
    static func spawn(_ command: [String], output: String) -> pid_t? {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = command.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, command[0], &actions, nil, argv, environ)
        return rc == 0 ? pid : nil
    }

    /// A loopback port nobody listens on now.
    static func freePort() throws(ThrowawayPostgresFailure) -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ThrowawayPostgresFailure("socket: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(fd, p, len) == 0 && getsockname(fd, p, &len) == 0
            }
        }
        guard bound else { throw ThrowawayPostgresFailure("bind: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

struct ThrowawayPostgresFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
