/// The base64 of SASL exchanges in SMTP (RFC 4954 §4, RFC 4648 §4): the standard alphabet with
/// padding, no line breaks, no spaces. Strict, so that a malformed response is refused with
/// `501 5.5.2` rather than half-decoded.
public enum SASLBase64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let values: [Int8] = {
        var t = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = Int8(i) }
        return t
    }()

    /// Whether `text` is non-empty base64 with correct padding.
    public static func isWellFormed(_ text: Substring) -> Bool {
        decode(text) != nil && !text.isEmpty
    }

    /// The octets of `text`, or nil when it is not strict base64. An empty text decodes to nothing.
    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        let bytes = Array(text.utf8)
        guard bytes.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count / 4 * 3)
        var i = 0
        while i < bytes.count {
            let last = i + 4 == bytes.count
            var quad: [Int] = []
            var padding = 0
            for j in 0..<4 {
                let c = bytes[i + j]
                if c == UInt8(ascii: "=") {
                    // Padding only at the end, only in the last two places.
                    guard last, j >= 2 else { return nil }
                    padding += 1
                    quad.append(0)
                } else {
                    guard padding == 0 else { return nil }
                    let v = values[Int(c)]
                    guard v >= 0 else { return nil }
                    quad.append(Int(v))
                }
            }
            let n = quad[0] << 18 | quad[1] << 12 | quad[2] << 6 | quad[3]
            out.append(UInt8(n >> 16 & 0xFF))
            if padding < 2 { out.append(UInt8(n >> 8 & 0xFF)) }
            if padding < 1 { out.append(UInt8(n & 0xFF)) }
            // Bits the padding hides must be zero (RFC 4648 §3.5), or two texts mean one value.
            if padding == 1 && n & 0xFF != 0 { return nil }
            if padding == 2 && n & 0xFFFF != 0 { return nil }
            i += 4
        }
        return out
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = Int(bytes[i])
            let b1 = i + 1 < bytes.count ? Int(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.count ? Int(bytes[i + 2]) : 0
            let n = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[n >> 18 & 63])
            out.append(alphabet[n >> 12 & 63])
            out.append(i + 1 < bytes.count ? alphabet[n >> 6 & 63] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[n & 63] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}
