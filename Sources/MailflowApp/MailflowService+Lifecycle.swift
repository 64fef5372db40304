import Logging
import ServiceLifecycle
import UnixSignals

/// Mailflow as a ServiceLifecycle service, the way Hummingbird's `Application` runs: `mailflow
/// serve` puts it in a `ServiceGroup` that turns SIGTERM and SIGINT into a graceful shutdown.
///
/// `start()` and `startAdmin()` run before the group (the CLI prints the bound ports, which tests
/// and scripts read); `run()` then holds the service's lifetime and, once the group asks for a
/// graceful shutdown, stops everything in order (`shutdown()`: listeners, sessions given their
/// grace, commits drained, deliveries finished).
extension MailflowService: Service {
    public func run() async throws {
        // Returns when the group starts a graceful shutdown; throws if the task is cancelled.
        try? await gracefulShutdown()
        await shutdown()
    }
}

/// Re-reads the config file on SIGHUP until the group shuts down; a file that does not load, or
/// that `reload` refuses, is logged and the running configuration kept.
public struct ConfigReloadOnHangup: Service {
    let file: String
    let signals: UnixSignalsSequence?
    let service: MailflowService
    let logger: Logger

    /// `signals`: a SIGHUP sequence made early (before the server says it listens), so a reload sent
    /// at once is not lost; nil makes one when the service runs.
    public init(file: String, signals: UnixSignalsSequence? = nil, service: MailflowService, logger: Logger) {
        self.file = file
        self.signals = signals
        self.service = service
        self.logger = logger
    }

    public func run() async throws {
        let hangups: UnixSignalsSequence
        if let signals { hangups = signals } else { hangups = await UnixSignalsSequence(trapping: .sighup) }
        for await _ in hangups.cancelOnGracefulShutdown() {
            do {
                try service.reload(MailflowConfig.load(file: file))
            } catch {
                logger.error("reload of \(file) refused, keeping the running configuration: \(error)")
            }
        }
    }
}
