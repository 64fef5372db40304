/// A DNS message (RFC 1035 §4.1): header, question, answer, authority and additional sections.
///
/// ``encode()`` writes uncompressed wire form; ``decode(_:)`` reads any valid message, following compression
/// pointers (RFC 1035 §4.1.4) with loop and bounds protection, and throws ``DNSDecodingError`` on malformed input.
public struct DNSMessage: Hashable, Sendable {
    /// UDP payload size advertised in the OPT record of queries (RFC 6891 §6.2.5; DNS Flag Day 2020 value).
    public static let advertisedUDPPayloadSize: UInt16 = 1232

    public var header: DNSHeader
    public var questions: [DNSQuestion]
    public var answers: [DNSResourceRecord]
    public var authority: [DNSResourceRecord]
    public var additional: [DNSResourceRecord]

    public init(
        header: DNSHeader, questions: [DNSQuestion] = [], answers: [DNSResourceRecord] = [],
        authority: [DNSResourceRecord] = [], additional: [DNSResourceRecord] = []
    ) {
        self.header = header
        self.questions = questions
        self.answers = answers
        self.authority = authority
        self.additional = additional
    }

    /// A standard recursive query (RD=1) for one question, with an EDNS(0) OPT record advertising a
    /// 1232-byte UDP payload (RFC 6891 §6.1) unless `edns` is false; `dnssecOK` sets the DO bit (RFC 3225 §3).
    public static func query(
        id: UInt16, name: DNSName, type: DNSRecordType, edns: Bool = true, dnssecOK: Bool = false
    ) -> DNSMessage {
        var message = DNSMessage(
            header: DNSHeader(id: id, recursionDesired: true),
            questions: [DNSQuestion(name: name, type: type)]
        )
        if edns {
            message.additional.append(
                DNSResourceRecord(
                    name: .root, type: .opt, recordClass: DNSClass(rawValue: advertisedUDPPayloadSize),
                    ttl: dnssecOK ? 0x0000_8000 : 0, data: .opt([])
                )
            )
        }
        return message
    }

    /// The OPT pseudo-record of the additional section, if any (RFC 6891 §6.1.1).
    public var optRecord: DNSResourceRecord? {
        additional.first { $0.type == .opt }
    }

    /// The full response code: header RCODE plus the OPT extended bits (RFC 6891 §6.1.3).
    public var responseCode: DNSResponseCode {
        let extended = optRecord.map { UInt16($0.ttl >> 24) << 4 } ?? 0
        return DNSResponseCode(rawValue: extended | UInt16(header.rcode))
    }

    // MARK: Encoding

    /// The message in uncompressed wire form.
    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        out.appendU16(header.id)
        out.appendU16(header.flags)
        out.appendU16(UInt16(truncatingIfNeeded: questions.count))
        out.appendU16(UInt16(truncatingIfNeeded: answers.count))
        out.appendU16(UInt16(truncatingIfNeeded: authority.count))
        out.appendU16(UInt16(truncatingIfNeeded: additional.count))
        for question in questions {
            out.appendName(question.name)
            out.appendU16(question.type.rawValue)
            out.appendU16(question.recordClass.rawValue)
        }
        for record in answers + authority + additional {
            out.appendName(record.name)
            out.appendU16(record.type.rawValue)
            out.appendU16(record.recordClass.rawValue)
            out.appendU32(record.ttl)
            let rdata = Self.encodeData(record.data)
            out.appendU16(UInt16(truncatingIfNeeded: rdata.count))
            out += rdata
        }
        return out
    }

    static func encodeData(_ data: DNSRecordData) -> [UInt8] {
        var out: [UInt8] = []
        switch data {
        case .a(let address), .aaaa(let address):
            out += address.bytes
        case .mx(let mx):
            out.appendU16(mx.preference)
            out.appendName(mx.exchange)
        case .txt(let strings):
            for string in strings {
                let chunk = string.prefix(255)
                out.append(UInt8(chunk.count))
                out += chunk
            }
        case .tlsa(let tlsa):
            out += [tlsa.usage, tlsa.selector, tlsa.matchingType]
            out += tlsa.data
        case .ptr(let name), .cname(let name), .ns(let name):
            out.appendName(name)
        case .soa(let soa):
            out.appendName(soa.primaryServer)
            out.appendName(soa.responsibleMailbox)
            for value in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                out.appendU32(value)
            }
        case .opt(let options):
            for option in options {
                out.appendU16(option.code)
                out.appendU16(UInt16(truncatingIfNeeded: option.data.count))
                out += option.data
            }
        case .raw(let bytes):
            out += bytes
        }
        return out
    }

    // MARK: Decoding

    /// Decodes a message; every length, count and pointer is bounds-checked.
    public static func decode(_ bytes: [UInt8]) throws(DNSDecodingError) -> DNSMessage {
        var reader = DNSWireReader(bytes: bytes)
        guard bytes.count >= 12 else { throw .truncatedHeader(length: bytes.count) }
        let id = try reader.readU16()
        let flags = try reader.readU16()
        let questionCount = try reader.readU16()
        let answerCount = try reader.readU16()
        let authorityCount = try reader.readU16()
        let additionalCount = try reader.readU16()
        var message = DNSMessage(header: DNSHeader(id: id, flags: flags))
        for _ in 0..<questionCount {
            let name = try reader.readName()
            let type = try reader.readU16(field: "QTYPE")
            let recordClass = try reader.readU16(field: "QCLASS")
            message.questions.append(
                DNSQuestion(
                    name: name, type: DNSRecordType(rawValue: type), recordClass: DNSClass(rawValue: recordClass))
            )
        }
        for _ in 0..<answerCount {
            message.answers.append(try reader.readRecord())
        }
        for _ in 0..<authorityCount {
            message.authority.append(try reader.readRecord())
        }
        for _ in 0..<additionalCount {
            message.additional.append(try reader.readRecord())
        }
        return message
    }
}

/// Why a packet could not be decoded as a DNS message (RFC 1035 §4.1). Offsets are from the start of the message.
public enum DNSDecodingError: Error, Sendable, Hashable {
    /// Fewer than the 12 header bytes.
    case truncatedHeader(length: Int)
    /// The message ends inside a field (the field name is attached).
    case truncated(field: String, offset: Int)
    /// A name longer than 255 octets once decompressed.
    case nameTooLong(offset: Int)
    /// A compression pointer past the end of the message.
    case pointerOutOfBounds(target: Int, offset: Int)
    /// A compression pointer that does not point strictly backwards, which could loop (RFC 1035 §4.1.4).
    case compressionLoop(target: Int, offset: Int)
    /// More compression pointers than a 255-octet name can need.
    case tooManyPointers(offset: Int)
    /// A length octet of 64…191: label types 0b01 and 0b10 (obsolete, RFC 6891 §5), i.e. a label over 63 octets.
    case unsupportedLabelType(offset: Int)
    /// RDLENGTH runs past the end of the message.
    case rdataOutOfBounds(type: UInt16, length: Int, offset: Int)
    /// RDATA is not the length its type requires, or its contents overrun RDLENGTH.
    case badRdata(type: UInt16, offset: Int)
}

struct DNSWireReader {
    let bytes: [UInt8]
    var offset = 0

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func readU8(field: String = "octet") throws(DNSDecodingError) -> UInt8 {
        guard offset < bytes.count else { throw .truncated(field: field, offset: offset) }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func readU16(field: String = "header") throws(DNSDecodingError) -> UInt16 {
        guard offset + 2 <= bytes.count else { throw .truncated(field: field, offset: offset) }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func readU32(field: String) throws(DNSDecodingError) -> UInt32 {
        guard offset + 4 <= bytes.count else { throw .truncated(field: field, offset: offset) }
        defer { offset += 4 }
        return UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3])
    }

    mutating func readBytes(_ count: Int, field: String) throws(DNSDecodingError) -> [UInt8] {
        guard count >= 0, offset + count <= bytes.count else { throw .truncated(field: field, offset: offset) }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// Reads a possibly compressed name. Each pointer must point before the start of the segment that contains
    /// it, so the walk strictly moves backwards and always ends.
    mutating func readName() throws(DNSDecodingError) -> DNSName {
        let start = offset
        var position = offset
        var segmentStart = offset
        var resumeAt: Int?
        var labels: [[UInt8]] = []
        var wireLength = 1
        var pointers = 0
        while true {
            guard position < bytes.count else { throw .truncated(field: "name", offset: position) }
            let length = Int(bytes[position])
            switch length & 0xC0 {
            case 0x00:
                if length == 0 {
                    offset = resumeAt ?? (position + 1)
                    return DNSName(uncheckedLabels: labels)
                }
                guard position + 1 + length <= bytes.count else { throw .truncated(field: "label", offset: position) }
                wireLength += length + 1
                guard wireLength <= DNSName.maxWireLength else { throw .nameTooLong(offset: start) }
                labels.append(Array(bytes[(position + 1)...(position + length)]))
                position += 1 + length
            case 0xC0:
                guard position + 1 < bytes.count else { throw .truncated(field: "pointer", offset: position) }
                let target = (length & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < bytes.count else { throw .pointerOutOfBounds(target: target, offset: position) }
                guard target < segmentStart else { throw .compressionLoop(target: target, offset: position) }
                pointers += 1
                guard pointers <= 127 else { throw .tooManyPointers(offset: start) }
                if resumeAt == nil { resumeAt = position + 2 }
                position = target
                segmentStart = target
            default:
                throw .unsupportedLabelType(offset: position)
            }
        }
    }

    mutating func readRecord() throws(DNSDecodingError) -> DNSResourceRecord {
        let name = try readName()
        let type = try readU16(field: "TYPE")
        let recordClass = try readU16(field: "CLASS")
        let ttl = try readU32(field: "TTL")
        let rdlength = Int(try readU16(field: "RDLENGTH"))
        let start = offset
        let end = start + rdlength
        guard end <= bytes.count else { throw .rdataOutOfBounds(type: type, length: rdlength, offset: start) }
        let data = try readData(type: DNSRecordType(rawValue: type), end: end)
        guard offset == end else { throw .badRdata(type: type, offset: start) }
        return DNSResourceRecord(
            name: name, type: DNSRecordType(rawValue: type), recordClass: DNSClass(rawValue: recordClass), ttl: ttl,
            data: data
        )
    }

    private mutating func readData(type: DNSRecordType, end: Int) throws(DNSDecodingError) -> DNSRecordData {
        let start = offset
        let length = end - start
        let bad = DNSDecodingError.badRdata(type: type.rawValue, offset: start)
        func checkInside(_ reader: DNSWireReader) throws(DNSDecodingError) {
            guard reader.offset <= end else { throw bad }
        }
        switch type {
        case .a, .aaaa:
            guard length == (type == .a ? 4 : 16),
                let address = DNSIPAddress(bytes: try readBytes(length, field: "address"))
            else { throw bad }
            return type == .a ? .a(address) : .aaaa(address)
        case .mx:
            guard length >= 3 else { throw bad }
            let preference = try readU16(field: "MX preference")
            let exchange = try readName()
            try checkInside(self)
            return .mx(MXRecord(preference: preference, exchange: exchange))
        case .txt:
            guard length >= 1 else { throw bad }
            var strings: [[UInt8]] = []
            while offset < end {
                let count = Int(try readU8(field: "TXT length"))
                guard offset + count <= end else { throw bad }
                strings.append(try readBytes(count, field: "TXT string"))
            }
            return .txt(strings)
        case .tlsa:
            guard length >= 3 else { throw bad }
            let usage = try readU8()
            let selector = try readU8()
            let matching = try readU8()
            let data = try readBytes(end - offset, field: "TLSA data")
            return .tlsa(TLSARecord(usage: usage, selector: selector, matchingType: matching, data: data))
        case .ptr, .cname, .ns:
            guard length >= 1 else { throw bad }
            let name = try readName()
            try checkInside(self)
            switch type {
            case .ptr: return .ptr(name)
            case .cname: return .cname(name)
            default: return .ns(name)
            }
        case .soa:
            guard length >= 22 else { throw bad }
            let primary = try readName()
            let mailbox = try readName()
            guard offset + 20 <= end else { throw bad }
            let serial = try readU32(field: "SOA serial")
            let refresh = try readU32(field: "SOA refresh")
            let retry = try readU32(field: "SOA retry")
            let expire = try readU32(field: "SOA expire")
            let minimum = try readU32(field: "SOA minimum")
            return .soa(
                SOARecord(
                    primaryServer: primary, responsibleMailbox: mailbox, serial: serial, refresh: refresh,
                    retry: retry, expire: expire, minimum: minimum
                )
            )
        case .opt:
            var options: [EDNSOption] = []
            while offset < end {
                guard offset + 4 <= end else { throw bad }
                let code = try readU16(field: "option code")
                let count = Int(try readU16(field: "option length"))
                guard offset + count <= end else { throw bad }
                options.append(EDNSOption(code: code, data: try readBytes(count, field: "option data")))
            }
            return .opt(options)
        default:
            return .raw(try readBytes(length, field: "RDATA"))
        }
    }
}

extension [UInt8] {
    mutating func appendU16(_ value: UInt16) {
        append(UInt8(value >> 8))
        append(UInt8(value & 0xFF))
    }

    mutating func appendU32(_ value: UInt32) {
        append(UInt8(value >> 24))
        append(UInt8((value >> 16) & 0xFF))
        append(UInt8((value >> 8) & 0xFF))
        append(UInt8(value & 0xFF))
    }

    mutating func appendName(_ name: DNSName) {
        for label in name.labels {
            append(UInt8(truncatingIfNeeded: label.count))
            self += label
        }
        append(0)
    }
}
