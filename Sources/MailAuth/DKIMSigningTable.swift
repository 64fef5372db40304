import Foundation

/// The keys a tenant signs its outbound mail with, and the choice among them: the key whose domain
/// is the message's From domain or the nearest parent of it, so that the signature's `d=` aligns with
/// From for DMARC (RFC 7489 §3.1.1, relaxed alignment). A message whose From is in none of the
/// domains is not signed.
///
/// ```swift
/// let table = DKIMSigningTable([.init(domain: "contoso.test", selector: "2026a", key: key)])
/// table.signatureField(for: messageBytes, now: Date())  // "DKIM-Signature: ...\r\n", or nil
/// ```
public struct DKIMSigningTable: Sendable {
    public struct Entry: Sendable {
        public var domain: String
        public var selector: String
        public var key: DKIMPrivateKey

        public init(domain: String, selector: String, key: DKIMPrivateKey) {
            self.domain = domain.lowercased()
            self.selector = selector
            self.key = key
        }
    }

    public var entries: [Entry]

    public init(_ entries: [Entry]) { self.entries = entries }

    /// The entry for `fromDomain`: the longest domain equal to it or a parent of it.
    public func entry(forFromDomain fromDomain: String) -> Entry? {
        let d = fromDomain.lowercased()
        return
            entries
            .filter { d == $0.domain || d.hasSuffix("." + $0.domain) }
            .max { $0.domain.count < $1.domain.count }
    }

    /// The DKIM-Signature field (with its CRLF) for `message` (CRLF lines), or nil when the message
    /// cannot be read, has no single From address, or its From domain has no key here.
    public func signatureField(for message: [UInt8], now: Date) -> String? {
        guard let parsed = try? DKIMMessage(crlf: message) else { return nil }
        let froms = parsed.headerFields.filter { $0.lowercasedName == "from" }
        guard froms.count == 1, let domain = Self.addressDomain(String(decoding: froms[0].value, as: UTF8.self)),
            let entry = entry(forFromDomain: domain)
        else { return nil }
        let signer = DKIMSigner(domain: entry.domain, selector: entry.selector, key: entry.key)
        return try? signer.signatureField(for: parsed, now: now)
    }

    /// The domain of the one address in a From field value: `Name <local@domain>` or `local@domain`.
    static func addressDomain(_ value: String) -> String? {
        var text = Substring(value)
        if let open = text.lastIndex(of: "<"), let close = text[open...].firstIndex(of: ">") {
            text = text[text.index(after: open)..<close]
        }
        guard let at = text.lastIndex(of: "@") else { return nil }
        let domain = text[text.index(after: at)...].trimmingCharacters(in: .whitespacesAndNewlines)
        guard DKIMSignature.isDomainName(domain) else { return nil }
        return domain.lowercased()
    }
}
