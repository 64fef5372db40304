/// A listen or server address as the config file writes it: `host:port`, or `[v6]:port` for IPv6.
///
/// ```swift
/// ListenAddress.parse("127.0.0.1:2525")  // ("127.0.0.1", 2525)
/// ListenAddress.parse("[::1]:2525")      // ("::1", 2525)
/// ListenAddress.parse("::1:2525")        // nil: an IPv6 address needs its brackets
/// ```
public enum ListenAddress {
    public static func parse(_ text: String) -> (host: String, port: Int)? {
        let host: String
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return nil
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = String(text[..<colon])
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        return (host, port)
    }
}
