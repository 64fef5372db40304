import Foundation
import Logging
import MailQueue
import NIOCore
import NIOPosix
import PostgresNIO
import SMTPCore
import Synchronization

/// The shared queue's core in PostgreSQL (issue 16): several nodes accept into one queue and share
/// its delivery work through **leases**. Not yet wired into `serve` (see docs/cluster.md, "Shared
/// queue core").
///
/// The tables follow `SQLiteQueueStore`'s `message`, `recipient` and `trace_event` column for
/// column (prefixed `mailflow_`, like `mailflow_node`), with three more columns on the message:
/// `lease_owner` (the node delivering it), `lease_until` (on the database's clock) and
/// `lease_epoch` (one more at every claim, so a node that claims the same message twice, its first
/// lease having run out, can tell its two leases apart). Bodies are always in the database
/// (`bytea`): a spool file on one node is no use to another.
///
/// The lease protocol:
/// - `claimDue` takes due, queued messages whose lease is free or has run out, `FOR UPDATE SKIP
///   LOCKED`, and leases them to the node until `now() + lease`, in one statement;
/// - the node renews its leases (`renew`) every `lease / 3` while it delivers; a lease that has run
///   out is lost, even if nobody has taken it yet, so a node never works past `lease_until`;
/// - `recordAttempt` writes the outcomes only while the node still holds that lease (same owner and
///   epoch) and frees it; otherwise it writes nothing and answers `.leaseLost`: another node may
///   have delivered the message too (a duplicate the caller counts and traces);
/// - queue control (`hold`, `release`, `requestBounce`) works from any node and leaves a lease
///   alone: `renew` reports a held or bounce-requested message so its holder starts no new delivery
///   of it, and `recordAttempt` keeps it held (no next attempt) or due at once for the bounce.
///
/// Every call is bounded by `timeout` and runs on a connection the caller owns (`connect`) and
/// uses for one call at a time (the calls run transactions). A call that times out closes the
/// connection; after any `SharedQueueError.unavailable` connect again.
///
/// ```swift
/// let q = SharedQueue(database: try PostgresAddress(url: "postgres://mailflow@db/mailflow"),
///                     timeout: .seconds(5), logger: logger)
/// let c = try await q.connect(on: MultiThreadedEventLoopGroup.singleton)
/// try await q.migrate(c)
/// try await q.insert(c, [message])              // 250 only after this returns
/// let work = try await q.claimDue(c, node: "node-a", limit: 32, lease: .seconds(30))
/// ```
public struct SharedQueue: Sendable {
    public let database: PostgresAddress
    /// The longest any one call may take, connecting included.
    public let timeout: TimeAmount
    let logger: Logger

    public init(database: PostgresAddress, timeout: TimeAmount, logger: Logger) {
        self.database = database
        self.timeout = timeout
        self.logger = logger
    }

    /// A connection of the caller's own, with the same TLS and timeout rules as the directory's.
    public func connect(on group: any EventLoopGroup) async throws(SharedQueueError) -> PostgresConnection {
        let directory = ClusterDirectory(database: database, nodeTimeout: 0, timeout: timeout, logger: logger)
        return try await Self.mapErrors { try await directory.connect(on: group) }
    }

    /// Creates the tables and indexes if they are missing, under an advisory lock so that nodes
    /// starting together do not race on `CREATE ... IF NOT EXISTS`.
    public func migrate(_ c: PostgresConnection) async throws(SharedQueueError) {
        try await transaction(c) { c, logger in
            try await PostgresCall.exec(c, "SELECT pg_advisory_xact_lock(7264101)", logger: logger)
            for statement in Self.schema + Self.healthSchema {
                try await PostgresCall.exec(c, PostgresQuery(unsafeSQL: statement), logger: logger)
            }
        }
    }

    static let schema = [
        """
        CREATE TABLE IF NOT EXISTS mailflow_message (
          id text PRIMARY KEY,
          received_at timestamptz NOT NULL,
          sender text NOT NULL,
          size integer NOT NULL,
          body_type text,
          smtputf8 boolean NOT NULL,
          ret text,
          envid text,
          client_address text NOT NULL,
          helo text NOT NULL,
          protocol text NOT NULL,
          tls text,
          tenant text,
          message_id text,
          add_message_id boolean NOT NULL,
          subject text,
          stamp_length integer NOT NULL,
          body bytea,
          state text NOT NULL,
          next_attempt timestamptz,
          attempts integer NOT NULL DEFAULT 0,
          bounce_requested boolean NOT NULL DEFAULT false,
          abrupt_closes integer NOT NULL DEFAULT 0,
          delay_notice_at timestamptz,
          auth_results text,
          spf text,
          dkim text,
          dmarc text,
          add_date boolean NOT NULL DEFAULT false,
          lease_owner text,
          lease_until timestamptz,
          lease_epoch bigint NOT NULL DEFAULT 0
        )
        """,
        // Due work is found through this index only: held and finished messages have no next attempt.
        "CREATE INDEX IF NOT EXISTS mailflow_message_due ON mailflow_message (next_attempt) WHERE next_attempt IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS mailflow_message_held ON mailflow_message (id) WHERE state = 'held'",
        "CREATE INDEX IF NOT EXISTS mailflow_message_received ON mailflow_message (received_at)",
        // When a running lease ends (`secondsUntilNextClaimable`): a dead node's work is taken then.
        "CREATE INDEX IF NOT EXISTS mailflow_message_lease ON mailflow_message (lease_until) WHERE lease_until IS NOT NULL",
        """
        CREATE TABLE IF NOT EXISTS mailflow_recipient (
          message text NOT NULL REFERENCES mailflow_message (id) ON DELETE CASCADE,
          idx integer NOT NULL,
          address text NOT NULL,
          route text NOT NULL,
          notify text,
          orcpt text,
          status text NOT NULL,
          attempts integer NOT NULL DEFAULT 0,
          last_reply text,
          PRIMARY KEY (message, idx)
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS mailflow_trace_event (
          id bigserial PRIMARY KEY,
          time timestamptz NOT NULL,
          queue_id text NOT NULL,
          recipient text,
          kind text NOT NULL,
          detail text,
          forest text,
          region text,
          tenant text,
          client_address text,
          reply text,
          tx xid8 NOT NULL DEFAULT pg_current_xact_id()
        )
        """,
        "CREATE INDEX IF NOT EXISTS mailflow_recipient_pending ON mailflow_recipient (message) WHERE status = 'pending'",
        "CREATE INDEX IF NOT EXISTS mailflow_trace_event_queue ON mailflow_trace_event (queue_id)",
        "CREATE INDEX IF NOT EXISTS mailflow_trace_event_time ON mailflow_trace_event (time)",
    ]

    // MARK: acceptance

    /// Makes a batch of messages durable: envelopes, bodies, recipients and a `received` trace event
    /// each, in **one statement** (one round trip, one commit, however many messages: the group
    /// commit's batch). The `250` may be sent once this returns. A `.spooled` body is read from its
    /// file into the database (cluster mode keeps no spool a node alone can read).
    ///
    /// `events` are trace events without a message that came with the batch (admission control's
    /// `throttled` refusals): they commit with it, into the trace every node's service health reads.
    public func insert(_ c: PostgresConnection, _ batch: [NewMessage], events: [TraceEvent] = [])
        async throws(SharedQueueError)
    {
        guard !batch.isEmpty || !events.isEmpty else { return }
        let rows = try SharedQueueRows(batch)
        let loose = Self.looseEvents(events)
        // In BEGIN ... COMMIT: COMMIT's answer comes once the commit is done. A statement in an
        // implicit transaction answers CommandComplete before its commit (which runs at Sync and
        // may still fail, or wait for a synchronous standby): a 250 on that could be a lie
        // (test_shared_queue's slow, cut commit).
        try await transaction(c) { c, logger in
            if !batch.isEmpty { try await Self.runInsert(c, rows, logger: logger) }
            if !events.isEmpty {
                try await PostgresCall.exec(
                    c,
                    """
                    INSERT INTO mailflow_trace_event (time, queue_id, recipient, kind, detail, forest, region, tenant,
                      client_address, reply)
                    SELECT to_timestamp(e.time), e.queue_id, e.recipient, e.kind, e.detail, e.forest, e.region,
                      e.tenant, e.client_address, e.reply
                    FROM jsonb_to_recordset(\(loose)::jsonb) AS e(time float8, queue_id text, recipient text,
                      kind text, detail text, forest text, region text, tenant text, client_address text, reply text)
                    """, logger: logger)
            }
        }
    }

    /// Trace events as the JSON array `insert` reads.
    static func looseEvents(_ events: [TraceEvent]) -> String {
        struct Row: Encodable {
            var time: Double
            var queueId: String
            var recipient, detail, forest, region, tenant, clientAddress, reply: String?
            var kind: String
        }
        let rows = events.map { e in
            Row(
                time: e.time.timeIntervalSince1970, queueId: e.queueID, recipient: e.recipient, detail: e.detail,
                forest: e.forest, region: e.region, tenant: e.tenant, clientAddress: e.clientAddress, reply: e.reply,
                kind: e.kind.rawValue)
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: (try? encoder.encode(rows)) ?? Data("[]".utf8), as: UTF8.self)
    }

    static func runInsert(_ c: PostgresConnection, _ rows: SharedQueueRows, logger: Logger) async throws {
        // Data-modifying CTEs: the three inserts commit together or not at all.
        try await PostgresCall.exec(
            c,
            """
            WITH m AS (
              INSERT INTO mailflow_message (id, received_at, sender, size, body_type, smtputf8, ret, envid,
                client_address, helo, protocol, tls, tenant, message_id, add_message_id, subject, stamp_length,
                body, state, next_attempt, attempts, auth_results, spf, dkim, dmarc, add_date)
              SELECT j.id, to_timestamp(j.received_at), j.sender, j.size, j.body_type, j.smtputf8, j.ret, j.envid,
                j.client_address, j.helo, j.protocol_name, j.tls, j.tenant, j.message_id, j.add_message_id, j.subject,
                j.stamp_length, b.body, 'queued', to_timestamp(j.received_at), 0, j.auth_results, j.spf, j.dkim,
                j.dmarc, j.add_date
              FROM jsonb_to_recordset(\(rows.messages)::jsonb) AS j(n bigint, id text, received_at float8,
                sender text, size integer, body_type text, smtputf8 boolean, ret text, envid text,
                client_address text, helo text, protocol_name text, tls text, tenant text, message_id text,
                add_message_id boolean, subject text, stamp_length integer, auth_results text, spf text,
                dkim text, dmarc text, add_date boolean)
              JOIN unnest(\(rows.bodies)::bytea[]) WITH ORDINALITY AS b(body, n) ON b.n = j.n
              RETURNING 1),
            r AS (
              INSERT INTO mailflow_recipient (message, idx, address, route, notify, orcpt, status, attempts)
              SELECT x.message, x.idx, x.address, x.route, x.notify, x.orcpt, 'pending', 0
              FROM jsonb_to_recordset(\(rows.recipients)::jsonb) AS x(message text, idx integer, address text,
                route text, notify text, orcpt text)
              RETURNING 1),
            t AS (
              INSERT INTO mailflow_trace_event (time, queue_id, recipient, kind, detail)
              SELECT to_timestamp(e.time), e.queue_id, e.recipient, e.kind, e.detail
              FROM jsonb_to_recordset(\(rows.events)::jsonb) AS e(time float8, queue_id text, recipient text,
                kind text, detail text)
              RETURNING 1)
            SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM r), (SELECT count(*) FROM t)
            """, logger: logger)
    }

    // MARK: leases

    /// Leases up to `limit` due messages to `node` until the database's `now() + lease`, earliest
    /// due first, skipping rows another node is claiming at this moment (`SKIP LOCKED`): two
    /// claimers never get the same message. One statement, one round trip, envelope, recipients and
    /// body included. A message whose previous lease ran out without a record (its node died or
    /// stalled) gets a `lease_expired` trace event naming both nodes: the next delivery may be a
    /// duplicate of one the first node made before it stopped.
    public func claimDue(
        _ c: PostgresConnection, node: String, limit: Int, lease: Duration
    ) async throws(SharedQueueError) -> [ClaimedMessage] {
        let seconds = Self.seconds(lease)
        return try await transaction(c) { c, logger in
            let rows = try await c.query(
                """
                WITH c AS (
                  UPDATE mailflow_message m
                  SET lease_owner = \(node), lease_until = now() + make_interval(secs => \(seconds)),
                    lease_epoch = m.lease_epoch + 1
                  FROM (
                    SELECT id, lease_owner AS prev_owner, lease_epoch AS prev_epoch FROM mailflow_message
                    WHERE next_attempt <= now() AND state = 'queued' AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY next_attempt LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED) due
                  WHERE m.id = due.id
                  RETURNING m.id, m.lease_epoch, extract(epoch FROM m.lease_until)::float8 AS until, m.body,
                    \(unescaped: Self.envelopeJSON)::text AS envelope, due.prev_owner, due.prev_epoch),
                taken AS (
                  INSERT INTO mailflow_trace_event (time, queue_id, kind, detail)
                  SELECT now(), c.id, 'lease_expired',
                    'the lease of node ' || c.prev_owner || ' (claim ' || c.prev_epoch || ') ran out before it recorded an attempt; node '
                    || \(node)::text || ' took the message over: ' || c.prev_owner
                    || ' may have delivered it before it stopped (possible duplicate)'
                  FROM c WHERE c.prev_owner IS NOT NULL
                  RETURNING 1)
                SELECT id, lease_epoch, until, body, envelope FROM c
                """, logger: logger)
            var out: [ClaimedMessage] = []
            for try await (id, epoch, until, body, json) in rows.decode(
                (String, Int64, Double, ByteBuffer?, String).self)
            {
                out.append(
                    ClaimedMessage(
                        lease: SharedLease(queueID: id, epoch: epoch), leaseUntil: Date(timeIntervalSince1970: until),
                        message: try Self.storedMessage(id: id, body: body, envelopeJSON: json)))
            }
            return out.sorted { ($0.message.nextAttempt ?? .distantPast) < ($1.message.nextAttempt ?? .distantPast) }
        }
    }

    /// The envelope of row `m` and its recipients as one JSON object (see `SharedQueueEnvelope`).
    static let envelopeJSON = """
        jsonb_build_object('received_at', extract(epoch FROM m.received_at)::float8, 'sender', m.sender,
          'size', m.size, 'body_type', m.body_type, 'smtputf8', m.smtputf8, 'ret', m.ret, 'envid', m.envid,
          'client_address', m.client_address, 'helo', m.helo, 'protocol_name', m.protocol, 'tls', m.tls,
          'tenant', m.tenant, 'message_id', m.message_id, 'add_message_id', m.add_message_id,
          'subject', m.subject, 'stamp_length', m.stamp_length, 'attempts', m.attempts,
          'next_attempt', extract(epoch FROM m.next_attempt)::float8, 'state', m.state,
          'bounce_requested', m.bounce_requested, 'abrupt_closes', m.abrupt_closes,
          'delay_notice_at', extract(epoch FROM m.delay_notice_at)::float8, 'auth_results', m.auth_results,
          'spf', m.spf, 'dkim', m.dkim, 'dmarc', m.dmarc, 'add_date', m.add_date,
          'recipients', (SELECT coalesce(jsonb_agg(jsonb_build_object('idx', r.idx, 'address', r.address,
              'route', r.route, 'notify', r.notify, 'orcpt', r.orcpt, 'status', r.status,
              'attempts', r.attempts, 'last_reply', r.last_reply) ORDER BY r.idx), '[]'::jsonb)
            FROM mailflow_recipient r WHERE r.message = m.id))
        """

    /// Extends the leases `node` still holds to `now() + lease`. A lease already run out, or taken
    /// by another node, is not renewed: it is in `lost`, and the node must stop working on it. Held
    /// and bounce-requested messages are renewed (their deliveries in flight may still finish and
    /// be recorded) and reported, so the node starts no new delivery of them.
    public func renew(
        _ c: PostgresConnection, node: String, leases: [SharedLease], lease: Duration
    ) async throws(SharedQueueError) -> LeaseCheck {
        guard !leases.isEmpty else { return LeaseCheck() }
        let seconds = Self.seconds(lease)
        let ids = leases.map(\.queueID)
        let epochs = leases.map(\.epoch)
        return try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                UPDATE mailflow_message m SET lease_until = now() + make_interval(secs => \(seconds))
                FROM unnest(\(ids)::text[], \(epochs)::int8[]) AS l(id, epoch)
                WHERE m.id = l.id AND m.lease_epoch = l.epoch AND m.lease_owner = \(node) AND m.lease_until > now()
                RETURNING m.id, m.state, m.bounce_requested
                """, logger: logger)
            var check = LeaseCheck()
            var kept = Set<String>()
            for try await (id, state, bounce) in rows.decode((String, String, Bool).self) {
                kept.insert(id)
                if state == MessageState.held.rawValue { check.held.insert(id) }
                if bounce { check.bounceRequested.insert(id) }
            }
            check.lost = Set(ids).subtracting(kept)
            return check
        }
    }

    /// Records one attempt's outcomes, if `node` still holds `lease` (same owner and epoch; a
    /// lease run out that nobody took since still counts: nobody else can have delivered). In one
    /// transaction: recipient states, a trace event each, DSNs and their `dsn` events, the next
    /// attempt (none when nothing is pending; none while held; at once when a bounce was
    /// requested), and the lease freed. Without the lease nothing is written: `.leaseLost`.
    public func recordAttempt(
        _ c: PostgresConnection, node: String, lease: SharedLease, attempt: SQLiteQueueStore.Attempt
    ) async throws(SharedQueueError) -> AttemptRecord {
        let outcomes = try SharedQueueRows.outcomes(attempt.outcomes)
        let notifications = attempt.notifications.isEmpty ? nil : try SharedQueueRows(attempt.notifications)
        let id = lease.queueID
        // The wait until the next attempt, put on the database's clock (`now() + wait`): a node's
        // clock need not agree with the database's, which claims compare with.
        let wait = max(0, (attempt.nextAttempt ?? attempt.now).timeIntervalSince(attempt.now))
        let now = attempt.now.timeIntervalSince1970
        let abrupt = attempt.abruptClose ? 1 : 0
        let delayNotice: Double? = attempt.delayNoticeSent ? now : nil
        guard let notifications else {
            // The usual case, in one statement (and BEGIN/COMMIT, whose answer means committed, as
            // for `insert`): every change joins `mine`, the
            // row locked only while this claim holds the lease, so without it nothing changes.
            // `p` counts what will be pending from the snapshot before the updates plus `o`.
            return try await transaction(c) { c, logger in
                let rows = try await c.query(
                    """
                    WITH mine AS (
                      SELECT id FROM mailflow_message
                      WHERE id = \(id) AND lease_owner = \(node) AND lease_epoch = \(lease.epoch) FOR UPDATE),
                    o AS (
                      SELECT * FROM jsonb_to_recordset(\(outcomes)::jsonb) AS o(idx integer, status text, kind text,
                        detail text)),
                    r AS (
                      UPDATE mailflow_recipient r SET status = CASE WHEN r.status = 'pending' THEN o.status ELSE r.status END, attempts = r.attempts + 1, last_reply = o.detail
                      FROM o, mine WHERE r.message = mine.id AND r.idx = o.idx
                      RETURNING r.idx, r.address, o.kind, o.detail),
                    t AS (
                      INSERT INTO mailflow_trace_event (time, queue_id, recipient, kind, detail)
                      SELECT to_timestamp(\(now)), \(id), r.address, r.kind, r.detail FROM r ORDER BY r.idx
                      RETURNING 1),
                    p AS (
                      SELECT count(*) AS pending FROM mine
                      JOIN mailflow_recipient x ON x.message = mine.id LEFT JOIN o ON o.idx = x.idx
                      WHERE CASE WHEN x.status = 'pending' THEN coalesce(o.status, x.status) ELSE x.status END = 'pending'),
                    m AS (
                      UPDATE mailflow_message SET
                        state = CASE WHEN p.pending = 0 THEN 'done' ELSE state END,
                        next_attempt = CASE WHEN p.pending = 0 OR state IN ('held', 'done') THEN NULL
                          WHEN bounce_requested THEN now() ELSE now() + make_interval(secs => \(wait)) END,
                        body = CASE WHEN p.pending = 0 THEN NULL ELSE body END,
                        attempts = attempts + 1, abrupt_closes = abrupt_closes + \(abrupt),
                        delay_notice_at = coalesce(to_timestamp(\(delayNotice)), delay_notice_at),
                        lease_owner = NULL, lease_until = NULL
                      FROM p, mine WHERE mailflow_message.id = mine.id
                      RETURNING p.pending = 0 AS finished)
                    SELECT (SELECT count(*) FROM mine), (SELECT count(*) FROM t), coalesce((SELECT finished FROM m), false)
                    """, logger: logger)
                var record = AttemptRecord.leaseLost
                for try await (held, _, finished) in rows.decode((Int, Int, Bool).self) where held == 1 {
                    record = .recorded(finished: finished)
                }
                return record
            }
        }
        // With DSNs to queue: the same changes as a transaction of several statements.
        return try await transaction(c) { c, logger in
            let held = try await c.query(
                """
                SELECT state FROM mailflow_message
                WHERE id = \(id) AND lease_owner = \(node) AND lease_epoch = \(lease.epoch) FOR UPDATE
                """, logger: logger)
            var state: String?
            for try await s in held.decode(String.self) { state = s }
            guard state != nil else { return .leaseLost }
            do {
                try await Self.runInsert(c, notifications, logger: logger)
                try await PostgresCall.exec(
                    c,
                    """
                    INSERT INTO mailflow_trace_event (time, queue_id, recipient, kind, detail)
                    SELECT to_timestamp(\(now)), \(id), NULL, 'dsn', d FROM unnest(\(notifications.dsnDetails)::text[]) AS d
                    """, logger: logger)
            }
            try await PostgresCall.exec(
                c,
                """
                WITH o AS (
                  SELECT * FROM jsonb_to_recordset(\(outcomes)::jsonb) AS o(idx integer, status text, kind text, detail text)),
                r AS (
                  UPDATE mailflow_recipient r SET status = CASE WHEN r.status = 'pending' THEN o.status ELSE r.status END, attempts = r.attempts + 1, last_reply = o.detail
                  FROM o WHERE r.message = \(id) AND r.idx = o.idx
                  RETURNING r.idx, r.address)
                INSERT INTO mailflow_trace_event (time, queue_id, recipient, kind, detail)
                SELECT to_timestamp(\(now)), \(id), r.address, o.kind, o.detail FROM r JOIN o ON o.idx = r.idx ORDER BY r.idx
                """, logger: logger)
            let done = try await c.query(
                """
                UPDATE mailflow_message SET
                  state = CASE WHEN p.pending = 0 THEN 'done' ELSE state END,
                  next_attempt = CASE WHEN p.pending = 0 OR state IN ('held', 'done') THEN NULL
                    WHEN bounce_requested THEN now() ELSE now() + make_interval(secs => \(wait)) END,
                  body = CASE WHEN p.pending = 0 THEN NULL ELSE body END,
                  attempts = attempts + 1, abrupt_closes = abrupt_closes + \(abrupt),
                  delay_notice_at = coalesce(to_timestamp(\(delayNotice)), delay_notice_at),
                  lease_owner = NULL, lease_until = NULL
                FROM (SELECT count(*) AS pending FROM mailflow_recipient
                      WHERE message = \(id) AND status = 'pending') p
                WHERE id = \(id)
                RETURNING p.pending = 0
                """, logger: logger)
            var finished = false
            for try await f in done.decode(Bool.self) { finished = f }
            return .recorded(finished: finished)
        }
    }

    // MARK: queue control

    /// Keeps a queued message out of delivery until `release`, from any node. A lease on it stays
    /// (see the type's doc): its holder learns of the hold at its next `renew`.
    public func hold(_ c: PostgresConnection, _ id: String, actor: String) async throws(SharedQueueError) {
        try await control(c, id, action: "hold", actor: actor, allowed: ["queued"]) {
            "UPDATE mailflow_message SET state = 'held', next_attempt = NULL WHERE id = \($0)"
        }
    }

    /// Makes a held message due again at once (a lease still running delays its next claim).
    public func release(_ c: PostgresConnection, _ id: String, actor: String) async throws(SharedQueueError) {
        try await control(c, id, action: "release", actor: actor, allowed: ["held"]) {
            "UPDATE mailflow_message SET state = 'queued', next_attempt = now() WHERE id = \($0)"
        }
    }

    /// Asks for a message to be returned to its sender: the next node to claim it fails its pending
    /// recipients with `5.3.0` and sends the DSN (`ClaimedMessage.bounceRequested`).
    public func requestBounce(_ c: PostgresConnection, _ id: String, actor: String) async throws(SharedQueueError) {
        try await control(c, id, action: "bounce", actor: actor, allowed: ["queued", "held"]) {
            """
            UPDATE mailflow_message SET state = 'queued', bounce_requested = true, next_attempt = now()
            WHERE id = \($0)
            """
        }
    }

    /// The state of message `id`, its row locked until the transaction ends; `.notFound` when the
    /// queue does not know it.
    static func lockedState(_ c: PostgresConnection, _ id: String, logger: Logger) async throws -> String {
        let rows = try await c.query("SELECT state FROM mailflow_message WHERE id = \(id) FOR UPDATE", logger: logger)
        var state: String?
        for try await s in rows.decode(String.self) { state = s }
        guard let state else { throw SharedQueueError.notFound(id) }
        return state
    }

    func control(
        _ c: PostgresConnection, _ id: String, action: String, actor: String, allowed: Set<String>,
        _ change: @escaping @Sendable (String) -> PostgresQuery
    ) async throws(SharedQueueError) {
        try await transaction(c) { c, logger in
            let state = try await Self.lockedState(c, id, logger: logger)
            guard allowed.contains(state) else {
                let why = SQLiteQueueStore.ControlAction(rawValue: action)?.refusal(state: state)
                throw SharedQueueError.notApplicable(id, why ?? "cannot \(action) a message that is \(state)")
            }
            try await PostgresCall.exec(c, change(id), logger: logger)
            try await PostgresCall.exec(
                c,
                """
                INSERT INTO mailflow_trace_event (time, queue_id, kind, detail)
                VALUES (now(), \(id), 'admin', \("\(action) by \(actor)"))
                """, logger: logger)
        }
    }

    // MARK: reading

    /// A message's state as every node sees it, nil if unknown.
    public func status(_ c: PostgresConnection, _ id: String) async throws(SharedQueueError) -> SharedMessageStatus? {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT state, attempts, extract(epoch FROM next_attempt)::float8, lease_owner, lease_epoch,
                  (SELECT coalesce(array_agg(status ORDER BY idx), '{}') FROM mailflow_recipient WHERE message = id)
                FROM mailflow_message WHERE id = \(id)
                """, logger: logger)
            var out: SharedMessageStatus?
            for try await (state, attempts, next, owner, epoch, statuses) in rows.decode(
                (String, Int, Double?, String?, Int64, [String]).self)
            {
                out = SharedMessageStatus(
                    state: MessageState(rawValue: state) ?? .queued, attempts: attempts,
                    nextAttempt: next.map { Date(timeIntervalSince1970: $0) }, leaseOwner: owner, leaseEpoch: epoch,
                    recipients: statuses.map { RecipientStatus(rawValue: $0) ?? .pending })
            }
            return out
        }
    }

    /// A message's trace events in the order they were written.
    public func traceEvents(_ c: PostgresConnection, queueID: String) async throws(SharedQueueError) -> [TraceEvent] {
        try await bounded(c) { c, logger in
            let rows = try await c.query(
                """
                SELECT extract(epoch FROM time)::float8, queue_id, recipient, kind, detail, forest, region, tenant,
                  client_address, reply
                FROM mailflow_trace_event WHERE queue_id = \(queueID) ORDER BY id
                """, logger: logger)
            var out: [TraceEvent] = []
            for try await r in rows.decode(
                (Double, String, String?, String, String?, String?, String?, String?, String?, String?).self)
            {
                out.append(
                    TraceEvent(
                        time: Date(timeIntervalSince1970: r.0), queueID: r.1, recipient: r.2,
                        kind: TraceEventKind(rawValue: r.3) ?? .received, detail: r.4, forest: r.5, region: r.6,
                        tenant: r.7, clientAddress: r.8, reply: r.9))
            }
            return out
        }
    }

    // MARK: plumbing

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// `body` in a transaction, bounded: rolled back on any error.
    func transaction<T: Sendable>(
        _ c: PostgresConnection, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws(SharedQueueError) -> T {
        try await bounded(c) { c, logger in
            try await PostgresCall.exec(c, "BEGIN", logger: logger)
            do {
                let value = try await body(c, logger)
                if let lost = value as? AttemptRecord, lost == .leaseLost {
                    try await PostgresCall.exec(c, "ROLLBACK", logger: logger)
                } else {
                    try await PostgresCall.exec(c, "COMMIT", logger: logger)
                }
                return value
            } catch {
                try? await PostgresCall.exec(c, "ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// Runs `body`, or fails with `.unavailable` after `timeout` (`PostgresCall.bounded`).
    func bounded<T: Sendable>(
        _ c: PostgresConnection, _ body: @escaping @Sendable (PostgresConnection, Logger) async throws -> T
    ) async throws(SharedQueueError) -> T {
        let timeout = self.timeout
        let logger = self.logger
        return try await Self.mapErrors { try await PostgresCall.bounded(c, timeout: timeout, logger: logger, body) }
    }

    static func mapErrors<T>(_ body: () async throws -> T) async throws(SharedQueueError) -> T {
        do {
            return try await body()
        } catch let e as SharedQueueError {
            throw e
        } catch let e as PSQLError {
            guard let state = e.serverInfo?[.sqlState] else { throw .unavailable(String(describing: e.code)) }
            let message = e.serverInfo?[.message] ?? ""
            // Connection exceptions (08), resources (53) and an operator's intervention (57: a
            // shutdown, a restart, "the database system is starting up") mean the database is away.
            if ["08", "53", "57"].contains(String(state.prefix(2))) {
                throw .unavailable("\(state): \(message)")
            }
            throw .refused(sqlState: state, message: message)
        } catch let e as ClusterTimeout {
            throw .unavailable(e.description)
        } catch let e as DecodingError {
            throw .unreadable("a claimed message's envelope: \(e)")
        } catch {
            throw .unavailable(String(describing: type(of: error)))
        }
    }
}
