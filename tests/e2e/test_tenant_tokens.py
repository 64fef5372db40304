"""Tenant-scoped admin tokens against a running server: two tenants send and receive mail; the
contoso token (`mailflow admin token add NAME --tenant contoso`) sees contoso's trace and queue
only, another tenant's message is 404, the operator-only endpoints are 403 without naming anything,
and its web session has the tenant's pages only. The CLI refuses a tenant the configuration does
not have and lists each token's scope."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from mfutil import send_mail, wait_for

SCOPED = "this admin token is scoped to one tenant: this needs an operator token"


def tenant(name):
    return {
        "name": name, "domains": [f"{name}.test"], "mailboxes": ["alice", "bob"],
        # Nothing listens on port 1: relayed mail is deferred and stays queued.
        "outbound_connector": {"smart_host": "127.0.0.1:1", "tls": "disabled"},
    }


@pytest.fixture(scope="module")
def two_tenants(tmp_path_factory):
    from conftest import _factory, _teardown
    start, servers = _factory(tmp_path_factory.mktemp("tenant-tokens"))
    srv = start({
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_intervals": ["1h"], "concurrency": 4},
        "tenants": [tenant("contoso"), tenant("fabrikam")],
    })
    operator = srv.add_token("ops")
    r = srv.cli("admin", "token", "add", "contoso-admin", "--tenant", "contoso")
    assert r.returncode == 0, r.stdout + r.stderr
    scoped = r.stdout.strip()
    assert scoped.startswith("mf_")
    # Each tenant receives one message and relays one that stays queued.
    ids = {}
    for t in ("contoso", "fabrikam"):
        ids[f"{t}-in"] = send_mail(srv, "someone@outside.test", [f"alice@{t}.test"], f"in-{t}")
        ids[f"{t}-out"] = send_mail(srv, f"bob@{t}.test", ["far@remote.test"], f"out-{t}")
    for t in ("contoso", "fabrikam"):
        qid = ids[f"{t}-out"]
        wait_for(lambda qid=qid: any(
            e["kind"] == "deferred" for e in srv.api_json("GET", f"/api/v1/queue/{qid}", operator)["events"]),
            what=f"a deferred attempt for {t}")
    yield srv, operator, scoped, ids
    _teardown(servers)


def test_the_cli_checks_the_tenant_and_lists_the_scope(two_tenants):
    srv, _, _, _ = two_tenants
    r = srv.cli("admin", "token", "add", "nobody-admin", "--tenant", "northwind")
    assert r.returncode != 0
    assert "no tenant named northwind" in r.stdout + r.stderr
    listing = srv.cli("admin", "token", "list").stdout
    assert re.search(r"^contoso-admin\s+\S+Z\s+\S+\s+tenant:contoso\s*$", listing, re.M), listing
    assert re.search(r"^ops\s+\S+Z\s+\S+\s+operator\s*$", listing, re.M), listing
    assert "nobody-admin" not in listing


def test_the_contoso_token_sees_contosos_trace_only(two_tenants):
    srv, operator, scoped, ids = two_tenants
    rows = srv.api_json("GET", "/api/v1/trace?since=1h", scoped)["rows"]
    seen = {r["queueID"] for r in rows}
    assert seen == {ids["contoso-in"], ids["contoso-out"]}, rows
    assert all(r["recipient"].endswith(("@contoso.test", "@remote.test")) for r in rows)
    assert srv.api_json("GET", "/api/v1/trace?since=1h&tenant=contoso", scoped)["rows"]
    status, _, body = srv.api("GET", "/api/v1/trace?tenant=fabrikam", scoped)
    assert status == 403 and b"fabrikam" not in body
    assert srv.api_json("GET", f"/api/v1/trace?queue_id={ids['fabrikam-in']}", scoped)["rows"] == []
    # The operator sees both tenants.
    everything = {r["queueID"] for r in srv.api_json("GET", "/api/v1/trace?since=1h", operator)["rows"]}
    assert set(ids.values()) <= everything


def test_the_contoso_token_sees_contosos_queue_only(two_tenants):
    srv, operator, scoped, ids = two_tenants
    queued = [m["id"] for m in srv.api_json("GET", "/api/v1/queue", scoped)["messages"]]
    assert queued == [ids["contoso-out"]]
    every = {m["id"] for m in srv.api_json("GET", "/api/v1/queue?state=all", scoped)["messages"]}
    assert every == {ids["contoso-in"], ids["contoso-out"]}
    mine = srv.api_json("GET", f"/api/v1/queue/{ids['contoso-out']}", scoped)
    assert mine["tenant"] == "contoso"
    for other in (ids["fabrikam-out"], ids["fabrikam-in"]):
        status, _, body = srv.api("GET", f"/api/v1/queue/{other}", scoped)
        assert status == 404, body
        assert json.loads(body)["error"]["message"] == f"no message with queue ID {other}"
        assert srv.api("POST", f"/api/v1/queue/{other}/hold", scoped)[0] == 404
        assert srv.api("DELETE", f"/api/v1/queue/{other}", scoped)[0] == 404
    assert srv.api_json("GET", f"/api/v1/queue/{ids['fabrikam-out']}", operator)["state"] == "queued"
    # Its own message: actions are allowed, traced under the token's name.
    held = srv.api_json("POST", f"/api/v1/queue/{ids['contoso-out']}/hold", scoped)
    assert held["actor"] == "api:contoso-admin"
    srv.api_json("POST", f"/api/v1/queue/{ids['contoso-out']}/release", scoped)


def test_operator_endpoints_are_forbidden_and_say_only_that(two_tenants):
    srv, operator, scoped, _ = two_tenants
    for method, path in [
        ("GET", "/api/v1/overview"), ("GET", "/api/v1/limits"), ("GET", "/api/v1/destinations"),
        ("GET", "/api/v1/tenants"), ("GET", "/api/v1/queue/shape"), ("GET", "/metrics"),
        ("POST", "/api/v1/health/issues/MF1/posts"), ("POST", "/api/v1/health/issues/MF1/status"),
        ("POST", "/api/v1/health/issues/MF1/review"),
    ]:
        status, headers, body = srv.api(method, path, scoped, body=b'{"text": "x"}' if method == "POST" else None,
                                        headers={"Content-Type": "application/json"})
        assert status == 403, (method, path, status, body)
        assert json.loads(body) == {"error": {"message": SCOPED}}, (method, path)
        assert headers.get("X-Frame-Options") == "DENY"
    assert srv.api("GET", "/api/v1/overview", operator)[0] == 200
    # Service health: reports for its own tenant, the tenant filled in.
    status, _, body = srv.api("POST", "/api/v1/health/reports", scoped,
                              body=b'{"region": "nam", "text": "mail is late"}',
                              headers={"Content-Type": "application/json"})
    assert status == 202 and json.loads(body)["tenant"] == "contoso", body
    status, _, _ = srv.api("POST", "/api/v1/health/reports", scoped,
                           body=b'{"tenant": "fabrikam", "region": "nam", "text": "mail is late"}',
                           headers={"Content-Type": "application/json"})
    assert status == 403
    assert srv.api("GET", "/api/v1/health/issues", scoped)[0] == 200
    assert srv.api("GET", "/api/v1/health/overview", scoped)[0] == 200


def sign_in(srv, token):
    status, headers, _ = srv.api("POST", "/login", body=urllib.parse.urlencode({"token": token}).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    cookie = headers["Set-Cookie"].split(";")[0]
    return headers["Location"], {"Cookie": cookie}


def test_the_web_session_has_the_tenants_pages_only(two_tenants):
    srv, _, scoped, ids = two_tenants
    home, session = sign_in(srv, scoped)
    assert home == "/trace"
    status, headers, _ = srv.api("GET", "/", headers=session)
    assert status == 303 and headers["Location"] == "/trace"
    status, _, body = srv.api("GET", "/trace?since=1h", headers=session)
    page = body.decode()
    assert status == 200
    assert ids["contoso-in"] in page and ids["fabrikam-in"] not in page
    assert 'href="/forests"' not in page and 'href="/"' not in page and 'href="/queue"' in page
    status, _, body = srv.api("GET", "/queue?state=all", headers=session)
    assert status == 200 and ids["contoso-out"] in body.decode() and ids["fabrikam-out"] not in body.decode()
    assert srv.api("GET", f"/queue/{ids['fabrikam-out']}", headers=session)[0] == 404
    status, _, body = srv.api("GET", "/forests", headers=session)
    assert status == 403 and b"fabrikam" not in body
    assert srv.api("GET", "/health", headers=session)[0] == 200
    assert srv.api("GET", "/health/report", headers=session)[0] == 200
