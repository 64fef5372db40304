/// The detector core on a plain numeric series (`mailflow health detect-series`, scored on NAB's
/// labelled real-world series): a robust z-score of each value against the median and MAD of a
/// trailing window, alerting when it is at least `threshold`, then quiet for `cooldown` points so
/// one anomaly is one alert. The same robust-baseline idea as the mail-flow monitor, without the
/// binomial part (NAB values are not counts of outcomes).
public struct SeriesDetector: Sendable {
    public var window: Int
    public var threshold: Double
    public var cooldown: Int
    public var minimumHistory: Int

    public init(window: Int = 288, threshold: Double = 6, cooldown: Int = 288, minimumHistory: Int = 48) {
        self.window = window
        self.threshold = threshold
        self.cooldown = cooldown
        self.minimumHistory = minimumHistory
    }

    /// A detector sized for a series of `count` points (NAB's files run from 1,000 to 22,000).
    public static func sized(for count: Int) -> SeriesDetector {
        SeriesDetector(
            window: max(48, min(count / 10, 600)), threshold: 6, cooldown: max(24, count / 20),
            minimumHistory: max(24, count / 40))
    }

    /// Indices of the values that raise an alert, with their scores.
    public func alerts(_ values: [Double]) -> [(index: Int, score: Double)] {
        var out: [(Int, Double)] = []
        var quietUntil = -1
        var sortedWindow: [Double] = []
        for (i, v) in values.enumerated() {
            defer {
                // Keep the trailing window sorted: insert v, drop the value leaving it.
                let at = insertionIndex(sortedWindow, v)
                sortedWindow.insert(v, at: at)
                if i >= window, let j = firstIndex(sortedWindow, values[i - window]) { sortedWindow.remove(at: j) }
            }
            guard sortedWindow.count >= minimumHistory, i > quietUntil else { continue }
            let median = Self.median(sortedWindow)
            var deviations = sortedWindow.map { abs($0 - median) }
            deviations.sort()
            let mad = Self.median(deviations)
            // A flat window (MAD 0) still has a scale: a small share of the median, or 1e-9.
            let scale = max(1.4826 * mad, abs(median) * 0.01, 1e-9)
            let z = abs(v - median) / scale
            if z >= threshold {
                out.append((i, z))
                quietUntil = i + cooldown
            }
        }
        return out
    }

    static func median(_ sorted: [Double]) -> Double {
        let n = sorted.count
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }

    func insertionIndex(_ a: [Double], _ v: Double) -> Int {
        var lo = 0
        var hi = a.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if a[mid] < v { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    func firstIndex(_ a: [Double], _ v: Double) -> Int? {
        let i = insertionIndex(a, v)
        return i < a.count && a[i] == v ? i : nil
    }
}
