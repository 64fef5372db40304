import Metrics

/// SMTP ingress metrics through swift-metrics (exported as Prometheus text by the admin listener):
/// replies by class, acceptance latency (end of data to the `250`), sessions opened.
public struct IngressMetrics: Sendable {
    let replies: [Counter]
    let acceptance: Timer
    let sessions: Counter

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        replies = ["2xx", "3xx", "4xx", "5xx"].map {
            Counter(label: "mailflow_smtp_replies_total", dimensions: [("class", $0)], factory: factory)
        }
        acceptance = Timer(label: "mailflow_smtp_acceptance_latency_seconds", factory: factory)
        sessions = Counter(label: "mailflow_smtp_sessions_total", factory: factory)
    }

    func reply(code: Int) {
        let i = code / 100 - 2
        if i >= 0, i < replies.count { replies[i].increment() }
    }
}
