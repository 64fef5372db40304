"""Service health of a cluster (issue 16): three Mailflow nodes on one PostgreSQL (`storage.postgres`,
a throw-away server from Debian's packages), one of which, the health leader, runs the monitor over
every node's trace.

The fault: forest NAMPR01 (contoso, fabrikam) is capped at 2 sessions cluster-wide (`cluster`), two
sessions through node b hold the slots, and clients from five loopback addresses keep being refused
`421 4.3.2 ... resource forest ...` by nodes b and c. Node a, the leader, refuses nobody itself.

What must hold:
- the leader opens the incident from the other nodes' refusals (a node reading only its own trace
  would see nothing), once, and notifies once: one `opened` webhook call in the whole cluster;
- any node shows it (its admin API, `mailflow health issues` through the shared database), and an
  admin's post through a node that does not lead is applied by the leader and answered at once;
  `mailflow check ip` on a node that never saw the client reads its refusals from the shared trace;
- the leader killed with SIGKILL: another node takes the leadership after its lease (15 s), goes on
  with the same issue (not a second one) and restores it when the fault ends, notifying `restored` once.

The health time scales are shortened (10 s buckets, a 1-minute window, restored after 20 s at
baseline) as in test_health_live; the rules are the production ones.
"""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time

import pytest

from mfutil import wait_for
from pgutil import Postgres, free_port
from test_health_live import hog, smtp  # one session from a loopback source; a session holding a slot

FOREST_TEXT = ("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, "
               "closing transmission channel")
LEASE = 4              # storage.postgres.lease; service health's leadership lease is at least 15 s
HEALTH_LEASE = 15


class Hooks(http.server.BaseHTTPRequestHandler):
    """Records each webhook call: (event, decoded body)."""
    calls: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hooks.calls.append((self.headers.get("X-Mailflow-Event"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def node_config(url: str, name: str, hook_port: int) -> dict:
    return {
        "server": {"hostname": f"{name}.mailflow.test"},
        "dns": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s", "attempts": 1},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"]},
            {"name": "fabrikam", "domains": ["fabrikam.test"], "catch_all": True},
        ],
        "forests": [
            {"name": "NAMPR01", "region": "north-america", "tenants": ["contoso", "fabrikam"], "max_connections": 2},
        ],
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "health": {"bucket": "10s", "window": "60s", "minimum_duration": "30s", "restore_after": "20s",
                   "webhook": f"http://127.0.0.1:{hook_port}/hook", "webhook_secret": "webhook-secret-for-the-cluster"},
        "storage": {"postgres": {"url": url, "lease": f"{LEASE}s", "timeout": "1s", "pool": 3}},
        "cluster": {"postgres": url, "node": name},
    }


def leader(pg: Postgres, db: str) -> str | None:
    """The node leading service health now (None before the first node made the tables)."""
    if not pg.query("SELECT to_regclass('mailflow_health_leader') IS NOT NULL", database=db)[0][0] == "t":
        return None
    rows = pg.query("SELECT node FROM mailflow_health_leader WHERE until > now()", database=db)
    return rows[0][0] if rows else None


def forest_issues(srv) -> list[dict]:
    """The inbound forest issues, as `mailflow health issues --all --json` reads them from PostgreSQL."""
    r = srv.cli("health", "issues", "--all", "--json")
    assert r.returncode == 0, r.stderr
    return [i for i in json.loads(r.stdout or "[]")
            if i["scope"]["direction"] == "inbound" and "resource forest" in i["signature"]]


def test_one_leader_detects_from_every_node_and_hands_over_when_killed(mailflow_server, postgres):
    db = "shared_health"
    url = postgres.create_database(db)
    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    Hooks.calls = []
    stop = threading.Event()
    try:
        a = mailflow_server(node_config(url, "hs-a", hooks.server_address[1]))
        wait_for(lambda: leader(postgres, db) == "hs-a", timeout=30, what="node hs-a leading service health")
        b = mailflow_server(node_config(url, "hs-b", hooks.server_address[1]))
        c = mailflow_server(node_config(url, "hs-c", hooks.server_address[1]))
        time.sleep(6)  # b and c ran a round each: they do not lead
        assert leader(postgres, db) == "hs-a"
        assert "this node leads" in a.stderr() and "this node leads" not in b.stderr() + c.stderr()
        r = c.cli("cluster", "status")
        assert r.returncode == 0 and "Service health run by hs-a" in r.stdout, r.stdout + r.stderr

        # The forest's two sessions held (whichever nodes admit the hogs), for every node to see.
        hogs = [threading.Thread(target=hog, args=(srv.port, stop), daemon=True) for srv in (b, c, b, c)]
        for h in hogs:
            h.start()
            time.sleep(0.5)
        time.sleep(3)
        probe = {name: smtp(srv.port, "127.0.0.3", ["EHLO c.test", "MAIL FROM:<x@elsewhere.test>",
                                                    "RCPT TO:<alice@contoso.test>"])[-1]
                 for name, srv in (("b", b), ("c", c))}
        print(f"\nprobe: {probe}")
        assert all(r.startswith("421 4.3.2") for r in probe.values()), probe

        start = time.monotonic()
        refused = {"b": 0, "c": 0}
        found = None
        while time.monotonic() - start < 180 and not found:
            for n in range(3, 8):
                name, srv = ("b", b) if n % 2 else ("c", c)
                rcpt = "alice@contoso.test" if n % 2 else f"u{n}@fabrikam.test"
                r = smtp(srv.port, f"127.0.0.{n}", ["EHLO c.test", "MAIL FROM:<x@elsewhere.test>", f"RCPT TO:<{rcpt}>"])
                refused[name] += r[-1].startswith("421 4.3.2")
            time.sleep(0.3)
            got = forest_issues(b)
            found = got[0] if got else None
        assert found, (refused, a.stderr()[-3000:])
        print(f"\nincident opened after {time.monotonic() - start:.0f} s; refusals {refused}")
        assert refused["b"] > 20 and refused["c"] > 20, refused
        assert found["classification"] == "incident" and found["origin"] == "mailflow", found
        assert found["scope"]["forests"] == ["NAMPR01"] and found["signature"] == FOREST_TEXT, found
        assert "service health: opened" in a.stderr()
        assert "service health: opened" not in b.stderr() + c.stderr(), "only the leader runs the monitor"

        # Any node shows it; a post through a node that does not lead is applied by the leader.
        tb, tc = b.add_token("ops-b"), c.add_token("ops-c")
        wait_for(lambda: any(i["id"] == found["id"] for i in b.api_json("GET", "/api/v1/health/issues", tb)["issues"]),
                 timeout=15, what="the issue in node b's API")
        t0 = time.monotonic()
        status, _, body = c.api("POST", f"/api/v1/health/issues/{found['id']}/posts", tc,
                                json.dumps({"text": "Adding capacity to NAMPR01."}).encode(),
                                {"Content-Type": "application/json"})
        assert status == 200, (status, body)
        assert any("Adding capacity" in p["description"] for p in json.loads(body)["posts"]), body
        print(f"post through a follower applied in {time.monotonic() - t0:.1f} s")

        # `mailflow check ip` on node c reads the cluster's trace: the refusals node b gave 127.0.0.5.
        r = c.cli("check", "ip", "127.0.0.5", "--json", "--timeout", "2")
        findings = {f["check"]: f for f in json.loads(r.stdout)["findings"] if f["category"] == "trace"}
        assert findings["trace.throttled"]["severity"] == "warning", (findings, r.stderr)
        assert "NAMPR01" in findings["trace.forests"]["summary"], findings

        # The leader dies; another takes over where it stopped.
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        killed = time.monotonic()
        new = wait_for(lambda: leader(postgres, db) in ("hs-b", "hs-c") and leader(postgres, db),
                       timeout=HEALTH_LEASE + 15, what="another node leading")
        print(f"{new} leads {time.monotonic() - killed:.1f} s after the kill")
        assert f"Service health run by {new}" in c.cli("cluster", "status").stdout

        # The fault ends: the slots come back; the new leader restores the same issue.
        stop.set()
        for n in range(10):
            smtp(c.port, "127.0.0.3", ["EHLO c.test", "MAIL FROM:<x@elsewhere.test>", "RCPT TO:<bob@contoso.test>",
                                       "RSET", "QUIT"])

        def restored():
            got = forest_issues(b)
            return got if got and all(i["status"] == "serviceRestored" for i in got) else None

        got = wait_for(restored, timeout=180, what="the incident restored")
        assert [i["id"] for i in got] == [found["id"]], ("one issue, not a second one after the takeover", got)
        assert any("Adding capacity" in p["description"] for p in got[0]["posts"])
        events = wait_for(lambda: [e for e, _ in Hooks.calls].count("restored") >= 1 and list(Hooks.calls),
                          timeout=30, what="the restored webhook")
        time.sleep(6)  # a second notification, were there one, would come within a round
        mine = [e for e, body in Hooks.calls if body["issue"]["id"] == found["id"]]
        assert mine.count("opened") == 1 and mine.count("restored") == 1, (mine, events)
    finally:
        stop.set()
        hooks.shutdown()
