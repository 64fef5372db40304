"""Queue control and message trace from the CLI against a running server: a message stuck on an
unreachable smart host is traced, shaped, held, released, retried and finally bounced back to its
sender with a DSN."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from mfutil import SMTPClient, make_message, wait_for


def stuck_server(mailflow_server):
    return mailflow_server({
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_intervals": ["1h"], "concurrency": 4},
        "tenants": [{
            "name": "src", "domains": ["src.test"], "mailboxes": ["sender"],
            # Port 1 on loopback: nothing listens, every attempt is deferred.
            "outbound_connector": {"smart_host": "127.0.0.1:1", "tls": "disabled"},
        }],
    })


def trace_rows(srv, *args):
    r = srv.cli("trace", "--json", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_trace_shape_hold_release_bounce(mailflow_server):
    srv = stuck_server(mailflow_server)
    port, data_dir, _ = srv
    with SMTPClient(port) as c:
        c.ehlo()
        qid = c.send_message("sender@src.test", ["far@remote.test"], make_message("stuck-1", subject="Stuck one"))

    # The attempt fails against the closed port: the trace shows the deferral with the reason.
    def deferred():
        rows = trace_rows(srv, "--queue-id", qid)
        return rows if rows and any(e["kind"] == "deferred" for e in rows[0]["events"]) else None
    rows = wait_for(deferred, what="a deferred event")
    row = rows[0]
    assert row["status"] == "Pending" and row["direction"] == "Outbound"
    assert row["sender"] == "sender@src.test" and row["recipient"] == "far@remote.test"
    assert row["subject"] == "Stuck one"
    assert "4.4.1" in (row["lastReply"] or ""), row
    # Filters combine; a non-matching one returns nothing.
    assert trace_rows(srv, "--sender", "sender@src", "--status", "pending", "--since", "1h")[0]["queueID"] == qid
    assert trace_rows(srv, "--direction", "inbound") == []
    table = srv.cli("trace", "--recipient", "far@", "--events")
    assert table.returncode == 0 and qid in table.stdout and "deferred" in table.stdout, table.stdout

    shape = json.loads(srv.cli("queue", "shape", "--json").stdout)
    assert shape == [{"domain": "remote.test", "total": 1, "buckets": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]}], shape

    assert srv.cli("queue", "hold", qid, "--actor", "ops").returncode == 0
    assert trace_rows(srv, "--queue-id", qid)[0]["status"] == "Held"
    listed = {m["id"]: m for m in srv.queue_json()}
    assert listed[qid]["state"] == "held"
    again = srv.cli("queue", "hold", qid)
    assert again.returncode != 0 and "only a queued message can be held" in again.stderr
    assert srv.cli("queue", "release", qid, "--actor", "ops").returncode == 0
    assert srv.cli("queue", "retry", qid, "--actor", "ops").returncode == 0

    # Bounce: the recipient fails with 5.3.0 and a DSN reaches the sender's mailbox.
    assert srv.cli("queue", "bounce", qid, "--actor", "ops").returncode == 0
    box = data_dir / "mailboxes" / "src.test" / "sender" / "new"
    dsn_files = wait_for(lambda: list(box.glob("*")) if box.exists() else None, what="the DSN")
    dsn = dsn_files[0].read_text()
    assert "Return-Path: <>" in dsn
    assert "Action: failed" in dsn and "Status: 5.3.0" in dsn
    assert "Final-Recipient: rfc822; far@remote.test" in dsn
    done = wait_for(lambda: [r for r in trace_rows(srv, "--queue-id", qid) if r["status"] == "Failed"], what="failed")
    details = [e.get("detail") or "" for e in done[0]["events"]]
    assert any(d.startswith("hold by ops") for d in details)
    assert any(d.startswith("bounce by ops") for d in details)

    # Nothing left to act on; bad IDs are refused clearly.
    gone = srv.cli("queue", "delete", qid)
    assert gone.returncode != 0 and "already done" in gone.stderr
    bad = srv.cli("queue", "hold", "not-an-id")
    assert bad.returncode != 0 and "is not a queue ID" in bad.stderr


def test_delete_sends_no_report(mailflow_server):
    srv = stuck_server(mailflow_server)
    port, data_dir, _ = srv
    with SMTPClient(port) as c:
        c.ehlo()
        qid = c.send_message("sender@src.test", ["far@remote.test"], make_message("stuck-2"))
    assert srv.cli("queue", "delete", qid, "--actor", "ops").returncode == 0
    assert qid not in {m["id"] for m in srv.queue_json()}
    time.sleep(1.5)
    assert not (data_dir / "mailboxes" / "src.test" / "sender" / "new").exists() or not list(
        (data_dir / "mailboxes" / "src.test" / "sender" / "new").glob("*")), "delete must not bounce"


def test_queue_show_prints_the_stored_headers(mailflow_server):
    srv = stuck_server(mailflow_server)
    with SMTPClient(srv.port) as c:
        c.ehlo()
        qid = c.send_message("sender@src.test", ["far@remote.test"], make_message("show-h", subject="Show headers"))
    r = srv.cli("queue", "show", qid, "--headers")
    assert r.returncode == 0, r.stderr
    head = r.stdout.split("Headers:", 1)[1].splitlines()
    assert head[1].startswith("  Received: from ") and f"id {qid}" in head[1]
    assert "  Subject: Show headers" in head
    # Without the flag, no header section.
    assert "Headers:" not in srv.cli("queue", "show", qid).stdout


@pytest.mark.sqlite_only  # the shared queue keeps bodies in PostgreSQL: no spool file to remove
def test_cli_delete_prints_the_outcome_and_removes_the_spool_file(mailflow_server):
    srv = stuck_server(mailflow_server)
    port, data_dir, _ = srv
    # Larger than Spool.inlineLimit (256 KiB): the body is in a spool file, not the database.
    filler = ["y" * 76] * 3600
    with SMTPClient(port) as c:
        c.ehlo()
        qid = c.send_message("sender@src.test", ["far@remote.test"], make_message("cli-spooled", body_lines=filler))
    spooled = data_dir / "spool" / qid
    assert spooled.stat().st_size > 256 * 1024
    held = srv.cli("queue", "hold", qid, "--actor", "ops")
    assert held.returncode == 0 and held.stdout.strip() == f"{qid}: held: no delivery attempts until released"
    assert spooled.exists()
    r = srv.cli("queue", "delete", qid, "--actor", "ops")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{qid}: deleted: no report to the sender"
    assert not spooled.exists()


def test_release_and_retry_from_the_cli_are_acted_on_within_a_second(mailflow_server):
    # The CLI pokes the running server's delivery trigger (like postqueue waking Postfix's qmgr):
    # the next attempt follows at once, not at the scheduler's next poll (retry interval 1 h here).
    srv = stuck_server(mailflow_server)
    with SMTPClient(srv.port) as c:
        c.ehlo()
        qid = c.send_message("sender@src.test", ["far@remote.test"], make_message("poke-1"))

    def deferrals():
        rows = trace_rows(srv, "--queue-id", qid)
        return [e for e in rows[0]["events"] if e["kind"] == "deferred"] if rows else []

    wait_for(deferrals, what="the first deferral")
    assert (srv.data_dir / "delivery.trigger").is_fifo()
    for action in ("retry", "release"):
        if action == "release":
            assert srv.cli("queue", "hold", qid, "--actor", "ops").returncode == 0
        before = len(deferrals())
        r = srv.cli("queue", action, qid, "--actor", "ops")
        acted = time.time()
        assert r.returncode == 0, r.stderr
        after = wait_for(lambda: (d := deferrals()) and len(d) > before and d, timeout=5,
                         what=f"the attempt after {action}")
        attempted = datetime.fromisoformat(after[-1]["time"].replace("Z", "+00:00")).timestamp()
        assert attempted - acted < 1.0, f"{action} was acted on {attempted - acted:.2f} s after the command"
