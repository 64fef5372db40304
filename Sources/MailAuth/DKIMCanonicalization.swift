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
            return Self.relaxedBody(body)
        }
    }

    /// §3.4.4 in one pass over raw buffers: the output is never longer than the input plus a CRLF.
    static func relaxedBody(_ body: ArraySlice<UInt8>) -> [UInt8] {
        body.withUnsafeBufferPointer { input in
            [UInt8](unsafeUninitializedCapacity: input.count + 2) { out, written in
                var n = 0
                // White space is held back until something other than a line end follows it.
                var pendingSpace = false
                var lineStart = 0
                // Where the output ends if the empty lines since the last non-empty one are dropped.
                var contentEnd = 0
                var i = 0
                let count = input.count
                while i < count {
                    let b = input[i]
                    if b == 0x0D, i + 1 < count, input[i + 1] == 0x0A {
                        pendingSpace = false
                        let empty = n == lineStart
                        out[n] = 0x0D
                        out[n + 1] = 0x0A
                        n += 2
                        if !empty { contentEnd = n }
                        lineStart = n
                        i += 2
                        continue
                    }
                    if b == 0x20 || b == 0x09 {
                        pendingSpace = true
                    } else {
                        if pendingSpace {
                            out[n] = 0x20
                            n += 1
                            pendingSpace = false
                        }
                        out[n] = b
                        n += 1
                    }
                    i += 1
                }
                if n > lineStart {
                    // A last line without CRLF gets one (§3.4.4).
                    out[n] = 0x0D
                    out[n + 1] = 0x0A
                    n += 2
                    contentEnd = n
                }
                written = contentEnd
            }
        }
    }

    static func isWSP(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
}
