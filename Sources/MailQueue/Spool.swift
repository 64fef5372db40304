import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The spool directory for bodies too large to travel inside the queue database.
///
/// A spooled body is written while it streams in, synced (file and directory) before its message
/// joins a commit batch, and removed when the message is done. Files the queue no longer refers to
/// (a crash between write and commit) are removed at start-up.
public struct Spool: Sendable {
    public let directory: String

    /// Bodies up to this size stay in memory and are committed inline; larger ones stream to a file.
    public static let inlineLimit = 256 * 1024

    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    public func path(for queueID: String) -> String { "\(directory)/\(queueID)" }

    /// fsyncs a file and then the spool directory, so both its data and its name survive a crash.
    public func makeDurable(path: String) throws {
        try FileSync.sync(path: path)
        try FileSync.sync(path: directory)
    }

    /// Removes spool files not in `keep`; returns how many it removed.
    @discardableResult
    public func removeOrphans(keeping keep: Set<String>) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var removed = 0
        for n in names where !keep.contains(path(for: n)) {
            if unlink(path(for: n)) == 0 { removed += 1 }
        }
        return removed
    }

    /// Removes a body the queue no longer refers to.
    public func remove(path: String) {
        Self.removeBody(at: path)
    }

    /// Removes a spooled body by the path the queue stored (`path(for:)`), for callers that hold no
    /// `Spool` (queue control). A file already gone is fine; any other failure leaves an orphan that
    /// the start-up sweep (`removeOrphans`) removes, which is why it is not an error here.
    @discardableResult
    public static func removeBody(at path: String) -> Bool {
        unlink(path) == 0 || errno == ENOENT
    }
}

/// fsync for files and directories (a rename or create is durable only once its directory is synced).
public enum FileSync {
    public struct Failure: Error, CustomStringConvertible {
        public var operation: String
        public var path: String
        public var errno: Int32
        public init(operation: String, path: String, errno: Int32) {
            self.operation = operation
            self.path = path
            self.errno = errno
        }
        public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
    }

    public static func sync(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw Failure(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Failure(operation: "fsync", path: path, errno: errno) }
    }
}
