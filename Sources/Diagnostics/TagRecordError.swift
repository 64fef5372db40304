/// Why a version-tagged TXT record is not valid.
enum TagRecordError: Error, Sendable, Hashable, CustomStringConvertible {
    case missing(String)
    case bad(String)

    var description: String {
        switch self {
        case .missing(let tag): "no \(tag)= tag"
        case .bad(let reason): reason
        }
    }
}
