import Foundation
import MailQueue

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Delivery into Maildir folders (the qmail/Dovecot layout: `tmp`, `new`, `cur`), one folder per
/// mailbox under `<root>/<domain>/<local part>/`.
///
/// Exactly once: the file name is derived from the queue ID and recipient index, written into `tmp`,
/// fsynced, renamed into `new` and the directory fsynced. If the process dies after the rename but
/// before the queue records the delivery, the retry finds the name already in `new` (or in `cur`,
/// where a mail reader moves it) and does not deliver again.
///
/// A write that fails leaves nothing in `new` (the `tmp` file is removed) and is a deferral, never a
/// failure: `452 4.3.1` when the filesystem is full (`deferral(for:)`), so the message waits and is
/// retried by its schedule once space returns.
public struct MaildirDelivery: Sendable {
    public let root: String
    public let hostname: String

    public init(root: String, hostname: String) {
        self.root = root
        self.hostname = hostname
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        /// The `errno` of the failed call, when one failed (a full filesystem is `ENOSPC`).
        public var errno: Int32?

        public init(description: String, errno: Int32? = nil) {
            self.description = description
            self.errno = errno
        }

        /// `what path: strerror(errno)`, with the errno read before anything else can change it.
        static func posix(_ what: String, _ path: String) -> Failure {
            let code = lastErrno()
            return Failure(description: "\(what) \(path): \(String(cString: strerror(code)))", errno: code)
        }
    }

    /// The deferral recorded for a mailbox write that failed with `error`: `452 4.3.1` when the
    /// mailbox filesystem is full (or over quota), `451 4.3.0` otherwise. Always temporary: the
    /// message waits in the queue and is retried, it never bounces for a full disk before expiry.
    public static func deferral(for error: any Error) -> String {
        (fault(for: error) ?? .ioError).deferral("Mailbox delivery failed: \(error)")
    }

    /// The storage fault behind a failed mailbox write, if it is one (`.full` for `ENOSPC`).
    public static func fault(for error: any Error) -> StorageFault? {
        if let f = error as? Failure { return f.errno.flatMap { StorageFault(errno: $0) } }
        return StorageFault(error)
    }

    public func mailboxPath(domain: String, localPart: String) -> String {
        "\(root)/\(Self.safeName(domain.lowercased()))/\(Self.safeName(localPart))"
    }

    /// File names can't hold `/` or start with a dot; anything else in a local part is kept.
    static func safeName(_ s: String) -> String {
        var out = s.replacingOccurrences(of: "/", with: "%2F")
        if out.hasPrefix(".") { out = "%2E" + out.dropFirst() }
        return out.isEmpty ? "%00" : out
    }

    public func uniqueName(queueID: String, recipientIndex: Int) -> String {
        "\(queueID).R\(recipientIndex).\(Self.safeName(hostname))"
    }

    /// Writes one copy: `Return-Path`, the stored body's stamp, an added `Message-ID` if needed, then
    /// the rest of the body. `alreadyDelivered` is checked first.
    public func deliver(
        message: StoredMessage, recipientIndex: Int, domain: String, localPart: String, bodyPrefix: Data,
        body: MessageBodyReader, scanCur: Bool
    ) throws -> String {
        let box = mailboxPath(domain: domain, localPart: localPart)
        for sub in ["tmp", "new", "cur"] {
            try makeDirectory("\(box)/\(sub)")
        }
        let name = uniqueName(queueID: message.id, recipientIndex: recipientIndex)
        if alreadyDelivered(box: box, name: name, scanCur: scanCur) {
            return "\(box)/new/\(name) (already present)"
        }
        let tmp = "\(box)/tmp/\(name)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw Failure.posix("open", tmp)
        }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(tmp) }
        }
        try writeAll(fd, bodyPrefix, path: tmp)
        try body.forEachChunk { chunk in try writeAll(fd, chunk, path: tmp) }
        guard fsync(fd) == 0 else {
            throw Failure.posix("fsync", tmp)
        }
        let final = "\(box)/new/\(name)"
        guard rename(tmp, final) == 0 else {
            throw Failure.posix("rename into", final)
        }
        ok = true
        try FileSync.sync(path: "\(box)/new")
        return final
    }

    /// `mkdir -p` (mode 0777 less the umask, as FileManager's) with the errno kept: FileManager's
    /// error hides it behind a Cocoa code.
    func makeDirectory(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0 { return }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path { try makeDirectory(parent) }
        guard mkdir(path, 0o777) == 0 || errno == EEXIST else {
            throw Failure.posix("mkdir", path)
        }
    }

    func alreadyDelivered(box: String, name: String, scanCur: Bool) -> Bool {
        var st = stat()
        if stat("\(box)/new/\(name)", &st) == 0 { return true }
        if stat("\(box)/cur/\(name):2,", &st) == 0 { return true }
        if scanCur, let names = try? FileManager.default.contentsOfDirectory(atPath: "\(box)/cur") {
            return names.contains { $0 == name || $0.hasPrefix(name + ":") }
        }
        return false
    }

    func writeAll(_ fd: Int32, _ data: Data, path: String) throws {
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw Failure.posix("write", path)
                }
                offset += n
            }
        }
    }
}

/// The calling thread's `errno` (a function, so types with an `errno` member can read it).
private func lastErrno() -> Int32 { errno }

/// Reads a stored body in chunks, from the database blob or the spool file, skipping a prefix.
public struct MessageBodyReader: Sendable {
    public let body: MessageBody
    public let skip: Int
    public static let chunkSize = 256 * 1024

    public init(body: MessageBody, skip: Int = 0) {
        self.body = body
        self.skip = skip
    }

    public func forEachChunk(_ f: (Data) throws -> Void) throws {
        switch body {
        case .inline(let d):
            if skip < d.count { try f(d.subdata(in: (d.startIndex + skip)..<d.endIndex)) }
        case .spooled(let path):
            guard let h = FileHandle(forReadingAtPath: path) else {
                throw MaildirDelivery.Failure(description: "spool file \(path) is missing")
            }
            defer { try? h.close() }
            try h.seek(toOffset: UInt64(skip))
            while let chunk = try h.read(upToCount: Self.chunkSize), !chunk.isEmpty {
                try f(chunk)
            }
        }
    }

    /// Reads the body a chunk at a time (for writers that await between chunks).
    public struct ChunkIterator {
        var data: Data?
        var handle: FileHandle?

        public mutating func next() throws -> Data? {
            if let d = data {
                data = nil
                return d.isEmpty ? nil : d
            }
            guard let h = handle else { return nil }
            guard let chunk = try h.read(upToCount: MessageBodyReader.chunkSize), !chunk.isEmpty else {
                try? h.close()
                handle = nil
                return nil
            }
            return chunk
        }
    }

    public func makeIterator() throws -> ChunkIterator {
        switch body {
        case .inline(let d):
            return ChunkIterator(data: skip < d.count ? d.subdata(in: (d.startIndex + skip)..<d.endIndex) : Data())
        case .spooled(let path):
            guard let h = FileHandle(forReadingAtPath: path) else {
                throw MaildirDelivery.Failure(description: "spool file \(path) is missing")
            }
            try h.seek(toOffset: UInt64(skip))
            return ChunkIterator(handle: h)
        }
    }

    /// The first `count` octets (the stored Received stamp).
    public func prefix(_ count: Int) throws -> Data {
        switch body {
        case .inline(let d):
            return d.prefix(count)
        case .spooled(let path):
            guard let h = FileHandle(forReadingAtPath: path) else {
                throw MaildirDelivery.Failure(description: "spool file \(path) is missing")
            }
            defer { try? h.close() }
            return try h.read(upToCount: count) ?? Data()
        }
    }
}
