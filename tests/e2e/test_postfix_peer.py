"""Mailflow delivers to a real Postfix over STARTTLS, found through MX records served by dnsmasq.

The Postfix instance is a throw-away one (`postfix -c DIR`, chroot off, its own queue and log) that
listens on 127.0.0.3 and delivers `postfix.test` to a Maildir with its virtual(8) agent; the machine's
own /etc/postfix is only read. Needs root (Postfix's master binds and drops to user `postfix`).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from dnsutil import Dnsmasq
from mailflow_testlib.postfix import PostfixInstance, PostfixUnavailable


def receiver(root: Path) -> PostfixInstance:
    """A Postfix that accepts mail for postfix.test on 127.0.0.3:PORT with STARTTLS."""
    return PostfixInstance(root, host="127.0.0.3", maildir_domain="postfix.test",
                           comment="tests/e2e/test_postfix_peer.py: a Postfix peer")


def receiver_settings(etc: Path) -> dict[str, object]:
    """STARTTLS with a fresh self-signed pair, and 127.0.0.3 (its MX address) counted as its own."""
    etc.mkdir(parents=True, exist_ok=True)
    cert, key = etc / "cert.pem", etc / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.postfix.test", "-days", "2",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return {
        "myhostname": "mx.postfix.test",
        "proxy_interfaces": "127.0.0.3",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert,
        "smtpd_tls_key_file": key,
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_loglevel": "1",
        "smtpd_forbid_bare_newline": "yes",
    }


@pytest.fixture
def postfix():
    # Postfix's daemons run as user `postfix`, which cannot enter pytest's private (0700) tmp folders.
    root = Path(tempfile.mkdtemp(prefix="mailflow-postfix-"))
    os.chmod(root, 0o755)
    p = receiver(root / "postfix")
    try:
        try:
            p.start(receiver_settings(p.etc))
        except PostfixUnavailable as e:
            pytest.fail(str(e))
        yield p
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
        log = postfix.logfile.read_text(errors="replace") if postfix.logfile.exists() else ""
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
