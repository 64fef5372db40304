"""Admission control: resource forests, server-wide and per-source caps, rates, tarpit, greet pause,
SIGHUP reload, the throttle trace stream and `mailflow limits`.

Every test client is 127.0.0.1, so the per-source figures of the default test config are raised out
of the way (mfutil.default_config) and only lowered here by the tests that exercise them. Contoso
(contoso.test: alice, bob) lands on forest NAMPR01 (F) and fabrikam (fabrikam.test, catch-all) on
forest EURPR02 (G).
"""

from __future__ import annotations

import json
import random
import signal
import socket
import sqlite3
import struct
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from mfutil import (
    SMTPClient,
    all_delivered_files,
    default_config,
    delivered_files,
    dot_stuff,
    make_message,
    queue_id_of,
    to_yaml,
    wait_for_delivery,
)
from pgutil import query_url

F, F_REGION = "NAMPR01", "north-america"
G, G_REGION = "EURPR02", "europe"
LOCAL = "127.0.0.1"

FOREST_FULL_CLOSE = ("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a "
                     "limit, closing transmission channel")
FOREST_FULL_DEFER = ("451 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a "
                     "limit, try this recipient again later")
SERVER_FULL = "421 4.3.2 Too many concurrent connections to this server, closing transmission channel"
SOURCE_FULL = f"421 4.7.0 Too many concurrent connections from {LOCAL}, closing transmission channel"
CONNECTION_RATE = f"421 4.7.0 Connection rate limit exceeded for {LOCAL}, server busy, try again later"
MESSAGE_RATE = f"451 4.7.1 Message rate limit exceeded for {LOCAL}, server busy, try again later"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors on this connection, closing transmission channel"
PREGREET = "554 5.5.1 Protocol error: data received before the greeting"


def forest_overrides(f_max: int = 50, g_max: int = 50, f_rate: int = 0, g_rate: int = 0) -> dict:
    return {"forests": [
        {"name": F, "region": F_REGION, "tenants": ["contoso"], "max_connections": f_max,
         "max_messages_per_minute": f_rate},
        {"name": G, "region": G_REGION, "tenants": ["fabrikam"], "max_connections": g_max,
         "max_messages_per_minute": g_rate},
    ]}


def high_per_source(**changes) -> dict:
    ps = {"max_connections": 1000, "connections_per_minute": 1000000, "messages_per_minute": 1000000}
    ps.update(changes)
    return ps


# --------------------------------------------------------------------------------------------
# helpers


def at_rcpt(port: int, rcpt: str, sender: str = "s@example.net", timeout: float = 10.0):
    """A session through EHLO and MAIL, then `RCPT TO:<rcpt>`: (client, RCPT reply)."""
    c = SMTPClient(port, timeout=timeout)
    assert c.greeting.code == 220, c.greeting
    c.ehlo()
    r = c.cmd(f"MAIL FROM:<{sender}>")
    assert (r.code, r.enhanced) == (250, "2.1.0"), r
    return c, c.cmd(f"RCPT TO:<{rcpt}>")


def try_hold(port: int, rcpt: str, refusal: str = FOREST_FULL_CLOSE) -> SMTPClient | None:
    """A session holding `rcpt`'s forest, or None if it was refused with `refusal` (and closed)."""
    c, r = at_rcpt(port, rcpt)
    if r.code == 250:
        return c
    expect_refused_and_closed(c, r, refusal)
    return None


def hold(port: int, rcpt: str, **kw) -> SMTPClient:
    """A session holding `rcpt`'s forest: its RCPT was accepted."""
    c, r = at_rcpt(port, rcpt, **kw)
    assert (r.code, r.enhanced) == (250, "2.1.5"), r
    return c


def tcp_reset(c: SMTPClient) -> None:
    """Vanish: close with SO_LINGER 0, so the server sees a TCP reset."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()


def quit_session(c: SMTPClient) -> None:
    r = c.cmd("QUIT")
    assert r.code == 221, r
    c.expect_closed()
    c.close()


def expect_refused_and_closed(c: SMTPClient, r, expected: str) -> None:
    assert r.first == expected, r
    assert len(r.lines) == 1, r
    c.expect_closed()
    c.close()


def finish_message(c: SMTPClient, message: bytes) -> str:
    """DATA for a transaction whose recipients are in place; returns the queue ID."""
    r = c.cmd("DATA")
    assert r.code == 354, r
    c.send(dot_stuff(message) + b".\r\n")
    return queue_id_of(c.reply())


def retry_until(fn, timeout: float = 3.0, interval: float = 0.05):
    """Calls fn() until it returns something truthy; returns that, or the last falsy value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def limits(srv) -> dict:
    r = srv.cli("limits", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def forest_of(snapshot: dict, name: str) -> dict:
    (f,) = [f for f in snapshot["forests"] if f["name"] == name]
    return f


def wait_limits(srv, pred, what: str, timeout: float = 6.0) -> dict:
    """Polls `mailflow limits --json` (rewritten once a second) until pred(snapshot)."""
    deadline = time.monotonic() + timeout
    snap: dict = {}
    while time.monotonic() < deadline:
        snap = limits(srv)
        if pred(snap):
            return snap
        time.sleep(0.2)
    raise AssertionError(f"limits never showed {what} in {timeout}s: {json.dumps(snap, indent=1)}")


def all_idle(snap: dict) -> bool:
    return snap["connections"] == 0 and all(f["sessions"] == 0 for f in snap["forests"]) \
        and all(s["sessions"] == 0 for s in snap["busiestSources"])


def wait_idle(srv, timeout: float = 6.0) -> dict:
    return wait_limits(srv, all_idle, "connections 0 and every forest at 0 sessions", timeout)


def throttle_rows(srv) -> list[dict]:
    """The server's `throttled` trace events, oldest first: in queue.sqlite, and in the shared queue's
    database when the queue is in PostgreSQL (MAILFLOW_E2E_STORAGE=postgres), where cluster-wide
    service health reads them (issue 16; until then a node kept them in its own queue.sqlite)."""
    path = Path(srv.data_dir) / "queue.sqlite"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM trace_event WHERE kind = 'throttled' ORDER BY id")]
    finally:
        con.close()
    postgres = srv.config.get("storage", {}).get("postgres", {}).get("url")
    # The tables appear at the node's first connection to the database.
    if postgres and query_url(postgres, "SELECT to_regclass('mailflow_trace_event') IS NOT NULL") == [("t",)]:
        [(text,)] = query_url(postgres, """
            SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]'::jsonb) FROM (
              SELECT id, extract(epoch FROM time)::float8 AS time, queue_id, recipient, kind, detail, forest, region,
                tenant, client_address, reply
              FROM mailflow_trace_event WHERE kind = 'throttled') t""")
        rows += json.loads(text)
    return rows


def wait_throttle(srv, reply: str, count: int = 1, timeout: float = 6.0) -> list[dict]:
    """Throttle events whose reply is `reply`, once there are at least `count` (batched writer: poll)."""
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = [r for r in throttle_rows(srv) if r["reply"] == reply]
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{len(rows)} of {count} throttle events with reply {reply!r} after {timeout}s; "
                         f"all: {throttle_rows(srv)[-10:]}")


def check_event(row: dict, forest: str | None = None, region: str | None = None, tenant: str | None = None) -> None:
    assert row["queue_id"] == "", row
    assert row["client_address"] == LOCAL, row
    assert (row["forest"], row["region"], row["tenant"]) == (forest, region, tenant), row
    assert abs(row["time"] - time.time()) < 120, f"time is not now: {row}"


def write_config(srv, cfg: dict) -> None:
    tmp = srv.config_path.with_suffix(".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(srv.config_path)


def tenants_with(contoso_extra: dict) -> list[dict]:
    ts = default_config()["tenants"]
    ts[0].update(contoso_extra)
    return ts


# --------------------------------------------------------------------------------------------
# 1. forest session cap


K = 3


def test_forest_cap_refuses_next_session_and_releases_on_quit(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=K, g_max=K))
    held = [hold(srv.port, "alice@contoso.test") for _ in range(K)]

    # Session K+1 for F: the Exchange reply, then the connection closes.
    c, r = at_rcpt(srv.port, "bob@contoso.test")
    expect_refused_and_closed(c, r, FOREST_FULL_CLOSE)
    (row,) = wait_throttle(srv, FOREST_FULL_CLOSE)
    check_event(row, F, F_REGION, "contoso")

    # Forest G is unaffected: its recipient is accepted and the message delivered.
    token = uuid.uuid4().hex[:12]
    with SMTPClient(srv.port) as g:
        g.ehlo()
        qid = g.send_message("s@example.net", [f"g-{token}@fabrikam.test"], make_message(token))
        quit_session(g)
    (f,) = wait_for_delivery(srv.data_dir, qid)
    assert f.parent.parent.name == f"g-{token}" and token.encode() in f.read_bytes()

    # `mailflow limits` shows F full (the table: SESSIONS and LIMIT columns).
    def f_row_full():
        out = srv.cli("limits").stdout
        rows = [l.split() for l in out.splitlines() if l.split()[:1] == [F]]
        return rows and rows[0][1:4] == [F_REGION, str(K), str(K)] and out
    assert retry_until(f_row_full, timeout=6, interval=0.2), srv.cli("limits").stdout
    snap = limits(srv)
    assert forest_of(snap, F)["refused"] >= 1 and forest_of(snap, F)["maxConnections"] == K

    # One F session ends with QUIT: its slot is free again for a new F session.
    quit_session(held.pop(0))

    c = retry_until(lambda: try_hold(srv.port, "alice@contoso.test"), timeout=2)
    assert c, "a new F session was still refused 2 s after an F session quit"
    held.append(c)
    # ...and F is full again.
    c, r = at_rcpt(srv.port, "alice@contoso.test")
    expect_refused_and_closed(c, r, FOREST_FULL_CLOSE)

    for c in held:
        quit_session(c)
    wait_idle(srv)


def test_rset_does_not_release_the_forest(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=1))
    c = hold(srv.port, "alice@contoso.test")
    assert c.cmd("RSET").first == "250 2.0.0 Ok"
    c2, r = at_rcpt(srv.port, "alice@contoso.test")
    expect_refused_and_closed(c2, r, FOREST_FULL_CLOSE)
    # The session holding F can start a new transaction for F: it already holds the forest.
    assert c.cmd("MAIL FROM:<s@example.net>").code == 250
    assert c.cmd("RCPT TO:<bob@contoso.test>").code == 250
    quit_session(c)
    c3 = retry_until(lambda: try_hold(srv.port, "bob@contoso.test"), timeout=2)
    assert c3, "the forest was not released when the session ended"
    quit_session(c3)


def test_second_forest_full_defers_only_that_recipient(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=K, g_max=K))
    held = [hold(srv.port, "alice@contoso.test") for _ in range(K)]
    token = uuid.uuid4().hex[:12]

    c = hold(srv.port, f"g-{token}@fabrikam.test")  # holds G
    r = c.cmd("RCPT TO:<alice@contoso.test>")
    assert r.first == FOREST_FULL_DEFER, r
    assert c.cmd("NOOP").first == "250 2.0.0 Ok", "the session goes on"
    # Another G recipient in the same transaction is still fine.
    assert c.cmd(f"RCPT TO:<h-{token}@fabrikam.test>").code == 250
    qid = finish_message(c, make_message(token))
    quit_session(c)

    files = wait_for_delivery(srv.data_dir, qid, count=2)
    assert sorted(f.parent.parent.name for f in files) == sorted([f"g-{token}", f"h-{token}"])
    time.sleep(0.5)
    assert len(delivered_files(srv.data_dir, qid)) == 2, "the deferred F recipient got nothing"
    assert not any(p.name.startswith(qid) for p in (srv.data_dir / "mailboxes/contoso.test").rglob("*"))

    (row,) = wait_throttle(srv, FOREST_FULL_DEFER)
    check_event(row, F, F_REGION, "contoso")
    for h in held:
        quit_session(h)
    wait_idle(srv)


@pytest.mark.parametrize("refusal", ["forest_message_rate", "mailbox_rate", "tenant_size"])
def test_refused_rcpt_takes_no_forest_slot(mailflow_server, refusal):
    """A session counts against a forest from its first *accepted* RCPT: a recipient refused by a
    forest message rate, a mailbox rate or the tenant's size limit does not occupy a forest slot."""
    overrides = forest_overrides(f_max=1, f_rate=1 if refusal == "forest_message_rate" else 0)
    if refusal == "mailbox_rate":
        overrides["limits"] = {"mailbox_messages_per_hour": 1}
    if refusal == "tenant_size":
        overrides["tenants"] = tenants_with({"max_message_size": "10KB"})
    srv = mailflow_server(overrides)
    if refusal != "tenant_size":
        quit_session(hold(srv.port, "alice@contoso.test"))  # uses up the forest's or alice's one message
    wait_limits(srv, all_idle, "idle")

    b = SMTPClient(srv.port)
    b.ehlo()
    assert b.cmd("MAIL FROM:<s@example.net>" + (" SIZE=20000" if refusal == "tenant_size" else "")).code == 250
    r = b.cmd("RCPT TO:<alice@contoso.test>")
    expected = {
        "forest_message_rate": f"451 4.7.1 Resource forest {F} is receiving too many messages, try again later",
        "mailbox_rate": "450 4.2.1 Mailbox <alice@contoso.test> is receiving messages too fast, try again later",
        "tenant_size": None,
    }[refusal]
    if expected:
        assert r.first == expected, r
    else:
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
    snap = wait_limits(srv, lambda s: s["connections"] == 1, "B's connection")
    # B has no accepted recipient, so the forest is free for another session...
    c, r2 = at_rcpt(srv.port, "bob@contoso.test")
    try:
        assert r2.first != FOREST_FULL_CLOSE, (
            f"a session whose only {F} recipient was refused ({r.first}) holds the forest's only slot")
        if refusal == "forest_message_rate":
            assert r2.first == expected, r2  # the forest's message rate answers, not its session cap
        else:
            assert r2.code == 250, r2
    finally:
        c.close()
        b.close()
    assert forest_of(snap, F)["sessions"] == 0, snap
    wait_idle(srv)


def test_default_forest_counts_tenants_in_no_forest(mailflow_server):
    srv = mailflow_server({"forests": [forest_overrides()["forests"][0]], "limits": {"max_connections": 40}})
    held = [hold(srv.port, f"x{i}@fabrikam.test") for i in range(2)]
    held.append(hold(srv.port, "alice@contoso.test"))
    snap = wait_limits(srv, lambda s: forest_of(s, "default")["sessions"] == 2 and forest_of(s, F)["sessions"] == 1,
                       "default 2 sessions, F 1")
    assert forest_of(snap, "default")["maxConnections"] == 40, snap
    assert snap["connections"] == 3 and snap["maxConnections"] == 40, snap
    for c in held:
        quit_session(c)
    wait_idle(srv)


# --------------------------------------------------------------------------------------------
# 2. TCP reset releases forest slots


def test_tcp_reset_releases_forest_slots(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=K))
    for _ in range(2):
        held = [hold(srv.port, "alice@contoso.test") for _ in range(K)]
        wait_limits(srv, lambda s: forest_of(s, F)["sessions"] == K and s["connections"] == K, f"F at {K}")
        c, r = at_rcpt(srv.port, "alice@contoso.test")
        expect_refused_and_closed(c, r, FOREST_FULL_CLOSE)
        for c in held:
            tcp_reset(c)
        snap = wait_idle(srv)
        assert forest_of(snap, F)["sessions"] == 0 and snap["connections"] == 0, snap
    # After two rounds of resets, K new F sessions all get in at once.
    held = [hold(srv.port, "bob@contoso.test") for _ in range(K)]
    for c in held:
        quit_session(c)
    wait_idle(srv)


def test_pipelined_forest_refusal_ends_the_pipeline(mailflow_server):
    """With F full, a pipelined MAIL/RCPT/DATA/body gets 250 then the 421, and nothing after it."""
    srv = mailflow_server(forest_overrides(f_max=1))
    held = hold(srv.port, "alice@contoso.test")
    with SMTPClient(srv.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<s@example.net>\r\nRCPT TO:<bob@contoso.test>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
               b"QUIT\r\n")
        assert c.reply().code == 250
        r = c.reply()
        assert r.first == FOREST_FULL_CLOSE, r
        c.expect_closed()
    quit_session(held)
    wait_idle(srv)


def test_command_timeout_releases_the_forest(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=1) | {"timeouts": {"command": 1}})
    c = hold(srv.port, "alice@contoso.test")
    r = c.reply()  # the server gives up on the silent client
    assert r.code == 421, r
    c.expect_closed()
    c.close()
    c2 = retry_until(lambda: try_hold(srv.port, "alice@contoso.test"), timeout=2)
    assert c2, "a timed-out session still holds its forest"
    quit_session(c2)
    wait_idle(srv)


def test_tls_handshake_failure_releases_the_forest(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=1))
    c = hold(srv.port, "alice@contoso.test")
    assert c.cmd("RSET").code == 250
    r = c.cmd("STARTTLS")
    assert r.code == 220, r
    c.send(b"this is not a TLS ClientHello\r\n" * 4)
    # The server answers with a TLS alert (bytes starting 0x15) and closes.
    c.sock.settimeout(5)
    data = c.buf
    while chunk := c.sock.recv(4096):
        data += chunk
    assert data == b"" or data[:1] == b"\x15", data
    c.close()
    c2 = retry_until(lambda: try_hold(srv.port, "alice@contoso.test"), timeout=2)
    assert c2, "a session whose TLS handshake failed still holds its forest"
    quit_session(c2)
    wait_idle(srv)


def test_shutdown_releases_everything(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=5) | {"timeouts": {"shutdown_grace": 2}})
    held = [hold(srv.port, "alice@contoso.test"), hold(srv.port, "x@fabrikam.test"), SMTPClient(srv.port)]
    wait_limits(srv, lambda s: s["connections"] == 3 and forest_of(s, F)["sessions"] == 1
                and forest_of(s, G)["sessions"] == 1, "3 connections, F 1, G 1")
    assert srv.stop(timeout=30) == 0
    for c in held:
        c.close()
    snap = json.loads((srv.data_dir / "limits.json").read_text())  # the last snapshot, written at exit
    assert all_idle(snap), snap


def test_ipv6_source_counted_per_64(mailflow_server):
    srv = mailflow_server({"server": {"smtp": ["127.0.0.1:0", "[::1]:0"]},
                           "limits": {"per_source": high_per_source(max_connections=2)}})
    line = [l for l in srv.stdout_path.read_text().splitlines() if "listening on" in l][0]
    (v6,) = [a for a in line.split("listening on ")[1].split() if not a.startswith("127.0.0.1:")]
    port6 = int(v6.rsplit(":", 1)[1])

    def connect6() -> SMTPClient:
        c = SMTPClient.__new__(SMTPClient)
        c.sock = socket.create_connection(("::1", port6), timeout=10)
        c.buf = b""
        c.greeting = c.reply()
        return c

    v4 = [SMTPClient(srv.port) for _ in range(2)]
    assert all(c.greeting.code == 220 for c in v4)
    c = SMTPClient(srv.port)
    assert c.greeting.first == SOURCE_FULL, c.greeting
    c.close()
    # ::1 is another source: it has its own two connections.
    a6 = [connect6() for _ in range(2)]
    assert all(c.greeting.code == 220 for c in a6), [c.greeting for c in a6]
    c = connect6()
    assert c.greeting.code == 421 and c.greeting.enhanced == "4.7.0", c.greeting
    assert c.greeting.lines[0].startswith("4.7.0 Too many concurrent connections from "), c.greeting
    assert "/64" in c.greeting.lines[0], f"IPv6 sources are counted per /64: {c.greeting!r}"
    c.expect_closed()
    c.close()
    snap = wait_limits(srv, lambda s: len(s["busiestSources"]) == 2, "two sources")
    assert sorted(x["sessions"] for x in snap["busiestSources"]) == [2, 2], snap
    assert LOCAL in [x["source"] for x in snap["busiestSources"]], snap
    for c in v4 + a6:
        quit_session(c)
    wait_idle(srv)


# --------------------------------------------------------------------------------------------
# 3. server-wide and per-source caps, connection and message rates, forest and mailbox rates


def test_server_wide_cap(mailflow_server):
    srv = mailflow_server({"limits": {"max_connections": 2}})
    a, b = SMTPClient(srv.port), SMTPClient(srv.port)
    assert a.greeting.code == 220 and b.greeting.code == 220
    c = SMTPClient(srv.port)
    assert c.greeting.first == SERVER_FULL, c.greeting
    c.expect_closed()
    c.close()
    (row,) = wait_throttle(srv, SERVER_FULL)
    check_event(row)
    quit_session(a)

    def greeted():
        c = SMTPClient(srv.port)
        if c.greeting.code == 220:
            return c
        assert c.greeting.first == SERVER_FULL
        c.close()
    c = retry_until(greeted, timeout=2)
    assert c, "a connection slot was not released by QUIT"
    c.ehlo()
    quit_session(c)
    quit_session(b)
    wait_idle(srv)


def test_per_source_concurrent_cap(mailflow_server):
    srv = mailflow_server({"limits": {"per_source": high_per_source(max_connections=2)}})
    a, b = SMTPClient(srv.port), SMTPClient(srv.port)
    assert a.greeting.code == 220 and b.greeting.code == 220
    snap = wait_limits(srv, lambda s: s["busiestSources"][:1] == [{"source": LOCAL, "sessions": 2, "maxConnections": 2}],
                       "127.0.0.1 with 2 of 2 sessions")
    c = SMTPClient(srv.port)
    assert c.greeting.first == SOURCE_FULL, c.greeting
    c.expect_closed()
    c.close()
    (row,) = wait_throttle(srv, SOURCE_FULL)
    check_event(row)
    tcp_reset(a)
    c = retry_until(lambda: (lambda c: c if c.greeting.code == 220 else c.close())(SMTPClient(srv.port)), timeout=2)
    assert c, "the per-source slot was not released by a TCP reset"
    quit_session(c)
    quit_session(b)
    assert wait_idle(srv)["busiestSources"] == [], snap


def test_per_source_connection_rate(mailflow_server):
    srv = mailflow_server({"limits": {"per_source": high_per_source(connections_per_minute=3)}})
    for i in range(3):
        c = SMTPClient(srv.port)
        assert c.greeting.code == 220, f"connection {i + 1}: {c.greeting!r}"
        quit_session(c)
    c = SMTPClient(srv.port)
    assert c.greeting.first == CONNECTION_RATE, c.greeting
    c.expect_closed()
    c.close()
    (row,) = wait_throttle(srv, CONNECTION_RATE)
    check_event(row)
    snap = wait_limits(srv, lambda s: sum(s["refusals"].values()) == 1, "one refusal")
    assert all_idle(snap), snap


def test_per_source_message_rate(mailflow_server):
    srv = mailflow_server({"limits": {"per_source": high_per_source(messages_per_minute=3)}})
    token = uuid.uuid4().hex[:12]
    with SMTPClient(srv.port) as c:
        c.ehlo()
        qids = [c.send_message("s@example.net", [f"r{i}-{token}@fabrikam.test"], make_message(f"{token}-{i}"))
                for i in range(2)]
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd("RSET").code == 250
        r = c.cmd("MAIL FROM:<s@example.net>")
        assert r.first == MESSAGE_RATE, r
        assert c.cmd("NOOP").first == "250 2.0.0 Ok", "the session goes on"
        r = c.cmd(f"RCPT TO:<late-{token}@fabrikam.test>")
        assert (r.code, r.enhanced) == (503, "5.5.1"), f"no transaction after a refused MAIL: {r!r}"
        quit_session(c)
    # A new connection from the same source is still over its message rate.
    with SMTPClient(srv.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<other@example.net>").first == MESSAGE_RATE
        quit_session(c)
    for q in qids:
        wait_for_delivery(srv.data_dir, q)
    rows = wait_throttle(srv, MESSAGE_RATE, count=2)
    assert len(rows) == 2, rows
    for row in rows:
        check_event(row)


def test_forest_message_rate(mailflow_server):
    srv = mailflow_server(forest_overrides(f_rate=3))
    reply = f"451 4.7.1 Resource forest {F} is receiving too many messages, try again later"
    token = uuid.uuid4().hex[:12]
    with SMTPClient(srv.port) as c:
        c.ehlo()
        for i in range(3):
            assert c.cmd("MAIL FROM:<s@example.net>").code == 250
            # Two F recipients in one transaction cost the forest one message.
            assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250, i
            assert c.cmd("RCPT TO:<bob@contoso.test>").code == 250, i
            assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        r = c.cmd("RCPT TO:<alice@contoso.test>")
        assert r.first == reply, r
        # Forest G has no rate: its recipient in the same transaction is accepted and delivered.
        assert c.cmd(f"RCPT TO:<g-{token}@fabrikam.test>").code == 250
        qid = finish_message(c, make_message(token))
        quit_session(c)
    (f,) = wait_for_delivery(srv.data_dir, qid)
    assert f.parent.parent.name == f"g-{token}"
    (row,) = wait_throttle(srv, reply)
    check_event(row, F, F_REGION, "contoso")


def test_mailbox_receive_rates(mailflow_server):
    srv = mailflow_server(forest_overrides() | {"limits": {"mailbox_messages_per_hour": 3,
                                                           "mailbox_messages_per_hour_per_sender": 2}})
    too_fast = "450 4.2.1 Mailbox <alice@contoso.test> is receiving messages too fast, try again later"
    too_fast_sender = ("450 4.2.1 Mailbox <alice@contoso.test> is receiving messages too fast from this sender, "
                       "try again later")
    with SMTPClient(srv.port) as c:
        c.ehlo()

        def rcpt(sender: str, rcpt: str = "alice@contoso.test"):
            assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
            r = c.cmd(f"RCPT TO:<{rcpt}>")
            assert c.cmd("RSET").code == 250
            return r

        assert rcpt("one@example.net").code == 250
        assert rcpt("One@Example.NET", "Alice@Contoso.TEST").code == 250, "the same mailbox and sender"
        assert rcpt("one@example.net").first == too_fast_sender
        assert rcpt("two@example.net").code == 250, "another sender still gets through"
        assert rcpt("three@example.net").first == too_fast, "the mailbox's own rate (3 an hour) is used up"
        assert rcpt("four@example.net", "bob@contoso.test").code == 250, "other mailboxes are not affected"
        quit_session(c)
    for reply in (too_fast, too_fast_sender):
        (row,) = wait_throttle(srv, reply)
        check_event(row, F, F_REGION, "contoso")


# --------------------------------------------------------------------------------------------
# 4. recipients per domain per transaction; per-tenant message size


def test_recipients_per_domain_per_transaction(mailflow_server):
    srv = mailflow_server({"limits": {"recipients_per_domain_per_transaction": 2}})
    token = uuid.uuid4().hex[:12]
    too_many = "452 4.5.3 Too many recipients for fabrikam.test in one transaction, send the rest in another"
    with SMTPClient(srv.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd(f"RCPT TO:<a-{token}@fabrikam.test>").code == 250
        assert c.cmd(f"RCPT TO:<b-{token}@fabrikam.test>").code == 250
        r = c.cmd(f"RCPT TO:<c-{token}@fabrikam.test>")
        assert r.first == too_many, r
        # Other domains have their own count.
        assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
        assert c.cmd("RCPT TO:<bob@contoso.test>").code == 250
        r = c.cmd("RCPT TO:<alice@contoso.test>")
        assert r.first == ("452 4.5.3 Too many recipients for contoso.test in one transaction, send the rest in "
                           "another"), r
        qid = finish_message(c, make_message(token))
        # The next transaction takes the rest.
        qid2 = c.send_message("s@example.net", [f"c-{token}@fabrikam.test"], make_message(token + "-2"))
        quit_session(c)
    files = wait_for_delivery(srv.data_dir, qid, count=4)
    assert sorted(f.parent.parent.name for f in files) == sorted([f"a-{token}", f"b-{token}", "alice", "bob"])
    (f2,) = wait_for_delivery(srv.data_dir, qid2)
    assert f2.parent.parent.name == f"c-{token}"
    (row,) = wait_throttle(srv, too_many)
    assert row["reply"].startswith("452 4.5.3") and row["client_address"] == LOCAL and row["queue_id"] == ""


def _message_of_size(token: str, size: int) -> bytes:
    head = f"Subject: size {token}\r\nMessage-ID: <{token}@x>\r\n\r\ntoken={token}\r\n".encode()
    line = b"x" * 98 + b"\r\n"
    body = head
    while len(body) + len(line) <= size:
        body += line
    body += b"y" * (size - len(body) - 2) + b"\r\n"
    assert len(body) == size
    return body


def test_per_tenant_message_size(mailflow_server):
    srv = mailflow_server({"tenants": tenants_with({"max_message_size": "10KB"})})
    limit = 10 * 1024
    token = uuid.uuid4().hex[:12]
    with SMTPClient(srv.port) as c:
        c.ehlo()
        # Declared sizes: over the tenant's limit refuses that recipient only.
        assert c.cmd(f"MAIL FROM:<s@example.net> SIZE={limit + 1}").code == 250, "the server limit is 1MB"
        r = c.cmd("RCPT TO:<alice@contoso.test>")
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
        assert c.cmd(f"RCPT TO:<big-{token}@fabrikam.test>").code == 250, "fabrikam has no size of its own"
        qid_big = finish_message(c, _message_of_size(token + "-big", limit + 1))
        assert c.cmd("MAIL FROM:<s@example.net> SIZE=" + str(limit)).code == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
        assert c.cmd("RSET").code == 250

        # Undeclared: a body over the tenant limit is refused after the final dot.
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(_message_of_size(token + "-over", 2 * limit) + b".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
        assert c.cmd("NOOP").first == "250 2.0.0 Ok", "the session goes on"

        # A transaction with contoso and fabrikam recipients is bound by contoso's limit.
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd(f"RCPT TO:<mixed-{token}@fabrikam.test>").code == 250
        assert c.cmd("RCPT TO:<bob@contoso.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(_message_of_size(token + "-mixed", 2 * limit) + b".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r

        # At the limit: accepted.
        qid_ok = c.send_message("s@example.net", ["alice@contoso.test"], _message_of_size(token + "-ok", limit))
        quit_session(c)
    (f,) = wait_for_delivery(srv.data_dir, qid_ok)
    assert f.parent.parent.name == "alice"
    (f,) = wait_for_delivery(srv.data_dir, qid_big)
    assert f.parent.parent.name == f"big-{token}"
    srv.wait_queue_empty()
    for marker in ("-over", "-mixed"):
        assert not [p for p in all_delivered_files(srv.data_dir) if (token + marker).encode() in p.read_bytes()]


# --------------------------------------------------------------------------------------------
# 5. too many errors, tarpit, greet pause


def test_too_many_errors_counts_admission_refusals(mailflow_server):
    srv = mailflow_server({"limits": {"max_errors_per_session": 3, "recipients_per_domain_per_transaction": 1}})
    with SMTPClient(srv.port, timeout=5) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd("RCPT TO:<nobody@contoso.test>").code == 550                     # error 1
        assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
        assert c.cmd("RCPT TO:<bob@contoso.test>").first.startswith("452 4.5.3")      # error 2
        assert c.cmd("NOOP").code == 250
        assert c.cmd("RCPT TO:<x@fabrikam.test>").code == 250, "successes do not count"
        assert c.cmd("FOO").code == 502                                               # error 3
        r = c.cmd("RCPT TO:<bob@contoso.test>")                                       # error 4: the limit
        assert r.first == TOO_MANY_ERRORS, r
        c.expect_closed()
    (row,) = wait_throttle(srv, TOO_MANY_ERRORS)
    check_event(row)
    wait_idle(srv)


def test_tarpit_delays_error_replies_only(mailflow_server):
    srv = mailflow_server({"limits": {"tarpit": 1}})
    with SMTPClient(srv.port, timeout=10) as c:
        t = time.monotonic()
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
        assert c.cmd("NOOP").code == 250
        fast = time.monotonic() - t
        t = time.monotonic()
        r = c.cmd("RCPT TO:<nobody@contoso.test>")
        slow = time.monotonic() - t
        assert r.code == 550, r
        t = time.monotonic()
        r2 = c.cmd("XYZZY")
        slow2 = time.monotonic() - t
        assert r2.code >= 500, r2
        t = time.monotonic()
        assert c.cmd("RSET").code == 250
        after = time.monotonic() - t
        quit_session(c)
    print(f"\ntarpit: 4 normal replies in {fast:.3f} s, error replies after {slow:.3f} s and {slow2:.3f} s, "
          f"next normal reply {after:.3f} s")
    assert fast < 0.5, f"normal replies are immediate, took {fast:.3f} s"
    assert slow >= 0.9 and slow2 >= 0.9, (slow, slow2)
    assert slow < 3 and slow2 < 3, (slow, slow2)
    assert after < 0.5, after


def test_tarpit_holds_pipelined_commands_in_order(mailflow_server):
    srv = mailflow_server({"limits": {"tarpit": 1}})
    with SMTPClient(srv.port, timeout=10) as c:
        c.ehlo()
        t = time.monotonic()
        c.send(b"MAIL FROM:<s@example.net>\r\nRCPT TO:<nobody@contoso.test>\r\nRCPT TO:<alice@contoso.test>\r\n"
               b"NOOP\r\n")
        codes = [c.reply().code for _ in range(4)]
        took = time.monotonic() - t
        assert codes == [250, 550, 250, 250], codes
        assert 0.9 <= took < 3, took
        quit_session(c)


def test_greet_pause_refuses_early_talkers(mailflow_server):
    srv = mailflow_server({"limits": {"greet_pause": 1}})
    c = SMTPClient(srv.port, timeout=5, read_greeting=False)
    t = time.monotonic()
    c.send(b"EHLO impatient.test\r\n")
    r = c.reply()
    took = time.monotonic() - t
    assert r.first == PREGREET, f"{r!r} (no 220 may come first)"
    c.expect_closed()
    c.close()
    assert took < 0.9, f"the refusal should not wait for the pause: {took:.3f} s"
    (row,) = wait_throttle(srv, PREGREET)
    check_event(row)
    # A client that leaves during the pause gives its connection back.
    q = SMTPClient(srv.port, timeout=5, read_greeting=False)
    tcp_reset(q)

    # A patient client gets the greeting after the pause and works normally.
    token = uuid.uuid4().hex[:12]
    t = time.monotonic()
    with SMTPClient(srv.port, timeout=5) as p:
        waited = time.monotonic() - t
        assert p.greeting.code == 220, p.greeting
        assert 0.9 <= waited < 3, f"greeting after {waited:.3f} s"
        p.ehlo()
        qid = p.send_message("s@example.net", ["alice@contoso.test"], make_message(token))
        quit_session(p)
    (f,) = wait_for_delivery(srv.data_dir, qid)
    assert token.encode() in f.read_bytes()
    wait_idle(srv)


# --------------------------------------------------------------------------------------------
# 6. SIGHUP reload


def test_sighup_applies_new_limits_and_refuses_a_bad_file(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=1))
    a = hold(srv.port, "alice@contoso.test")
    c, r = at_rcpt(srv.port, "alice@contoso.test")
    expect_refused_and_closed(c, r, FOREST_FULL_CLOSE)

    cfg = dict(srv.config)
    cfg["forests"] = forest_overrides(f_max=2)["forests"]
    write_config(srv, cfg)
    srv.proc.send_signal(signal.SIGHUP)
    wait_limits(srv, lambda s: forest_of(s, F)["maxConnections"] == 2, f"{F} limit 2 after SIGHUP")
    assert srv.running()

    b = hold(srv.port, "bob@contoso.test")  # the raised limit applies at once
    # The live session started under the old config is not dropped and can finish its message.
    token = uuid.uuid4().hex[:12]
    qid = finish_message(a, make_message(token))
    (f,) = wait_for_delivery(srv.data_dir, qid)
    assert f.parent.parent.name == "alice" and token.encode() in f.read_bytes()
    assert a.cmd("NOOP").code == 250  # a still holds F (its session has not ended)

    # An invalid file: refused, logged, the running config kept.
    bad = dict(cfg)
    bad["forests"] = forest_overrides(f_max=10)["forests"]
    bad["limits"] = dict(cfg["limits"], no_such_limit=1)
    write_config(srv, bad)
    log_before = srv.stderr()
    srv.proc.send_signal(signal.SIGHUP)
    assert retry_until(lambda: "no_such_limit" in srv.stderr()[len(log_before):], timeout=5), \
        "the refused reload is logged, naming the bad key:\n" + srv.stderr()[len(log_before):]
    time.sleep(1.2)  # a snapshot written after the refused reload
    assert srv.running()
    # (`mailflow limits` itself refuses the bad file, so read the snapshot it would show directly)
    snap = json.loads((srv.data_dir / "limits.json").read_text())
    assert forest_of(snap, F)["maxConnections"] == 2 and forest_of(snap, F)["sessions"] == 2, snap
    c, r = at_rcpt(srv.port, "alice@contoso.test")
    expect_refused_and_closed(c, r, FOREST_FULL_CLOSE)

    quit_session(a)
    quit_session(b)
    write_config(srv, cfg)  # a valid file again, for `mailflow limits`
    wait_idle(srv)
    assert srv.running()


def test_sighup_lowering_a_cap_keeps_live_sessions(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=3))
    held = [hold(srv.port, "alice@contoso.test") for _ in range(3)]
    cfg = dict(srv.config)
    cfg["forests"] = forest_overrides(f_max=1)["forests"]
    write_config(srv, cfg)
    srv.proc.send_signal(signal.SIGHUP)
    wait_limits(srv, lambda s: forest_of(s, F)["maxConnections"] == 1 and forest_of(s, F)["sessions"] == 3,
                "F limit 1 with its 3 live sessions kept")
    token = uuid.uuid4().hex[:12]
    qids = [finish_message(c, make_message(f"{token}-{i}")) for i, c in enumerate(held)]
    for q in qids:
        wait_for_delivery(srv.data_dir, q)
    quit_session(held.pop())
    quit_session(held.pop())
    # One live session is left: at the new limit of 1, F is still full.
    c, r = at_rcpt(srv.port, "bob@contoso.test")
    expect_refused_and_closed(c, r, FOREST_FULL_CLOSE)
    quit_session(held.pop())
    c = retry_until(lambda: try_hold(srv.port, "bob@contoso.test"), timeout=2)
    assert c, "F never admitted a session after all live sessions ended"
    quit_session(c)
    wait_idle(srv)


def test_sighup_policy_applies_to_new_sessions(mailflow_server):
    srv = mailflow_server({})
    a = SMTPClient(srv.port)
    a.ehlo()
    cfg = dict(srv.config)
    cfg["limits"] = dict(cfg["limits"], recipients_per_domain_per_transaction=1, greet_pause=1)
    write_config(srv, cfg)
    srv.proc.send_signal(signal.SIGHUP)
    assert retry_until(lambda: "reload" in srv.stderr(), timeout=5), srv.stderr()
    time.sleep(0.2)

    t = time.monotonic()
    b = SMTPClient(srv.port)
    assert b.greeting.code == 220 and time.monotonic() - t >= 0.9, "the new greet pause applies to a new session"
    b.ehlo()
    assert b.cmd("MAIL FROM:<s@example.net>").code == 250
    assert b.cmd("RCPT TO:<alice@contoso.test>").code == 250
    assert b.cmd("RCPT TO:<bob@contoso.test>").first.startswith("452 4.5.3 Too many recipients for contoso.test")
    quit_session(b)

    # The session that was live at the reload is not dropped and finishes under what it started with.
    token = uuid.uuid4().hex[:12]
    qid = a.send_message("s@example.net", ["alice@contoso.test", "bob@contoso.test"], make_message(token))
    quit_session(a)
    assert len(wait_for_delivery(srv.data_dir, qid, count=2)) == 2


# --------------------------------------------------------------------------------------------
# 7. churn: counters return to zero, every acknowledged message delivered exactly once


CHURN_SESSIONS = 3000
CHURN_THREADS = 32
CHURN_FOREST_CAP = 16
ABORT_STAGES = ["before-greeting", "before-ehlo", "after-ehlo", "after-mail", "after-rcpt", "mid-data"]
RCPT_SETS = [["alice@contoso.test"], ["bob@contoso.test"], ["{t}@fabrikam.test"],
             ["{t}@fabrikam.test", "alice@contoso.test"], ["bob@contoso.test", "{t}@fabrikam.test"]]


def test_churn_releases_everything(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=CHURN_FOREST_CAP, g_max=CHURN_FOREST_CAP)
                          | {"timeouts": {"command": 30, "data": 30, "session": 300, "shutdown_grace": 5}})
    seed = random.randrange(1 << 30)
    lock = threading.Lock()
    next_session = [0]
    completed: dict[str, tuple[str, list[str]]] = {}  # queue ID -> (token, recipients delivered)
    stats: Counter = Counter()
    failures: list[str] = []

    def one(k: int, rng: random.Random) -> None:
        token = f"churn{k}x{uuid.uuid4().hex[:10]}"
        rcpts = [r.format(t=token) for r in rng.choice(RCPT_SETS)]
        p = rng.random()
        plan = "complete" if p < 0.45 else "quit" if p < 0.55 else "abort"
        stage = rng.choice(ABORT_STAGES) if plan == "abort" else \
            rng.choice(["after-ehlo", "after-mail", "after-rcpt"]) if plan == "quit" else None
        reset = rng.random() < 0.5

        c = SMTPClient(srv.port, timeout=20, read_greeting=False)
        try:
            def end(kind: str) -> None:
                if kind == "quit":
                    quit_session(c)
                elif reset:
                    tcp_reset(c)
                else:
                    c.close()
                with lock:
                    stats[f"{plan}:{stage}:{'quit' if kind == 'quit' else 'reset' if reset else 'close'}"] += 1

            if stage == "before-greeting":
                return end("abort")
            g = c.reply()
            assert g.code == 220, g
            if stage == "before-ehlo":
                return end("abort")
            c.ehlo()
            if stage == "after-ehlo":
                return end(plan)
            r = c.cmd(f"MAIL FROM:<churn{k}@example.net>")
            assert r.code == 250, r
            if stage == "after-mail":
                return end(plan)
            accepted = []
            for rc in rcpts:
                r = c.cmd(f"RCPT TO:<{rc}>")
                if r.code == 250:
                    accepted.append(rc)
                elif r.first == FOREST_FULL_CLOSE:
                    assert not accepted, f"421 for a session already holding a forest: {r!r}"
                    c.expect_closed()
                    c.close()
                    with lock:
                        stats["refused:421"] += 1
                    return
                elif r.first == FOREST_FULL_DEFER:
                    assert accepted, f"451 for a session holding no forest: {r!r}"
                    with lock:
                        stats["deferred:451"] += 1
                else:
                    raise AssertionError(f"RCPT {rc}: {r!r}")
            if stage == "after-rcpt":
                return end(plan)
            r = c.cmd("DATA")
            assert r.code == 354, r
            body = dot_stuff(make_message(token, to=rcpts[0], body_lines=[f"session {k} {rcpts}"]))
            if stage == "mid-data":
                c.send(body[: rng.randrange(1, len(body))])
                return end("abort")
            c.send(body + b".\r\n")
            qid = queue_id_of(c.reply())
            with lock:
                completed[qid] = (token, accepted)
            if rng.random() < 0.5:
                quit_session(c)
            elif reset:
                tcp_reset(c)
            else:
                c.close()
            with lock:
                stats["complete"] += 1
        finally:
            c.close()

    def worker(w: int) -> None:
        rng = random.Random(seed * 1000 + w)
        while True:
            with lock:
                k = next_session[0]
                next_session[0] += 1
            if k >= CHURN_SESSIONS:
                return
            try:
                one(k, rng)
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                with lock:
                    failures.append(f"session {k}: {e!r}")
                    if len(failures) > 20:
                        return

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(CHURN_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    sessions_took = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "churn clients hung"
    assert not failures, failures[:20]

    snap = wait_idle(srv, timeout=10)
    idle_after = time.monotonic() - t0

    srv.wait_queue_empty(timeout=60)
    by_qid: dict[str, list[Path]] = {}
    for f in all_delivered_files(srv.data_dir):
        by_qid.setdefault(f.name.split(".")[0], []).append(f)
    assert sorted(by_qid) == sorted(completed), (
        f"delivered but not acknowledged: {sorted(set(by_qid) - set(completed))[:5]}; "
        f"acknowledged but not delivered: {sorted(set(completed) - set(by_qid))[:5]}")
    for qid, (token, accepted) in completed.items():
        files = by_qid[qid]
        assert len(files) == len(accepted), f"{qid}: {len(files)} copies for {accepted}"
        for f in files:
            assert f.name.startswith(f"{qid}.R") and f.name.endswith(".mx.example.test"), f.name
            assert f"token={token}".encode() in f.read_bytes(), f
    total = time.monotonic() - t0

    refused, deferred = stats["refused:421"], stats["deferred:451"]
    aborted = sum(v for k, v in stats.items() if k.startswith("abort:"))
    quits = sum(v for k, v in stats.items() if k.startswith("quit:"))
    print(f"\nchurn (seed {seed}): {CHURN_SESSIONS} sessions from {CHURN_THREADS} threads, forest caps "
          f"{CHURN_FOREST_CAP}: completed {stats['complete']} ({sum(len(a) for _, a in completed.values())} "
          f"copies), aborted {aborted}, early QUIT {quits}, refused 421 {refused}, recipients deferred 451 "
          f"{deferred}; sessions {sessions_took:.1f} s, counters idle at {idle_after:.1f} s, all delivered and "
          f"checked at {total:.1f} s")
    print("churn breakdown:", dict(sorted(stats.items())))
    assert stats["complete"] + aborted + quits + refused == CHURN_SESSIONS, stats
    assert stats["complete"] == len(completed)
    assert all_idle(snap) and all(f["sessions"] == 0 for f in snap["forests"]), snap
    # One throttle event per forest refusal the clients saw, no more, no fewer.
    def event_counts():
        rows = throttle_rows(srv)
        return (sum(r["reply"] == FOREST_FULL_CLOSE for r in rows), sum(r["reply"] == FOREST_FULL_DEFER for r in rows))
    retry_until(lambda: event_counts() == (refused, deferred), timeout=6, interval=0.2)
    assert event_counts() == (refused, deferred), "throttle events (421, 451) vs what the clients saw"


# --------------------------------------------------------------------------------------------
# 8. flood: 200 concurrent sessions for a forest capped at 10


FLOOD = 200
FLOOD_CAP = 10


def test_flood_admits_exactly_the_cap(mailflow_server):
    srv = mailflow_server(forest_overrides(f_max=FLOOD_CAP))
    lock = threading.Lock()
    results: list[str] = []
    failures: list[str] = []
    rcpt_done = threading.Barrier(FLOOD + 1, timeout=120)
    release = threading.Event()
    start = threading.Barrier(FLOOD, timeout=60)

    def client(i: int) -> None:
        outcome = "error"
        c = None
        try:
            start.wait()
            c, r = at_rcpt(srv.port, f"{'alice' if i % 2 else 'bob'}@contoso.test", timeout=60)
            if r.code == 250:
                outcome = "admitted"
            elif r.first == FOREST_FULL_CLOSE and len(r.lines) == 1:
                c.expect_closed()
                outcome = "refused"
            else:
                outcome = f"other: {r!r}"
        except Exception as e:  # noqa: BLE001
            with lock:
                failures.append(f"client {i}: {e!r}")
        with lock:
            results.append(outcome)
        try:
            rcpt_done.wait()
            if outcome == "admitted":
                release.wait(60)
                quit_session(c)
        except Exception as e:  # noqa: BLE001
            with lock:
                failures.append(f"client {i} after RCPT: {e!r}")
        finally:
            if c is not None:
                c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(FLOOD)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    rcpt_done.wait()
    took = time.monotonic() - t0
    counts = Counter(results)
    try:
        snap = wait_limits(srv, lambda s: forest_of(s, F)["sessions"] == FLOOD_CAP, f"{F} at {FLOOD_CAP}")
        rows = wait_throttle(srv, FOREST_FULL_CLOSE, count=FLOOD - FLOOD_CAP)
    finally:
        release.set()
        for t in threads:
            t.join(60)
    print(f"\nflood: {FLOOD} concurrent sessions for {F} (cap {FLOOD_CAP}): {counts['admitted']} admitted (250), "
          f"{counts['refused']} refused with the exact 421 4.3.2, other {FLOOD - counts['admitted'] - counts['refused']}"
          f"; all RCPT replies in {took:.2f} s")
    assert not failures, failures[:10]
    assert counts == Counter({"admitted": FLOOD_CAP, "refused": FLOOD - FLOOD_CAP}), counts
    assert forest_of(snap, F)["refused"] == FLOOD - FLOOD_CAP, snap
    assert len(rows) == FLOOD - FLOOD_CAP
    for row in rows:
        check_event(row, F, F_REGION, "contoso")
    wait_idle(srv)
