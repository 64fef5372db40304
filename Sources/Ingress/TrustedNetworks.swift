import NIOCore

/// Client networks allowed to relay (send to domains that are not local), as CIDR blocks.
/// Empty by default: Mailflow is never an open relay unless told whom to trust.
///
/// ```swift
/// let t = try TrustedNetworks(["127.0.0.0/8", "::1/128"])
/// t.contains("127.0.0.2")  // true
/// ```
public struct TrustedNetworks: Sendable, Equatable {
    struct Block: Sendable, Equatable {
        var bytes: [UInt8]
        var prefix: Int
    }

    var blocks: [Block] = []

    public init() {}

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ cidrs: [String]) throws {
        for c in cidrs {
            let parts = c.split(separator: "/", maxSplits: 1)
            guard let first = parts.first, let bytes = Self.bytes(String(first)) else {
                throw ParseError(description: "\(Self.quote(c)) is not an IP address or CIDR block")
            }
            let prefix = parts.count == 2 ? Int(parts[1]) : bytes.count * 8
            guard let prefix, (0...(bytes.count * 8)).contains(prefix) else {
                throw ParseError(description: "\(Self.quote(c)) has a bad prefix length")
            }
            blocks.append(Block(bytes: bytes, prefix: prefix))
        }
    }

    /// A block with a shorter prefix than these trusts a sizeable part of the Internet to relay:
    /// that is an open relay, whatever the intent.
    public static let openRelayIPv4Prefix = 8
    public static let openRelayIPv6Prefix = 16

    /// The positions, in the list given to `init`, of the blocks wider than an IPv4 /8 or an IPv6
    /// /16. Each block is judged by its own prefix length, so `0.0.0.0/1` and `128.0.0.0/1` (which
    /// together are everyone) are both caught.
    public var openRelayEntries: [Int] {
        blocks.indices.filter { i in
            blocks[i].prefix < (blocks[i].bytes.count == 4 ? Self.openRelayIPv4Prefix : Self.openRelayIPv6Prefix)
        }
    }

    /// An entry as an error quotes it: at most 80 characters, control characters escaped.
    static func quote(_ text: String) -> String {
        var out = ""
        for (n, u) in text.unicodeScalars.enumerated() {
            if n == 80 { return "'\(out)…'" }
            if u.properties.generalCategory == .control || u.properties.generalCategory == .format {
                out += "\\u{\(String(u.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return "'\(out)'"
    }

    static func bytes(_ ip: String) -> [UInt8]? {
        guard let sa = try? SocketAddress(ipAddress: ip, port: 0) else { return nil }
        switch sa {
        case .v4(let a):
            var addr = a.address.sin_addr
            return withUnsafeBytes(of: &addr) { Array($0) }
        case .v6(let a):
            var addr = a.address.sin6_addr
            let b = withUnsafeBytes(of: &addr) { Array($0) }
            // IPv4-mapped IPv6 matches IPv4 blocks.
            if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return Array(b[12..<16]) }
            return b
        default:
            return nil
        }
    }

    public func contains(_ ip: String) -> Bool {
        guard let b = Self.bytes(ip) else { return false }
        return blocks.contains { block in
            guard block.bytes.count == b.count else { return false }
            var bits = block.prefix
            for i in 0..<b.count {
                if bits <= 0 { return true }
                let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
                if b[i] & mask != block.bytes[i] & mask { return false }
                bits -= 8
            }
            return true
        }
    }

    public var isEmpty: Bool { blocks.isEmpty }
}
