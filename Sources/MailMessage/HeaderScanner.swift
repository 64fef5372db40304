/// Collects the header section of a message as it streams by (RFC 5322 §2.2), up to a cap, and
/// answers the few questions the queue asks of it: is there a `Message-ID`, what is it, the subject.
///
/// ```swift
/// var s = HeaderScanner()
/// s.feed(Array("Subject: hi\r\nMessage-ID: <a@b>\r\n\r\nbody".utf8))
/// s.messageID  // "<a@b>"
/// ```
public struct HeaderScanner: Sendable {
    /// Headers beyond this many octets are not examined (they are still stored).
    public static let maxHeaderBytes = 64 * 1024

    var bytes: [UInt8] = []
    public private(set) var complete = false

    public init() {}

    public mutating func feed<C: Collection>(_ chunk: C) where C.Element == UInt8 {
        guard !complete else { return }
        let room = Self.maxHeaderBytes - bytes.count
        bytes.append(contentsOf: chunk.prefix(room))
        if let end = findEnd() {
            bytes.removeSubrange(end...)
            complete = true
        } else if bytes.count >= Self.maxHeaderBytes {
            complete = true
        }
    }

    func findEnd() -> Int? {
        guard bytes.count >= 2 else { return nil }
        if bytes[0] == 0x0D && bytes[1] == 0x0A { return 0 }  // no headers at all
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4)
        where bytes[i] == 0x0D && bytes[i + 1] == 0x0A && bytes[i + 2] == 0x0D && bytes[i + 3] == 0x0A {
            return i + 2
        }
        return nil
    }

    /// Header fields in order, unfolded, names as written.
    public var fields: [(name: String, value: String)] {
        let text = String(decoding: bytes, as: UTF8.self)
        var out: [(String, String)] = []
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: false) {
            if line.first == " " || line.first == "\t" {
                if !out.isEmpty { out[out.count - 1].1 += " " + line.drop(while: { $0 == " " || $0 == "\t" }) }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: " \t")
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            out.append((String(name), String(value)))
        }
        return out
    }

    public func value(of name: String) -> String? {
        let lower = name.lowercased()
        return fields.first { $0.name.lowercased() == lower }?.value
    }

    public var messageID: String? { value(of: "Message-ID") }
    public var subject: String? { value(of: "Subject") }
}

extension Substring {
    func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return s
    }
}
