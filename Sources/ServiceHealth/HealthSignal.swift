import Foundation

/// Which way mail was flowing when an SMTP outcome happened.
public enum MailDirection: String, Sendable, Codable, Hashable, CaseIterable {
    /// Mailflow's SMTP server answering a client (including admission refusals at connect).
    case inbound
    /// Mailflow delivering to a remote server (one attempt's reply or connection error).
    case outbound
}

/// One SMTP outcome from the trace stream, as service health sees it.
public struct SMTPOutcome: Sendable, Hashable {
    public var direction: MailDirection
    public var forest: String
    public var region: String
    public var tenant: String
    /// The client's address (inbound only).
    public var clientIP: String?
    /// The remote provider, usually the recipient domain (outbound only).
    public var destination: String?
    /// The SMTP reply line, or a connection error text.
    public var reply: String
    /// Delivery latency (outbound: from acceptance to this attempt's end), when known.
    public var latencyMilliseconds: Double?

    public init(
        direction: MailDirection, forest: String, region: String, tenant: String, clientIP: String? = nil,
        destination: String? = nil, reply: String, latencyMilliseconds: Double? = nil
    ) {
        self.direction = direction
        self.forest = forest
        self.region = region
        self.tenant = tenant
        self.clientIP = clientIP
        self.destination = destination
        self.reply = reply
        self.latencyMilliseconds = latencyMilliseconds
    }
}

/// A tenant admin's problem report ("Report an issue"): free text, optionally the error seen.
public struct ProblemReport: Sendable, Hashable, Codable {
    public var tenant: String
    public var region: String
    public var text: String
    /// The error text the user saw, if given; matched to signatures.
    public var errorText: String?

    public init(tenant: String, region: String, text: String, errorText: String? = nil) {
        self.tenant = tenant
        self.region = region
        self.text = text
        self.errorText = errorText
    }
}

/// One input to the service-health monitor, at a point in (real or virtual) time.
public struct HealthSignal: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case smtp(SMTPOutcome)
        case report(ProblemReport)
    }

    public var time: Date
    public var kind: Kind

    public init(time: Date, kind: Kind) {
        self.time = time
        self.kind = kind
    }
}
