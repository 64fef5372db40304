import Foundation
import NIOCore

/// An IPv4 (RFC 1035 §3.4.1) or IPv6 (RFC 3596 §2.2) address, as carried by A and AAAA records.
public struct DNSIPAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, network order.
    public let bytes: [UInt8]

    /// Wraps 4 or 16 bytes; any other count is not an address.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Parses dotted-quad IPv4 or RFC 4291 §2.2 IPv6 text (`::` and an embedded IPv4 tail allowed).
    public init?(_ text: String) {
        if let v4 = Self.parseIPv4(Substring(text)) {
            self.bytes = v4
        } else if let v6 = Self.parseIPv6(text) {
            self.bytes = v6
        } else {
            return nil
        }
    }

    /// True for an IPv4 address.
    public var isIPv4: Bool { bytes.count == 4 }

    /// Dotted quad for IPv4, RFC 5952 compressed form for IPv6.
    public var description: String {
        if isIPv4 {
            return bytes.map(String.init).joined(separator: ".")
        }
        var groups: [UInt16] = []
        for index in stride(from: 0, to: 16, by: 2) {
            groups.append(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]))
        }
        // Longest run (length >= 2) of zero groups, first one on a tie (RFC 5952 §4.2).
        var bestStart = -1
        var bestLength = 0
        var index = 0
        while index < 8 {
            if groups[index] == 0 {
                var end = index
                while end < 8 && groups[end] == 0 { end += 1 }
                if end - index > bestLength {
                    bestStart = index
                    bestLength = end - index
                }
                index = end
            } else {
                index += 1
            }
        }
        let hex = groups.map { String($0, radix: 16) }
        if bestLength < 2 {
            return hex.joined(separator: ":")
        }
        let head = hex[0..<bestStart].joined(separator: ":")
        let tail = hex[(bestStart + bestLength)...].joined(separator: ":")
        return head + "::" + tail
    }

    /// A NIO socket address for this IP and `port`.
    public func socketAddress(port: Int) throws -> SocketAddress {
        var buffer = ByteBuffer()
        buffer.writeBytes(bytes)
        return try SocketAddress(packedIPAddress: buffer, port: port)
    }

    /// The reverse-lookup name: `d.c.b.a.in-addr.arpa` (RFC 1035 §3.5) or nibbles under `ip6.arpa` (RFC 3596 §2.5).
    public var reverseName: DNSName {
        var labels: [[UInt8]] = []
        if isIPv4 {
            for byte in bytes.reversed() {
                labels.append(Array(String(byte).utf8))
            }
            labels.append(Array("in-addr".utf8))
        } else {
            let digits = Array("0123456789abcdef".utf8)
            for byte in bytes.reversed() {
                labels.append([digits[Int(byte & 0x0F)]])
                labels.append([digits[Int(byte >> 4)]])
            }
            labels.append(Array("ip6".utf8))
        }
        labels.append(Array("arpa".utf8))
        return DNSName(uncheckedLabels: labels)
    }

    static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let value = UInt8(part)
            else { return nil }
            out.append(value)
        }
        return out
    }

    static func parseIPv6(_ text: String) -> [UInt8]? {
        guard text.contains(":") else { return nil }
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String, allowIPv4Tail: Bool) -> [UInt8]? {
            if part.isEmpty { return [] }
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            var out: [UInt8] = []
            for (index, field) in fields.enumerated() {
                if allowIPv4Tail && index == fields.count - 1 && field.contains(".") {
                    guard let v4 = parseIPv4(field) else { return nil }
                    out += v4
                    continue
                }
                guard !field.isEmpty, field.count <= 4, let value = UInt16(field, radix: 16) else { return nil }
                out += [UInt8(value >> 8), UInt8(value & 0xFF)]
            }
            return out
        }
        if halves.count == 1 {
            guard let all = groups(halves[0], allowIPv4Tail: true), all.count == 16 else { return nil }
            return all
        }
        guard let head = groups(halves[0], allowIPv4Tail: false), let tail = groups(halves[1], allowIPv4Tail: true),
            head.count + tail.count <= 14
        else { return nil }
        return head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
    }
}
