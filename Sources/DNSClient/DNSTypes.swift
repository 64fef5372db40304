/// A resource record TYPE or QTYPE (RFC 1035 §3.2.2, §3.2.3); unknown values are kept as they are.
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    /// IPv4 host address (RFC 1035 §3.4.1).
    public static let a = DNSRecordType(rawValue: 1)
    /// Authoritative name server (RFC 1035 §3.3.11).
    public static let ns = DNSRecordType(rawValue: 2)
    /// Canonical name (RFC 1035 §3.3.1).
    public static let cname = DNSRecordType(rawValue: 5)
    /// Start of authority (RFC 1035 §3.3.13).
    public static let soa = DNSRecordType(rawValue: 6)
    /// Domain name pointer (RFC 1035 §3.3.12).
    public static let ptr = DNSRecordType(rawValue: 12)
    /// Mail exchange (RFC 1035 §3.3.9).
    public static let mx = DNSRecordType(rawValue: 15)
    /// Text strings (RFC 1035 §3.3.14).
    public static let txt = DNSRecordType(rawValue: 16)
    /// IPv6 host address (RFC 3596 §2.1).
    public static let aaaa = DNSRecordType(rawValue: 28)
    /// Service location (RFC 2782).
    public static let srv = DNSRecordType(rawValue: 33)
    /// EDNS(0) pseudo-record (RFC 6891 §6.1).
    public static let opt = DNSRecordType(rawValue: 41)
    /// TLSA certificate association (RFC 6698 §2).
    public static let tlsa = DNSRecordType(rawValue: 52)

    public var description: String {
        switch self {
        case .a: return "A"
        case .ns: return "NS"
        case .cname: return "CNAME"
        case .soa: return "SOA"
        case .ptr: return "PTR"
        case .mx: return "MX"
        case .txt: return "TXT"
        case .aaaa: return "AAAA"
        case .srv: return "SRV"
        case .opt: return "OPT"
        case .tlsa: return "TLSA"
        default: return "TYPE\(rawValue)"
        }
    }
}

/// A record CLASS (RFC 1035 §3.2.4); only IN is used in practice.
public struct DNSClass: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    /// The Internet class.
    public static let internet = DNSClass(rawValue: 1)
}

/// The 4-bit header RCODE, extended to 12 bits by EDNS(0) (RFC 1035 §4.1.1, RFC 6891 §6.1.3).
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    /// No error.
    public static let noError = DNSResponseCode(rawValue: 0)
    /// The server could not interpret the query.
    public static let formatError = DNSResponseCode(rawValue: 1)
    /// The server failed to process the query.
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    /// The name does not exist (NXDOMAIN).
    public static let nameError = DNSResponseCode(rawValue: 3)
    /// The server does not support this kind of query.
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    /// The server refuses to answer.
    public static let refused = DNSResponseCode(rawValue: 5)

    public var description: String {
        switch self {
        case .noError: return "NOERROR"
        case .formatError: return "FORMERR"
        case .serverFailure: return "SERVFAIL"
        case .nameError: return "NXDOMAIN"
        case .notImplemented: return "NOTIMP"
        case .refused: return "REFUSED"
        default: return "RCODE\(rawValue)"
        }
    }
}

/// The fixed 12-byte message header (RFC 1035 §4.1.1), with the AD and CD bits of RFC 4035 §3.2.
public struct DNSHeader: Hashable, Sendable {
    /// The query identifier, echoed by the server.
    public var id: UInt16
    /// QR: true in a response.
    public var isResponse: Bool
    /// OPCODE (0 = standard query).
    public var opcode: UInt8
    /// AA: authoritative answer.
    public var authoritative: Bool
    /// TC: the message was truncated to fit the transport.
    public var truncated: Bool
    /// RD: recursion desired.
    public var recursionDesired: Bool
    /// RA: recursion available.
    public var recursionAvailable: Bool
    /// AD: the resolver validated the data with DNSSEC (RFC 4035 §3.2.3).
    public var authenticData: Bool
    /// CD: checking disabled (RFC 4035 §3.2.2).
    public var checkingDisabled: Bool
    /// The low 4 bits of the response code.
    public var rcode: UInt8

    public init(
        id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, authoritative: Bool = false,
        truncated: Bool = false, recursionDesired: Bool = true, recursionAvailable: Bool = false,
        authenticData: Bool = false, checkingDisabled: Bool = false, rcode: UInt8 = 0
    ) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.authoritative = authoritative
        self.truncated = truncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.rcode = rcode
    }

    /// The flags word (second 16 bits of the header).
    var flags: UInt16 {
        var value: UInt16 = 0
        if isResponse { value |= 0x8000 }
        value |= UInt16(opcode & 0x0F) << 11
        if authoritative { value |= 0x0400 }
        if truncated { value |= 0x0200 }
        if recursionDesired { value |= 0x0100 }
        if recursionAvailable { value |= 0x0080 }
        if authenticData { value |= 0x0020 }
        if checkingDisabled { value |= 0x0010 }
        value |= UInt16(rcode & 0x0F)
        return value
    }

    init(id: UInt16, flags: UInt16) {
        self.init(
            id: id,
            isResponse: flags & 0x8000 != 0,
            opcode: UInt8((flags >> 11) & 0x0F),
            authoritative: flags & 0x0400 != 0,
            truncated: flags & 0x0200 != 0,
            recursionDesired: flags & 0x0100 != 0,
            recursionAvailable: flags & 0x0080 != 0,
            authenticData: flags & 0x0020 != 0,
            checkingDisabled: flags & 0x0010 != 0,
            rcode: UInt8(flags & 0x000F)
        )
    }
}

/// One entry of the question section (RFC 1035 §4.1.2).
public struct DNSQuestion: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: DNSClass

    public init(name: DNSName, type: DNSRecordType, recordClass: DNSClass = .internet) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}

/// An MX record's data (RFC 1035 §3.3.9).
public struct MXRecord: Hashable, Sendable {
    /// Lower is preferred.
    public var preference: UInt16
    /// The mail host; the root name `.` is a Null MX (RFC 7505).
    public var exchange: DNSName

    public init(preference: UInt16, exchange: DNSName) {
        self.preference = preference
        self.exchange = exchange
    }
}

/// A TLSA record's data (RFC 6698 §2.1) for DANE (RFC 7672).
public struct TLSARecord: Hashable, Sendable {
    /// Certificate usage (0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE).
    public var usage: UInt8
    /// Selector (0 full certificate, 1 SubjectPublicKeyInfo).
    public var selector: UInt8
    /// Matching type (0 exact, 1 SHA-256, 2 SHA-512).
    public var matchingType: UInt8
    /// Certificate association data.
    public var data: [UInt8]

    public init(usage: UInt8, selector: UInt8, matchingType: UInt8, data: [UInt8]) {
        self.usage = usage
        self.selector = selector
        self.matchingType = matchingType
        self.data = data
    }
}

/// An SOA record's data (RFC 1035 §3.3.13); `minimum` is the negative-caching TTL (RFC 2308 §4).
public struct SOARecord: Hashable, Sendable {
    public var primaryServer: DNSName
    public var responsibleMailbox: DNSName
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    public var minimum: UInt32

    public init(
        primaryServer: DNSName, responsibleMailbox: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32,
        expire: UInt32, minimum: UInt32
    ) {
        self.primaryServer = primaryServer
        self.responsibleMailbox = responsibleMailbox
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }
}

/// One EDNS(0) option inside an OPT record (RFC 6891 §6.1.2).
public struct EDNSOption: Hashable, Sendable {
    public var code: UInt16
    public var data: [UInt8]

    public init(code: UInt16, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

/// Decoded RDATA. Types this client does not interpret are kept as raw bytes.
public enum DNSRecordData: Hashable, Sendable {
    /// A (RFC 1035 §3.4.1).
    case a(DNSIPAddress)
    /// AAAA (RFC 3596 §2.2).
    case aaaa(DNSIPAddress)
    /// MX (RFC 1035 §3.3.9).
    case mx(MXRecord)
    /// TXT: one or more character-strings, kept as raw bytes (RFC 1035 §3.3.14).
    case txt([[UInt8]])
    /// TLSA (RFC 6698 §2.1).
    case tlsa(TLSARecord)
    /// PTR (RFC 1035 §3.3.12).
    case ptr(DNSName)
    /// CNAME (RFC 1035 §3.3.1).
    case cname(DNSName)
    /// NS (RFC 1035 §3.3.11).
    case ns(DNSName)
    /// SOA (RFC 1035 §3.3.13).
    case soa(SOARecord)
    /// OPT options (RFC 6891 §6.1.2).
    case opt([EDNSOption])
    /// Any other type, uninterpreted.
    case raw([UInt8])
}

/// A resource record (RFC 1035 §4.1.3). For OPT, `recordClass` carries the UDP payload size and `ttl` the
/// extended RCODE, version and flags (RFC 6891 §6.1.3).
public struct DNSResourceRecord: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: DNSClass
    public var ttl: UInt32
    public var data: DNSRecordData

    public init(
        name: DNSName, type: DNSRecordType, recordClass: DNSClass = .internet, ttl: UInt32, data: DNSRecordData
    ) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }
}
