/// A DKIM canonicalization algorithm (RFC 6376 §3.4): how header fields and the body are made
/// byte-exact before hashing, so that what mail systems commonly change in transit does not break the
/// signature. `c=relaxed/relaxed` is what Mailflow signs with.
///
/// RFC 6376 §3.4.6 example: the header field `A: X` and ` B : Y\t\r\n\tZ  ` become `a:X` and `b:Y Z`
/// in relaxed form; the body ` C \r\nD \t E\r\n\r\n\r\n` becomes ` C\r\nD E\r\n`.
public enum DKIMCanonicalization: String, Sendable, Hashable, CaseIterable {
    case simple
    case relaxed

    /// Parses `c=` (§3.5): `header[/body]`, the body defaulting to simple; nil when unknown.
    public static func pair(_ text: String) -> (header: Self, body: Self)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let header = Self(rawValue: String(parts[0]).lowercased()) else {
            return nil
        }
        guard parts.count == 2 else { return (header, .simple) }
        guard let body = Self(rawValue: String(parts[1]).lowercased()) else { return nil }
        return (header, body)
    }

    // MARK: Header fields (§3.4.1, §3.4.2)

    /// The canonical form of one header field, with its CRLF.
    public func header(_ field: DKIMMessage.HeaderField) -> [UInt8] {
        var out: [UInt8] = []
        appendHeader(field.raw, colon: field.colon, to: &out, withCRLF: true)
        return out
    }

    /// Appends the canonical form of the field `raw` (name, colon, value, optional final CRLF).
    func appendHeader(_ raw: ArraySlice<UInt8>, colon: Int, to out: inout [UInt8], withCRLF: Bool) {
        switch self {
        case .simple:
            var end = raw.endIndex
            if !withCRLF, end - raw.startIndex >= 2, raw[end - 2] == 0x0D, raw[end - 1] == 0x0A { end -= 2 }
            out.append(contentsOf: raw[raw.startIndex..<end])
        case .relaxed:
            // Name: lowercased, white space before the colon removed.
            var nameEnd = colon
            while nameEnd > raw.startIndex, Self.isWSP(raw[nameEnd - 1]) { nameEnd -= 1 }
            for b in raw[raw.startIndex..<nameEnd] { out.append((0x41...0x5A).contains(b) ? b | 0x20 : b) }
            out.append(UInt8(ascii: ":"))
            // Value: unfolded, runs of WSP as one SP, none at the start or the end.
            var pendingSpace = false
            var wroteAny = false
            for b in raw[(colon + 1)...] {
                if b == 0x0D || b == 0x0A { continue }
                if Self.isWSP(b) {
                    pendingSpace = wroteAny
                    continue
                }
                if pendingSpace { out.append(0x20) }
                pendingSpace = false
                wroteAny = true
                out.append(b)
            }
            if withCRLF { out.append(contentsOf: [0x0D, 0x0A]) }
        }
    }

    // MARK: Body (§3.4.3, §3.4.4)

    /// The canonical body.
    public func body(_ body: ArraySlice<UInt8>) -> [UInt8] {
        switch self {
        case .simple:
            // Trailing empty lines go; the body ends with exactly one CRLF, and an empty body is CRLF.
            var end = body.endIndex
            while end - body.startIndex >= 2, body[end - 2] == 0x0D, body[end - 1] == 0x0A { end -= 2 }
            var out = [UInt8]()
            out.reserveCapacity(end - body.startIndex + 2)
            out.append(contentsOf: body[body.startIndex..<end])
            out.append(contentsOf: [0x0D, 0x0A])
            return out
        case .relaxed:
            var out = [UInt8]()
            out.reserveCapacity(body.count + 2)
            // Bytes of the line being built; white space is held back until something follows it.
            var pendingSpace = false
            var lineStart = 0
            // Where the output ends if the empty lines seen since the last non-empty one are dropped.
            var contentEnd = 0
            var index = body.startIndex
            while index < body.endIndex {
                let b = body[index]
                if b == 0x0D, index + 1 < body.endIndex, body[index + 1] == 0x0A {
                    pendingSpace = false
                    let empty = out.count == lineStart
                    out.append(contentsOf: [0x0D, 0x0A])
                    if !empty { contentEnd = out.count }
                    lineStart = out.count
                    index += 2
                    continue
                }
                if Self.isWSP(b) {
                    pendingSpace = true
                } else {
                    if pendingSpace { out.append(0x20) }
                    pendingSpace = false
                    out.append(b)
                }
                index += 1
            }
            if out.count > lineStart {
                // A last line without CRLF gets one (§3.4.4).
                out.append(contentsOf: [0x0D, 0x0A])
                contentEnd = out.count
            }
            out.removeSubrange(contentEnd...)
            return out
        }
    }

    static func isWSP(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
}
