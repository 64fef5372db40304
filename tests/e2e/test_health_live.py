"""Service health on a live server: faults pushed through the real SMTP paths open the right issues,
which restore by themselves when the faults end and survive a restart.

One server, two faults at once, in different forests so they stay two issues:
- inbound: forest NAMPR01 (contoso, fabrikam) is capped at 2 sessions; two sessions hold the slots and
  clients from five loopback addresses keep getting `421 4.3.2 ... resource forest ...` at RCPT;
- outbound: tenants tailspin and wingtip (forest EURPR01) send through a smart host that answers
  every RCPT for remote.test with `451 4.7.500 Server busy`, retried every few seconds.
The health time scales are shortened in the config (10 s buckets, a 1-minute window, restored after
20 s at baseline) so the test runs in minutes; the rules are the production ones.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

from mfutil import make_message, wait_for  # noqa: E402
from remote_smtp import FakeRemoteConfig, start_in_thread  # noqa: E402

FOREST_TEXT = ("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, "
               "closing transmission channel")
BUSY = "451 4.7.500 Server busy. Please try again later."


SECRET = "webhook-secret-for-the-test"


class Hooks(http.server.BaseHTTPRequestHandler):
    """Records each webhook call: (event header, signature header, body)."""
    calls: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hooks.calls.append((self.headers.get("X-Mailflow-Event"), self.headers.get("X-Mailflow-Signature"), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def config(fake_port: int, hook_port: int) -> dict:
    connector = {"smart_host": f"127.0.0.1:{fake_port}", "tls": "disabled"}
    return {
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"]},
            {"name": "fabrikam", "domains": ["fabrikam.test"], "catch_all": True},
            {"name": "tailspin", "domains": ["tailspin.test"], "mailboxes": ["a"], "outbound_connector": connector},
            {"name": "wingtip", "domains": ["wingtip.test"], "mailboxes": ["a"], "outbound_connector": connector},
        ],
        "forests": [
            {"name": "NAMPR01", "region": "north-america", "tenants": ["contoso", "fabrikam"], "max_connections": 2},
            {"name": "EURPR01", "region": "europe", "tenants": ["tailspin", "wingtip"], "max_connections": 500},
        ],
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"concurrency": 8, "retry_intervals": [3], "expiry": "24h"},
        "health": {"bucket": "10s", "window": "60s", "minimum_duration": "30s", "restore_after": "20s",
                   "webhook": f"http://127.0.0.1:{hook_port}/hook", "webhook_secret": SECRET,
                   "notify": ["bob@contoso.test"]},
    }


def smtp(port: int, source: str, lines: list[str], timeout: float = 10) -> list[str]:
    """One session from `source` (a loopback address): sends each line, returns each reply's first line."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    f = s.makefile("rb")
    replies = [f.readline().decode()]
    try:
        for line in lines:
            s.sendall(line.encode() + b"\r\n")
            r = f.readline().decode()
            while len(r) > 3 and r[3] == "-":
                r = f.readline().decode()
            replies.append(r)
            if not r or r.startswith("421"):
                break
    finally:
        s.close()
    return replies


def hog(port: int, stop: threading.Event) -> None:
    """Holds one NAMPR01 session slot inside a transaction until `stop`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=("127.0.0.2", 0))
    f = s.makefile("rb")
    f.readline()
    for line in ("EHLO hog.test", "MAIL FROM:<x@elsewhere.test>", "RCPT TO:<alice@contoso.test>"):
        s.sendall(line.encode() + b"\r\n")
        r = f.readline()
        while r[3:4] == b"-":
            r = f.readline()
    stop.wait()
    s.sendall(b"QUIT\r\n")
    s.close()


def issues(srv) -> list[dict]:
    """Every issue the server has stored (`mailflow health issues --all --json`)."""
    r = srv.cli("health", "issues", "--all", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout or "[]")


def test_forest_cap_and_throttling_remote_open_issues_that_restore_and_survive_a_restart(mailflow_server):
    hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    with start_in_thread(FakeRemoteConfig(rcpt_rejects=[rf".*@remote\.test={BUSY}"])) as fake:
        srv = mailflow_server(config(fake.port, hooks.server_address[1]))
        stop = threading.Event()
        hogs = [threading.Thread(target=hog, args=(srv.port, stop), daemon=True) for _ in range(2)]
        for h in hogs:
            h.start()
        time.sleep(1)
        # Outbound: 16 messages from two tenants to the throttling provider.
        start = time.monotonic()
        for i in range(16):
            sender = "a@tailspin.test" if i % 2 else "a@wingtip.test"
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=("127.0.0.9", 0))
            f = s.makefile("rb")
            f.readline()
            s.sendall(f"EHLO out.test\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<v{i}@remote.test>\r\nDATA\r\n".encode())
            for _ in range(4):
                r = f.readline()
                while r[3:4] == b"-":
                    r = f.readline()
            s.sendall(make_message(f"out{i}", to=f"v{i}@remote.test") + b".\r\nQUIT\r\n")
            assert f.readline().startswith(b"250"), "message not queued"
            s.close()
        # Inbound: clients from five addresses keep being refused by the full forest.
        found: dict = {}
        refused = 0
        while time.monotonic() - start < 150 and len(found) < 2:
            for n in range(3, 8):
                rcpt = "alice@contoso.test" if n % 2 else f"u{n}@fabrikam.test"
                r = smtp(srv.port, f"127.0.0.{n}", ["EHLO c.test", "MAIL FROM:<x@elsewhere.test>", f"RCPT TO:<{rcpt}>"])
                refused += r[-1].startswith("421 4.3.2")
            time.sleep(0.3)
            for i in issues(srv):
                if i["scope"]["direction"] == "inbound" and "resource forest" in i["signature"]:
                    found.setdefault("inbound", (i, time.monotonic() - start))
                if i["scope"]["direction"] == "outbound" and "Server busy" in i["signature"]:
                    found.setdefault("outbound", (i, time.monotonic() - start))
        assert refused > 50, refused
        assert set(found) == {"inbound", "outbound"}, (found.keys(), srv.stderr()[-3000:])
        inbound, t_in = found["inbound"]
        outbound, t_out = found["outbound"]
        assert t_in <= 120 and t_out <= 120, (t_in, t_out)
        assert inbound["classification"] == "incident" and inbound["origin"] == "mailflow", inbound
        assert inbound["scope"]["forests"] == ["NAMPR01"] and inbound["scope"]["regions"] == ["north-america"]
        assert inbound["signature"] == FOREST_TEXT
        assert outbound["classification"] == "advisory" and outbound["origin"] == "remoteProvider", outbound
        assert outbound["scope"]["destinations"] == ["remote.test"]

        # An admin posts, a tenant reports; both are stored.
        r = srv.cli("health", "post", inbound["id"], "We are adding capacity to NAMPR01.", "--actor", "ops")
        assert r.returncode == 0 and "applied" in r.stdout, r.stdout + r.stderr
        r = srv.cli("health", "report", "--tenant", "contoso", "--region", "north-america",
                    "--error", FOREST_TEXT, "senders say our mail bounces")
        assert r.returncode == 0, r.stderr

        # The faults end: the slots come back, the provider accepts again.
        stop.set()
        fake.config.rcpt_rejects = []
        for i in range(10):
            smtp(srv.port, "127.0.0.3", ["EHLO c.test", "MAIL FROM:<x@elsewhere.test>", "RCPT TO:<bob@contoso.test>",
                                         "RSET", "QUIT"])

        def restored():
            got = {i["id"]: i for i in issues(srv)}
            return got if all(got[x["id"]]["status"] == "serviceRestored" for x in (inbound, outbound)) else None

        got = wait_for(restored, timeout=180, what="both issues restored")
        assert got[inbound["id"]]["endDateTime"] and got[outbound["id"]]["endDateTime"]
        assert got[inbound["id"]]["reports"] >= 1, got[inbound["id"]]

        # Each open and restore was posted to the webhook, signed with the shared secret.
        events = wait_for(lambda: [e for e, _, _ in Hooks.calls].count("restored") >= 2 and Hooks.calls,
                          what="webhook calls")
        for event, signature, body in events:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(signature, expected), (event, signature)
            assert json.loads(body)["event"] == event
        opened = {json.loads(b)["issue"]["id"] for e, _, b in events if e == "opened"}
        assert {inbound["id"], outbound["id"]} <= opened, events
        # ... and mailed to the admin address through the queue.
        box = Path(srv.data_dir) / "mailboxes" / "contoso.test" / "bob" / "new"
        notices = wait_for(lambda: [p for p in box.glob("*") if b"[Mailflow service health]" in p.read_bytes()],
                           what="a notice in bob's Maildir")
        assert any(inbound["id"].encode() in p.read_bytes() for p in notices)

        # Issues, posts and reports survive a restart.
        srv.stop()
        srv.start()
        after = {i["id"]: i for i in issues(srv)}
        assert after[inbound["id"]]["status"] == "serviceRestored"
        assert any("adding capacity" in p["description"] for p in after[inbound["id"]]["posts"])
        assert after[inbound["id"]]["reports"] == got[inbound["id"]]["reports"]
        # The export replays into the same kind of issue.
        r = srv.cli("health", "export", "--since", "1h")
        assert r.returncode == 0 and '"kind":"smtp"' in r.stdout, r.stderr
