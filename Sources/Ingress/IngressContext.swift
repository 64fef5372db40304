import Foundation
import Logging
import MailQueue
import NIOPosix
import NIOSSL

/// Everything a session handler shares with its server.
public struct IngressContext: Sendable {
    public var policy: SharedPolicy
    public var admission: AdmissionControl
    public var committer: any MessageCommitter
    public var spool: Spool
    public var threadPool: NIOThreadPool
    public var tls: NIOSSLContext?
    public var logger: Logger
    public var metrics: IngressMetrics
    /// The wall clock, read only for what is stored with a message (queue ID, `Received:` date,
    /// received time); every timeout runs on the event loop's clock.
    public var now: @Sendable () -> Date
    /// A new queue ID for a message accepted at the given time (`QueueID.generate` with the system's
    /// random numbers); tests make it predictable.
    public var queueID: @Sendable (Date) -> String = { now in
        var rng = SystemRandomNumberGenerator()
        return QueueID.generate(now: now, using: &rng)
    }
    /// The users submission sessions authenticate against; nil: AUTH answers `454 4.7.0`.
    public var accounts: (any AccountDirectory)?
    /// Failed authentications per source, across sessions and listeners.
    public var authGuard: AuthenticationGuard
    /// Per-user message and recipient budgets of authenticated senders.
    public var submissionQuota = SubmissionQuota()
    /// Where password checks (PBKDF2) run: not `threadPool`, whose two threads write spooled bodies.
    public var kdfPool: NIOThreadPool = .singleton
    /// The secret an unknown user's SCRAM salt is derived from (random per process is enough).
    public var standInSecret: [UInt8]
    /// SPF, DKIM and DMARC for mail from other servers (port 25, not trusted, not authenticated);
    /// nil: not checked.
    public var inboundAuthenticator: (any InboundAuthenticator)?
    /// Forged `Authentication-Results` out of the mail the authenticator does not see.
    public var forgedResultsRemover: (any ForgedResultsRemover)?

    public init(
        policy: SharedPolicy, admission: AdmissionControl, committer: any MessageCommitter, spool: Spool,
        threadPool: NIOThreadPool, tls: NIOSSLContext?, logger: Logger, metrics: IngressMetrics = IngressMetrics(),
        now: @escaping @Sendable () -> Date = { Date() }, accounts: (any AccountDirectory)? = nil,
        authGuard: AuthenticationGuard = AuthenticationGuard(),
        inboundAuthenticator: (any InboundAuthenticator)? = nil
    ) {
        self.inboundAuthenticator = inboundAuthenticator
        self.accounts = accounts
        self.authGuard = authGuard
        var rng = SystemRandomNumberGenerator()
        self.standInSecret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        self.now = now
        self.metrics = metrics
        self.policy = policy
        self.admission = admission
        self.committer = committer
        self.spool = spool
        self.threadPool = threadPool
        self.tls = tls
        self.logger = logger
    }
}

/// Sent down a session's pipeline when the server begins to stop.
public struct ShutdownRequestedEvent: Sendable {}
