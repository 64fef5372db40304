import Foundation
import Ingress
import MailQueue
import Metrics
import Prometheus
import Synchronization

/// The process's metrics registry: swift-metrics counters and timers from ingress and delivery
/// land here (through `factory`), and the gauges that are a reading of current state (sessions by
/// forest, queue depth) are set from that state when `/metrics` is scraped.
public final class MetricsExporter: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let factory: PrometheusMetricsFactory
    /// The storage counters' totals last exported: each scrape adds what they grew by since.
    let exportedTotals = Mutex<[String: Int]>([:])

    public init() {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        f.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        factory = f
    }

    func gauge(_ subsystem: String, _ name: String, _ unit: String, _ help: String, _ labels: [(String, String)] = [])
        -> Prometheus.Gauge
    {
        registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "mailflow", subsystem: subsystem, metricName: name, unitName: unit, helpText: help),
            labels: labels)
    }

    /// Prometheus text exposition (version 0.0.4) with the state gauges brought up to date.
    public func render(
        usage: AdmissionUsage?, queue: SQLiteQueueStore.QueueCounts?, storage: StorageStatus? = nil
    ) -> String {
        if let usage {
            gauge("smtp", "connections", "", "SMTP sessions open now, server-wide").set(Double(usage.connections))
            gauge("smtp", "connections", "max", "Server-wide SMTP session limit").set(Double(usage.maxConnections))
            for f in usage.forests {
                let l = [("forest", f.name)]
                gauge("smtp", "sessions", "", "SMTP sessions open now, by resource forest", l).set(Double(f.sessions))
                gauge("smtp", "sessions", "max", "SMTP session limit, by resource forest", l).set(
                    Double(f.maxConnections))
                gauge("forest", "refused", "sessions", "Sessions refused at the forest limit since start", l).set(
                    Double(f.refused))
                if let share = f.share {
                    gauge(
                        "cluster", "claim", "sessions", "This node's claim on the forest's sessions (cluster mode)", l
                    )
                    .set(Double(share.connections))
                    gauge("cluster", "nodes", "", "Live nodes sharing the forest's limits (cluster mode)", l).set(
                        Double(share.nodes))
                }
            }
            if let d = usage.descriptors {
                gauge("process", "open", "descriptors", "Open file descriptors, as last counted").set(Double(d.open))
                if let limit = d.limit {
                    gauge("process", "max", "descriptors", "The soft descriptor limit (RLIMIT_NOFILE)").set(
                        Double(limit))
                    gauge(
                        "smtp", "descriptor_threshold", "",
                        "Open descriptors from which new SMTP sessions get 421 4.3.2 (the limit less the reserve)"
                    ).set(Double(max(0, limit - d.reserve)))
                }
            }
        }
        if let q = queue {
            for (state, n) in [
                ("queued", q.queuedMessages), ("held", q.heldMessages), ("deferred", q.deferredMessages),
            ] {
                gauge("queue", "messages", "", "Messages in the queue, by state", [("state", state)]).set(Double(n))
            }
            gauge("queue", "pending", "recipients", "Recipients not yet delivered or failed").set(
                Double(q.pendingRecipients))
        }
        if let storage { export(storage) }
        return registry.emitToString()
    }

    /// The queue filesystem's free space and reserve, whether acceptance is paused for storage, and
    /// the refusals and failed writes since start (docs/queue.md, "Full disks").
    func export(_ s: StorageStatus) {
        if let free = s.freeBytes {
            gauge("storage", "free", "bytes", "Bytes free on the filesystem of the data directory").set(Double(free))
        }
        if let total = s.totalBytes {
            gauge("storage", "size", "bytes", "Size of the filesystem of the data directory").set(Double(total))
        }
        gauge("storage", "min_free", "bytes", "Free space below which new messages are refused (queue_min_free)").set(
            Double(s.minimumFreeBytes))
        gauge("storage", "acceptance_paused", "", "1 while new messages are refused for lack of storage").set(
            Double(s.acceptancePaused ? 1 : 0))
        typealias Total = (name: String, label: String, value: String, total: Int, help: String)
        var totals: [Total] = []
        for (reason, n) in s.refusals {
            totals.append(
                ("mailflow_storage_refusals_total", "reason", reason, n, "Messages refused for lack of storage"))
        }
        for (kind, n) in s.faults {
            totals.append(("mailflow_storage_faults_total", "kind", kind, n, "Failed queue and spool writes, by kind"))
        }
        exportedTotals.withLock { last in
            for t in totals {
                let key = "\(t.name) \(t.value)"
                let counter = registry.makeCounter(name: t.name, labels: [(t.label, t.value)], help: t.help)
                let grown = t.total - last[key, default: 0]
                if grown > 0 {
                    counter.increment(by: Int64(grown))
                    last[key] = t.total
                }
            }
        }
    }
}
