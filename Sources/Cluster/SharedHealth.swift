import Foundation
import Logging
import MailQueue
import PostgresNIO

/// Service health's state in the shared queue's database (cluster mode): the same four things as
/// `SQLiteQueueStore+Health` (issues, problem reports, admin actions, and the trace stream read
/// from `mailflow_trace_event`), plus `mailflow_health_leader`, the one row saying which node runs
/// the monitor and how far it has read.
///
/// **Reading the stream without a gap.** Nodes commit trace events concurrently, so an event's
/// `bigserial` ID does not tell when it became visible: a reader that went "after the last ID"
/// would skip an event whose transaction, holding a lower ID, committed after a higher one was
/// read. Each event and report carries instead its transaction's ID (`tx xid8`), and a position is
/// a transaction ID: a read takes the events of transactions from the position up to the oldest
/// transaction of this database still running (`horizon`), all of which have ended, and goes on
/// from there next time. A long-running writing transaction in this database delays the stream
/// (never loses from it); ours last milliseconds.
extension SharedQueue {
    static let healthSchema = [
        // Tables made before service health moved here get the column, their rows transaction 0
        // (before any: the stream passes them over, one huge transaction otherwise). Only then: an ALTER TABLE,
        // even one with nothing to do, would wait for every transaction on the table and hold up
        // everyone behind it, at every node's start.
        """
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                         AND table_name = 'mailflow_trace_event' AND column_name = 'tx') THEN
            ALTER TABLE mailflow_trace_event ADD COLUMN tx xid8 NOT NULL DEFAULT '0';
            ALTER TABLE mailflow_trace_event ALTER COLUMN tx SET DEFAULT pg_current_xact_id();
          END IF;
        END $$
        """,
        "CREATE INDEX IF NOT EXISTS mailflow_trace_event_tx ON mailflow_trace_event (tx, id)",
        """
        CREATE TABLE IF NOT EXISTS mailflow_health_issue (
          id text PRIMARY KEY,
          number integer NOT NULL,
          resolved boolean NOT NULL,
          last_modified timestamptz NOT NULL,
          document text NOT NULL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS mailflow_health_report (
          id bigserial PRIMARY KEY,
          tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
          time timestamptz NOT NULL,
          tenant text NOT NULL,
          region text NOT NULL,
          text text NOT NULL,
          error text,
          reporter text NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS mailflow_health_report_tx ON mailflow_health_report (tx)",
        """
        CREATE TABLE IF NOT EXISTS mailflow_health_action (
          id bigserial PRIMARY KEY,
          time timestamptz NOT NULL,
          issue text NOT NULL,
          kind text NOT NULL,
          value text NOT NULL,
          actor text NOT NULL,
          applied integer NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS mailflow_health_leader (
          one boolean PRIMARY KEY DEFAULT true CHECK (one),
          node text NOT NULL,
          until timestamptz NOT NULL,
          trace_position bigint,
          report_position bigint,
          term bigint NOT NULL DEFAULT 1
        )
        """,
    ]

    /// The oldest transaction of this database still running (or, with none, the next one to
    /// start): every transaction of this database before it has ended. Transactions of the
    /// server's other databases (`pg_stat_activity`) are passed over: a long one elsewhere does not
    /// hold the stream back. One that cannot be placed (ended meanwhile, prepared, or another
    /// user's that this role may not see) is counted as this database's: it may delay the stream a
    /// round, never make it skip an event.
    static let horizon = """
        (WITH s AS (SELECT pg_current_snapshot() AS snap),
          elsewhere AS (SELECT backend_xid::text::bigint AS x FROM pg_stat_activity
            WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL)
        SELECT coalesce(
          (SELECT min(r::text::bigint) FROM s, pg_snapshot_xip(s.snap) AS r
           WHERE r::text::bigint % 4294967296 NOT IN (SELECT x FROM elsewhere)),
          (SELECT pg_snapshot_xmax(snap)::text::bigint FROM s)))
        """

    // MARK: the trace stream

    /// Outcomes and refusals of transactions from `position` up to the horizon, in transaction then
    /// ID order, with their message's tenant, client and acceptance time. A batch cut by `limit`
    /// ends at a transaction's border (the cut one is read again next time).
    public func healthTrace(_ c: PostgresConnection, from position: Int64, limit: Int) async throws(SharedQueueError)
        -> HealthTraceBatch
    {
        try await bounded(c) { c, logger in
            // The events first, by the (tx, id) index and cut by the limit; only then their
            // messages: joined first, the whole rest of the range would be sorted for every batch.
            // A time is the node's: one ahead of the database is taken as the database's now.
            let rows = try await c.query(
                """
                WITH h AS (SELECT \(unescaped: Self.horizon) AS until),
                ev AS (
                  SELECT e.* FROM mailflow_trace_event e, h
                  WHERE e.tx >= \(position)::text::xid8 AND e.tx < h.until::text::xid8
                    AND e.kind IN ('received', 'delivered', 'deferred', 'failed', 'throttled')
                  ORDER BY e.tx, e.id LIMIT \(limit))
                SELECT e.tx::text::bigint, h.until, e.id, extract(epoch FROM least(e.time, now()))::float8, e.kind,
                  e.recipient, e.detail, e.forest, e.region, e.tenant, e.client_address, e.reply, m.tenant,
                  m.client_address, extract(epoch FROM m.received_at)::float8
                FROM h LEFT JOIN ev e ON true
                LEFT JOIN mailflow_message m ON m.id = e.queue_id AND e.queue_id != ''
                ORDER BY e.tx, e.id
                """, logger: logger)
            let (out, horizon) = try await Self.healthRows(rows, horizon: position)
            guard out.count >= limit, let lastTx = out.last?.tx else {
                return HealthTraceBatch(rows: out.map(\.row), next: max(position, horizon), more: false)
            }
            // Cut by the limit: the last transaction may go on past it; it is read whole next time.
            let whole = out.filter { $0.tx < lastTx }
            if !whole.isEmpty { return HealthTraceBatch(rows: whole.map(\.row), next: lastTx, more: true) }
            // One transaction of more than `limit` events (Mailflow writes none: its batches are
            // smaller): read it whole.
            let all = try await c.query(
                """
                SELECT e.tx::text::bigint, 0::bigint, e.id, extract(epoch FROM least(e.time, now()))::float8, e.kind,
                  e.recipient, e.detail, e.forest, e.region, e.tenant, e.client_address, e.reply, m.tenant,
                  m.client_address, extract(epoch FROM m.received_at)::float8
                FROM mailflow_trace_event e LEFT JOIN mailflow_message m ON m.id = e.queue_id AND e.queue_id != ''
                WHERE e.tx = \(lastTx)::text::xid8
                  AND e.kind IN ('received', 'delivered', 'deferred', 'failed', 'throttled')
                ORDER BY e.id
                """, logger: logger)
            return HealthTraceBatch(
                rows: try await Self.healthRows(all, horizon: 0).rows.map(\.row), next: lastTx + 1, more: true)
        }
    }

    /// Decodes `healthTrace`'s rows: each event with its transaction, and the horizon column.
    static func healthRows(_ rows: PostgresRowSequence, horizon start: Int64) async throws
        -> (rows: [(tx: Int64, row: SQLiteQueueStore.HealthTraceRow)], horizon: Int64)
    {
        var out: [(tx: Int64, row: SQLiteQueueStore.HealthTraceRow)] = []
        var horizon = start
        for try await r in rows.decode(
            (
                Int64?, Int64, Int64?, Double?, String?, String?, String?, String?, String?, String?, String?,
                String?, String?, String?, Double?
            ).self)
        {
            horizon = r.1
            guard let tx = r.0, let id = r.2, let time = r.3, let kind = r.4 else { continue }
            out.append(
                (
                    tx,
                    SQLiteQueueStore.HealthTraceRow(
                        id: id, time: Date(timeIntervalSince1970: time),
                        kind: TraceEventKind(rawValue: kind) ?? .received, recipient: r.5, detail: r.6,
                        forest: r.7, region: r.8, tenant: r.9, clientAddress: r.10, reply: r.11,
                        messageTenant: r.12, messageClient: r.13,
                        messageReceivedAt: r.14.map { Date(timeIntervalSince1970: $0) })
                ))
        }
        return (out, horizon)
    }

    /// The first transaction with an event at or after `time`, but never past the horizon (a
    /// transaction still running may hold earlier events); the horizon when there is none.
    public func healthTraceStart(_ c: PostgresConnection, atOrAfter time: Date) async throws(SharedQueueError) -> Int64
    {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                WITH h AS (SELECT \(unescaped: Self.horizon) AS until)
                SELECT least((SELECT min(tx)::text::bigint FROM mailflow_trace_event
                  WHERE time >= to_timestamp(\(time.timeIntervalSince1970)) AND tx <> '0'::xid8), h.until) FROM h
                """, logger: logger)
            var start: Int64 = 0
            for try await s in rows.decode(Int64.self) { start = s }
            return start
        }
    }

    // MARK: problem reports

    public func addProblemReport(_ c: PostgresConnection, _ r: SQLiteQueueStore.StoredProblemReport)
        async throws(SharedQueueError) -> Int64
    {
        try await transaction(c) { c, logger in
            let rows = try await c.query(
                """
                INSERT INTO mailflow_health_report (time, tenant, region, text, error, reporter)
                VALUES (to_timestamp(\(r.time.timeIntervalSince1970)), \(r.tenant), \(r.region), \(r.text), \(r.error),
                  \(r.reporter))
                RETURNING id
                """, logger: logger)
            var id: Int64 = 0
            for try await i in rows.decode(Int64.self) { id = i }
            return id
        }
    }

    /// Reports of transactions from `position` up to the horizon (reports are few: no cut).
    public func problemReports(_ c: PostgresConnection, from position: Int64) async throws(SharedQueueError)
        -> ProblemReportBatch
    {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                WITH h AS (SELECT \(unescaped: Self.horizon) AS until)
                SELECT h.until, r.id, extract(epoch FROM r.time)::float8, r.tenant, r.region, r.text, r.error,
                  r.reporter
                FROM h LEFT JOIN mailflow_health_report r
                  ON r.tx >= \(position)::text::xid8 AND r.tx < h.until::text::xid8
                ORDER BY r.tx, r.id
                """, logger: logger)
            var out: [SQLiteQueueStore.StoredProblemReport] = []
            var horizon = position
            for try await r in rows.decode(
                (Int64, Int64?, Double?, String?, String?, String?, String?, String?).self)
            {
                horizon = r.0
                guard let id = r.1, let time = r.2, let tenant = r.3, let region = r.4, let text = r.5,
                    let reporter = r.7
                else { continue }
                out.append(
                    SQLiteQueueStore.StoredProblemReport(
                        id: id, time: Date(timeIntervalSince1970: time), tenant: tenant, region: region, text: text,
                        error: r.6, reporter: reporter))
            }
            return ProblemReportBatch(reports: out, next: max(position, horizon))
        }
    }

    /// The horizon: where a reader that wants only what comes next starts.
    public func streamHorizon(_ c: PostgresConnection) async throws(SharedQueueError) -> Int64 {
        try await bounded(c) { c, logger in
            let rows = try await c.query("SELECT \(unescaped: Self.horizon)", logger: logger)
            var h: Int64 = 0
            for try await v in rows.decode(Int64.self) { h = v }
            return h
        }
    }

    // MARK: issues

    public func healthIssueDocuments(_ c: PostgresConnection) async throws(SharedQueueError) -> [String] {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                "SELECT document FROM mailflow_health_issue ORDER BY number DESC", logger: logger)
            var out: [String] = []
            for try await d in rows.decode(String.self) { out.append(d) }
            return out
        }
    }

    /// Stores an issue's document if `node` leads in `term` (a node that lost the leadership while
    /// it was stopped writes nothing), never over a newer document; false when it did not lead.
    public func saveHealthIssue(
        _ c: PostgresConnection, node: String, term: Int64, id: String, number: Int, resolved: Bool,
        lastModified: Date, document: String
    ) async throws(SharedQueueError) -> Bool {
        try await transaction(c) { c, logger in
            let leads = try await Self.leads(c, node: node, term: term, logger: logger)
            guard leads else { return false }
            try await PostgresCall.exec(
                c,
                """
                INSERT INTO mailflow_health_issue AS i (id, number, resolved, last_modified, document)
                VALUES (\(id), \(number), \(resolved), to_timestamp(\(lastModified.timeIntervalSince1970)), \(document))
                ON CONFLICT (id) DO UPDATE SET resolved = excluded.resolved, last_modified = excluded.last_modified,
                  document = excluded.document
                WHERE i.last_modified <= excluded.last_modified
                """, logger: logger)
            return true
        }
    }

    /// Whether `node` leads in `term` now (its lease running); locks the row till the commit.
    static func leads(_ c: PostgresConnection, node: String, term: Int64, logger: Logger) async throws -> Bool {
        let rows = try await c.query(
            """
            SELECT 1 FROM mailflow_health_leader WHERE node = \(node) AND term = \(term) AND until > now() FOR SHARE
            """, logger: logger)
        var leads = false
        for try await _ in rows { leads = true }
        return leads
    }

    // MARK: actions

    public func addHealthAction(
        _ c: PostgresConnection, issue: String, kind: String, value: String, actor: String, time: Date
    ) async throws(SharedQueueError) -> Int64 {
        try await transaction(c) { c, logger in
            let rows = try await c.query(
                """
                INSERT INTO mailflow_health_action (time, issue, kind, value, actor)
                VALUES (to_timestamp(\(time.timeIntervalSince1970)), \(issue), \(kind), \(value), \(actor))
                RETURNING id
                """, logger: logger)
            var id: Int64 = 0
            for try await i in rows.decode(Int64.self) { id = i }
            return id
        }
    }

    public func pendingHealthActions(_ c: PostgresConnection) async throws(SharedQueueError)
        -> [SQLiteQueueStore.HealthAction]
    {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT id, extract(epoch FROM time)::float8, issue, kind, value, actor FROM mailflow_health_action
                WHERE applied = 0 ORDER BY id
                """, logger: logger)
            var out: [SQLiteQueueStore.HealthAction] = []
            for try await (id, time, issue, kind, value, actor) in rows.decode(
                (Int64, Double, String, String, String, String).self)
            {
                out.append(
                    SQLiteQueueStore.HealthAction(
                        id: id, time: Date(timeIntervalSince1970: time), issue: issue, kind: kind, value: value,
                        actor: actor))
            }
            return out
        }
    }

    /// Marks an action applied or refused, if `node` leads in `term` and it still waits; false
    /// otherwise.
    public func finishHealthAction(_ c: PostgresConnection, node: String, term: Int64, _ id: Int64, applied: Bool)
        async throws(SharedQueueError) -> Bool
    {
        try await transaction(c) { c, logger in
            guard try await Self.leads(c, node: node, term: term, logger: logger) else { return false }
            try await PostgresCall.exec(
                c, "UPDATE mailflow_health_action SET applied = \(applied ? 1 : 2) WHERE id = \(id) AND applied = 0",
                logger: logger)
            return true
        }
    }

    /// Withdraws an action still waiting; false when it was applied or refused meanwhile.
    public func withdrawHealthAction(_ c: PostgresConnection, _ id: Int64) async throws(SharedQueueError) -> Bool {
        try await transaction(c) { c, logger in
            let rows = try await c.query(
                "UPDATE mailflow_health_action SET applied = 3 WHERE id = \(id) AND applied = 0 RETURNING 1",
                logger: logger)
            var withdrawn = false
            for try await _ in rows { withdrawn = true }
            return withdrawn
        }
    }

    public func healthActionState(_ c: PostgresConnection, _ id: Int64) async throws(SharedQueueError) -> Int? {
        try await bounded(c) { c, logger in
            let rows = try await c.query("SELECT applied FROM mailflow_health_action WHERE id = \(id)", logger: logger)
            var state: Int?
            for try await s in rows.decode(Int.self) { state = s }
            return state
        }
    }

    // MARK: the leader

    /// Takes the leadership for `node` until `now() + lease`, or renews it: granted when nobody
    /// leads, when `node` does, or when the leader's lease has run out. Nil when another node leads.
    public func leadHealth(_ c: PostgresConnection, node: String, lease: Duration) async throws(SharedQueueError)
        -> HealthLead?
    {
        let seconds = Self.seconds(lease)
        return try await transaction(c) { c, logger in
            let rows = try await c.query(
                """
                INSERT INTO mailflow_health_leader AS l (one, node, until)
                VALUES (true, \(node), now() + make_interval(secs => \(seconds)))
                ON CONFLICT (one) DO UPDATE SET node = excluded.node, until = excluded.until,
                  term = CASE WHEN l.node = excluded.node AND l.until >= now() THEN l.term ELSE l.term + 1 END
                WHERE l.node = excluded.node OR l.until < now()
                RETURNING trace_position, report_position, term
                """, logger: logger)
            var lead: HealthLead?
            for try await (trace, reports, term) in rows.decode((Int64?, Int64?, Int64).self) {
                lead = HealthLead(trace: trace, reports: reports, term: term)
            }
            return lead
        }
    }

    /// Saves how far the leader has read, if `node` still leads in `term`; false otherwise.
    public func saveHealthProgress(_ c: PostgresConnection, node: String, term: Int64, trace: Int64, reports: Int64)
        async throws(SharedQueueError) -> Bool
    {
        try await transaction(c) { c, logger in
            let rows = try await c.query(
                """
                UPDATE mailflow_health_leader SET trace_position = \(trace), report_position = \(reports)
                WHERE node = \(node) AND term = \(term) AND until > now()
                RETURNING 1
                """, logger: logger)
            var saved = false
            for try await _ in rows { saved = true }
            return saved
        }
    }

    /// Ends `node`'s leadership now (a clean stop), keeping the positions for the next leader.
    public func resignHealth(_ c: PostgresConnection, node: String) async throws(SharedQueueError) {
        try await transaction(c) { c, logger in
            try await PostgresCall.exec(
                c, "UPDATE mailflow_health_leader SET until = now() - interval '1 second' WHERE node = \(node)",
                logger: logger)
        }
    }

    /// Who leads and until when (the database's clock), if anyone.
    public func healthLeader(_ c: PostgresConnection) async throws(SharedQueueError) -> (node: String, until: Date)? {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT node, extract(epoch FROM until)::float8 FROM mailflow_health_leader WHERE until > now()
                """, logger: logger)
            var out: (String, Double)?
            for try await (node, until) in rows.decode((String, Double).self) { out = (node, until) }
            return out.map { (node: $0.0, until: Date(timeIntervalSince1970: $0.1)) }
        }
    }
}
