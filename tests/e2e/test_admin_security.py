"""The admin listener's security against a running server (issue 15): TLS with the generated pair
and with files of its own (Python's ssl and openssl s_client), the warning for plain HTTP off
loopback, read-only tokens (`mailflow admin token create --scope read-only`) refused on every
change in the API and the web pages, failed sign-ins throttled per source (growing delay, then 429
with Retry-After for further invalid tokens; a valid one still gets in) and the audit trail (`GET /api/v1/audit`, `mailflow admin
audit`) with who, from where, what and how it ended."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.parse

import pytest

from mfutil import HOSTNAME, send_mail, wait_for

ADMIN_TLS_RE = re.compile(r"mailflow: admin center on https://127\.0\.0\.1:(\d+)/")


def https_port(srv) -> int:
    m = ADMIN_TLS_RE.search(srv.stdout_path.read_text())
    assert m, srv.stdout_path.read_text()
    return int(m.group(1))


def https_get(port: int, path: str, cafile: str, token: str | None = None):
    ctx = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    # The certificate names the server's host name, not 127.0.0.1: check it against that name.
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=HOSTNAME)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


def test_admin_tls_with_the_generated_pair(mailflow_server, need_tool):
    need_tool("openssl")
    srv = mailflow_server({"admin": {"listen": "127.0.0.1:0", "tls": "generated"}})
    assert srv.admin_url is None  # not plain http
    port = https_port(srv)
    cert = srv.data_dir / "tls" / "cert.pem"
    token = srv.add_token("ops")
    status, _, body = https_get(port, "/healthz", str(cert))
    assert (status, body) == (200, b"ok\n")
    status, _, body = https_get(port, "/api/v1/overview", str(cert), token)
    assert status == 200 and json.loads(body)["hostname"] == HOSTNAME
    # A client that does not trust the pair is refused by its own check: the server presents it.
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(port, "/healthz", "/etc/ssl/certs/ca-certificates.crt")
    # openssl s_client: TLS 1.3, the generated certificate.
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOSTNAME, "-CAfile", str(cert),
         "-verify_return_error", "-brief"], input="", capture_output=True, text=True, timeout=20)
    both = out.stdout + out.stderr
    assert "Protocol version: TLSv1.3" in both, both
    assert "Verification: OK" in both, both
    # Plain HTTP on the TLS port gets no HTTP answer.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        try:
            data = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            data = b""
        assert not data.startswith(b"HTTP/"), data
    # The sign-in cookie is Secure over TLS.
    ctx = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname=HOSTNAME)
    conn.request("POST", "/login", body=urllib.parse.urlencode({"token": token}),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    r.read()
    assert r.status == 303
    assert "; Secure" in r.getheader("Set-Cookie"), r.getheader("Set-Cookie")


def test_admin_tls_with_its_own_certificate(mailflow_server, tmp_path, need_tool):
    need_tool("openssl")
    cert, key = tmp_path / "admin.pem", tmp_path / "admin.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=admin.example.test", "-addext", "subjectAltName=DNS:admin.example.test",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o600)
    srv = mailflow_server({"admin": {"listen": "127.0.0.1:0", "tls": {"certificate": str(cert), "key": str(key)}}})
    port = https_port(srv)
    ctx = ssl.create_default_context(cafile=str(cert))
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="admin.example.test") as s:
        presented = s.getpeercert(binary_form=True)
    assert presented == ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_plain_http_off_loopback_is_warned(mailflow_server):
    # Bound on every IPv4 address, talked to only on loopback.
    srv = mailflow_server({"admin": {"listen": "0.0.0.0:0"}})
    wait_for(lambda: "is not on loopback and is plain HTTP" in srv.stderr(), timeout=10, what="the warning")
    srv2 = mailflow_server({"admin": {"listen": "127.0.0.1:0"}})
    assert "plain HTTP" not in srv2.stderr()


def test_read_only_tokens_read_and_are_refused_every_change(mailflow_server):
    srv = mailflow_server({
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_intervals": ["1h"], "concurrency": 4},
        # Nothing listens on port 1: relayed mail is deferred and stays queued (no DNS asked).
        "tenants": [{"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"],
                     "outbound_connector": {"smart_host": "127.0.0.1:1", "tls": "disabled"}}],
    })
    operator = srv.add_token("ops")
    r = srv.cli("admin", "token", "create", "viewer", "--scope", "read-only")
    assert r.returncode == 0, r.stdout + r.stderr
    viewer = r.stdout.strip()
    assert viewer.startswith("mf_")
    bad = srv.cli("admin", "token", "create", "x", "--scope", "admin")
    assert bad.returncode != 0 and "--scope admin is not read-only or operator" in bad.stdout + bad.stderr
    listing = srv.cli("admin", "token", "list").stdout
    assert re.search(r"^viewer\s+\S+Z\s+\S+\s+read-only\s*$", listing, re.M), listing
    assert re.search(r"^ops\s+\S+Z\s+\S+\s+operator\s*$", listing, re.M), listing
    # A relayed message to a port nobody listens on stays queued.
    qid = send_mail(srv, "bob@contoso.test", ["far@remote.test"], "read-only")
    status, _, body = srv.api("GET", f"/api/v1/queue/{qid}", viewer)
    assert status == 200 and json.loads(body)["id"] == qid
    assert srv.api("GET", "/metrics", viewer)[0] == 200
    for method, path in [("POST", f"/api/v1/queue/{qid}/hold"), ("POST", f"/api/v1/queue/{qid}/bounce"),
                         ("DELETE", f"/api/v1/queue/{qid}"), ("POST", "/api/v1/users"),
                         ("DELETE", "/api/v1/users/alice@contoso.test"), ("POST", "/api/v1/health/reports")]:
        status, _, body = srv.api(method, path, viewer, body=b"{}", headers={"Content-Type": "application/json"})
        assert status == 403, (method, path, status, body)
        assert json.loads(body)["error"]["message"] == "this admin token is read-only: this needs an operator token"
    assert json.loads(srv.api("GET", f"/api/v1/queue/{qid}", operator)[2])["state"] != "held"
    # The web pages: signed in with the read-only token, a form post is the 403 page.
    status, headers, _ = srv.api("POST", "/login", body=urllib.parse.urlencode({"token": viewer}).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    cookie = headers["Set-Cookie"].split(";")[0]
    status, _, page = srv.api("GET", f"/queue/{qid}", headers={"Cookie": cookie})
    assert status == 200
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    status, _, page = srv.api("POST", f"/queue/{qid}/hold", body=f"csrf={csrf}".encode(),
                              headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and b"this admin token is read-only" in page
    assert json.loads(srv.api("GET", f"/api/v1/queue/{qid}", operator)[2])["state"] != "held"
    # The operator token still acts, and the trail has both: the refusal and the hold.
    assert srv.api("POST", f"/api/v1/queue/{qid}/hold", operator)[0] == 200
    events = srv.api_json("GET", "/api/v1/audit", operator)["events"]
    hold = events[0]
    assert (hold["actor"], hold["method"], hold["path"], hold["target"], hold["status"], hold["result"],
            hold["source"]) == ("api:ops", "POST", f"/api/v1/queue/{qid}/hold", qid, 200, "ok", "127.0.0.1")
    web = [e for e in events if e["actor"] == "web:viewer" and e["path"] == f"/queue/{qid}/hold"]
    assert web and web[0]["status"] == 403 and web[0]["result"] == "refused"
    refused = [e for e in events if e["actor"] == "api:viewer"]
    assert len(refused) == 6 and all(e["status"] == 403 for e in refused)
    # The CLI shows the same trail.
    out = srv.cli("admin", "audit", "--limit", "1")
    assert out.returncode == 0, out.stderr
    assert re.search(rf"api:ops\s+127\.0\.0\.1\s+POST\s+/api/v1/queue/{qid}/hold\s+{qid}\s+200\s+ok", out.stdout), \
        out.stdout
    as_json = json.loads(srv.cli("admin", "audit", "--json", "--actor", "web:viewer").stdout)
    assert {e["result"] for e in as_json} >= {"signed-in", "refused"}
    # A tenant admin's token cannot read the trail.
    r = srv.cli("admin", "token", "add", "contoso-admin", "--tenant", "contoso")
    assert srv.api("GET", "/api/v1/audit", r.stdout.strip())[0] == 403


def test_failed_sign_ins_are_throttled_per_source(mailflow_server):
    srv = mailflow_server({"admin": {"listen": "127.0.0.1:0", "signin_failures": 4, "signin_window": "60s"}})
    operator = srv.add_token("ops")
    took = []
    for i in range(4):
        t = time.monotonic()
        status, headers, _ = srv.api("GET", "/api/v1/overview", f"mf_guess{i}")
        took.append(time.monotonic() - t)
        assert status == 401
    # No delay for the first half of the limit, then a growing one (250 ms, 500 ms).
    assert took[0] < 0.2 and took[1] < 0.2, took
    assert 0.25 <= took[2] < 1.5 and 0.5 <= took[3] < 2.0, took
    # Closed: a further guess, by bearer or web sign-in, is 429 with Retry-After, answered at once.
    t = time.monotonic()
    status, headers, body = srv.api("GET", "/api/v1/overview", "mf_guess9")
    assert status == 429, (status, body)
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert time.monotonic() - t < 0.5
    status, headers, page = srv.api("POST", "/login", body=b"token=mf_guess10",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert b"Too many failed sign-ins" in page
    # A valid token from the same address still gets in: sharing a source must not lock it out.
    assert srv.api("GET", "/api/v1/overview", operator)[0] == 200
    # The trail has the four failures, the last one as the throttle; the 429s add nothing.
    events = srv.api_json("GET", "/api/v1/audit", operator)["events"]
    results = [e["result"] for e in events if e["actor"] == "-"]
    assert results == ["throttled", "refused", "refused", "refused"], events
    assert all(e["source"] == "127.0.0.1" and e["status"] == 401 for e in events if e["actor"] == "-")
    assert "admin sign-ins throttled: 4 failures within 60 s" in srv.stderr()
    # The server is still serving mail and health checks.
    assert srv.api("GET", "/healthz")[0] == 200
