import NIOCore

/// A TTL cache of lookup outcomes keyed by (name, type), holding answers (RFC 1035 §3.2.1 TTL semantics) and
/// negative answers (RFC 2308 §5). Time comes from the resolver's injected clock.
actor DNSCache {
    struct Key: Hashable {
        var name: DNSName
        var type: DNSRecordType
    }

    enum Value {
        case answer(DNSAnswer)
        case negative(DNSError)
    }

    private struct Entry {
        var value: Value
        var expires: NIODeadline
    }

    private var entries: [Key: Entry] = [:]
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
    }

    /// The live entry for `key` with its remaining TTL in whole seconds; expired entries are dropped.
    func lookup(_ key: Key, now: NIODeadline) -> (value: Value, remaining: UInt32)? {
        guard let entry = entries[key] else { return nil }
        guard entry.expires > now else {
            entries[key] = nil
            return nil
        }
        let seconds = (entry.expires - now).nanoseconds / 1_000_000_000
        return (entry.value, UInt32(clamping: seconds))
    }

    /// Stores `value` for `ttl` seconds; a zero TTL is not cached (RFC 1035 §3.2.1).
    func store(_ key: Key, _ value: Value, ttl: UInt32, now: NIODeadline) {
        guard ttl > 0 else { return }
        if entries.count >= capacity && entries[key] == nil {
            entries = entries.filter { $0.value.expires > now }
            if entries.count >= capacity, let victim = entries.keys.first {
                entries[victim] = nil
            }
        }
        entries[key] = Entry(value: value, expires: now + .seconds(Int64(ttl)))
    }

    func removeAll() {
        entries.removeAll()
    }

    var count: Int { entries.count }
}
