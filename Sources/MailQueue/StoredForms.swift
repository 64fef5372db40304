import SMTPCore

/// A column value the queue wrote but cannot read back as its type (a database edited by hand, or
/// written by a newer version). The message is reported, never guessed at.
public struct UnreadableValue: Error, CustomStringConvertible, Sendable {
    public var messageID: String
    public var column: String
    public var value: String

    public var description: String {
        "message \(messageID): \(column) holds \"\(value)\", which this version cannot read"
    }
}

extension OriginalRecipient {
    /// The queue's `orcpt` column form: `addr-type;address`, the address decoded from xtext.
    public var stored: String { "\(addressType);\(address)" }

    /// Parses the stored form; nil without the `;` or with an empty type.
    public init?(stored: String) {
        guard let semicolon = stored.firstIndex(of: ";"), semicolon > stored.startIndex else { return nil }
        self.init(
            addressType: String(stored[..<semicolon]), address: String(stored[stored.index(after: semicolon)...]))
    }
}
