/// Removes `Authentication-Results` fields that claim to come from this host (RFC 8601 §5): a
/// receiving server must not pass on results it did not add under its own authserv-id, since
/// downstream filters trust that id.
///
/// Works on the raw header block (bytes up to the blank line, CRLF or bare LF line ends): a field
/// is its first line and every continuation line (starting with SP or HTAB). A field is removed
/// when its name is `Authentication-Results` (any case) and its authserv-id — the first value
/// after any comments and whitespace, a token or a quoted-string — equals one of `authservIDs`
/// (ASCII case-insensitively). Every other byte is kept as it was; `ARC-Authentication-Results`
/// and fields with other ids stay.
///
///     let filtered = AuthenticationResultsFilter(authservIDs: ["mx.example.net"]).filter(headerBlock)
///     filtered.removed  // 1 for "Authentication-Results: mx.example.net; spf=pass"
public struct AuthenticationResultsFilter: Sendable {
    /// Our ids, lowercased.
    let ids: Set<String>

    public init(authservIDs: [String]) {
        ids = Set(authservIDs.map { $0.lowercased() })
    }

    /// The header block without forged fields, and how many were removed.
    public struct Outcome: Sendable, Hashable {
        public var header: [UInt8]
        public var removed: Int
    }

    public func filter(_ header: [UInt8]) -> Outcome {
        var out: [UInt8] = []
        out.reserveCapacity(header.count)
        var removed = 0
        var index = 0
        while index < header.count {
            // One field: its first line and the continuation lines after it.
            var end = Self.lineEnd(header, from: index)
            while end < header.count, header[end] == 0x20 || header[end] == 0x09 {
                end = Self.lineEnd(header, from: end)
            }
            let field = header[index..<end]
            if isForged(field) {
                removed += 1
            } else {
                out += field
            }
            index = end
        }
        return Outcome(header: out, removed: removed)
    }

    /// The same over text.
    public func filter(_ header: String) -> (header: String, removed: Int) {
        let outcome = filter(Array(header.utf8))
        return (String(decoding: outcome.header, as: UTF8.self), outcome.removed)
    }

    /// The index after the line starting at `from` (after its LF, or the end).
    static func lineEnd(_ bytes: [UInt8], from: Int) -> Int {
        var i = from
        while i < bytes.count, bytes[i] != 0x0A { i += 1 }
        return min(i + 1, bytes.count)
    }

    func isForged(_ field: ArraySlice<UInt8>) -> Bool {
        guard let colon = field.firstIndex(of: UInt8(ascii: ":")) else { return false }
        var name = field[field.startIndex..<colon]
        while let last = name.last, last == 0x20 || last == 0x09 { name = name.dropLast() }
        guard String(decoding: name, as: UTF8.self).lowercased() == "authentication-results" else { return false }
        guard let id = Self.authservID(field[(colon + 1)...]) else { return false }
        return ids.contains(id.lowercased())
    }

    /// The first value of an A-R field body, after CFWS (RFC 8601 §2.2 `authserv-id = value`).
    static func authservID(_ body: ArraySlice<UInt8>) -> String? {
        var i = body.startIndex
        func skipCFWS() {
            var depth = 0
            while i < body.endIndex {
                let b = body[i]
                if depth > 0 {
                    if b == UInt8(ascii: "\\") {
                        i += 1
                    } else if b == UInt8(ascii: "(") {
                        depth += 1
                    } else if b == UInt8(ascii: ")") {
                        depth -= 1
                    }
                    i += 1
                } else if b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A {
                    i += 1
                } else if b == UInt8(ascii: "(") {
                    depth = 1
                    i += 1
                } else {
                    return
                }
            }
        }
        skipCFWS()
        guard i < body.endIndex else { return nil }
        var value: [UInt8] = []
        if body[i] == UInt8(ascii: "\"") {
            i += 1
            while i < body.endIndex, body[i] != UInt8(ascii: "\"") {
                if body[i] == UInt8(ascii: "\\"), i + 1 < body.endIndex { i += 1 }
                if body[i] != 0x0D && body[i] != 0x0A { value.append(body[i]) }
                i += 1
            }
        } else {
            while i < body.endIndex {
                let b = body[i]
                if b <= 0x20 || b == 0x7F || b == UInt8(ascii: ";") || b == UInt8(ascii: "(") { break }
                value.append(b)
                i += 1
            }
        }
        return value.isEmpty ? nil : String(decoding: value, as: UTF8.self)
    }
}
