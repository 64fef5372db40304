import Foundation
import MailQueue
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Where one incoming body goes while it streams: memory up to `Spool.inlineLimit`, then a spool file
/// written in order on the blocking-I/O thread pool, so the event loop never waits on the disk and a
/// 35 MB message never sits whole in memory.
///
/// Lives on one event loop (it is part of the session's handler).
///
/// A write that fails (`ENOSPC` on a full disk) fails the chain: the rest of the body is read and
/// dropped, `finish` fails with the `FileSync.Failure` (its errno says `452 4.3.1` through
/// `StorageFault`), and the file is closed and removed; nothing is acknowledged.
///
/// Backpressure: while more than `highWater` octets wait for the disk, `isBehind` is true and the
/// session stops reading from its socket; `whenDrained` calls it back, on the event loop, once the
/// writes in flight are down to `lowWater`. Memory per connection stays near `highWater` plus one
/// read, however fast the client sends.
final class BodySink {
    /// Octets handed to the thread pool and not yet written above which reading pauses.
    static let highWater = 4 * 1024 * 1024
    /// Octets still in flight at which reading resumes: low enough that the socket is not paused
    /// again at once, high enough that the disk has work while the next reads arrive.
    static let lowWater = 1024 * 1024

    let spool: Spool
    let path: String
    let threadPool: NIOThreadPool
    let eventLoop: EventLoop
    var inline: ByteBuffer
    /// The chain of file writes; nil until the body spills to disk.
    var fileChain: EventLoopFuture<CInt>?
    /// `finish` has taken the file: it closes the descriptor whatever happens, so `discard` after a
    /// failed finish (an fsync that met a full disk) only removes the file and never closes twice.
    private var finished = false
    private(set) var size = 0
    /// Bytes handed to the thread pool and not yet written.
    private(set) var outstanding = 0
    /// Called once when `outstanding` falls to `lowWater`; nil when nobody waits.
    private var drained: (() -> Void)?

    init(spool: Spool, queueID: String, threadPool: NIOThreadPool, eventLoop: EventLoop, allocator: ByteBufferAllocator)
    {
        self.spool = spool
        self.path = spool.path(for: queueID)
        self.threadPool = threadPool
        self.eventLoop = eventLoop
        self.inline = allocator.buffer(capacity: 8 * 1024)
    }

    var isSpooled: Bool { fileChain != nil }

    /// More is waiting for the disk than a session may buffer: stop reading.
    var isBehind: Bool { outstanding > Self.highWater }

    /// Calls `callback` once, on the event loop, when the writes in flight are down to `lowWater`
    /// (at once if they already are). Discarding the sink calls back at once: its writes no longer
    /// hold up the session.
    func whenDrained(_ callback: @escaping () -> Void) {
        guard outstanding > Self.lowWater else { return callback() }
        drained = callback
    }

    private func wrote(_ count: Int) {
        outstanding -= count
        guard outstanding <= Self.lowWater, let callback = drained else { return }
        drained = nil
        callback()
    }

    func append(_ bytes: ByteBuffer) {
        size += bytes.readableBytes
        if fileChain == nil {
            var b = bytes
            inline.writeBuffer(&b)
            if inline.readableBytes > Spool.inlineLimit { spill() }
        } else {
            enqueueWrite(bytes)
        }
    }

    private func spill() {
        let path = self.path
        fileChain = threadPool.runIfActive(eventLoop: eventLoop) { () throws -> CInt in
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw FileSync.Failure(operation: "open", path: path, errno: errno) }
            return fd
        }
        let first = inline
        inline = ByteBuffer()
        enqueueWrite(first)
    }

    private func enqueueWrite(_ bytes: ByteBuffer) {
        guard let chain = fileChain else { return }
        let count = bytes.readableBytes
        outstanding += count
        let pool = threadPool
        let loop = eventLoop
        let path = self.path
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        fileChain = chain.flatMap { fd in
            pool.runIfActive(eventLoop: loop) { () throws -> CInt in
                try bytes.withUnsafeReadableBytes { raw in
                    var off = 0
                    while off < raw.count {
                        let n = write(fd, raw.baseAddress! + off, raw.count - off)
                        if n < 0 {
                            if errno == EINTR { continue }
                            let failure = FileSync.Failure(operation: "write", path: path, errno: errno)
                            // The failed chain never reaches `finish` or `discard`'s close: close here.
                            close(fd)
                            throw failure
                        }
                        off += n
                    }
                }
                return fd
            }
        }.always { _ in
            bound.value.wrote(count)
        }
    }

    /// Completes the body: inline bytes, or a spool file synced (file and directory) and closed.
    func finish() -> EventLoopFuture<MessageBody> {
        guard let chain = fileChain else {
            return eventLoop.makeSucceededFuture(.inline(Data(inline.readableBytesView)))
        }
        let spool = self.spool
        let path = self.path
        let pool = threadPool
        let loop = eventLoop
        finished = true
        return chain.flatMap { fd in
            pool.runIfActive(eventLoop: loop) { () throws -> MessageBody in
                defer { close(fd) }
                guard fsync(fd) == 0 else { throw FileSync.Failure(operation: "fsync", path: path, errno: errno) }
                try FileSync.sync(path: spool.directory)
                return .spooled(path: path)
            }
        }
    }

    /// Throws the body away (refused message or dropped connection).
    func discard() {
        if let callback = drained {
            drained = nil
            callback()
        }
        guard let chain = fileChain else {
            inline.clear()
            return
        }
        let path = self.path
        let pool = threadPool
        let loop = eventLoop
        fileChain = nil
        if finished {
            _ = pool.runIfActive(eventLoop: loop) { unlink(path) }
            return
        }
        chain.flatMap { fd in
            pool.runIfActive(eventLoop: loop) {
                close(fd)
                unlink(path)
            }
        }.whenFailure { _ in
            // Open failed or a write failed: remove whatever exists, on the pool.
            _ = pool.runIfActive(eventLoop: loop) { unlink(path) }
        }
    }
}
