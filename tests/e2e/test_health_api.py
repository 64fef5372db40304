"""The service-health API (docs/admin.md, "Service health") against a real `mailflow serve` with the
live monitor: user reports from three tenants of a region open a customer advisory within seconds,
a resource forest pushed past its session cap by many concurrent senders opens an incident within
about two minutes (the detector's default time scales), and admins act on both through the API: posts,
status changes, the post-incident review. Every response is checked against docs/openapi.yaml, and
what the API did is what `mailflow health ... --json` reads back from the store."""

from __future__ import annotations

import json
import socket
import threading
import time

import jsonschema
import pytest
import yaml

from mfutil import REPO_ROOT, send_mail, wait_for

DOC_PATH = REPO_ROOT / "docs" / "openapi.yaml"
FOREST_FULL = ("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, "
               "closing transmission channel")
HOSTILE = "<script>alert('post')</script> & \"quoted\"\nsecond line"


@pytest.fixture(scope="module")
def doc():
    return yaml.safe_load(DOC_PATH.read_text())


def check(doc, path, method, status, body: bytes):
    """The status is documented for the operation and the body validates against its schema."""
    op = doc["paths"][path][method]
    assert str(status) in op["responses"], f"{method.upper()} {path} answered {status}, not documented: {body!r}"
    response = op["responses"][str(status)]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].split("/")[-1]]
    content = response.get("content", {})
    if "application/json" in content:
        schema = {**content["application/json"]["schema"], "components": doc["components"]}
        jsonschema.validate(json.loads(body), schema, cls=jsonschema.Draft202012Validator,
                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def call(srv, token, doc, method, url, path, body=None, expect=200):
    """One API call, checked against the document; the JSON it answered."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, headers, raw = srv.api(method, url, token, body=data, headers={"Content-Type": "application/json"})
    assert status == expect, (method, url, status, raw)
    check(doc, path, method.lower(), status, raw)
    assert headers["X-Frame-Options"] == "DENY" and "default-src 'none'" in headers["Content-Security-Policy"]
    return json.loads(raw) if raw else None


def issues(srv, token, doc, query=""):
    return call(srv, token, doc, "GET", f"/api/v1/health/issues{query}", "/api/v1/health/issues")["issues"]


def cli_issues(srv, *args):
    r = srv.cli("health", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def health_config(**extra):
    return {
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"]},
            {"name": "fabrikam", "domains": ["fabrikam.test"], "catch_all": True},
            {"name": "woodgrove", "domains": ["woodgrove.test"], "mailboxes": ["carol"]},
        ],
        "forests": [
            {"name": "NAMPR01", "region": "nam", "tenants": ["contoso", "fabrikam"], "max_connections": 2},
            {"name": "EURPR02", "region": "emea", "tenants": ["woodgrove"], "max_connections": 50},
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def health(tmp_path_factory):
    from conftest import _factory, _teardown
    start, servers = _factory(tmp_path_factory.mktemp("health-api"))
    srv = start(health_config())
    token = srv.add_token("alice")
    yield srv, token
    _teardown(servers)


def test_every_health_operation_needs_a_token(health, doc):
    srv, _ = health
    ops = [(p, m) for p, item in doc["paths"].items() if p.startswith("/api/v1/health") for m in item
           if m in ("get", "post")]
    assert len(ops) == 7, ops
    for path, method in ops:
        url = path.replace("{id}", "MF1")
        for headers in ({}, {"Authorization": "Bearer mf_not-a-real-token"}):
            status, h, body = srv.api(method.upper(), url, body=b'{"text": "x"}' if method == "post" else None,
                                      headers=headers)
            assert status == 401, (method, url, status, body)
            assert h.get("WWW-Authenticate", "").startswith("Bearer")
            check(doc, path, method, status, body)


def test_a_quiet_server_is_operational_and_refuses_bad_input(health, doc):
    srv, token = health
    overview = call(srv, token, doc, "GET", "/api/v1/health/overview", "/api/v1/health/overview")
    assert [s["service"] for s in overview["services"]] == ["Inbound mail flow", "Outbound mail flow", "Admin"]
    for s in overview["services"]:
        if not s["issues"]:
            assert s["status"] == "serviceOperational", s
    # Bad filters name the parameter.
    for query, word in [("status=bogus", "status"), ("classification=major", "classification"),
                        ("open=maybe", "open"), ("since=yesterday", "since")]:
        r = call(srv, token, doc, "GET", f"/api/v1/health/issues?{query}", "/api/v1/health/issues", expect=400)
        assert r["error"]["message"].startswith(word), r
    # Unknown issues are 404 for every operation on one.
    call(srv, token, doc, "GET", "/api/v1/health/issues/MF999", "/api/v1/health/issues/{id}", expect=404)
    for action, body in [("posts", {"text": "x"}), ("status", {"status": "serviceRestored"}), ("review", {})]:
        r = call(srv, token, doc, "POST", f"/api/v1/health/issues/MF999/{action}",
                 f"/api/v1/health/issues/{{id}}/{action}", body, expect=404)
        assert r["error"]["message"] == "no issue MF999"
    # Bad bodies are 400 naming the field, before the issue is looked up.
    for action, body, word in [
        ("posts", b"not json", "the body"), ("posts", {"text": 5}, "text must be a string"),
        ("posts", {"text": " \n "}, "text must contain"), ("posts", {}, "text is required"),
        ("status", {"status": "fine"}, "status must be one of"), ("review", {"text": None}, "text must be a string"),
    ]:
        r = call(srv, token, doc, "POST", f"/api/v1/health/issues/MF999/{action}",
                 f"/api/v1/health/issues/{{id}}/{action}", body, expect=400)
        assert r["error"]["message"].startswith(word), (action, body, r)
    for body, word in [({"region": "nam", "text": "x"}, "tenant is required"),
                       ({"tenant": "contoso", "region": "", "text": "x"}, "region must not be empty"),
                       ({"tenant": "contoso", "region": "nam", "text": "x", "error": 3}, "error must be a string"),
                       (b"[]", "the body")]:
        r = call(srv, token, doc, "POST", "/api/v1/health/reports", "/api/v1/health/reports", body, expect=400)
        assert r["error"]["message"].startswith(word), (body, r)


def test_reports_from_three_tenants_open_an_advisory_that_admins_work_through(health, doc):
    srv, token = health
    for tenant in ("contoso", "fabrikam", "woodgrove"):
        r = call(srv, token, doc, "POST", "/api/v1/health/reports", "/api/v1/health/reports",
                 {"tenant": tenant, "region": "nam", "text": "Our partners' mail bounces",
                  "error": "451 4.7.500 Server busy"}, expect=202)
        assert r == {"accepted": True, "reporter": "api:alice", "tenant": tenant, "region": "nam"}

    def opened():
        found = [i for i in issues(srv, token, doc, "?open=true") if i["origin"] == "customer"]
        return found[0] if found else None
    issue = wait_for(opened, timeout=60, what="a customer issue from three reports")
    iid = issue["id"]
    assert issue["classification"] == "advisory" and issue["status"] == "investigating", issue
    assert issue["service"] == "Inbound mail flow" and issue["scope"]["regions"] == ["nam"]
    assert issue["scope"]["tenants"] == ["contoso", "fabrikam", "woodgrove"] and issue["reports"] == 3
    assert issue["endDateTime"] is None and issue["isResolved"] is False
    assert issue["posts"][0]["postType"] == "automatic" and issue["posts"][0]["author"] == "mailflow"

    # The overview, the filters and the one-issue read agree.
    overview = call(srv, token, doc, "GET", "/api/v1/health/overview", "/api/v1/health/overview")
    inbound = overview["services"][0]
    assert inbound["status"] == "investigating" and iid in inbound["issues"], overview
    assert iid in [i["id"] for i in issues(srv, token, doc, "?status=investigating&classification=advisory")]
    assert iid in [i["id"] for i in issues(srv, token, doc, "?service=inbound%20mail%20flow&since=1h")]
    assert iid not in [i["id"] for i in issues(srv, token, doc, "?open=false")]
    assert iid not in [i["id"] for i in issues(srv, token, doc, "?classification=incident")]
    one = call(srv, token, doc, "GET", f"/api/v1/health/issues/{iid}", "/api/v1/health/issues/{id}")
    assert one["id"] == iid and one["title"] == issue["title"]

    # A further report from the region joins the issue.
    call(srv, token, doc, "POST", "/api/v1/health/reports", "/api/v1/health/reports",
         {"tenant": "contoso", "region": "nam", "text": "still bouncing"}, expect=202)
    wait_for(lambda: call(srv, token, doc, "GET", f"/api/v1/health/issues/{iid}",
                          "/api/v1/health/issues/{id}")["reports"] == 4, timeout=30, what="the fourth report joining")

    # A post, verbatim (JSON, not HTML), by the token's name.
    r = call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/posts", "/api/v1/health/issues/{id}/posts",
             {"text": HOSTILE})
    assert r["posts"][-1] == {**r["posts"][-1], "postType": "regular", "author": "api:alice", "description": HOSTILE}
    # No review while the issue is open; no status that does not exist; not the review's status by hand.
    call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/review", "/api/v1/health/issues/{id}/review",
         {"text": "too early"}, expect=409)
    call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/status", "/api/v1/health/issues/{id}/status",
         {"status": "postIncidentReviewPublished"}, expect=409)
    r = call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/status", "/api/v1/health/issues/{id}/status",
             {"status": "falsePositive"})
    assert r["status"] == "falsePositive" and r["isResolved"] and r["endDateTime"]
    assert r["posts"][-1]["description"] == "Current status: set to falsePositive by api:alice."
    # A false positive has no review; restored, it has.
    call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/review", "/api/v1/health/issues/{id}/review",
         {}, expect=409)
    call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/status", "/api/v1/health/issues/{id}/status",
         {"status": "serviceRestored"})
    r = call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/review", "/api/v1/health/issues/{id}/review",
             {"text": "Root cause: a partner's outage, not ours."})
    assert r["status"] == "postIncidentReviewPublished"
    assert r["posts"][-1]["postType"] == "postIncidentReview"
    call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/status", "/api/v1/health/issues/{id}/status",
         {"status": "investigating"}, expect=409)
    assert iid in [i["id"] for i in issues(srv, token, doc, "?open=false&status=postIncidentReviewPublished")]

    # The store has what the API did: `mailflow health show --json` reads it back.
    (stored,) = cli_issues(srv, "show", iid, "--json")
    assert stored["status"] == "postIncidentReviewPublished", stored
    assert [p["author"] for p in stored["posts"]][-4:] == ["api:alice"] * 4
    assert HOSTILE in [p["description"] for p in stored["posts"]]


class Sender:
    """A minimal SMTP client from a chosen loopback address (the server sees 127.0.0.N as the client)."""

    def __init__(self, port: int, source: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.buf = b""

    def reply(self) -> str:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return "\n".join(lines) or "(closed)"
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode(errors="replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def to_rcpt(self, rcpt: str) -> str:
        assert self.reply().startswith("220")
        assert self.cmd("EHLO sender.test").startswith("250")
        assert self.cmd("MAIL FROM:<news@sender.test>").startswith("250")
        return self.cmd(f"RCPT TO:<{rcpt}>")

    def close(self):
        self.sock.close()


def test_a_forest_past_its_session_cap_opens_an_incident_within_two_minutes(mailflow_server, doc):
    """EX1331830 on a live server: NAMPR01 (contoso and fabrikam, 2 sessions) is held full while senders
    from eight addresses keep trying both tenants; every try is refused with Exchange's 421 4.3.2. The
    monitor, at its default time scales (30-second buckets, 90 seconds minimum duration), opens an
    incident scoped to exactly that forest and region."""
    srv = mailflow_server(health_config())
    token = srv.add_token("alice")
    # A little normal inbound traffic first, on both forests.
    for i in range(3):
        send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], f"normal-nam-{i}")
        send_mail(srv, "anne@elsewhere.test", ["carol@woodgrove.test"], f"normal-emea-{i}")
    holders = [Sender(srv.port, "127.0.0.2"), Sender(srv.port, "127.0.0.3")]
    assert holders[0].to_rcpt("alice@contoso.test").startswith("250")
    assert holders[1].to_rcpt("someone@fabrikam.test").startswith("250")
    stop = threading.Event()
    refused = [0]
    unexpected: list[str] = []

    def hammer(n: int):
        k = 0
        while not stop.is_set():
            rcpt = "bob@contoso.test" if (n + k) % 2 else f"user{k}@fabrikam.test"
            k += 1
            try:
                s = Sender(srv.port, f"127.0.0.{10 + n}")
                r = s.to_rcpt(rcpt)
                s.close()
            except OSError as e:
                unexpected.append(f"{type(e).__name__}: {e}")
                time.sleep(0.5)
                continue
            if r == FOREST_FULL:
                refused[0] += 1
            else:
                unexpected.append(r)
            stop.wait(0.25)

    threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        def incident():
            for i in issues(srv, token, doc, "?open=true&classification=incident"):
                if "NAMPR01" in i["scope"]["forests"]:
                    return i
            for h in holders:  # the held sessions stay busy (and alive)
                h.cmd("NOOP")
            return None
        issue = wait_for(incident, timeout=240, what="an incident for NAMPR01")
        took = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not unexpected[:5], unexpected[:5]
    assert refused[0] >= 20, refused
    assert took < 180, f"the incident took {took:.0f} s"
    iid = issue["id"]
    assert issue["origin"] == "mailflow" and issue["service"] == "Inbound mail flow", issue
    assert issue["status"] == "serviceInterruption", issue
    assert issue["signature"].startswith("421 4.3.2 The maximum number of concurrent connections per resource forest")
    scope = issue["scope"]
    assert scope["direction"] == "inbound" and scope["forests"] == ["NAMPR01"] and scope["regions"] == ["nam"], scope
    assert {"contoso", "fabrikam"} <= set(scope["tenants"]) and "woodgrove" not in scope["tenants"], scope
    assert scope["peakFailureShare"] >= 0.5 and issue["evidence"]["failures"] >= 8, issue
    overview = call(srv, token, doc, "GET", "/api/v1/health/overview", "/api/v1/health/overview")
    assert overview["services"][0] == {"service": "Inbound mail flow", "status": "serviceInterruption",
                                       "issues": [iid]}, overview
    # The CLI reads the same issue from the store.
    stored = {i["id"]: i for i in cli_issues(srv, "issues", "--json")}
    assert stored[iid]["title"] == issue["title"] and stored[iid]["signature"] == issue["signature"]

    # The admins take it from there: an update, the restore, the review (the monitor's draft).
    call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/posts", "/api/v1/health/issues/{id}/posts",
         {"text": "We're moving NAMPR01's sessions to a second front end."})
    call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/review", "/api/v1/health/issues/{id}/review",
         {}, expect=409)
    r = call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/status", "/api/v1/health/issues/{id}/status",
             {"status": "serviceRestored"})
    assert r["isResolved"] and r["endDateTime"]
    r = call(srv, token, doc, "POST", f"/api/v1/health/issues/{iid}/review", "/api/v1/health/issues/{id}/review")
    review = r["posts"][-1]
    assert review["postType"] == "postIncidentReview" and review["author"] == "api:alice"
    assert review["description"].startswith(f"Post-incident review for {iid}: ")
    assert "NAMPR01" in review["description"] and "421 4.3.2" in review["description"]
    (shown,) = cli_issues(srv, "show", iid, "--json")
    assert shown["status"] == "postIncidentReviewPublished"
    for h in holders:
        h.close()
    assert srv.running(), srv.stderr()
