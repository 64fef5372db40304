"""LMTP mailbox delivery (RFC 2033) against a real Dovecot from Debian (docs/delivery.md, "LMTP").

Each test starts a throw-away Dovecot (`dovecot -c <conf>`) in a temporary folder, with LMTP on a
loopback port and a UNIX socket and IMAP on a loopback port, users in a passwd-file with known
passwords. Mailflow takes mail with smtplib for its local tenants and hands it to Dovecot over LMTP;
the test reads it back with imaplib, as a mail client would.

Dovecot knows alice@contoso.test and sender@src.test; Mailflow also accepts bob@contoso.test, whom
Dovecot does not know, so its LMTP refuses him (550 5.1.1) in the same transaction that delivers to
alice.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from mfutil import QUEUED_RE
from test_outbound import parse_dsn, queue_show, wait_for, wait_status

SENDER = "sender@src.test"
PASSWORDS = {"alice@contoso.test": "alice-secret", SENDER: "sender-secret", "carol@contoso.test": "carol-secret"}
# Carol's mailbox holds 1 KiB: Dovecot refuses a larger message after the final dot, for her alone.
EXTRA = {"carol@contoso.test": "userdb_quota_rule=*:storage=1K"}
MAIL_UID = 8  # Debian's `mail` user: Dovecot refuses uid 0 for mail
MAIL_GID = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dovecot:
    """A throw-away Dovecot: LMTP on 127.0.0.1:`lmtp_port` and `<base>/run/lmtp`, IMAP on `imap_port`."""

    def __init__(self, root: Path):
        self.root = root
        self.lmtp_port = free_port()
        self.imap_port = free_port()
        self.conf = root / "dovecot.conf"
        self.log = root / "dovecot.log"
        self.socket = root / "run" / "lmtp"
        for d in ("mail", "home"):
            (root / d).mkdir()
            os.chown(root / d, MAIL_UID, MAIL_GID)
        users = root / "users"
        users.write_text("".join(
            f"{u}:{{PLAIN}}{p}:{MAIL_UID}:{MAIL_GID}::{root}/home/{u}::{EXTRA.get(u, '')}\n"
            for u, p in PASSWORDS.items()))
        self.conf.write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {self.log}
instance_name = mf-lmtp-{root.name}
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = root
default_internal_group = root
# imap-login refuses root; Debian's package creates dovenull for it.
default_login_user = dovenull
first_valid_uid = {MAIL_UID}
mail_location = maildir:{root}/mail/%d/%n
mail_plugins = $mail_plugins quota
plugin {{
  quota = maildir:User quota
}}
# Quota is checked when the message is saved, after the final dot (not at RCPT), and a full mailbox
# is a permanent 552 5.2.2 (Dovecot's defaults, pinned here because the quota test relies on them).
lmtp_rcpt_check_quota = no
quota_full_tempfail = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")

    def start(self) -> None:
        # The master daemonizes: its output goes to the log, not to pipes a wait would hang on.
        r = subprocess.run(["dovecot", "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=20)
        assert r.returncode == 0, self.log_text()

        def listening():
            for port in (self.lmtp_port, self.imap_port):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
            return self.socket.exists()

        wait_for(listening, 10, lambda: f"Dovecot not listening:\n{self.log_text()}")

    def stop(self) -> None:
        pid_file = self.root / "run" / "master.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return

        def gone():
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True

        wait_for(gone, 10, "Dovecot did not stop")
        # The LMTP port must refuse now, or the "stopped" test would test nothing.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=1).close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def inbox(self, user: str) -> list[bytes]:
        """Every message in `user`'s INBOX, as IMAP gives it (LOGIN, SELECT, FETCH BODY.PEEK[])."""
        with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10) as imap:
            typ, _ = imap.login(user, PASSWORDS[user])
            assert typ == "OK"
            typ, data = imap.select("INBOX", readonly=True)
            assert typ == "OK", data
            typ, data = imap.search(None, "ALL")
            assert typ == "OK", data
            out = []
            for num in data[0].split():
                typ, parts = imap.fetch(num, "(BODY.PEEK[])")
                assert typ == "OK", parts
                out.append(parts[0][1])
            return out


@pytest.fixture
def dovecot(need_tool):
    need_tool("dovecot")
    # Not under pytest's tmp_path: its parents are 0700, and Dovecot's mail processes run as `mail`.
    root = Path(tempfile.mkdtemp(prefix="mf-dovecot-"))
    root.chmod(0o755)
    d = Dovecot(root)
    d.start()
    yield d
    print(f"--- Dovecot log ---\n{d.log_text()[-4000:]}")
    d.stop()
    shutil.rmtree(root, ignore_errors=True)


def config(lmtp, **delivery) -> dict:
    return {
        "server": {"hostname": "mx.mailflow.test"},
        # No DNS leaves the machine: nothing here should need it, and a stray lookup fails fast.
        "dns": {"servers": ["127.0.0.1:9"], "timeout": "1s", "attempts": 1},
        "delivery": {"retry_intervals": ["1s"], "expiry": "24h", "lmtp": lmtp, **delivery},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob", "carol"]},
            {"name": "src", "domains": ["src.test"], "mailboxes": ["sender"]},
        ],
    }


def message(token: str, to: str, body: list[str]) -> bytes:
    hdr = [
        f"From: Sender <{SENDER}>",
        f"To: <{to}>",
        f"Subject: lmtp {token}",
        "Date: Tue, 01 Dec 2026 10:00:00 +0000",
        f"Message-ID: <{token}@src.test>",
    ]
    return ("\r\n".join(hdr + ["", f"token={token}", *body, f"trailer-{token}-end"]) + "\r\n").encode()


def send(port: int, rcpts: list[str], msg: bytes, sender: str = SENDER) -> str:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=15) as s:
        s.ehlo()
        code, resp = s.mail(sender)
        assert code == 250, resp
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = s.data(msg)
        assert code == 250, resp
        m = QUEUED_RE.search(resp.decode())
        assert m, resp
        return m.group(1)


def wait_inbox(dc: Dovecot, user: str, token: str, timeout: float = 15.0) -> list[bytes]:
    return wait_for(lambda: [m for m in dc.inbox(user) if token.encode() in m], timeout,
                    lambda: f"no message {token} in {user}'s INBOX; Dovecot log:\n{dc.log_text()[-3000:]}")


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


@pytest.mark.parametrize("via", ["unix", "inet"])
def test_delivered_by_lmtp_and_read_back_over_imap(mailflow_server, dovecot, via):
    """Body byte for byte (dot-stuffed lines included), the original headers, Mailflow's Received
    stamp, and exactly one Return-Path: the one Dovecot writes from MAIL FROM."""
    lmtp = f"unix:{dovecot.socket}" if via == "unix" else {"address": f"inet:127.0.0.1:{dovecot.lmtp_port}",
                                                            "lhlo_name": "lmtp-client.mailflow.test"}
    srv = mailflow_server(config(lmtp))
    token = uuid.uuid4().hex
    body = [".leading dot", "..two dots", ".", "x" * 900, "tab\there"]
    msg = message(token, "alice@contoso.test", body)
    qid = send(srv.port, ["alice@contoso.test"], msg)
    shown = wait_status(srv, qid, "alice@contoso.test", "delivered")
    [got] = wait_inbox(dovecot, "alice@contoso.test", token)
    # What Mailflow accepted ends the message as Dovecot stored it, every line intact.
    assert got.endswith(msg), got[-400:]
    headers = header_block(got)
    assert headers.count(b"Return-Path:") == 1, headers
    assert headers.startswith(f"Return-Path: <{SENDER}>\r\n".encode()), headers
    parsed = email.message_from_bytes(got, policy=email.policy.compat32)
    assert parsed["Delivered-To"] == "alice@contoso.test"
    received = parsed.get_all("Received")
    assert any("by mx.mailflow.test" in r and qid in r for r in received), received
    assert any("with LMTP" in r for r in received), received
    assert parsed["Subject"] == f"lmtp {token}"
    # The trace names the mailbox server's own reply.
    [detail] = shown.events("delivered", "alice@contoso.test")
    assert detail.startswith("250 2.0.0 <alice@contoso.test>") and "Saved" in detail, detail
    where = f"unix:{dovecot.socket}" if via == "unix" else f"inet:127.0.0.1:{dovecot.lmtp_port}"
    assert f"LMTP {where}" in detail, detail
    # Dovecot's Received names the LHLO argument: `lhlo_name` when set, else the host name.
    lhlo = "lmtp-client.mailflow.test" if via == "inet" else "mx.mailflow.test"
    assert any(r.split()[:2] == ["from", lhlo] and "with LMTP" in r for r in received), received
    # Nothing went to Mailflow's own Maildir.
    assert not [p for p in (srv.data_dir / "mailboxes").rglob("*") if p.is_file()]


def test_one_recipient_refused_by_dovecot_fails_with_dsn_other_delivered(mailflow_server, dovecot):
    srv = mailflow_server(config(f"127.0.0.1:{dovecot.lmtp_port}"))
    token = uuid.uuid4().hex
    msg = message(token, "alice@contoso.test", ["hello"])
    qid = send(srv.port, ["alice@contoso.test", "bob@contoso.test"], msg)
    wait_status(srv, qid, "alice@contoso.test", "delivered")
    shown = wait_status(srv, qid, "bob@contoso.test", "failed")
    [reason] = shown.events("failed", "bob@contoso.test")
    assert reason.startswith("550 5.1.1 <bob@contoso.test> User doesn't exist"), reason
    wait_inbox(dovecot, "alice@contoso.test", token)
    # The DSN goes to the sender's mailbox, which is in Dovecot too, over LMTP.
    dsns = wait_for(lambda: [m for m in dovecot.inbox(SENDER) if b"multipart/report" in m], 15,
                    lambda: f"no DSN for {SENDER}: {queue_show(srv, qid).text}\n{dovecot.log_text()[-2000:]}")
    assert len(dsns) == 1, dsns
    raw = dsns[0]
    assert header_block(raw).startswith(b"Return-Path: <>\r\n"), raw[:300]
    dsn = parse_dsn(raw[raw.index(b"\r\n") + 2:])
    bob = dsn.recipient("bob@contoso.test")
    assert bob["action"] == "failed" and bob["status"] == "5.1.1", bob
    assert "User doesn't exist" in bob.get("diagnostic-code", ""), bob
    assert all("alice" not in r.get("final-recipient", "") for r in dsn.per_recipient), dsn.per_recipient
    assert token.encode() in dsn.returned
    # `mailflow queue destinations` lists the mailbox server beside the outbound destinations.
    def lmtp_row():
        r = srv.cli("queue", "destinations", "--json")
        assert r.returncode == 0, r.stderr
        rows = [d for d in json.loads(r.stdout) if d["key"] == f"lmtp:inet:127.0.0.1:{dovecot.lmtp_port}"]
        return rows[0] if rows and rows[0]["delivered"] >= 2 else None
    row = wait_for(lmtp_row, 10, "the LMTP server in queue destinations")
    assert row["window"] == 10 and row["deferred"] == 1 and row["sessions"] == 0, row
    assert "User doesn't exist" in row["lastError"], row
    r = srv.cli("queue", "destinations")
    assert f"lmtp:inet:127.0.0.1:{dovecot.lmtp_port}" in r.stdout, r.stdout


def test_dovecot_down_defers_then_delivers_once_it_is_back(mailflow_server, dovecot):
    srv = mailflow_server(config(f"inet:127.0.0.1:{dovecot.lmtp_port}"))
    # One delivery first, so Mailflow holds an idle LMTP connection that the stop below breaks.
    first = uuid.uuid4().hex
    wait_status(srv, send(srv.port, ["alice@contoso.test"], message(first, "alice@contoso.test", ["up"])),
                "alice@contoso.test", "delivered")
    dovecot.stop()
    tokens = [uuid.uuid4().hex for _ in range(3)]
    qids = [send(srv.port, ["alice@contoso.test"], message(t, "alice@contoso.test", ["while down"]))
            for t in tokens]
    for qid in qids:
        shown = wait_for(lambda: (s := queue_show(srv, qid)).events("deferred", "alice@contoso.test") and s, 15,
                         lambda: queue_show(srv, qid).text)
        reason = shown.events("deferred", "alice@contoso.test")[0]
        assert reason.startswith("451 4.4.1 Connection to "), reason
    time.sleep(2)  # a few more retries against the closed port
    assert all(queue_show(srv, q).recipients["alice@contoso.test"] != "delivered" for q in qids)
    dovecot.start()
    for qid in qids:
        wait_status(srv, qid, "alice@contoso.test", "delivered", timeout=20)
    inbox = dovecot.inbox("alice@contoso.test")
    for t in [first, *tokens]:
        assert sum(t.encode() in m for m in inbox) == 1, f"{t}: not exactly one copy"
    assert len(inbox) == 1 + len(tokens)


def test_over_quota_after_the_dot_fails_that_recipient_alone(mailflow_server, dovecot):
    """Dovecot checks the quota when it saves, after the final dot: the per-recipient replies of RFC
    2033 §4.2 are what tells alice's 250 from carol's 552."""
    srv = mailflow_server(config(f"unix:{dovecot.socket}"))
    token = uuid.uuid4().hex
    msg = message(token, "alice@contoso.test", ["y" * 70] * 40)  # ~3 KB, over carol's 1 KiB
    qid = send(srv.port, ["carol@contoso.test", "alice@contoso.test"], msg)
    wait_status(srv, qid, "alice@contoso.test", "delivered")
    shown = wait_status(srv, qid, "carol@contoso.test", "failed")
    [reason] = shown.events("failed", "carol@contoso.test")
    assert reason.startswith("552 5.2.2 <carol@contoso.test> Quota exceeded"), reason
    assert [m for m in dovecot.inbox("alice@contoso.test") if token.encode() in m]
    assert not dovecot.inbox("carol@contoso.test")
    dsns = wait_for(lambda: [m for m in dovecot.inbox(SENDER) if b"multipart/report" in m], 15,
                    lambda: f"no DSN for {SENDER}: {queue_show(srv, qid).text}")
    dsn = parse_dsn(dsns[0][dsns[0].index(b"\r\n") + 2:])
    assert dsn.recipient("carol@contoso.test")["status"] == "5.2.2"

