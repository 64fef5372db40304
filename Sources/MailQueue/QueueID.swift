import Foundation

/// A queue ID: 16 characters of Crockford base32, the first ten from the acceptance time in
/// microseconds (so IDs sort by arrival, like Postfix's long queue IDs) and six random.
///
/// The ID in `250 2.0.0 Ok: queued as <ID>` is the key in the trace and the CLI.
public enum QueueID {
    static let alphabet = Array("0123456789BCDFGHJKLMNPQRSTVWXYZ".utf8)  // 31 symbols, no vowels but I/O-free

    public static func generate(now: Date, using rng: inout some RandomNumberGenerator) -> String {
        var micros = UInt64(max(0, now.timeIntervalSince1970 * 1_000_000))
        var out = [UInt8](repeating: 0, count: 16)
        for i in stride(from: 9, through: 0, by: -1) {
            out[i] = alphabet[Int(micros % UInt64(alphabet.count))]
            micros /= UInt64(alphabet.count)
        }
        for i in 10..<16 { out[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))] }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `text` has the shape of a queue ID (CLI input check).
    public static func isValid(_ text: String) -> Bool {
        text.utf8.count == 16 && text.utf8.allSatisfy { alphabet.contains($0) }
    }
}
