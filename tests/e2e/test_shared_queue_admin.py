"""The admin API in cluster mode (issue 16): with `storage.postgres` every node's admin API lists,
traces, shows and controls the shared queue in PostgreSQL, so a message accepted by one node is seen
through another's API, and a hold through one node's API is obeyed by every node. The overview's
queue counts and the `/metrics` queue gauges are the shared queue's. A database that is away is a
`503` naming it (without its password) within the queue's timeout, not a `500` or a hang.

Two nodes share one throw-away PostgreSQL (pgutil). Tenant `src` sends through a smart host, a
recording sink (smtpsink.SlowSink) on loopback that defers every recipient with `451` until the test
lets it take mail, so messages stay queued (the next try an hour away) until an action makes them due.

Run: MAILFLOW_BIN=... python3 -m pytest tests/e2e/test_shared_queue_admin.py -q -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import yaml

from mailflow_testlib.processes import free_port
from mfutil import REPO_ROOT, send_mail, wait_for
from pgutil import Postgres
from smtpsink import SlowSink
from test_admin_api import check

PASSWORD = "s3cret-pw"  # in the URL only: trust authentication never asks for it, no answer may show it
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def node_config(url: str, name: str, sink: SlowSink) -> dict:
    return {
        "server": {"hostname": f"{name}.mailflow.test"},
        # Nothing here resolves names: a loopback port where nothing answers, never the machine's resolver.
        "dns": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s", "attempts": 1},
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"concurrency": 4, "retry_intervals": ["1h"], "expiry": "24h"},
        "tenants": [
            {"name": "src", "domains": ["src.test"], "mailboxes": ["sender"],
             "outbound_connector": {"smart_host": f"127.0.0.1:{sink.port}", "tls": "disabled"}},
        ],
        "storage": {"postgres": {"url": url, "lease": "4s", "timeout": f"{int(TIMEOUT)}s", "pool": 3}},
        "cluster": {"postgres": url, "node": name},
    }


def with_password(url: str) -> str:
    return url.replace("postgres://mailflow@", f"postgres://mailflow:{PASSWORD}@")


def shared_counts(pg: Postgres, db: str) -> dict:
    (row,) = pg.query(
        "SELECT (SELECT count(*) FROM mailflow_message WHERE next_attempt IS NOT NULL),"
        " (SELECT count(*) FROM mailflow_message WHERE state = 'held'),"
        " (SELECT count(*) FROM mailflow_recipient WHERE status = 'pending')", database=db)
    return {"queuedMessages": int(row[0]), "heldMessages": int(row[1]), "pendingRecipients": int(row[2])}


def gauges(srv, token) -> dict:
    status, _, body = srv.api("GET", "/metrics", token)
    assert status == 200, body
    return {name: float(v) for name, v in (line.rsplit(" ", 1) for line in body.decode().splitlines()
                                           if line.startswith("mailflow_queue_"))}


def delivered(sink: SlowSink, tag: str) -> bool:
    return any(f"<{tag}@" in str(r.message_id) for r in sink.records())


def test_admin_api_of_any_node_reads_and_controls_the_shared_queue(mailflow_server, postgres):
    db = "admin_api"
    url = with_password(postgres.create_database(db))
    refusing = threading.Event()
    refusing.set()
    sink = SlowSink("127.0.0.1", hostname="smarthost.test",
                    refuse=lambda rcpt: "451 4.7.1 Try again later" if refusing.is_set() else None).start()
    try:
        a, b = (mailflow_server(node_config(url, n, sink)) for n in ("adm-a", "adm-b"))
        ta, tb = a.add_token("ops-a"), b.add_token("ops-b")

        # Accepted by adm-a, deferred by the smart host; adm-b's own SQLite never saw them.
        held_id = send_mail(a, "sender@src.test", ["far@remote.test"], "adm-held", subject="held through b")
        other_id = send_mail(a, "sender@src.test", ["two@remote.test", "three@remote.test"], "adm-other")
        for qid in (held_id, other_id):
            wait_for(lambda: any(e["kind"] == "deferred"
                                 for e in b.api_json("GET", f"/api/v1/queue/{qid}", tb)["events"]),
                     timeout=20, what=f"{qid} deferred, seen through adm-b")

        listed = {m["id"]: m for m in b.api_json("GET", "/api/v1/queue", tb)["messages"]}
        assert {held_id, other_id} <= set(listed), listed
        assert listed[held_id]["state"] == "queued" and listed[held_id]["attempts"] == 1, listed
        assert [m["id"] for m in b.api_json("GET", "/api/v1/queue?q=two@remote", tb)["messages"]] == [other_id]
        detail = b.api_json("GET", f"/api/v1/queue/{held_id}", tb)
        assert detail["recipients"][0]["lastReply"].startswith("451 4.7.1"), detail
        assert {"name": "Subject", "value": "held through b"} in detail["headers"], detail["headers"]
        assert [e["kind"] for e in detail["events"]][:2] == ["received", "deferred"], detail["events"]
        rows = b.api_json("GET", f"/api/v1/trace?queue_id={held_id}", tb)["rows"]
        assert [(r["recipient"], r["status"]) for r in rows] == [("far@remote.test", "Pending")], rows
        assert (b.api_json("GET", "/api/v1/trace?sender=SENDER@src&since=1h", tb)
                == a.api_json("GET", "/api/v1/trace?sender=SENDER@src&since=1h", ta))
        shape = {s["domain"]: s["total"] for s in b.api_json("GET", "/api/v1/queue/shape", tb)["destinations"]}
        assert shape.get("remote.test") == 3, shape
        page_status, _, page = b.api("GET", "/api/v1/overview", tb)
        assert page_status == 200, page

        # Held through adm-b's API: adm-a's API shows it held; the smart host takes mail again and
        # adm-a delivers the other message at once but never the held one.
        r = b.api_json("POST", f"/api/v1/queue/{held_id}/hold", tb)
        assert (r["result"], r["actor"]) == ("held", "api:ops-b"), r
        assert a.api_json("GET", f"/api/v1/queue/{held_id}", ta)["state"] == "held"
        assert b.api("POST", f"/api/v1/queue/{held_id}/hold", tb)[0] == 409
        refusing.clear()
        r = a.api_json("POST", f"/api/v1/queue/{other_id}/retry", ta)
        assert r["result"] == "due_now", r
        wait_for(lambda: delivered(sink, "adm-other"), timeout=15, what="the retried message at the smart host")

        # The overview's counts and the gauges are the shared queue's, the same on both nodes.
        expected = {"queuedMessages": 0, "heldMessages": 1, "pendingRecipients": 1}
        wait_for(lambda: shared_counts(postgres, db) == expected, timeout=10, what="the other message done")
        for srv, token in ((a, ta), (b, tb)):
            queue = srv.api_json("GET", "/api/v1/overview", token)["queue"]
            assert {k: queue[k] for k in expected} == expected, queue
            wait_for(lambda: gauges(srv, token).get('mailflow_queue_messages{state="held"}') == 1.0, timeout=5,
                     what="the held gauge from the shared queue")
        time.sleep(2.5)  # longer than a node's look at the shared queue (DeliveryScheduler.sharedPoll, 2 s)
        assert not delivered(sink, "adm-held")
        assert a.api_json("GET", f"/api/v1/queue/{held_id}", ta)["state"] == "held"

        # Released through adm-a: delivered (by whichever node claims it), as both APIs show.
        assert a.api_json("POST", f"/api/v1/queue/{held_id}/release", ta)["result"] == "released"
        wait_for(lambda: delivered(sink, "adm-held"), timeout=15, what="the released message at the smart host")
        wait_for(lambda: b.api_json("GET", f"/api/v1/trace?queue_id={held_id}", tb)["rows"][0]["status"]
                 == "Delivered", timeout=10, what="the released message delivered in adm-b's trace")
        kinds = [(e["kind"], e.get("detail")) for e in a.api_json("GET", f"/api/v1/queue/{held_id}", ta)["events"]]
        assert ("admin", "hold by api:ops-b") in kinds and ("admin", "release by api:ops-a") in kinds, kinds
        assert len([r for r in sink.records() if "<adm-held@" in str(r.message_id)]) == 1

        # The database frozen (SIGSTOP on the postmaster and its backends: connections are taken by
        # the kernel and never answered): the API gives up at the timeout with a 503, no hang.
        postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        frozen = [postmaster] + [int(p) for p in children]
        try:
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            for path in ("/api/v1/queue", "/api/v1/overview"):
                started = time.monotonic()
                status, _, body = b.api("GET", path, tb)
                took = time.monotonic() - started
                assert status == 503 and "cannot be read right now" in body.decode(), (path, status, body)
                assert TIMEOUT - 0.2 < took < TIMEOUT + 1.5, (path, took)
                print(f"frozen database: {path} answered 503 in {took:.2f} s")
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        wait_for(lambda: b.api("GET", "/api/v1/queue", tb)[0] == 200, timeout=10, what="the API back after the thaw")

        # The database away: every queue read and action is a 503 naming it (no password) within
        # the timeout; the same routes answer again once it is back.
        postgres.stop_server()
        try:
            doc = yaml.safe_load((REPO_ROOT / "docs" / "openapi.yaml").read_text())
            for method, path, documented in (
                    ("GET", "/api/v1/queue", "/api/v1/queue"), ("GET", f"/api/v1/queue/{held_id}", "/api/v1/queue/{id}"),
                    ("DELETE", f"/api/v1/queue/{held_id}", "/api/v1/queue/{id}"),
                    ("GET", "/api/v1/trace?since=1h", "/api/v1/trace"), ("GET", "/api/v1/overview", "/api/v1/overview"),
                    ("GET", "/api/v1/queue/shape", "/api/v1/queue/shape"),
                    ("POST", f"/api/v1/queue/{held_id}/hold", "/api/v1/queue/{id}/{action}")):
                started = time.monotonic()
                status, headers, body = b.api(method, path, tb)
                took = time.monotonic() - started
                assert status == 503, (path, status, body)
                check(doc, documented, method.lower(), status, body)
                assert took < TIMEOUT + 1.5, (path, took)
                print(f"stopped database: {method} {path} answered 503 in {took:.3f} s")
                text = json.loads(body)["error"]["message"]
                assert text.startswith("the shared queue at postgres://mailflow:") and "cannot be read" in text, text
                assert PASSWORD not in body.decode() and PASSWORD not in str(headers), body
                assert headers.get("Retry-After") == "5", headers
        finally:
            postgres.start_server()
        wait_for(lambda: b.api("GET", "/api/v1/queue?state=all", tb)[0] == 200, timeout=10,
                 what="the API back with the database")
    finally:
        sink.stop()
