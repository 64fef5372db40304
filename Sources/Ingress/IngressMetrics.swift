import Metrics

/// SMTP ingress metrics through swift-metrics (exported as Prometheus text by the admin listener):
/// replies by class, acceptance latency (end of data to the `250`), sessions opened, and the
/// hostile-peer defences: sessions that stopped reading their replies, TLS handshakes closed at
/// their deadline, failed accepts (descriptors exhausted).
public struct IngressMetrics: Sendable {
    let replies: [Counter]
    let acceptance: Timer
    let sessions: Counter
    let outputStalls: Counter
    let tlsHandshakeTimeouts: Counter
    let acceptErrors: Counter

    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        replies = ["2xx", "3xx", "4xx", "5xx"].map {
            Counter(label: "mailflow_smtp_replies_total", dimensions: [("class", $0)], factory: factory)
        }
        acceptance = Timer(label: "mailflow_smtp_acceptance_latency_seconds", factory: factory)
        sessions = Counter(label: "mailflow_smtp_sessions_total", factory: factory)
        outputStalls = Counter(label: "mailflow_smtp_output_stalls_total", factory: factory)
        tlsHandshakeTimeouts = Counter(label: "mailflow_smtp_tls_handshake_timeouts_total", factory: factory)
        acceptErrors = Counter(label: "mailflow_smtp_accept_errors_total", factory: factory)
    }

    func reply(code: Int) {
        let i = code / 100 - 2
        if i >= 0, i < replies.count { replies[i].increment() }
    }
}
