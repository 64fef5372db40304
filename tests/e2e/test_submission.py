"""Submission with AUTH (issue 14): real clients log in on the STARTTLS (587-style) and implicit-TLS
(465-style) listeners with PLAIN, LOGIN (smtplib, swaks) and SCRAM-SHA-256 (scramp), then relay; and
everything a client can get wrong is answered precisely: AUTH before TLS, bad base64, an overlong
line, a wrong password, a foreign sender, a source that keeps failing."""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
import subprocess
import time

import pytest
from scramp import ScramClient

from mailflow_testlib.processes import free_port

PASSWORD = "correct horse battery"
USER = "alice@contoso.test"


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's generated self-signed pair
    return ctx


def _ports(srv) -> tuple[int, int]:
    out = srv.stdout_path.read_text()
    starttls = int(re.search(r"mailflow: submission on 127\.0\.0\.1:(\d+)", out).group(1))
    implicit = int(re.search(r"mailflow: submission \(implicit TLS\) on 127\.0\.0\.1:(\d+)", out).group(1))
    return starttls, implicit


@pytest.fixture
def sub(mailflow_server):
    """A server with both submission listeners, three failures allowed, and alice as a user."""
    srv = mailflow_server({
        "submission": {"starttls": ["127.0.0.1:0"], "implicit_tls": ["127.0.0.1:0"], "max_failures": 3,
                       "lockout": "10m"},
        # Relayed mail must not reach the machine's resolver: a silent loopback port.
        "dns": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s", "attempts": 1},
    })
    r = srv.cli("user", "add", USER, "--password-stdin", input_text=PASSWORD + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "added alice@contoso.test (tenant contoso)" in r.stdout
    srv.sub_port, srv.subs_port = _ports(srv)
    return srv


def _starttls_client(port: int) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("client.test")
    s.starttls(context=_tls())
    s.ehlo("client.test")
    return s


def _message(sender: str, to: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: submitted\r\n\r\nhello\r\n").encode()


def test_plain_after_starttls_then_relay_and_local_delivery(sub):
    s = smtplib.SMTP("127.0.0.1", sub.sub_port, timeout=30)
    s.ehlo("client.test")
    assert "auth" not in s.esmtp_features, "AUTH must not be offered before TLS"
    assert s.has_extn("starttls")
    s.starttls(context=_tls())
    s.ehlo("client.test")
    assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    code, msg = s.login(USER, PASSWORD)  # smtplib picks PLAIN
    assert code == 235 and b"2.7.0" in msg
    refused = s.sendmail(USER, ["bob@contoso.test", "someone@elsewhere.test"], _message(USER, "bob@contoso.test"))
    assert refused == {}
    s.quit()
    box = sub.data_dir / "mailboxes" / "contoso.test" / "bob" / "new"
    deadline = time.time() + 20
    while time.time() < deadline and not list(box.glob("*")):
        time.sleep(0.1)
    files = list(box.glob("*"))
    assert files, "the submitted message did not reach bob's Maildir"
    text = files[0].read_text()
    assert re.search(r"with ESMTPSA", text), text[:400]
    # Submitted without Date and Message-ID: both were added (RFC 6409 §8.3, RFC 5322 §3.6).
    assert re.search(r"^Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$", text, re.M), text[:600]
    assert re.search(r"^Message-ID: <[^>]+@mx\.example\.test>$", text, re.M), text[:600]
    # The relayed copy waits in the queue for elsewhere.test (no DNS answers): it was accepted.
    out = sub.cli("queue", "list").stdout
    assert "someone@elsewhere.test" in out, out


def test_login_mechanism_with_smtplib(sub):
    s = _starttls_client(sub.sub_port)
    s.user, s.password = USER, PASSWORD
    code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
    assert code == 235
    s.quit()


def test_scram_sha256_with_scramp(sub):
    s = _starttls_client(sub.sub_port)
    client = ScramClient(["SCRAM-SHA-256"], USER, PASSWORD)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    code, reply = s.docmd("AUTH", "SCRAM-SHA-256 " + first)
    assert code == 334, reply
    client.set_server_first(base64.b64decode(reply).decode())
    code, reply = s.docmd(base64.b64encode(client.get_client_final().encode()).decode())
    assert code == 334, reply
    client.set_server_final(base64.b64decode(reply).decode())  # raises if the server's proof is wrong
    code, reply = s.docmd("")
    assert code == 235, reply
    code, _ = s.mail(USER)
    assert code == 250
    s.quit()


def test_scram_with_a_wrong_password_fails(sub):
    s = _starttls_client(sub.sub_port)
    client = ScramClient(["SCRAM-SHA-256"], USER, "wrong password!")
    code, reply = s.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(client.get_client_first().encode()).decode())
    client.set_server_first(base64.b64decode(reply).decode())
    code, reply = s.docmd(base64.b64encode(client.get_client_final().encode()).decode())
    assert (code, reply[:5]) == (535, b"5.7.8")
    s.quit()


def test_implicit_tls_listener(sub):
    s = smtplib.SMTP_SSL("127.0.0.1", sub.subs_port, context=_tls(), timeout=30)
    s.ehlo("client.test")
    assert not s.has_extn("starttls"), "STARTTLS inside TLS"
    assert "PLAIN" in s.esmtp_features["auth"]
    s.login(USER, PASSWORD)
    assert s.sendmail(USER, ["bob@contoso.test"], _message(USER, "bob@contoso.test")) == {}
    s.quit()


def test_swaks_plain_and_login(sub, need_tool):
    swaks = need_tool("swaks")
    for mech in ("PLAIN", "LOGIN"):
        r = subprocess.run(
            [swaks, "--server", f"127.0.0.1:{sub.sub_port}", "--tls", "--auth", mech, "--auth-user", USER,
             "--auth-password", PASSWORD, "--from", USER, "--to", "bob@contoso.test", "--helo", "client.test"],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "235 2.7.0 Authentication successful" in r.stdout


def _raw(port: int, *lines: bytes, tls: bool = True) -> list[str]:
    """Sends each line and returns the reply to each (after STARTTLS when `tls`)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = sock.makefile("rb")

    def reply() -> str:
        out = []
        while True:
            line = f.readline().decode()
            out.append(line)
            if len(line) < 4 or line[3] != "-":
                return "".join(out)

    reply()
    if tls:
        sock.sendall(b"EHLO c.test\r\n")
        reply()
        sock.sendall(b"STARTTLS\r\n")
        assert reply().startswith("220")
        sock = _tls().wrap_socket(sock)
        f = sock.makefile("rb")
    answers = []
    for line in lines:
        sock.sendall(line + b"\r\n")
        answers.append(reply())
    sock.close()
    return answers


def test_auth_and_mail_before_tls_need_starttls(sub):
    a = _raw(sub.sub_port, b"EHLO c.test", b"AUTH PLAIN AGFsaWNlQGNvbnRvc28udGVzdABwdw==", b"MAIL FROM:<x@contoso.test>",
             tls=False)
    assert "AUTH" not in a[0]
    assert a[1].startswith("530 5.7.0 Must issue a STARTTLS command first")
    assert a[2].startswith("530 5.7.0 Authentication required")


def test_bad_input_inside_tls(sub):
    a = _raw(sub.sub_port, b"EHLO c.test", b"AUTH PLAIN !!!notbase64", b"AUTH PLAIN " + b"A" * 13_000,
             b"AUTH CRAM-MD5", b"AUTH PLAIN", b"*", b"AUTH LOGIN", b"@@@", b"MAIL FROM:<x@contoso.test>", b"NOOP",
             b"AUTH PLAIN " + b"A" * 10_000, b"NOOP " + b"x" * 600)
    assert a[1].startswith("501 5.5.2 Invalid base64"), a[1]
    assert a[2].startswith("500 5.5.2 Line too long, the limit is 12288 octets"), a[2]
    assert a[3].startswith("504 5.5.4"), a[3]
    assert a[4].startswith("334 "), a[4]
    assert a[5].startswith("501 5.0.0 Authentication cancelled"), a[5]
    assert a[6].startswith("334 VXNlcm5hbWU6"), a[6]
    assert a[7].startswith("501 5.5.2"), a[7]
    assert a[8].startswith("530 5.7.0"), a[8]
    assert a[9].startswith("250"), "the session goes on"
    # 10,000 octets fit an AUTH line (RFC 4954: 12,288), but they are not user NUL password.
    assert a[10].startswith("501 5.5.2 Malformed authentication response"), a[10]
    assert a[11].startswith("500 5.5.2 Line too long, the limit is 512 octets"), "other commands keep 512"


def test_unknown_user_and_wrong_password_get_the_same_answer(sub):
    def plain(user: str, password: str) -> bytes:
        return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode())

    wrong, = _raw(sub.sub_port, b"EHLO c.test", plain(USER, "not it at all"))[1:]
    unknown, = _raw(sub.sub_port, b"EHLO c.test", plain("nobody@contoso.test", PASSWORD))[1:]
    assert wrong == unknown == "535 5.7.8 Authentication credentials invalid\r\n"


def test_repeated_failures_lock_the_source_out(sub):
    def plain(password: str) -> bytes:
        return b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{password}".encode())

    started = time.monotonic()
    a = _raw(sub.sub_port, b"EHLO c.test", plain("bad one"), plain("bad two"), plain("bad three"))
    took = time.monotonic() - started
    assert a[1].startswith("535 5.7.8") and a[2].startswith("535 5.7.8")
    assert took >= 3.0, f"failures are answered after 1 s, then 2 s ({took:.1f} s)"
    assert a[3].startswith("421 4.7.0 Too many failed authentication attempts")
    # Locked out: even the right password is refused, on a new connection.
    b = _raw(sub.sub_port, b"EHLO c.test", plain(PASSWORD))
    assert b[1].startswith("421 4.7.0"), b[1]
    deadline = time.time() + 10
    while time.time() < deadline:
        out = sub.cli("limits").stdout
        if "auth_failures" in out:
            break
        time.sleep(0.5)
    assert "auth_failures" in out, out


def test_a_user_sends_only_as_its_tenant(sub):
    s = _starttls_client(sub.sub_port)
    s.login(USER, PASSWORD)
    code, msg = s.mail("ceo@fabrikam.test")
    assert code == 550 and msg.startswith(b"5.7.60"), msg
    code, _ = s.mail("bob@contoso.test")
    assert code == 250, "another address of the same tenant is fine"
    s.quit()


def test_port_25_offers_no_auth_and_refuses_relay(sub):
    a = _raw(sub.port, b"EHLO c.test", b"AUTH PLAIN AGEAYg==", b"MAIL FROM:<a@contoso.test>",
             b"RCPT TO:<x@elsewhere.test>")
    assert "AUTH" not in a[0]
    assert a[1].startswith("503 5.5.1 Authentication not enabled"), a[1]
    assert a[3].startswith("550 5.7.1"), a[3]


def test_user_cli(sub):
    r = sub.cli("user", "add", "x@nowhere.test", "--password-stdin", input_text=PASSWORD + "\n")
    assert r.returncode != 0 and "nowhere.test is not a domain of any tenant" in r.stderr
    r = sub.cli("user", "add", "carol@contoso.test", "--password-stdin", input_text="short\n")
    assert r.returncode != 0 and "at least 8 characters" in r.stderr
    r = sub.cli("user", "add", USER, "--password-stdin", input_text=PASSWORD + "\n")
    assert r.returncode != 0 and "already exists" in r.stderr
    listing = sub.cli("user", "list").stdout
    assert re.search(r"alice@contoso\.test\s+contoso", listing), listing
    r = sub.cli("user", "passwd", USER, "--password-stdin", input_text="a brand new password\n")
    assert r.returncode == 0, r.stderr
    s = _starttls_client(sub.sub_port)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(USER, PASSWORD)
    s.close()
    s = _starttls_client(sub.sub_port)
    assert s.login(USER, "a brand new password")[0] == 235
    s.close()
    assert sub.cli("user", "remove", USER).returncode == 0
    assert "no users" in sub.cli("user", "list").stdout
    # No password, old or new, reached the logs or the database.
    logs = sub.stderr() + sub.stdout_path.read_text()
    assert PASSWORD not in logs and "a brand new password" not in logs
    assert PASSWORD.encode() not in (sub.data_dir / "queue.sqlite").read_bytes()


def test_per_user_message_rate_and_daily_recipients(mailflow_server):
    srv = mailflow_server({
        "submission": {"starttls": ["127.0.0.1:0"], "implicit_tls": [], "messages_per_minute": 2,
                       "recipients_per_day": 3},
        "dns": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s", "attempts": 1},
    })
    assert srv.cli("user", "add", USER, "--password-stdin", input_text=PASSWORD + "\n").returncode == 0
    port = int(re.search(r"mailflow: submission on 127\.0\.0\.1:(\d+)", srv.stdout_path.read_text()).group(1))
    s = _starttls_client(port)
    s.login(USER, PASSWORD)
    assert s.mail(USER)[0] == 250
    codes = [s.rcpt(r)[0] for r in ("bob@contoso.test", "x@elsewhere.test", "y@elsewhere.test")]
    assert codes == [250, 250, 250]
    code, msg = s.rcpt("z@elsewhere.test")
    assert (code, msg[:5]) == (554, b"5.2.0"), msg
    s.rset()
    assert s.mail(USER)[0] == 250, "the second message of the minute"
    s.rset()
    code, msg = s.mail(USER)
    assert (code, msg[:5]) == (450, b"4.7.1"), msg
    assert b"exceeded 2 messages a minute" in msg
    s.quit()
    deadline = time.time() + 10
    while time.time() < deadline:
        out = srv.cli("limits").stdout
        if "user_message_rate" in out and "user_recipients_per_day" in out:
            break
        time.sleep(0.5)
    assert "user_message_rate" in out and "user_recipients_per_day" in out, out


def test_users_through_the_admin_api_then_auth(sub):
    import json as _json
    operator = sub.add_token("ops")
    r = sub.cli("admin", "token", "add", "fab-admin", "--tenant", "fabrikam")
    assert r.returncode == 0, r.stderr
    tenant_token = r.stdout.strip()
    body = _json.dumps({"username": "Carol@Contoso.test", "password": "carol's long password"}).encode()
    status, _, out = sub.api("POST", "/api/v1/users", token=operator, body=body,
                             headers={"Content-Type": "application/json"})
    assert status == 201, out
    assert _json.loads(out)["username"] == "carol@contoso.test" and b"password\":" not in out
    # fabrikam's admin neither sees contoso's users nor adds one.
    status, _, out = sub.api("GET", "/api/v1/users", token=tenant_token)
    assert status == 200 and _json.loads(out) == {"users": []}, out
    status, _, out = sub.api("POST", "/api/v1/users", token=tenant_token,
                             body=_json.dumps({"username": "eve@contoso.test", "password": "long enough!"}).encode(),
                             headers={"Content-Type": "application/json"})
    assert status == 403, out
    status, _, _ = sub.api("DELETE", "/api/v1/users/carol@contoso.test", token=tenant_token)
    assert status == 404
    # The new user logs in on the submission port.
    s = _starttls_client(sub.sub_port)
    assert s.login("carol@contoso.test", "carol's long password")[0] == 235
    s.quit()
    status, _, _ = sub.api("DELETE", "/api/v1/users/carol@contoso.test", token=operator)
    assert status == 200
    s = _starttls_client(sub.sub_port)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.login("carol@contoso.test", "carol's long password")
    s.close()


def test_a_tenant_can_keep_its_users_addresses_out_of_received(mailflow_server):
    srv = mailflow_server({
        "submission": {"starttls": ["127.0.0.1:0"]},
        "dns": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s", "attempts": 1},
        "tenants": [{"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"],
                     "hide_client_address": True}],
    })
    assert srv.cli("user", "add", USER, "--password-stdin", input_text=PASSWORD + "\n").returncode == 0
    port = int(re.search(r"mailflow: submission on 127\.0\.0\.1:(\d+)", srv.stdout_path.read_text()).group(1))
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("alices-laptop.home")
    s.starttls(context=_tls())
    s.ehlo("alices-laptop.home")
    s.login(USER, PASSWORD)
    assert s.sendmail(USER, ["bob@contoso.test"], _message(USER, "bob@contoso.test")) == {}
    s.quit()
    box = srv.data_dir / "mailboxes" / "contoso.test" / "bob" / "new"
    deadline = time.time() + 20
    while time.time() < deadline and not list(box.glob("*")):
        time.sleep(0.1)
    text = next(box.glob("*")).read_text()
    received = text.split("Received: ", 1)[1].split(";", 1)[0]
    assert received.startswith("by mx.example.test (Mailflow) with ESMTPSA"), received
    assert "127.0.0.1" not in text and "alices-laptop" not in text, text[:500]
    # The trace keeps the address for the administrator.
    queue_id = re.search(r"\bid ([0-9A-Z]{16})\b", text).group(1)
    assert "client=127.0.0.1" in srv.cli("queue", "show", queue_id).stdout


def test_a_long_password_fits_an_auth_line(sub):
    password = "p" * 1000
    r = sub.cli("user", "add", "long@contoso.test", "--password-stdin", input_text=password + "\n")
    assert r.returncode == 0, r.stderr
    s = _starttls_client(sub.sub_port)
    assert s.login("long@contoso.test", password)[0] == 235  # PLAIN with a 1.4 KB initial response
    s.quit()


def test_an_unknown_users_scram_salt_survives_a_restart(sub):
    def server_first(user: str) -> str:
        s = _starttls_client(sub.sub_port)
        client = ScramClient(["SCRAM-SHA-256"], user, "whatever it is")
        code, reply = s.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(client.get_client_first().encode()).decode())
        assert code == 334, reply
        s.close()
        fields = dict(f.split("=", 1) for f in base64.b64decode(reply).decode().split(","))
        return fields["s"], fields["i"]

    ghost, real = server_first("ghost@contoso.test"), server_first(USER)
    assert ghost == server_first("ghost@contoso.test"), "the same name gets the same salt"
    sub.stop()
    sub.start()
    sub.sub_port, sub.subs_port = _ports(sub)
    assert server_first("ghost@contoso.test") == ghost, "an unknown user's salt changed across a restart"
    assert server_first(USER) == real
    assert ghost[1] == real[1], "the same iteration count as a real user's"


def test_the_header_from_must_be_the_users_tenant_too(sub):
    s = _starttls_client(sub.sub_port)
    s.login(USER, PASSWORD)
    spoof = b"From: CEO <ceo@fabrikam.test>\r\nTo: <bob@contoso.test>\r\nSubject: wire money\r\n\r\nnow\r\n"
    with pytest.raises(smtplib.SMTPDataError) as e:
        s.sendmail(USER, ["bob@contoso.test"], spoof)
    assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.60"), e.value.smtp_error
    s.rset()
    display = b'From: "ceo@fabrikam.test" <alice@contoso.test>\r\nTo: <bob@contoso.test>\r\nSubject: ok\r\n\r\nhi\r\n'
    assert s.sendmail(USER, ["bob@contoso.test"], display) == {}, "the address, not the display name, counts"
    s.quit()


def test_forged_authentication_results_are_removed_from_submitted_mail_too(sub):
    s = _starttls_client(sub.sub_port)
    s.login(USER, PASSWORD)
    forged = (b"Authentication-Results: mx.example.test; dmarc=pass header.from=fabrikam.test\r\n"
              b"Authentication-Results: other.example; spf=pass\r\n" + _message(USER, "bob@contoso.test"))
    assert s.sendmail(USER, ["bob@contoso.test"], forged) == {}
    s.quit()
    box = sub.data_dir / "mailboxes" / "contoso.test" / "bob" / "new"
    deadline = time.time() + 20
    while time.time() < deadline and not list(box.glob("*")):
        time.sleep(0.1)
    text = next(box.glob("*")).read_text()
    assert re.findall(r"^Authentication-Results: ([^;]*);", text, re.M) == ["other.example"], text[:500]
