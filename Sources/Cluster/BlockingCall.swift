import Dispatch
import Synchronization

/// Runs an async call from a thread that may block (a thread pool's, the group committer's, a
/// command's main thread) and waits for its answer. Never from an event loop or the cooperative
/// pool: the call itself runs there.
func blockingCall<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<Result<T, any Error>?>(nil)
    Task {
        let r: Result<T, any Error>
        do { r = .success(try await body()) } catch { r = .failure(error) }
        result.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}
