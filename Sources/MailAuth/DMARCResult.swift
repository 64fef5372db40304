/// A DKIM verification outcome as DMARC needs it (RFC 7489 §4.2): the signing domain `d=` and
/// whether the signature verified. The DKIM verifier's results map onto it.
///
///     DMARCDKIMInput(parsing: "example.org=pass")  // domain example.org, passed
public struct DMARCDKIMInput: Sendable, Hashable {
    /// The signature's `d=` domain.
    public var domain: String
    /// True when the signature verified (DKIM result pass).
    public var passed: Bool

    public init(domain: String, passed: Bool) {
        self.domain = domain
        self.passed = passed
    }

    /// From the DKIM verifier's result: only `pass` passes (`policy`, a signature with `l=` leaving
    /// content unsigned, does not); nil when the signature had no `d=`.
    public init?(_ result: DKIMResult) {
        guard let domain = result.domain else { return nil }
        self.init(domain: domain, passed: result.status == .pass)
    }

    /// `DOMAIN=pass` or `DOMAIN=fail` (any result other than pass counts as not passed).
    public init?(parsing text: String) {
        guard let eq = text.lastIndex(of: "="), eq != text.startIndex else { return nil }
        domain = String(text[..<eq])
        passed = text[text.index(after: eq)...].lowercased() == "pass"
    }
}

/// Where policy discovery (RFC 7489 §6.6.3) ended.
public enum DMARCDiscovery: Sendable, Hashable {
    /// One valid record, published at `domain` (the From domain or its organizational domain).
    case found(DMARCRecord, domain: String)
    /// No policy applies: no record, several records, or a record without a usable `p=` and `rua=`.
    case none(reason: String)
    /// A DNS failure prevented discovery.
    case temperror(reason: String)
    /// The record is malformed.
    case permerror(reason: String)
}

/// The DMARC verdict for one message (RFC 7489 §4.2, §6.6.4) and the policy to apply.
public struct DMARCResult: Sendable, Hashable, CustomStringConvertible {
    /// The results of RFC 7489 §11.2 (Authentication-Results `dmarc=`).
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case pass, fail, none, temperror, permerror
    }

    public var kind: Kind
    /// The RFC5322.From domain.
    public var fromDomain: String
    /// The From domain's organizational domain (RFC 7489 §3.2).
    public var organizationalDomain: String
    /// Where the record was found, when one was.
    public var recordDomain: String?
    /// The record's `p=`, or `sp=` when the record is the organizational domain's and the From
    /// domain is below it; nil without a record.
    public var requestedPolicy: DMARCRecord.Policy?
    /// What to do with the message: `none` unless it failed, then the requested policy, one step
    /// milder when the `pct=` sample left it out (§6.6.4).
    public var policy: DMARCRecord.Policy
    /// True when `pct=` below 100 left this message out of the requested policy.
    public var sampledOut: Bool
    /// An SPF pass for a domain aligned with the From domain.
    public var spfAligned: Bool
    /// The first passing DKIM signature's `d=` aligned with the From domain, if any.
    public var alignedDKIMDomain: String?
    /// Why, for the operator.
    public var reason: String

    public var description: String {
        "\(kind.rawValue) (\(reason)); policy \(policy.rawValue)"
    }
}
