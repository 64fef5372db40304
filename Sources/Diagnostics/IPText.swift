import DNSClient

/// Address syntax checks for record text.
enum IPText {
    /// Dotted-quad IPv4 with each part 0...255 and no leading zeros (RFC 7208 §12 `ip4-network`).
    static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4
            && parts.allSatisfy { p in
                guard let n = Int(p), n >= 0, n <= 255, p.allSatisfy(\.isNumber) else { return false }
                return p == "0" || p.first != "0"
            }
    }

    static func isIPv6(_ text: String) -> Bool {
        text.contains(":") && DNSIPAddress(text).map { !$0.isIPv4 } == true
    }
}
