import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The wake-up line into a running server's delivery scheduler from another process, as Postfix's
/// `postqueue`/`postsuper` wake `qmgr` through the `public/qmgr` FIFO.
///
/// A named pipe (FIFO) in the data directory: the server opens it read-write (so it never sees end
/// of file and never blocks opening it) and reads it on a NIO pipe channel; every byte that arrives
/// wakes the scheduler. A writer such as `mailflow queue release` opens it write-only and
/// non-blocking: with no server running the open fails at once (`ENXIO`) and there is nothing to
/// wake. A FIFO rather than a UNIX socket because its path has no length limit (`sun_path` is 108
/// bytes) and a stale one from a stopped server is simply reused.
///
/// ```swift
/// DeliveryTrigger.poke(dataDirectory: "/var/lib/mailflow")  // after `store.control(.retry, ...)`
/// ```
public enum DeliveryTrigger {
    /// Where the trigger of the server using `dataDirectory` is.
    public static func path(dataDirectory: String) -> String { "\(dataDirectory)/delivery.trigger" }

    /// Wakes the scheduler of the server using `dataDirectory`, if one is running. Never blocks.
    /// Returns whether a running server was told.
    @discardableResult
    public static func poke(dataDirectory: String) -> Bool {
        poke(path: path(dataDirectory: dataDirectory))
    }

    /// Wakes the scheduler listening on the FIFO at `path`, if any. Never blocks.
    @discardableResult
    public static func poke(path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return false }  // ENXIO: no reader; ENOENT: never started here
        defer { close(fd) }
        var st = stat()
        // Never write into something that is not the trigger (a regular file put there by mistake).
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFIFO else { return false }
        var byte: UInt8 = 1
        // A full pipe (EAGAIN) means wake-ups are already waiting to be read: nothing lost.
        return write(fd, &byte, 1) == 1 || errno == EAGAIN
    }

    /// Why the trigger could not be set up.
    public struct SetupError: Error, CustomStringConvertible {
        public var path: String
        public var operation: String
        public var code: Int32
        public var description: String { "delivery trigger \(path): \(operation) failed (errno \(code))" }
    }

    /// Creates the FIFO at `path` if needed and reads it on `group`; every read calls `onPoke` on the
    /// event loop (so `onPoke` must not block). Close the returned channel to stop listening.
    static func listen(
        path: String, group: any EventLoopGroup, onPoke: @escaping @Sendable () -> Void
    ) async throws -> any Channel {
        var st = stat()
        if lstat(path, &st) == 0, st.st_mode & S_IFMT != S_IFIFO {
            unlink(path)
        }
        if mkfifo(path, 0o600) != 0 && errno != EEXIST {
            throw SetupError(path: path, operation: "mkfifo", code: errno)
        }
        let fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw SetupError(path: path, operation: "open", code: errno) }
        do {
            return try await NIOPipeBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(TriggerReader(onPoke: onPoke))
                    }
                }
                .takingOwnershipOfDescriptor(input: fd).get()
        } catch {
            close(fd)
            throw error
        }
    }
}

/// Reads the trigger FIFO: any bytes are one wake-up (several pokes coalesce).
final class TriggerReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let onPoke: @Sendable () -> Void

    init(onPoke: @escaping @Sendable () -> Void) {
        self.onPoke = onPoke
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        onPoke()
    }
}
