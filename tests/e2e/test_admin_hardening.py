"""The admin listener against hostile probes (issue 10, item 11), on a running server: every response,
errors included, carries the security headers docs/admin.md promises; HEAD is answered on every GET
route without a body; authentication comes before anything about a path or its methods is told; no
page shows an empty notice box or the literal text `nil`."""

from __future__ import annotations

import http.client
import re

import pytest
import yaml

from mfutil import REPO_ROOT, send_mail, wait_for

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_SUCH_MESSAGE = "0000000000000000"


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    """A server, an admin token, a signed-in session cookie and a message that is queued for an hour."""
    from conftest import _factory, _teardown
    start, servers = _factory(tmp_path_factory.mktemp("admin-hardening"))
    srv = start({
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_intervals": ["1h"]},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice"]},
            {"name": "src", "domains": ["src.test"], "mailboxes": ["sender"],
             # Nothing listens on port 1: the message is deferred and stays queued.
             "outbound_connector": {"smart_host": "127.0.0.1:1", "tls": "disabled"}},
        ],
    })
    token = srv.add_token("alice")
    status, headers, _ = srv.api("POST", "/login", body=f"token={token}".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303, status
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("mailflow_session=")
    qid = send_mail(srv, "sender@src.test", ["far@remote.test"], "hardening")
    wait_for(lambda: srv.api_json("GET", f"/api/v1/queue/{qid}", token)["attempts"] >= 1, what="a first attempt")
    yield srv, token, cookie, qid
    _teardown(servers)


def credentials(kind: str, token: str, cookie: str) -> dict:
    return {"none": {}, "token": {"Authorization": f"Bearer {token}"}, "bad-token": {"Authorization": "Bearer mf_x"},
            "session": {"Cookie": cookie}}[kind]


def raw(srv, method: str, path: str, headers: dict | None = None):
    """One request on its own connection with http.client, which reads no body after a HEAD: (status, headers,
    body, a follow-up GET /healthz on the same connection). Body bytes wrongly sent after a HEAD response
    would be read as the next response's status line."""
    host, port = srv.admin_url.split("//")[1].rstrip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        c.request("GET", "/healthz")
        after = c.getresponse()
        return r.status, {k: v for k, v in r.getheaders()}, body, (after.status, after.read())
    finally:
        c.close()


@pytest.mark.parametrize("method,path,auth,expect", [
    ("GET", "/healthz", "none", 200),
    ("GET", "/login", "none", 200),
    ("GET", "/api/v1/overview", "token", 200),
    ("GET", "/api/v1/no-such-operation", "token", 404),           # the router's own 404
    ("GET", "/no-such-page", "session", 404),
    ("GET", "/api/v1/trace?status=bogus", "token", 400),          # HTTPError thrown by a handler
    ("GET", f"/api/v1/queue/{NO_SUCH_MESSAGE}", "token", 404),
    ("GET", f"/queue/{NO_SUCH_MESSAGE}", "session", 404),
    ("GET", "/api/v1/overview", "none", 401),                     # authentication
    ("GET", "/metrics", "bad-token", 401),
    ("POST", "/queue", "none", 401),
    ("POST", "/api/v1/overview", "token", 405),                   # a method the path does not have
    ("DELETE", "/healthz", "none", 405),
    ("POST", "/queue/{qid}/hold", "session", 403),                # a form without its CSRF token
    ("GET", "/forests", "none", 303),                             # sign in first
])
def test_every_response_carries_the_security_headers(hardened, method, path, auth, expect):
    srv, token, cookie, qid = hardened
    status, headers, body = srv.api(method, path.replace("{qid}", qid), headers=credentials(auth, token, cookie))
    assert status == expect, (status, body)
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)


def test_head_healthz_is_200_without_a_body(hardened):
    srv, *_ = hardened
    status, headers, body, after = raw(srv, "HEAD", "/healthz")
    assert status == 200 and body == b""
    assert headers.get("Content-Length") == "3", headers  # what GET would send: "ok\n"
    assert headers.get("X-Frame-Options") == "DENY"
    assert after == (200, b"ok\n")


def test_head_on_every_get_route_with_its_credential(hardened):
    srv, token, cookie, qid = hardened
    doc = yaml.safe_load((REPO_ROOT / "docs" / "openapi.yaml").read_text())
    # Every GET of the document but one on a service-health issue (none exists on this server) and
    # the diagnostics checks (they probe the target they are given; test_admin_diagnostics.py has them).
    api = [p.replace("{id}", qid) for p, item in doc["paths"].items()
           if "get" in item and p != "/healthz" and p != "/api/v1/health/issues/{id}"
           and not p.startswith("/api/v1/check/")]
    assert "/api/v1/overview" in api and "/metrics" in api and len(api) >= 9
    pages = ["/", "/queue", f"/queue/{qid}", "/trace", "/forests", "/health", "/health/report"]
    for path, auth in [(p, "token") for p in api] + [(p, "session") for p in pages]:
        h = credentials(auth, token, cookie)
        get_status, get_headers, get_body = srv.api("GET", path, headers=h)
        status, headers, body, after = raw(srv, "HEAD", path, h)
        assert get_status == 200 and get_body, (path, get_status)
        assert status == 200 and body == b"", (path, status, body)
        assert headers.get("Content-Type") == get_headers.get("Content-Type"), path
        assert headers.get("Content-Security-Policy") == SECURITY_HEADERS["Content-Security-Policy"], path
        assert after == (200, b"ok\n"), path
    # HEAD without the credential is refused as GET is.
    status, headers, body, _ = raw(srv, "HEAD", "/api/v1/overview")
    assert status == 401 and body == b"" and headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, headers, _, _ = raw(srv, "HEAD", "/queue")
    assert status == 303 and headers.get("Location") == "/login"


@pytest.mark.parametrize("method,path", [
    ("POST", "/api/v1/overview"), ("DELETE", "/metrics"), ("PUT", "/api/v1/queue"),
    ("PATCH", "/api/v1/queue/{qid}"), ("GET", "/api/v1/no-such-operation"), ("POST", "/api/v2/anything"),
    ("OPTIONS", "/api/v1/tenants"),
])
def test_api_without_a_token_is_401_whatever_the_method_or_path(hardened, method, path):
    srv, token, cookie, qid = hardened
    for auth in ("none", "bad-token"):
        status, headers, body = srv.api(method, path.replace("{qid}", qid), headers=credentials(auth, token, cookie))
        assert status == 401, (auth, status, body)
        assert headers.get("WWW-Authenticate", "").startswith("Bearer"), headers
        assert "Allow" not in headers, headers


def test_with_a_token_a_get_only_route_answers_405_with_allow(hardened):
    srv, token, _, qid = hardened
    status, headers, body = srv.api("POST", "/api/v1/overview", token)
    assert status == 405, body
    assert headers["Allow"] == "GET, HEAD"
    status, headers, _ = srv.api("PUT", f"/api/v1/queue/{qid}", token)
    assert status == 405 and headers["Allow"] == "GET, HEAD, DELETE"
    status, headers, _ = srv.api("GET", f"/api/v1/queue/{qid}/hold", token)
    assert status == 405 and headers["Allow"] == "POST"
    assert srv.api("GET", "/api/v1/no-such-operation", token)[0] == 404


def test_pages_without_a_session_never_reveal_routes(hardened):
    srv, _, cookie, qid = hardened
    for method, path in [("POST", "/queue"), ("PUT", "/"), ("DELETE", f"/queue/{qid}"), ("POST", "/no-such-page")]:
        status, headers, _ = srv.api(method, path)
        assert status == 401 and "Allow" not in headers, (method, path, status)
    for path in ("/no-such-page", f"/queue/{qid}/hold"):
        status, headers, _ = srv.api("GET", path)
        assert status == 303 and headers["Location"] == "/login", (path, status)
    # Signed in, the same requests are told apart.
    status, headers, _ = srv.api("POST", "/queue", headers={"Cookie": cookie})
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert srv.api("GET", "/no-such-page", headers={"Cookie": cookie})[0] == 404


def notice_boxes(html: str) -> list[str]:
    return re.findall(r'<p class="(?:notice|error)"[^>]*>(.*?)</p>', html, re.S)


def test_sign_in_page_has_no_nil_in_its_notice_box(hardened):
    srv, *_ = hardened
    for path in ("/login", "/login?error="):
        status, _, body = srv.api("GET", path)
        html = body.decode()
        assert status == 200
        assert notice_boxes(html) == [], notice_boxes(html)
        assert ">nil<" not in html
    # A refused sign-in still says why.
    status, _, body = srv.api("POST", "/login", body=b"token=mf_wrong",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and notice_boxes(body.decode()) == ["That token is not valid."]


def test_message_page_has_no_nil_in_its_notice_box(hardened):
    srv, _, cookie, qid = hardened
    for path in (f"/queue/{qid}", "/queue"):
        status, _, body = srv.api("GET", path, headers={"Cookie": cookie})
        html = body.decode()
        assert status == 200 and qid in html
        assert notice_boxes(html) == [], (path, notice_boxes(html))
        assert ">nil<" not in html
    # After an action, the notice says what was done.
    status, _, body = srv.api("GET", f"/queue/{qid}?done=hold", headers={"Cookie": cookie})
    assert status == 200 and notice_boxes(body.decode()) == ["Done: hold."]
