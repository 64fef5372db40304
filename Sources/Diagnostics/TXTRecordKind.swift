/// The version-tagged TXT records of MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3), checked for
/// syntax.
enum TXTRecordKind {
    /// `v=STSv1; id=<1-32 alphanumerics>` (RFC 8461 §3.1); returns the id.
    static func mtaSTSID(_ text: String) throws(TagRecordError) -> String {
        let list = try parse(text, version: "STSv1")
        guard let id = list["id"] else { throw .missing("id") }
        guard (1...32).contains(id.count), id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            throw .bad("id=\(id): 1 to 32 letters and digits")
        }
        return id
    }

    /// `v=TLSRPTv1; rua=<mailto: or https: URIs, comma-separated>` (RFC 8460 §3); returns the URIs.
    static func tlsRPTDestinations(_ text: String) throws(TagRecordError) -> [String] {
        let list = try parse(text, version: "TLSRPTv1")
        guard let rua = list["rua"] else { throw .missing("rua") }
        let uris = rua.split(separator: ",").map { String($0.trimmingWhitespace) }
        guard !uris.isEmpty else { throw .missing("rua") }
        for uri in uris {
            let lower = uri.lowercased()
            if lower.hasPrefix("mailto:") {
                guard uri.contains("@") else { throw .bad("\(uri): mailto: needs an address") }
            } else if !lower.hasPrefix("https://") {
                throw .bad("\(uri): rua takes mailto: or https: URIs")
            }
        }
        return uris
    }

    static func isVersion(_ text: String, _ version: String) -> Bool {
        guard let first = text.split(separator: ";", maxSplits: 1).first else { return false }
        let parts = first.split(separator: "=", maxSplits: 1)
        return parts.count == 2 && parts[0].trimmingWhitespace == "v" && parts[1].trimmingWhitespace == version
    }

    private static func parse(_ text: String, version: String) throws(TagRecordError) -> TagList {
        let list: TagList
        do {
            list = try TagList(parsing: text)
        } catch {
            throw .bad("\(error)")
        }
        guard list.tags.first?.name == "v", list.tags.first?.value == version else {
            throw .bad("the record must start with v=\(version)")
        }
        return list
    }
}
