"""Mailflow delivers to a real Postfix over STARTTLS, found through MX records served by dnsmasq.

The Postfix instance is a throw-away one (`postfix -c DIR`, chroot off, its own queue and log) that
listens on 127.0.0.3 and delivers `postfix.test` to a Maildir with its virtual(8) agent; the machine's
own /etc/postfix is only read. Needs root (Postfix's master binds and drops to user `postfix`).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from dnsutil import Dnsmasq


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class PostfixReceiver:
    """A Postfix that accepts mail for postfix.test on 127.0.0.3:PORT with STARTTLS."""

    def __init__(self, root: Path):
        self.root = root
        self.etc = root / "etc"
        self.spool = root / "spool"
        self.lib = root / "lib"
        self.vmail = root / "vmail"
        self.log = root / "maillog"
        self.port = free_port("127.0.0.3")

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def start(self) -> "PostfixReceiver":
        if shutil.which("postfix") is None:
            pytest.fail("postfix is not installed (apt-get install -y postfix)")
        if os.geteuid() != 0:
            pytest.fail("a Postfix instance needs root")
        for d in (self.etc, self.spool, self.lib, self.vmail):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root.parent, self.root):
            os.chmod(d, 0o755)
        uid, gid = pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid
        shutil.chown(self.lib, user="postfix")
        shutil.chown(self.vmail, user="postfix", group="postfix")
        cert, key = self.etc / "cert.pem", self.etc / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.postfix.test", "-days", "2",
             "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.lib}
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
myhostname = mx.postfix.test
mydestination =
inet_interfaces = 127.0.0.1
proxy_interfaces = 127.0.0.3
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_tls_security_level = may
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
virtual_mailbox_domains = postfix.test
virtual_mailbox_base = {self.vmail}
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtpd_forbid_bare_newline = yes
""")
        (self.etc / "master.cf").write_text(f"""\
127.0.0.3:{self.port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""")
        self.postfix("check")
        self.postfix("start")
        if not wait_port("127.0.0.3", self.port):
            raise RuntimeError(f"postfix did not listen: {self.log.read_text() if self.log.exists() else ''}")
        return self

    def stop(self) -> None:
        self.postfix("stop", check=False)
        pid_file = self.spool / "pid" / "master.pid"
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_file.exists():
            self.postfix("abort", check=False)

    def delivered(self) -> list[Path]:
        new = self.vmail / "inbox" / "new"
        return sorted(new.iterdir()) if new.exists() else []


@pytest.fixture
def postfix():
    # Postfix's daemons run as user `postfix`, which cannot enter pytest's private (0700) tmp folders.
    root = Path(tempfile.mkdtemp(prefix="mailflow-postfix-"))
    os.chmod(root, 0o755)
    p = PostfixReceiver(root / "postfix")
    try:
        yield p.start()
    finally:
        p.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_mailflow_delivers_to_postfix_over_starttls_via_mx(postfix, mailflow_server):
    dns = Dnsmasq([
        "--mx-host=postfix.test,mx.postfix.test,10",
        "--host-record=mx.postfix.test,127.0.0.3",
    ]).start()
    try:
        srv = mailflow_server({
            "relay": {"trusted_networks": ["127.0.0.0/8"]},
            "dns": {"servers": [dns.server], "timeout": "1s", "attempts": 2},
            "delivery": {"mx_port": postfix.port, "helo_name": "mx.a.test", "retry_intervals": ["1s"]},
            "tenants": [{"name": "src", "domains": ["src.test"], "mailboxes": ["sender"]}],
        })
        port, data_dir, _ = srv
        token = uuid.uuid4().hex
        msg = EmailMessage()
        msg["From"] = "Sender <sender@src.test>"
        msg["To"] = "user@postfix.test"
        msg["Subject"] = f"to postfix {token}"
        msg["Message-ID"] = f"<{token}@src.test>"
        msg.set_content(f"Hello Postfix.\n.leading dot line\n{token}\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.send_message(msg, from_addr="sender@src.test", to_addrs=["user@postfix.test"])

        deadline = time.monotonic() + 30
        while not postfix.delivered() and time.monotonic() < deadline:
            time.sleep(0.2)
        files = postfix.delivered()
        log = postfix.log.read_text(errors="replace") if postfix.log.exists() else ""
        assert len(files) == 1, f"expected one delivery at Postfix; log:\n{log[-3000:]}\n{srv.stderr()[-2000:]}"
        text = files[0].read_text()
        # Envelope and content intact: Postfix's Return-Path is Mailflow's MAIL FROM.
        assert "Return-Path: <sender@src.test>" in text
        assert f"Message-ID: <{token}@src.test>" in text
        assert f"Subject: to postfix {token}" in text
        assert ".leading dot line" in text and token in text.split("\n\n", 1)[1]
        assert "..leading" not in text, "dot-stuffing must be undone by the receiver"
        # Postfix's own Received header records the TLS session Mailflow opened.
        assert "from mx.a.test" in text
        assert "(using TLSv1.3" in text or "(using TLSv1.2" in text, text[:1500]
        assert "with ESMTPS" in text
        # Mailflow's own Received stamp travelled too.
        assert "(Mailflow) with ESMTP" in text
        assert "TLS connection established from" in log
    finally:
        dns.stop()
