"""Inbound sender authentication (issue 14): mail from another server is checked with SPF, DKIM and
DMARC through Mailflow's resolver (a dnsmasq zone on loopback), gets one Authentication-Results field
at delivery, shows its results in the trace and /metrics, and a DMARC p=reject failure is refused at
the end of DATA when the tenant asks for it. Messages are signed by dkimpy, sent by smtplib."""

from __future__ import annotations

import base64
import re
import smtplib
import subprocess
import time

import dkim
import pytest

from dnsutil import Dnsmasq
from mfutil import HOSTNAME

SELECTOR = "s1"


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    work = tmp_path_factory.mktemp("senderauth")
    pem = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True,
                         check=True).stdout
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    chunks = ",".join(record[i:i + 200] for i in range(0, len(record), 200))
    records = [
        # good.test: SPF allows 127.0.0.1, DKIM key published, DMARC reject.
        "--txt-record=good.test,v=spf1 ip4:127.0.0.0/8 -all",
        f"--txt-record={SELECTOR}._domainkey.good.test,{chunks}",
        "--txt-record=_dmarc.good.test,v=DMARC1; p=reject",
        # strict.test: SPF excludes everyone, DMARC reject: a spoofed From fails.
        "--txt-record=strict.test,v=spf1 -all",
        "--txt-record=_dmarc.strict.test,v=DMARC1; p=reject",
        # soft.test: DMARC none, SPF -all.
        "--txt-record=soft.test,v=spf1 -all",
        "--txt-record=_dmarc.soft.test,v=DMARC1; p=none",
    ]
    server = Dnsmasq(records, log_dir=work).start()
    yield {"dns": server, "private": pem, "record": record}
    server.stop()


def _server(mailflow_server, zone, dmarc_reject: bool):
    return mailflow_server({
        "dns": {"servers": [zone["dns"].server], "timeout": "2s", "attempts": 1},
        "sender_auth": {"verify": True},
        "tenants": [{"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice"],
                     "dmarc_reject": dmarc_reject}],
    })


def _message(from_domain: str) -> bytes:
    return (f"From: News <news@{from_domain}>\r\nTo: <alice@contoso.test>\r\nSubject: auth test\r\n"
            f"Message-ID: <1@{from_domain}>\r\n\r\nBody line.\r\n\r\n\r\n").encode()


def _signed(zone, from_domain: str) -> bytes:
    m = _message(from_domain)
    return dkim.sign(m, SELECTOR.encode(), from_domain.encode(), zone["private"]) + m


def _send(port: int, sender: str, message: bytes):
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        return s.sendmail(sender, ["alice@contoso.test"], message)
    finally:
        s.close()


def _delivered(srv, subject_marker: bytes = b"auth test", timeout: float = 20) -> bytes:
    box = srv.data_dir / "mailboxes" / "contoso.test" / "alice" / "new"
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = sorted(box.glob("*")) if box.exists() else []
        if files:
            return files[-1].read_bytes()
        time.sleep(0.1)
    raise AssertionError("nothing delivered to alice")


def test_signed_aligned_mail_passes_everything(mailflow_server, zone):
    srv = _server(mailflow_server, zone, dmarc_reject=True)
    assert _send(srv.port, "bounce@good.test", _signed(zone, "good.test")) == {}
    text = _delivered(srv).decode()
    ar = re.search(r"^Authentication-Results: (.*?)\r\n(?![ \t])", text, re.S | re.M)
    assert ar, text[:600]
    value = ar.group(1)
    assert value.startswith(HOSTNAME + ";"), value  # the authserv-id is this server's name
    assert "spf=pass" in value and "smtp.mailfrom=bounce@good.test" in value, value
    assert "dkim=pass" in value and "header.d=good.test" in value and "header.s=s1" in value, value
    assert "dmarc=pass" in value and "header.from=good.test" in value, value
    # Above this server's Received stamp, below Return-Path.
    assert text.index("Authentication-Results:") < text.index("Received:")
    # dkimpy still verifies the delivered copy: the added fields are not among the signed ones.
    record = zone["record"].encode()
    assert dkim.verify(text.encode(), dnsfunc=lambda name, timeout=5: record)
    # The message and its received event carry the results.
    queue_id = srv.cli("trace", "--sender", "bounce@good.test").stdout.splitlines()[1].split()[1]
    out = srv.cli("queue", "show", queue_id).stdout
    assert "Sender auth:  spf=pass dkim=pass dmarc=pass" in out, out
    assert re.search(r"received from=<bounce@good\.test> .* spf=pass dkim=pass dmarc=pass", out), out
    # The trace filters by result (CLI and API read the same parameters).
    assert "bounce@good.test" in srv.cli("trace", "--dmarc", "pass").stdout
    assert "bounce@good.test" not in srv.cli("trace", "--dmarc", "fail").stdout
    bad = srv.cli("trace", "--spf", "great")
    assert bad.returncode != 0 and "spf must be one of pass, fail" in bad.stderr, bad.stderr
    status, _, body = srv.api("GET", "/api/v1/trace?spf=pass&dkim=pass", token=srv.add_token("t"))
    assert status == 200 and b'"spf":"pass"' in body and b'"dmarc":"pass"' in body, body[:300]


def test_spoofed_from_is_refused_when_the_tenant_honours_reject(mailflow_server, zone):
    srv = _server(mailflow_server, zone, dmarc_reject=True)
    with pytest.raises(smtplib.SMTPDataError) as e:
        _send(srv.port, "someone@elsewhere.test", _message("strict.test"))
    assert e.value.smtp_code == 550
    assert e.value.smtp_error.startswith(b"5.7.1 Message rejected: it fails the DMARC policy of strict.test"), \
        e.value.smtp_error
    # Nothing was queued for it, and no body was kept.
    assert "alice@contoso.test" not in srv.cli("trace", "--recipient", "alice@contoso.test").stdout
    assert not list((srv.data_dir / "spool").glob("*"))


def test_without_the_tenants_choice_a_reject_is_recorded_not_refused(mailflow_server, zone):
    srv = _server(mailflow_server, zone, dmarc_reject=False)
    assert _send(srv.port, "someone@elsewhere.test", _message("strict.test")) == {}
    value = _delivered(srv).decode()
    assert "dmarc=fail (p=reject dis=reject) header.from=strict.test" in value, value[:800]
    assert "dkim=none" in value or "dkim=" not in value.split("Received:")[0]


def test_spf_fail_under_dmarc_none_is_delivered_and_counted(mailflow_server, zone):
    srv = _server(mailflow_server, zone, dmarc_reject=True)
    assert _send(srv.port, "x@soft.test", _message("soft.test")) == {}
    value = _delivered(srv).decode()
    assert "spf=fail" in value and "dmarc=fail" in value, value[:800]
    status, _, body = srv.api("GET", "/metrics", token=srv.add_token("prom"))
    assert status == 200
    metrics = body.decode()
    assert re.search(r'mailflow_sender_auth_total\{method="spf",result="fail"\} 1', metrics) or \
        re.search(r'mailflow_sender_auth_total\{result="fail",method="spf"\} 1', metrics), \
        [l for l in metrics.splitlines() if "sender_auth" in l]


def test_forged_authentication_results_claiming_our_id_are_removed(mailflow_server, zone):
    srv = _server(mailflow_server, zone, dmarc_reject=True)
    forged = (f"Authentication-Results: {HOSTNAME}; spf=pass; dkim=pass; dmarc=pass\r\n"
              "Authentication-Results: upstream.example; spf=none\r\n").encode() + _message("soft.test")
    assert _send(srv.port, "x@soft.test", forged) == {}
    text = _delivered(srv).decode()
    fields = re.findall(r"^Authentication-Results: ([^;]*);", text, re.M)
    # Ours (RFC 8601 §5: the forged one with our id is gone), and another host's, kept as it was.
    assert fields == [HOSTNAME, "upstream.example"], fields
    assert "spf=fail" in text.split("Received:")[0]


def test_a_spooled_body_is_rewritten_durably_without_the_forged_field(mailflow_server, zone):
    srv = _server(mailflow_server, zone, dmarc_reject=True)
    big = ("x" * 998 + "\r\n") * 400  # 400 KB: past the inline limit, so the body is a spool file
    forged = (f"Authentication-Results: {HOSTNAME}; dmarc=pass\r\n".encode() + _message("soft.test")
              + big.encode())
    assert _send(srv.port, "x@soft.test", forged) == {}
    text = _delivered(srv).decode()
    assert re.findall(r"^Authentication-Results: ([^;]*);", text, re.M) == [HOSTNAME]
    assert text.endswith(big), "the body after the header block is untouched"
    assert not list((srv.data_dir / "spool").glob("*.rewrite")), "no temporary file left behind"


def test_a_from_that_names_two_addresses_is_refused_where_dmarc_is_enforced(mailflow_server, zone):
    srv = _server(mailflow_server, zone, dmarc_reject=True)
    message = (b"From: a@good.test, b@strict.test\r\nTo: <alice@contoso.test>\r\nSubject: auth test\r\n"
               b"broken header line without a colon\r\n\r\nbody\r\n")
    with pytest.raises(smtplib.SMTPDataError) as e:
        _send(srv.port, "bounce@good.test", message)
    assert e.value.smtp_code == 550
    assert e.value.smtp_error.startswith(b"5.7.1 Message rejected: the From field names more than one address"), \
        e.value.smtp_error
    assert not list((srv.data_dir / "spool").glob("*")), "the refused body is not kept"
