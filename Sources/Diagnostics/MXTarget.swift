/// One mail exchanger of a domain as the checks see it: its name, preference and addresses.
public struct MXTarget: Sendable, Hashable {
    public var host: String
    /// nil for an implicit MX (RFC 5321 §5.1).
    public var preference: UInt16?
    public var addresses: [String]

    public init(host: String, preference: UInt16?, addresses: [String]) {
        self.host = host
        self.preference = preference
        self.addresses = addresses
    }
}
