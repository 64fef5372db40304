"""`mailflow queue`, `mailflow trace` and `mailflow cluster status` in cluster mode (issue 16): with
`storage.postgres` in its config the CLI reads and controls the shared queue in PostgreSQL, so any
node's CLI sees and acts on every node's messages (test_shared_queue.py covers hold, release and
bounce; this file list, show, trace filters, retry, delete, qshape and the LEASES column).

Two nodes share one throw-away PostgreSQL (pgutil); they relay to `remote.test`, whose MX (dnsmasq on
loopback) is a recording sink on 127.0.0.2 (smtpsink.SlowSink) that refuses or delays on demand.

Run: MAILFLOW_BIN=... python3 -m pytest tests/e2e/test_shared_queue_cli.py -q -p no:cacheprovider
"""

from __future__ import annotations

import json
import threading

import pytest

from dnsutil import Dnsmasq
from mfutil import default_config, merge_config, run_cli, send_mail, to_yaml, wait_for
from pgutil import Postgres
from smtpsink import SlowSink

SINK_HOST = "127.0.0.2"
ZONE = ["--mx-host=remote.test,mx1.remote.test,10", f"--host-record=mx1.remote.test,{SINK_HOST}"]
LEASE = 4


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(ZONE, log_dir=tmp_path_factory.mktemp("dnsmasq")).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def node_config(url: str, name: str, dns: Dnsmasq, sink: SlowSink) -> dict:
    # A long retry interval: a deferred message waits for `queue retry`, not for the schedule.
    return {
        "server": {"hostname": f"{name}.mailflow.test"},
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "dns": {"servers": [dns.server], "timeout": "1s", "attempts": 1},
        "delivery": {"concurrency": 4, "retry_intervals": ["1h"], "expiry": "24h", "mx_port": sink.port},
        "storage": {"postgres": {"url": url, "lease": f"{LEASE}s", "timeout": "1s", "pool": 3}},
        "cluster": {"postgres": url, "node": name},
    }


def cli(srv, *args: str, ok: bool = True):
    r = srv.cli(*args)
    if ok:
        assert r.returncode == 0, f"mailflow {' '.join(args)}: {r.stdout}{r.stderr}"
    return r


def cli_json(srv, *args: str):
    return json.loads(cli(srv, *args, "--json").stdout)


def test_queue_and_trace_commands_act_on_the_shared_queue_from_any_node(mailflow_server, postgres, dns):
    url = postgres.create_database("cli")
    refusing = threading.Event()
    refusing.set()
    slow = threading.Event()
    remote = SlowSink(SINK_HOST, delay=lambda: 6.0 if slow.is_set() else 0.0,
                      refuse=lambda rcpt: "451 4.7.1 Try again later" if refusing.is_set() else None).start()
    try:
        a, b = (mailflow_server(node_config(url, n, dns, remote)) for n in ("cli-a", "cli-b"))
        # Three messages accepted by cli-a; the remote defers each, and the next try is an hour away.
        ids = [send_mail(a, "alice@contoso.test", [f"user{i}@remote.test"], f"cli-{i}", subject=f"shared {i}")
               for i in range(3)]
        for qid in ids:
            wait_for(lambda: any(e["kind"] == "deferred" for r in cli_json(b, "trace", "--queue-id", qid)
                                 for e in r["events"]), timeout=20, what=f"{qid} deferred")

        # cli-b's own SQLite never saw them; its CLI lists, shows and traces them from PostgreSQL.
        listed = {m["id"]: m for m in cli_json(b, "queue", "list")}
        assert set(ids) <= set(listed), listed
        assert all(listed[q]["state"] == "queued" and listed[q]["attempts"] == 1 for q in ids), listed
        table = cli(b, "queue", "list").stdout
        assert all(q in table for q in ids) and "user1@remote.test" in table, table
        shown = cli(b, "queue", "show", ids[0]).stdout
        assert f"Queue ID:     {ids[0]}" in shown, shown
        assert "<user0@remote.test> pending attempts=1" in shown and "last: 451 4.7.1" in shown, shown
        assert " received " in shown and " deferred <user0@remote.test>" in shown, shown
        assert cli_json(a, "trace", "--sender", "ALICE@contoso") == cli_json(b, "trace", "--sender", "ALICE@contoso")
        rows = cli_json(b, "trace", "--recipient", "user2@", "--status", "pending", "--direction", "outbound")
        assert [r["queueID"] for r in rows] == [ids[2]], rows
        assert rows[0]["subject"] == "shared 2" and rows[0]["lastReply"].startswith("451 4.7.1"), rows
        assert cli_json(b, "trace", "--direction", "inbound", "--queue-id", ids[0]) == []
        shape = {r["domain"]: r["total"] for r in cli_json(b, "queue", "shape")}
        assert shape.get("remote.test") == 3, shape

        # Deleted from cli-b: failed with no report, in cli-a's trace too; gone from the list.
        r = cli(b, "queue", "delete", ids[1], "--actor", "ops")
        assert r.stdout.strip() == f"{ids[1]}: deleted: no report to the sender", r.stdout
        rows = cli_json(a, "trace", "--queue-id", ids[1])
        assert rows[0]["status"] == "Failed", rows
        assert rows[0]["lastReply"] == "deleted by an administrator (ops), no report sent", rows
        assert rows[0]["events"][-1]["detail"] == "delete by ops (no report to the sender)", rows
        assert ids[1] not in {m["id"] for m in cli_json(a, "queue", "list")}
        again = cli(a, "queue", "delete", ids[1], ok=False)
        assert again.returncode == 1 and "the message is already done" in again.stderr, again.stderr
        unknown = cli(a, "queue", "retry", "BBBBBBBBBBBBBBBB", ok=False)
        assert unknown.returncode == 1 and "no message with queue ID BBBBBBBBBBBBBBBB" in unknown.stderr, unknown.stderr

        # The remote takes mail again, slowly. Retried from cli-b: delivered now, not in an hour;
        # while it is in flight its lease shows in `queue show` and in `cluster status`.
        refusing.clear()
        slow.set()
        r = cli(b, "queue", "retry", ids[0], "--actor", "ops")
        assert r.stdout.strip() == f"{ids[0]}: due now", r.stdout

        def leased():
            status = cli_json(a, "cluster", "status")
            return status if sum(n.get("leases", 0) for n in status["nodes"]) == 1 else None

        status = wait_for(leased, timeout=15, what="one lease in cluster status")
        holder = next(n["name"] for n in status["nodes"] if n.get("leases") == 1)
        assert status["leases"] == {holder: 1}, status
        text = cli(a, "cluster", "status").stdout
        assert "LEASES" in text, text
        assert f"Lease:        {holder} until " in cli(a, "queue", "show", ids[0]).stdout
        slow.clear()
        wait_for(lambda: "<cli-0@" in " ".join(str(m.message_id) for m in remote.records()) or None,
                 timeout=20, what="the retried message at the remote")
        wait_for(lambda: cli_json(a, "trace", "--queue-id", ids[0])[0]["status"] == "Delivered", timeout=10,
                 what="the retried message delivered in the trace")
        details = [e["detail"] for e in cli_json(a, "trace", "--queue-id", ids[0])[0]["events"]]
        assert "retry by ops" in details, details
        # The deleted message is never delivered; the third still waits for its hour.
        assert not any("cli-1@" in str(m.message_id) for m in remote.records())
        assert cli_json(b, "trace", "--queue-id", ids[2])[0]["status"] == "Pending"
    finally:
        remote.stop()


def test_a_shared_queue_without_tables_is_a_clear_error_and_cluster_status_has_no_leases_column(
        postgres, tmp_path, mailflow_server):
    """A config naming a database no node has set up: the queue commands say so (exit 1); and
    `cluster status` on a cluster that shares only its forests' limits shows no LEASES column."""
    url = postgres.create_database("empty")
    config = merge_config(default_config(), {"storage": {"postgres": {"url": url}}})
    path = tmp_path / "empty.yaml"
    path.write_text(to_yaml(config))
    for args in (["queue", "list"], ["trace"], ["queue", "show", "BBBBBBBBBBBBBBBB"]):
        r = run_cli(*args, "--config", str(path), cwd=tmp_path)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "has no tables yet" in r.stderr, (args, r.stderr)

    limits_only = postgres.create_database("limits_only")
    srv = mailflow_server({"cluster": {"postgres": limits_only, "node": "solo"}})
    text = cli(srv, "cluster", "status").stdout
    assert "solo" in text and "LEASES" not in text, text
    status = cli_json(srv, "cluster", "status")
    assert "leases" not in status and all("leases" not in n for n in status["nodes"]), status
