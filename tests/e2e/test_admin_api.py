"""The admin API against a running server: every operation in docs/openapi.yaml is refused without a
valid token and answers, with one, a body that validates against the document's schema; queue
actions from the API; metrics; token lifecycle; retention pruning on a live server."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import jsonschema
import pytest
import yaml
from openapi_spec_validator import validate as validate_spec

from mailflow_testlib.processes import free_port
from mfutil import REPO_ROOT, SMTPClient, make_message, send_mail, wait_for
from pgutil import query_url

DOC_PATH = REPO_ROOT / "docs" / "openapi.yaml"
METHODS = ("get", "post", "put", "delete", "patch")


@pytest.fixture(scope="module")
def doc():
    return yaml.safe_load(DOC_PATH.read_text())


def admin_config():
    return {
        # The check routes look names up: at a loopback port where nothing answers, never at the
        # machine's resolver (tests send nothing off loopback).
        "dns": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s", "attempts": 1},
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_intervals": ["1h"], "concurrency": 4},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"]},
            {
                "name": "src", "domains": ["src.test"], "mailboxes": ["sender"],
                # Nothing listens on port 1: every outbound attempt is deferred and stays queued.
                "outbound_connector": {"smart_host": "127.0.0.1:1", "tls": "disabled"},
            },
        ],
        "forests": [{"name": "NAMPR01", "region": "nam", "tenants": ["contoso"], "max_connections": 7}],
    }


@pytest.fixture(scope="module")
def admin(tmp_path_factory):
    from conftest import _factory, _teardown
    start, servers = _factory(tmp_path_factory.mktemp("admin-api"))
    srv = start(admin_config())
    token = srv.add_token("alice")
    yield srv, token
    _teardown(servers)


def stuck_message(srv, token, tag):
    """A message to a remote that never answers: queued, deferred, waiting an hour."""
    qid = send_mail(srv, "sender@src.test", ["far@remote.test"], tag)
    wait_for(lambda: any(e["kind"] == "deferred" for e in srv.api_json("GET", f"/api/v1/queue/{qid}", token)["events"]),
             what="a deferred attempt")
    return qid


def schema_of(doc, response) -> dict | None:
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].split("/")[-1]]
    content = response.get("content", {})
    if "application/json" not in content:
        return None
    return {**content["application/json"]["schema"], "components": doc["components"]}


def check(doc, path, method, status, body: bytes):
    op = doc["paths"][path][method]
    assert str(status) in op["responses"], f"{method.upper()} {path} answered {status}, not documented"
    schema = schema_of(doc, op["responses"][str(status)])
    if schema is not None:
        jsonschema.validate(json.loads(body), schema, cls=jsonschema.Draft202012Validator)


def concrete(path, qid):
    # The checks probe Mailflow's own SMTP listener; `.invalid` and the loopback address fail fast.
    return (path.replace("{id}", qid).replace("{action}", "hold").replace("{domain}", "mailflow.invalid")
            .replace("{host}", "127.0.0.1").replace("{ip}", "127.0.0.1"))


def operations(doc):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_openapi_document_is_valid(doc):
    validate_spec(doc)
    # Every operation has an id and a 2xx; every one that needs a token documents the 401.
    for path, method, op in operations(doc):
        assert op.get("operationId"), (path, method)
        assert any(code.startswith("2") for code in op["responses"]), (path, method)
        if op.get("security", doc["security"]):
            assert "401" in op["responses"], (path, method)


def test_every_operation_refuses_without_a_valid_token(admin, doc):
    srv, token = admin
    qid = send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], "refusal")
    checked = 0
    for path, method, op in operations(doc):
        if not op.get("security", doc["security"]):
            continue
        url = concrete(path, qid)
        for headers in ({}, {"Authorization": "Bearer mf_not-a-real-token"}, {"Authorization": f"Basic {token}"},
                        {"Authorization": "Bearer"}, {"Authorization": token}):
            status, h, body = srv.api(method.upper(), url, headers=headers)
            assert status == 401, (method, url, headers, status, body)
            assert h.get("WWW-Authenticate", "").startswith("Bearer"), h
            check(doc, path, method, status, body)
        checked += 1
    assert checked >= 11
    # Nothing was done by the refused calls: the message was not held.
    assert srv.api_json("GET", f"/api/v1/queue/{qid}", token)["state"] != "held"
    # The public routes answer without a token.
    assert srv.api("GET", "/healthz")[0] == 200
    assert srv.api("GET", "/login")[0] == 200


def test_every_read_operation_matches_the_document(admin, doc):
    srv, token = admin
    qid = stuck_message(srv, token, "reads")
    send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test", "bob@contoso.test"], "inbound-read")
    for path, method, op in operations(doc):
        if method != "get":
            continue
        status, headers, body = srv.api("GET", concrete(path, qid), token)
        # No service-health issue exists on this server: its read is the documented 404 (test_health_api.py
        # reads real issues).
        assert status == (404 if path == "/api/v1/health/issues/{id}" else 200), (path, status, body)
        check(doc, path, method, status, body)
        if path == "/metrics":
            assert headers["Content-Type"].startswith("text/plain")

    overview = srv.api_json("GET", "/api/v1/overview", token)
    assert overview["queue"]["queuedMessages"] >= 1 and overview["queue"]["deferredMessages"] >= 1
    assert len(overview["activity"]) == 24 and overview["bucketSeconds"] == 900
    # The inbound message's two local deliveries may still be in flight when the reads above end.
    last = wait_for(lambda: (a := srv.api_json("GET", "/api/v1/overview", token)["activity"][-1])["delivered"] >= 2
                    and a, what="both local deliveries in the overview")
    assert last["received"] >= 2 and last["deferred"] >= 1 and last["delivered"] >= 2, last
    # The unreachable smart host is the most frequent error of the last hour.
    top = overview["topErrors"][0]
    assert top["kind"] == "deferred" and "4.4.1" in top["text"] and top["count"] >= 1, overview["topErrors"]

    detail = srv.api_json("GET", f"/api/v1/queue/{qid}", token)
    assert detail["sender"] == "sender@src.test" and detail["state"] == "queued"
    assert detail["recipients"][0]["address"] == "far@remote.test"
    assert "4.4.1" in detail["recipients"][0]["lastReply"]
    assert detail["nextAttempt"] and detail["attempts"] >= 1
    names = [h["name"].lower() for h in detail["headers"]]
    assert names[0] == "received" and "subject" in names and "message-id" in names
    assert [e["kind"] for e in detail["events"]][:2] == ["received", "deferred"]

    listing = srv.api_json("GET", "/api/v1/queue?q=far@remote", token)["messages"]
    assert [m["id"] for m in listing] == [qid]
    shape = srv.api_json("GET", "/api/v1/queue/shape", token)
    assert any(d["domain"] == "remote.test" and d["total"] >= 1 for d in shape["destinations"])

    rows = srv.api_json("GET", "/api/v1/trace?recipient=bob@contoso&since=1h", token)["rows"]
    assert len(rows) == 1 and rows[0]["status"] == "Delivered" and rows[0]["direction"] == "Inbound"
    assert srv.api_json("GET", "/api/v1/trace?sender=sender%40src.test&status=pending", token)["rows"]
    assert srv.api_json("GET", "/api/v1/trace?sender=nobody-at-all", token)["rows"] == []

    tenants = {t["name"]: t for t in srv.api_json("GET", "/api/v1/tenants", token)["tenants"]}
    assert tenants["contoso"]["forest"] == "NAMPR01" and tenants["contoso"]["receivedLastHour"] >= 1
    assert tenants["src"]["pendingRecipients"] >= 1
    limits = srv.api_json("GET", "/api/v1/limits", token)
    assert {f["name"]: f["maxConnections"] for f in limits["forests"]}["NAMPR01"] == 7


@pytest.mark.parametrize("query,word", [
    ("status=bogus", "status"), ("direction=sideways", "direction"), ("since=yesterday", "since"),
    ("limit=0", "limit"), ("limit=abc", "limit"), ("until=99x", "until"),
])
def test_trace_refuses_bad_parameters(admin, doc, query, word):
    srv, token = admin
    status, _, body = srv.api("GET", f"/api/v1/trace?{query}", token)
    assert status == 400, body
    check(doc, "/api/v1/trace", "get", status, body)
    assert word in json.loads(body)["error"]["message"]


# Spool.inlineLimit (Sources/MailQueue/Spool.swift, used by Sources/Ingress/BodySink.swift): a body
# larger than this streams to a file under the data directory's spool/ instead of the database.
INLINE_LIMIT = 256 * 1024


@pytest.mark.sqlite_only  # the shared queue keeps bodies in PostgreSQL: no spool file to remove
def test_delete_removes_the_spool_file_at_once(admin, doc):
    srv, token = admin
    filler = ["x" * 76] * (INLINE_LIMIT // 78 + 200)
    with SMTPClient(srv.port) as c:
        c.ehlo()
        qid = c.send_message("sender@src.test", ["far@remote.test"],
                             make_message("spooled-delete", body_lines=filler))
    spooled = srv.data_dir / "spool" / qid
    assert spooled.stat().st_size > INLINE_LIMIT
    wait_for(lambda: any(e["kind"] == "deferred"
                         for e in srv.api_json("GET", f"/api/v1/queue/{qid}", token)["events"]),
             what="a deferred attempt")
    assert spooled.exists(), "still queued: the body stays in the spool"
    status, _, body = srv.api("DELETE", f"/api/v1/queue/{qid}", token)
    assert status == 200, body
    check(doc, "/api/v1/queue/{id}", "delete", status, body)
    # The result is the outcome's code, not the spool file's path.
    assert json.loads(body)["result"] == "deleted"
    # Gone when the answer arrives, not at the next start.
    assert not spooled.exists()
    assert srv.running()


def test_queue_actions(admin, doc):
    srv, token = admin
    qid = stuck_message(srv, token, "actions")
    path = "/api/v1/queue/{id}/{action}"

    def act(action, expect=200, method="POST"):
        url = f"/api/v1/queue/{qid}" + ("" if method == "DELETE" else f"/{action}")
        status, _, body = srv.api(method, url, token)
        assert status == expect, (action, status, body)
        check(doc, "/api/v1/queue/{id}" if method == "DELETE" else path, method.lower(), status, body)
        return json.loads(body)

    r = act("hold")
    assert r == {"id": qid, "action": "hold", "actor": "api:alice", "result": "held"}
    assert srv.api_json("GET", f"/api/v1/queue/{qid}", token)["state"] == "held"
    assert srv.api_json("GET", "/api/v1/queue?state=held", token)["messages"][0]["id"] == qid
    act("hold", 409)
    act("retry", 409)  # a held message is released, not retried
    assert act("release")["result"] == "released"
    act("release", 409)
    before = srv.api_json("GET", f"/api/v1/queue/{qid}", token)["attempts"]
    assert act("retry")["result"] == "due_now"
    wait_for(lambda: srv.api_json("GET", f"/api/v1/queue/{qid}", token)["attempts"] > before, what="a new attempt")
    assert act("bounce")["result"] == "bounce_requested"
    detail = wait_for(lambda: (d := srv.api_json("GET", f"/api/v1/queue/{qid}", token))["state"] == "done" and d,
                      what="the bounce")
    assert detail["recipients"][0]["status"] == "failed"
    kinds = [(e["kind"], e.get("detail") or "") for e in detail["events"]]
    admin_events = [d for k, d in kinds if k == "admin"]
    assert admin_events == ["hold by api:alice", "release by api:alice", "retry by api:alice", "bounce by api:alice"]
    assert any(k == "dsn" for k, _ in kinds)
    # The DSN went to the sender's local mailbox.
    box = srv.data_dir / "mailboxes" / "src.test" / "sender" / "new"
    wait_for(lambda: list(box.iterdir()) if box.exists() else None, what="the DSN in the sender's mailbox")

    # Delete: out of the queue, no report to the sender; the trace keeps the record.
    other = stuck_message(srv, token, "delete-me")
    status, _, body = srv.api("DELETE", f"/api/v1/queue/{other}", token)
    assert status == 200, body
    check(doc, "/api/v1/queue/{id}", "delete", status, body)
    assert json.loads(body) == {"id": other, "action": "delete", "actor": "api:alice", "result": "deleted"}
    gone = srv.api_json("GET", f"/api/v1/queue/{other}", token)
    assert gone["state"] == "done" and "deleted by an administrator (api:alice)" in gone["recipients"][0]["lastReply"]
    assert not any(e["kind"] == "dsn" for e in gone["events"])
    assert other not in [m["id"] for m in srv.api_json("GET", "/api/v1/queue", token)["messages"]]
    status, _, body = srv.api("DELETE", f"/api/v1/queue/{other}", token)
    assert status == 409
    check(doc, "/api/v1/queue/{id}", "delete", status, body)
    status, _, body = srv.api("GET", "/api/v1/queue/0000000000000000", token)
    assert status == 404
    check(doc, "/api/v1/queue/{id}", "get", status, body)

    # Unknown message, unknown action.
    for method, url, want in [
        ("POST", "/api/v1/queue/0000000000000000/hold", 404), ("DELETE", "/api/v1/queue/0000000000000000", 404),
        ("POST", f"/api/v1/queue/{qid}/explode", 404), ("POST", f"/api/v1/queue/{qid}/delete", 404),
    ]:
        assert srv.api(method, url, token)[0] == want, (method, url)


def test_metrics_count_sessions_replies_latency_and_attempts(admin):
    srv, token = admin

    def metrics():
        status, headers, body = srv.api("GET", "/metrics", token)
        assert status == 200
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    before = metrics()
    for i in range(3):
        send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], f"metrics-{i}")
    with SMTPClient(srv.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<anne@elsewhere.test>")
        assert c.cmd("RCPT TO:<nobody@contoso.test>").code == 550
    after = wait_for(
        lambda: (m := metrics()).get('mailflow_delivery_attempts_total{outcome="delivered",destination="local"}', 0)
        >= before.get('mailflow_delivery_attempts_total{outcome="delivered",destination="local"}', 0) + 3 and m,
        what="three local deliveries counted")
    assert after["mailflow_smtp_sessions_total"] >= before.get("mailflow_smtp_sessions_total", 0) + 4
    assert after['mailflow_smtp_replies_total{class="5xx"}'] >= before.get('mailflow_smtp_replies_total{class="5xx"}', 0) + 1
    assert after['mailflow_smtp_replies_total{class="2xx"}'] > before.get('mailflow_smtp_replies_total{class="2xx"}', 0)
    count = "mailflow_smtp_acceptance_latency_seconds_count"
    assert after[count] >= before.get(count, 0) + 3
    assert after['mailflow_smtp_acceptance_latency_seconds_bucket{le="+Inf"}'] == after[count]
    assert 'mailflow_smtp_sessions{forest="NAMPR01"}' in after
    assert after['mailflow_smtp_sessions_max{forest="NAMPR01"}'] == 7
    assert after['mailflow_queue_messages{state="queued"}'] >= 0
    # Descriptors, counted every second: open ones below the limit, the refusal threshold below both.
    d = wait_for(lambda: (m := metrics()).get("mailflow_process_open_descriptors") and m, what="descriptors counted")
    assert 0 < d["mailflow_process_open_descriptors"] < d["mailflow_process_max_descriptors"]
    assert d["mailflow_smtp_descriptor_threshold"] < d["mailflow_process_max_descriptors"]
    assert any(k.startswith('mailflow_delivery_attempts_total{outcome="deferred",destination="remote.test"}')
               for k in after), [k for k in after if "attempts" in k]


def test_token_lifecycle(admin):
    srv, _ = admin
    token = srv.add_token("robot")
    assert srv.api("GET", "/api/v1/overview", token)[0] == 200
    # Two tokens may not share a name; names are checked.
    r = srv.cli("admin", "token", "add", "robot")
    assert r.returncode != 0 and "exists already" in r.stdout + r.stderr
    r = srv.cli("admin", "token", "add", "bad name!")
    assert r.returncode != 0 and "bad token name" in r.stdout + r.stderr
    listing = srv.cli("admin", "token", "list").stdout
    assert re.search(r"^robot\s+\S+\s+\S+Z", listing, re.M), listing  # used once: a last-used time
    # The database holds the hash, never the token.
    db = srv.data_dir / "queue.sqlite"
    for f in [db, Path(str(db) + "-wal")]:
        if f.exists():
            assert token.encode() not in f.read_bytes()
            assert token[3:].encode() not in f.read_bytes()
    r = srv.cli("admin", "token", "remove", "robot")
    assert r.returncode == 0, r.stderr
    assert srv.api("GET", "/api/v1/overview", token)[0] == 401
    r = srv.cli("admin", "token", "remove", "robot")
    assert r.returncode != 0 and "no admin token named robot" in r.stdout + r.stderr


def test_retention_prunes_old_trace_and_finished_messages_while_serving(mailflow_server):
    srv = mailflow_server({"trace": {"retention": "1h", "prune_interval": "1s"}})
    token = srv.add_token("alice")
    fresh = send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], "fresh")
    wait_for(lambda: srv.api_json("GET", f"/api/v1/queue/{fresh}", token)["state"] == "done", what="delivery")
    # Age a finished message and its events by two hours, and add 5,000 old events, behind the
    # server's back (another writer on the same database, as an operator's script would be): in
    # queue.sqlite, or in PostgreSQL when the queue is there (MAILFLOW_E2E_STORAGE=postgres).
    old = send_mail(srv, "anne@elsewhere.test", ["bob@contoso.test"], "old")
    wait_for(lambda: srv.api_json("GET", f"/api/v1/queue/{old}", token)["state"] == "done", what="delivery")
    postgres = srv.config.get("storage", {}).get("postgres", {}).get("url")
    if postgres:
        query_url(postgres, f"UPDATE mailflow_message SET received_at = received_at - interval '2 hours' WHERE id = '{old}'")
        query_url(postgres, f"UPDATE mailflow_trace_event SET time = time - interval '2 hours' WHERE queue_id = '{old}'")
        query_url(postgres, "INSERT INTO mailflow_trace_event (time, queue_id, kind, detail) SELECT now() - interval "
                            "'2 hours', 'OLD' || lpad(i::text, 13, '0'), 'throttled', 'old' FROM generate_series(0, 4999) i")
    else:
        con = sqlite3.connect(srv.data_dir / "queue.sqlite", timeout=10)
        with con:
            con.execute("UPDATE message SET received_at = received_at - 7200 WHERE id = ?", (old,))
            con.execute("UPDATE trace_event SET time = time - 7200 WHERE queue_id = ?", (old,))
            con.executemany(
                "INSERT INTO trace_event (time, queue_id, kind, detail) VALUES (strftime('%s','now') - 7200, ?, 'throttled', 'old')",
                [(f"OLD{i:013d}",) for i in range(5000)])
        con.close()

    def pruned():
        if postgres:
            [(old_events, old_msg)] = query_url(
                postgres, "SELECT (SELECT count(*) FROM mailflow_trace_event WHERE time < now() - interval '1 hour'), "
                          f"(SELECT count(*) FROM mailflow_message WHERE id = '{old}')")
            return (old_events, old_msg) == ("0", "0")
        con = sqlite3.connect(srv.data_dir / "queue.sqlite", timeout=10)
        try:
            old_events = con.execute("SELECT COUNT(*) FROM trace_event WHERE time < strftime('%s','now') - 3600").fetchone()[0]
            old_msg = con.execute("SELECT COUNT(*) FROM message WHERE id = ?", (old,)).fetchone()[0]
            return old_events == 0 and old_msg == 0
        finally:
            con.close()
    # Mail keeps flowing while pruning runs.
    for i in range(5):
        send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], f"during-{i}")
    wait_for(pruned, timeout=20, what="old rows pruned")
    assert srv.api("GET", f"/api/v1/queue/{old}", token)[0] == 404
    assert srv.api_json("GET", f"/api/v1/queue/{fresh}", token)["state"] == "done"
    assert "pruned" in srv.stderr()


def test_logs_carry_the_queue_id(admin):
    srv, token = admin
    qid = send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], "logged")
    wait_for(lambda: srv.api_json("GET", f"/api/v1/queue/{qid}", token)["state"] == "done", what="delivery")
    lines = [l for l in wait_for(lambda: [l for l in srv.stderr().splitlines() if f"queue_id={qid}" in l]
                                 if "delivered" in srv.stderr() else None, what="log lines")]
    # Text lines are `TIME LEVEL LOGGER [MODULE] MESSAGE key=value ...` (docs/admin.md, "Logs").
    assert any("] queued " in l and "client=127.0.0.1" in l for l in lines), lines
    assert any(" delivered" in l and "to=alice@contoso.test" in l for l in lines), lines
    # Tokens never reach the logs.
    assert token not in srv.stderr() and token[3:] not in srv.stderr()


def test_json_logs_are_one_object_per_line(mailflow_server):
    srv = mailflow_server({"server": {"log_format": "json"}})
    token = srv.add_token("alice")
    qid = send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], "json-log")
    wait_for(lambda: srv.api_json("GET", f"/api/v1/queue/{qid}", token)["state"] == "done", what="delivery")
    objects = [json.loads(line) for line in srv.stderr().splitlines() if line.strip()]
    assert objects and all({"time", "level", "logger", "message"} <= o.keys() for o in objects)
    mine = [o for o in objects if o.get("queue_id") == qid]
    assert any(o["message"] == "queued" and o["client"] == "127.0.0.1" for o in mine), mine
    assert any(o["message"] == "delivered" and o["to"] == "alice@contoso.test" for o in mine), mine


def test_stop_with_admin_connections_open_is_quick_and_clean(mailflow_server):
    import socket
    import time as _time
    srv = mailflow_server({})
    host, port = srv.admin_url.split("//")[1].rstrip("/").split(":")
    busy = socket.create_connection((host, int(port)))
    busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    assert busy.recv(1000).startswith(b"HTTP/1.1 200")
    idle = socket.create_connection((host, int(port)))
    t0 = _time.monotonic()
    srv.terminate()
    assert srv.wait(30) == 0
    assert _time.monotonic() - t0 < 5
    errors = [l for l in srv.stderr().splitlines() if " error " in l or " critical " in l]
    assert errors == [], errors
    busy.close()
    idle.close()
