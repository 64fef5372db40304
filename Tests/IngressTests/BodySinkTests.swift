import Dispatch
import Foundation
import MailQueue
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import Ingress

/// Backpressure without polling: a sink whose disk writes fall behind says so, and calls back on
/// its event loop once they have drained (or once it is discarded).
struct BodySinkTests {
    enum Release: String, CaseIterable, CustomTestStringConvertible {
        case diskCatchesUp, bodyDiscarded
        var testDescription: String { rawValue }
    }

    @Test(.timeLimit(.minutes(1)), arguments: Release.allCases)
    func drainedCallbackFiresOnceTheWritesAreDown(_ release: Release) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mf-sink-\(UUID().uuidString)")
        let spool = try Spool(directory: directory.path)
        defer {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            try? FileManager.default.removeItem(at: directory)
        }
        // The pool's one thread waits at the gate, so every write queues up behind it.
        let gate = DispatchSemaphore(value: 0)
        pool.submit { _ in gate.wait() }
        let loop = group.next()
        let called = Mutex<Int?>(nil)
        let drained = loop.makePromise(of: Int.self)
        let (sink, behind) = try loop.submit { () -> (NIOLoopBound<BodySink>, Bool) in
            let sink = BodySink(
                spool: spool, queueID: "Q1", threadPool: pool, eventLoop: loop, allocator: ByteBufferAllocator())
            let chunk = ByteBuffer(repeating: 0x78, count: 1024 * 1024)
            // Past the inline limit the body spills to a file; five more MiB wait for the disk.
            sink.append(ByteBuffer(repeating: 0x78, count: Spool.inlineLimit + 1))
            for _ in 0..<5 { sink.append(chunk) }
            sink.whenDrained {
                called.withLock { $0 = sink.outstanding }
                drained.succeed(sink.outstanding)
            }
            return (NIOLoopBound(sink, eventLoop: loop), sink.isBehind)
        }.wait()
        #expect(behind, "over the high-water mark the session must stop reading")
        #expect(called.withLock { $0 } == nil, "nothing has been written yet")
        switch release {
        case .diskCatchesUp:
            gate.signal()
            let outstanding = try drained.futureResult.wait()
            #expect(outstanding <= BodySink.lowWater)
            try loop.submit { sink.value.discard() }.wait()
        case .bodyDiscarded:
            try loop.submit { sink.value.discard() }.wait()
            _ = try drained.futureResult.wait()
            gate.signal()
        }
        #expect(called.withLock { $0 } != nil)
    }
}
