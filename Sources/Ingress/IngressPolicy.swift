import NIOCore
import SMTPCore
import Synchronization

/// Timeouts of an inbound session (RFC 5321 §4.5.3.2).
///
/// With `requestDeadline` on (the default) a timeout is a deadline for the whole request, not an
/// idle timer that every byte restarts, as Postfix's `smtpd_per_request_deadline`: a command line
/// must be complete within `command`; a body (DATA, or one BDAT chunk) starts with `data` and earns
/// one more second for every `minDataRate` octets, never more than `data` ahead. A client dripping
/// a byte every few seconds is closed after `data`, not after the one-hour `session` cap.
public struct SessionTimeouts: Sendable, Equatable {
    /// Waiting for the next command (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    public var command: TimeAmount
    /// Silence allowed while a body streams in; with `requestDeadline`, the body's starting budget.
    public var data: TimeAmount
    /// A hard cap on one session's whole life, whatever it does.
    public var session: TimeAmount
    /// Deadlines per request (true) or idle timers restarted by every byte (false).
    public var requestDeadline: Bool
    /// Octets per second a body must keep up to extend its deadline (Postfix's `smtpd_min_data_rate`).
    public var minDataRate: Int
    /// A TLS handshake (after STARTTLS, or on an implicit-TLS listener) must be complete within this;
    /// a client that stalls in it is closed without a reply (none can reach it).
    public var tlsHandshake: TimeAmount

    public init(
        command: TimeAmount = .seconds(300), data: TimeAmount = .seconds(180), session: TimeAmount = .seconds(3600),
        requestDeadline: Bool = true, minDataRate: Int = 500, tlsHandshake: TimeAmount = .seconds(30)
    ) {
        self.command = command
        self.data = data
        self.session = session
        self.requestDeadline = requestDeadline
        self.minDataRate = minDataRate
        self.tlsHandshake = tlsHandshake
    }
}

/// The part of the ingress configuration a reload (SIGHUP) may change: new sessions take the
/// current one; live sessions keep the one they started with.
public struct IngressPolicy: Sendable {
    public var session: ServerSessionConfiguration
    public var timeouts: SessionTimeouts
    public var directory: TenantDirectory
    /// Delay before every error reply (0: none).
    public var tarpit: TimeAmount
    /// Pause before the greeting; a client that talks first is refused (0: off).
    public var greetPause: TimeAmount
    /// Clients allowed to relay to other domains.
    public var trustedNetworks = TrustedNetworks()
    /// AUTH on the submission listeners: mechanisms, failure delays and lockout.
    public var submission = SubmissionPolicy()

    public init(
        session: ServerSessionConfiguration, timeouts: SessionTimeouts, directory: TenantDirectory,
        tarpit: TimeAmount = .zero, greetPause: TimeAmount = .zero, trustedNetworks: TrustedNetworks = TrustedNetworks()
    ) {
        self.trustedNetworks = trustedNetworks
        self.session = session
        self.timeouts = timeouts
        self.directory = directory
        self.tarpit = tarpit
        self.greetPause = greetPause
    }
}

/// The current `IngressPolicy`, shared by the server and replaced on reload.
public final class SharedPolicy: Sendable {
    let mutex: Mutex<IngressPolicy>
    public init(_ value: IngressPolicy) { mutex = Mutex(value) }
    public var current: IngressPolicy { mutex.withLock { $0 } }
    public func replace(_ p: IngressPolicy) { mutex.withLock { $0 = p } }
}
