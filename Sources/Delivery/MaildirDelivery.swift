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
public struct MaildirDelivery: Sendable {
    public let root: String
    public let hostname: String

    public init(root: String, hostname: String) {
        self.root = root
        self.hostname = hostname
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
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
            try FileManager.default.createDirectory(atPath: "\(box)/\(sub)", withIntermediateDirectories: true)
        }
        let name = uniqueName(queueID: message.id, recipientIndex: recipientIndex)
        if alreadyDelivered(box: box, name: name, scanCur: scanCur) {
            return "\(box)/new/\(name) (already present)"
        }
        let tmp = "\(box)/tmp/\(name)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "open \(tmp): \(String(cString: strerror(errno)))") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(tmp) }
        }
        try writeAll(fd, bodyPrefix, path: tmp)
        try body.forEachChunk { chunk in try writeAll(fd, chunk, path: tmp) }
        guard fsync(fd) == 0 else { throw Failure(description: "fsync \(tmp): \(String(cString: strerror(errno)))") }
        let final = "\(box)/new/\(name)"
        guard rename(tmp, final) == 0 else {
            throw Failure(description: "rename into \(final): \(String(cString: strerror(errno)))")
        }
        ok = true
        try FileSync.sync(path: "\(box)/new")
        return final
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
                    throw Failure(description: "write \(path): \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }
    }
}

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
