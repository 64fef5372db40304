import Foundation

/// A duration as people write it in the config file and on the command line: seconds (`30`) or a
/// number with a unit, `30s`, `5m`, `24h`, `2d`.
///
/// The one parser for both: `timeouts.command: 5m` in YAML and `mailflow trace --since 24h` read the
/// same way.
///
/// ```swift
/// DurationText.seconds("90s")  // 90
/// DurationText.seconds("1.5h") // 5400
/// DurationText.seconds("soon") // nil
/// ```
public enum DurationText {
    /// What each unit letter is worth, in seconds.
    public static let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86400]

    /// The duration `text` names, in seconds; nil unless it is a finite, non-negative number with an
    /// optional unit. Surrounding spaces are ignored. Zero is a duration; callers that need a
    /// positive one say so in their own error.
    public static func seconds(_ text: String) -> TimeInterval? {
        var s = Substring(text.trimmingCharacters(in: .whitespaces))
        var unit: TimeInterval = 1
        if let last = s.last, let u = units[last] {
            unit = u
            s = s.dropLast()
        }
        guard !s.isEmpty, let v = Double(s), v.isFinite, v >= 0 else { return nil }
        return v * unit
    }
}
