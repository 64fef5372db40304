import Foundation

/// Small server-rendered SVG charts for the overview and the service-health pages: no JavaScript, no
/// external assets. Every text written into the SVG (labels, series names, tooltips) is escaped, so
/// the SVG is safe to embed unescaped even where a label comes from outside (a region name in a user
/// report).
enum Charts {
    struct Series {
        var name: String
        var color: String
        var values: [Double]
    }

    static let width = 480.0
    static let height = 140.0
    static let left = 40.0
    static let bottom = 18.0

    /// Grouped bars, one group per bucket; `labels` are shown under every `labelEvery`-th group.
    static func bars(
        id: String, series: [Series], labels: [String], labelEvery: Int = 4, percent: Bool = false
    ) -> String {
        let count = series.map(\.values.count).max() ?? 0
        let maxValue = max(series.flatMap(\.values).max() ?? 0, percent ? 0.01 : 1)
        let plotW = width - left - 4
        let plotH = height - bottom - 8
        let groupW = count == 0 ? plotW : plotW / Double(count)
        let barW = min(40, max(1, (groupW - 2) / Double(max(series.count, 1))))
        var out = svgOpen(id: id)
        out += axis(maxValue: maxValue, plotH: plotH, percent: percent)
        for (s, ser) in series.enumerated() {
            for (i, v) in ser.values.enumerated() {
                let h = v / maxValue * plotH
                let x = left + Double(i) * groupW + 1 + Double(s) * barW
                out +=
                    "<rect class=\"bar\" data-series=\"\(escape(ser.name))\" data-value=\"\(fmt(v))\" x=\"\(fmt(x))\" y=\"\(fmt(8 + plotH - h))\" width=\"\(fmt(barW))\" height=\"\(fmt(h))\" fill=\"\(ser.color)\"/>"
            }
        }
        for (i, l) in labels.enumerated() where i % labelEvery == 0 {
            out +=
                "<text x=\"\(fmt(left + Double(i) * groupW))\" y=\"\(fmt(height - 4))\" font-size=\"10\" fill=\"#555\">\(escape(l))</text>"
        }
        return out + legend(series) + "</svg>"
    }

    /// A line over evenly spaced points (queue size over time).
    static func line(id: String, series: Series, labels: [String], labelEvery: Int = 4) -> String {
        let values = series.values
        let maxValue = max(values.max() ?? 0, 1)
        let plotW = width - left - 4
        let plotH = height - bottom - 8
        let step = values.count > 1 ? plotW / Double(values.count - 1) : 0
        var out = svgOpen(id: id)
        out += axis(maxValue: maxValue, plotH: plotH, percent: false)
        let points = values.enumerated().map { i, v in
            "\(fmt(left + Double(i) * step)),\(fmt(8 + plotH - v / maxValue * plotH))"
        }
        if !points.isEmpty {
            out +=
                "<polyline class=\"line\" data-series=\"\(escape(series.name))\" data-last=\"\(fmt(values.last ?? 0))\" points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"2\"/>"
        }
        for (i, l) in labels.enumerated() where i % labelEvery == 0 {
            out +=
                "<text x=\"\(fmt(left + Double(i) * step))\" y=\"\(fmt(height - 4))\" font-size=\"10\" fill=\"#555\">\(escape(l))</text>"
        }
        return out + legend([series]) + "</svg>"
    }

    /// One event on a timeline: a dot at `time`, with a tooltip.
    struct Mark {
        var time: Date
        /// A fixed key (`data-kind`), also the series of the legend entry whose color it takes.
        var kind: String
        var color: String
        var title: String
    }

    /// A time axis from `start` to `end` with the span `band` shaded (an issue's impact, open to
    /// `end` while it lasts) and a dot per mark (an issue's posts); `startLabel` and `endLabel` are
    /// written under the two ends, `keys` in the legend.
    static func timeline(
        id: String, start: Date, end: Date, band: (from: Date, to: Date)?, marks: [Mark], keys: [Series],
        startLabel: String, endLabel: String
    ) -> String {
        let h = 90.0
        let plotW = width - left - 14
        let axisY = 50.0
        let first = min(start, marks.map(\.time).min() ?? start)
        let last = max(end, marks.map(\.time).max() ?? end)
        let span = max(last.timeIntervalSince(first), 1)
        func x(_ t: Date) -> Double { left + t.timeIntervalSince(first) / span * plotW }
        var out =
            "<svg id=\"\(id)\" class=\"chart\" viewBox=\"0 0 \(fmt(width)) \(fmt(h))\" width=\"\(fmt(width))\" height=\"\(fmt(h))\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">"
        if let band {
            let x0 = x(band.from)
            out +=
                "<rect class=\"band\" x=\"\(fmt(x0))\" y=\"\(fmt(axisY - 12))\" width=\"\(fmt(max(x(band.to) - x0, 2)))\" height=\"24\" fill=\"#f6d5d3\"/>"
        }
        out +=
            "<line x1=\"\(fmt(left))\" y1=\"\(fmt(axisY))\" x2=\"\(fmt(left + plotW))\" y2=\"\(fmt(axisY))\" stroke=\"#999\"/>"
        for m in marks {
            out +=
                "<circle class=\"mark\" data-kind=\"\(escape(m.kind))\" cx=\"\(fmt(x(m.time)))\" cy=\"\(fmt(axisY))\" r=\"5\" fill=\"\(m.color)\" stroke=\"#fff\"><title>\(escape(m.title))</title></circle>"
        }
        out +=
            "<text x=\"\(fmt(left))\" y=\"\(fmt(h - 8))\" font-size=\"10\" fill=\"#555\">\(escape(startLabel))</text>"
        out +=
            "<text x=\"\(fmt(left + plotW))\" y=\"\(fmt(h - 8))\" font-size=\"10\" fill=\"#555\" text-anchor=\"end\">\(escape(endLabel))</text>"
        return out + legend(keys) + "</svg>"
    }

    /// An issue's failing share over time (a line) against its usual band: shaded from the baseline
    /// up to the share the detector calls anomalous, so the line leaving the band is the anomaly.
    static func shareBand(id: String, times: [Date], share: [Double], baseline: [Double], threshold: [Double])
        -> String
    {
        let n = min(times.count, share.count, baseline.count, threshold.count)
        let maxValue = min(max((share + threshold).max() ?? 0, 0.05), 1)
        let plotW = width - left - 4
        let plotH = height - bottom - 8
        guard n > 0, let first = times.first, let last = times.last else { return "" }
        let span = max(last.timeIntervalSince(first), 1)
        func x(_ i: Int) -> Double { left + times[i].timeIntervalSince(first) / span * plotW }
        func y(_ v: Double) -> Double { 8 + plotH - min(v, maxValue) / maxValue * plotH }
        var out = svgOpen(id: id)
        out += axis(maxValue: maxValue, plotH: plotH, percent: true)
        let upper = (0..<n).map { "\(fmt(x($0))),\(fmt(y(threshold[$0])))" }
        let lower = (0..<n).reversed().map { "\(fmt(x($0))),\(fmt(y(baseline[$0])))" }
        out +=
            "<polygon class=\"band\" points=\"\((upper + lower).joined(separator: " "))\" fill=\"#d8e8d4\" stroke=\"none\"/>"
        out +=
            "<polyline class=\"line\" data-series=\"failing share\" data-last=\"\(fmt(share[n - 1]))\" points=\"\((0..<n).map { "\(fmt(x($0))),\(fmt(y(share[$0])))" }.joined(separator: " "))\" fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\"/>"
        return out
            + legend([
                .init(name: "failing share", color: "#c0392b", values: []),
                .init(name: "usual band", color: "#d8e8d4", values: []),
            ]) + "</svg>"
    }

    /// Text for SVG content or a double-quoted attribute.
    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    static func svgOpen(id: String) -> String {
        "<svg id=\"\(id)\" class=\"chart\" viewBox=\"0 0 \(fmt(width)) \(fmt(height))\" width=\"\(fmt(width))\" height=\"\(fmt(height))\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\">"
    }

    static func axis(maxValue: Double, plotH: Double, percent: Bool) -> String {
        let top = percent ? "\(Int((maxValue * 100).rounded()))%" : compact(maxValue)
        return
            "<line x1=\"\(fmt(left))\" y1=\"8\" x2=\"\(fmt(left))\" y2=\"\(fmt(8 + plotH))\" stroke=\"#999\"/>"
            + "<line x1=\"\(fmt(left))\" y1=\"\(fmt(8 + plotH))\" x2=\"\(fmt(width - 4))\" y2=\"\(fmt(8 + plotH))\" stroke=\"#999\"/>"
            + "<text x=\"2\" y=\"16\" font-size=\"10\" fill=\"#555\">\(top)</text>"
            + "<text x=\"2\" y=\"\(fmt(8 + plotH))\" font-size=\"10\" fill=\"#555\">0</text>"
    }

    static func legend(_ series: [Series]) -> String {
        var out = ""
        var x = left + 8
        for s in series {
            out += "<rect x=\"\(fmt(x))\" y=\"2\" width=\"8\" height=\"8\" fill=\"\(s.color)\"/>"
            out += "<text x=\"\(fmt(x + 11))\" y=\"10\" font-size=\"10\" fill=\"#333\">\(escape(s.name))</text>"
            x += 14 + Double(s.name.count) * 6
        }
        return out
    }

    static func compact(_ v: Double) -> String {
        v >= 1_000_000 ? "\(Int(v / 1_000_000))M" : v >= 10_000 ? "\(Int(v / 1000))k" : "\(Int(v.rounded()))"
    }

    static func fmt(_ v: Double) -> String {
        let r = (v * 10).rounded() / 10
        return r == r.rounded() ? String(Int(r)) : String(r)
    }
}
