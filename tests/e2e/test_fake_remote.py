"""Self-test of the fake remote SMTP server (tests/e2e/fakes/remote_smtp.py) with smtplib and raw sockets.

The fake is what outbound-delivery tests and scripts/bench-throttle talk to, so it is checked on its
own: acceptance and recording, the 421 past --max-sessions, RCPT rejects, the reset in the middle of
DATA, BDAT, pipelining, STARTTLS, and the script mode (port 0, stats on SIGTERM); and the hostile
modes of --fault (never greet, no reply to DATA or to the dot, trickled replies, a 100,000-line
reply, a stalled TLS handshake), each only for the first --fault-sessions sessions.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfutil import SMTPClient

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))

from remote_smtp import FOREST_REPLY, FakeRemoteConfig, parse_reject, start_in_thread  # noqa: E402

MESSAGE = (
    "From: <a@src.test>\r\n"
    "To: <b@remote.test>\r\n"
    "Subject: fake remote\r\n"
    "Message-ID: <fake-1@src.test>\r\n"
    "\r\n"
    "line one\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    "last line\r\n"
)


def _smtp(port: int) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10)


def test_accepts_and_records(tmp_path):
    rec = tmp_path / "rec.jsonl"
    with start_in_thread(record_file=str(rec), record_data=True) as fake:
        with _smtp(fake.port) as s:
            code, msg = s.ehlo()
            assert code == 250
            for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "chunking", "dsn"):
                assert s.has_extn(ext), msg
            assert not s.has_extn("starttls") and not s.has_extn("smtputf8")
            assert s.sendmail("a@src.test", ["b@remote.test", "c@remote.test"], MESSAGE) == {}
        lines = rec.read_text().splitlines()
        assert len(lines) == 1
        r = json.loads(lines[0])
        assert r["mail_from"] == "a@src.test"
        assert r["rcpt_to"] == ["b@remote.test", "c@remote.test"]
        assert r["message_id"] == "<fake-1@src.test>"
        assert r["tls"] is False
        # smtplib dot-stuffs; the fake unstuffs: the recorded text is the original message.
        assert r["data"] == MESSAGE
        assert r["size"] == len(MESSAGE.encode())
        assert r["sha256"] == hashlib.sha256(MESSAGE.encode()).hexdigest()
        assert fake.stats()["accepted"] == 1
        assert fake.records()[0]["sha256"] == r["sha256"]


def test_421_above_max_sessions():
    with start_in_thread(max_sessions=2) as fake:
        a, b = _smtp(fake.port), _smtp(fake.port)
        try:
            with pytest.raises(smtplib.SMTPConnectError) as e:
                _smtp(fake.port)
            assert e.value.smtp_code == 421
            assert e.value.smtp_error.decode() == FOREST_REPLY[4:]
            with SMTPClient(fake.port) as c:  # raw: the greeting, then the close
                assert c.greeting.first == FOREST_REPLY
                c.expect_closed()
            st = fake.stats()
            assert (st["refused_sessions"], st["max_concurrent_seen"], st["active_sessions"]) == (2, 2, 2)
        finally:
            a.quit()
        # A slot is free again.
        deadline = time.time() + 5
        while fake.stats()["active_sessions"] > 1 and time.time() < deadline:
            time.sleep(0.01)
        with _smtp(fake.port) as c:
            assert c.sendmail("a@src.test", ["b@remote.test"], MESSAGE) == {}
        b.quit()
        assert fake.stats()["refused_sessions"] == 2


def test_reject_regex():
    cfg = FakeRemoteConfig(rcpt_rejects=[parse_reject("nobody@.*=550 5.1.1 No such user"),
                                         "later@remote\\.test=451 4.3.0 Try again later"],
                           mail_rejects=["spammer@.*=550 5.7.1 Go away"])
    with start_in_thread(cfg) as fake:
        with _smtp(fake.port) as s:
            refused = s.sendmail("a@src.test", ["nobody@remote.test", "b@remote.test", "later@remote.test",
                                                "NOBODY@other.test", "xnobody@remote.test"], MESSAGE)
            assert refused == {
                "nobody@remote.test": (550, b"5.1.1 No such user"),
                "later@remote.test": (451, b"4.3.0 Try again later"),
                "NOBODY@other.test": (550, b"5.1.1 No such user"),
            }
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                s.sendmail("a@src.test", ["nobody@remote.test"], MESSAGE)
            with pytest.raises(smtplib.SMTPSenderRefused) as e:
                s.sendmail("spammer@bad.test", ["b@remote.test"], MESSAGE)
            assert e.value.smtp_code == 550
        recs = fake.records()
        assert [r["rcpt_to"] for r in recs] == [["b@remote.test", "xnobody@remote.test"]]
        assert fake.stats()["rejected_rcpts"] == 4


def test_reset_mid_data():
    with start_in_thread(reset_mid_data=1) as fake:
        s = _smtp(fake.port)
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
            s.sendmail("a@src.test", ["b@remote.test"], MESSAGE + "x" * 200000 + "\r\n")
        s.close()
        # The reset was a real RST: a raw client sees ECONNRESET, not an orderly EOF.
        with SMTPClient(fake.port) as c:  # the second transfer goes through
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@src.test>").code == 250
            assert c.cmd("RCPT TO:<b@remote.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(b"Subject: two\r\n\r\nbody\r\n.\r\n")
            assert c.reply().code == 250
        st = fake.stats()
        assert (st["resets"], st["accepted"]) == (1, 1)


def test_reset_is_rst():
    with start_in_thread(reset_mid_data=1) as fake:
        with SMTPClient(fake.port) as c:
            c.ehlo()
            c.cmd("MAIL FROM:<a@src.test>")
            c.cmd("RCPT TO:<b@remote.test>")
            assert c.cmd("DATA").code == 354
            c.send(b"Subject: one\r\n")
            c.sock.settimeout(5)
            with pytest.raises(ConnectionResetError):
                while True:
                    if not c.sock.recv(4096):
                        pytest.fail("orderly close instead of RST")
                    c.sock.send(b"more\r\n")
        assert fake.stats()["resets"] == 1


def test_bdat_raw_socket(tmp_path):
    with start_in_thread(record_file=str(tmp_path / "r.jsonl"), record_data=True) as fake:
        with SMTPClient(fake.port) as c:
            c.ehlo()
            # Pipelined: envelope and two chunks in one write; the chunk holds CRLF.CRLF and a
            # leading dot, which BDAT must take literally.
            part1 = b"Subject: bdat\r\n\r\n.\r\n"
            part2 = b"..no unstuffing\r\n"
            c.send(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b@remote.test>\r\n"
                   + b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d LAST\r\n" % len(part2) + part2)
            replies = [c.reply() for _ in range(4)]
            assert [r.code for r in replies] == [250, 250, 250, 250], replies
            assert replies[2].first == f"250 2.0.0 {len(part1)} octets received"
            # BDAT 0 LAST ends a message too.
            c.send(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b@remote.test>\r\nBDAT 4\r\nabc\n")
            assert [c.reply().code for _ in range(3)] == [250, 250, 250]
            assert c.cmd("BDAT 0 LAST").code == 250
            # BDAT without recipients: the chunk is consumed and refused, the session goes on.
            c.send(b"MAIL FROM:<a@src.test>\r\nBDAT 5 LAST\r\nQUIT!")
            assert c.reply().code == 250
            assert c.reply().first.startswith("554 5.5.1")
            assert c.cmd("RSET").code == 250
            assert c.cmd("NOOP").code == 250
            assert c.cmd("QUIT").code == 221
        recs = fake.records()
        assert [r["data"] for r in recs] == [(part1 + part2).decode(), "abc\n"]
        assert recs[0]["size"] == len(part1 + part2)


def test_pipelining_and_sequence_errors():
    with start_in_thread() as fake:
        with SMTPClient(fake.port) as c:
            assert c.cmd("MAIL FROM:<a@src.test>").code == 503  # before EHLO
            c.ehlo()
            c.send(b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b@remote.test>\r\nRCPT TO:<c@remote.test>\r\nDATA\r\n"
                   b"Subject: p\r\n\r\nhi\r\n.\r\nMAIL FROM:<a@src.test> SIZE=99999999999\r\nNOOP\r\nBOGUS\r\n")
            codes = [c.reply().code for _ in range(8)]
            assert codes == [250, 250, 250, 354, 250, 552, 250, 500]
            assert c.cmd("DATA").code == 503
            assert c.cmd("RCPT TO:<b@remote.test>").code == 503
        assert fake.stats()["accepted"] == 1


def test_per_message_delay():
    with start_in_thread(per_message_delay_ms=200) as fake:
        with _smtp(fake.port) as s:
            t0 = time.monotonic()
            s.sendmail("a@src.test", ["b@remote.test"], MESSAGE)
            assert time.monotonic() - t0 >= 0.2


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("fakecert")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=mx.fake-remote.test",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_starttls(cert_pair):
    cert, key = cert_pair
    with start_in_thread(tls_cert=cert, tls_key=key, extensions=["PIPELINING", "SMTPUTF8", "8BITMIME"]) as fake:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with _smtp(fake.port) as s:
            s.ehlo()
            assert s.has_extn("starttls") and s.has_extn("smtputf8") and not s.has_extn("chunking")
            assert s.starttls(context=ctx)[0] == 220
            s.ehlo()
            assert not s.has_extn("starttls")
            assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
            s.sendmail("a@src.test", ["b@remote.test"], MESSAGE)
        # Plaintext pipelined after STARTTLS is discarded, not executed inside TLS.
        with SMTPClient(fake.port) as c:
            c.ehlo()
            c.send(b"STARTTLS\r\nMAIL FROM:<evil@src.test>\r\n")
            r = c.reply()
            assert r.code == 220
            c.buf = b""
            c.sock = ctx.wrap_socket(c.sock)
            assert c.cmd("RCPT TO:<b@remote.test>").code == 503  # no MAIL in effect
        assert [r["tls"] for r in fake.records()] == [True]


def test_script_mode_port0_and_stats_on_sigterm(tmp_path):
    rec, stats = tmp_path / "rec.jsonl", tmp_path / "stats.json"
    proc = subprocess.Popen(
        [sys.executable, str(FAKES / "remote_smtp.py"), "--listen", "127.0.0.1:0", "--max-sessions", "1",
         "--record", str(rec), "--stats", str(stats), "--reject", "nobody@.*=550 5.1.1 No such user",
         "--ehlo-extensions", "PIPELINING,SIZE 1000", "8BITMIME"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert m, line
        port = int(m.group(1))
        assert port != 0
        with _smtp(port) as s:
            s.ehlo()
            assert s.esmtp_features.get("size") == "1000"
            assert not s.has_extn("chunking")
            with pytest.raises(smtplib.SMTPConnectError):
                _smtp(port)
            s.sendmail("a@src.test", ["b@remote.test", "nobody@remote.test"], MESSAGE)
            with pytest.raises(smtplib.SMTPSenderRefused):  # SIZE 1000 enforced at MAIL
                s.sendmail("a@src.test", ["b@remote.test"], MESSAGE + "x" * 2000)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        st = json.loads(stats.read_text())
        assert {k: st[k] for k in ("accepted", "refused_sessions", "max_concurrent_seen", "resets")} == {
            "accepted": 1, "refused_sessions": 1, "max_concurrent_seen": 1, "resets": 0}
        recs = [json.loads(l) for l in rec.read_text().splitlines()]
        assert [r["rcpt_to"] for r in recs] == [["b@remote.test"]]
        assert "data" not in recs[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------------
# hostile modes (--fault)


def _raw(port: int, timeout: float = 2.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def _wait(fn, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_fault_never_greet_then_behaves():
    with start_in_thread(fault="never-greet", fault_sessions=1) as fake:
        s = _raw(fake.port, timeout=0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.sendall(b"EHLO client.test\r\n")  # talking first changes nothing
        with pytest.raises(socket.timeout):
            s.recv(100)
        assert fake.stats()["fault_sessions_open"] == 1
        s.close()
        _wait(lambda: fake.stats()["fault_sessions_open"] == 0)
        assert fake.stats()["fault_sessions"] == 1 and len(fake.stats()["fault_held_seconds"]) == 1
        with _smtp(fake.port) as c:  # the second session behaves
            c.sendmail("a@src.test", ["b@remote.test"], MESSAGE)
        assert fake.stats()["accepted"] == 1


def test_fault_no_data_reply():
    with start_in_thread(fault="no-data-reply") as fake:
        with SMTPClient(fake.port) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@src.test>").code == 250
            assert c.cmd("RCPT TO:<b@remote.test>").code == 250
            c.sock.settimeout(0.5)
            c.send(b"DATA\r\n")
            with pytest.raises(socket.timeout):
                c.sock.recv(100)
        _wait(lambda: fake.stats()["fault_sessions_open"] == 0)
        assert fake.stats()["accepted"] == 0


@pytest.mark.parametrize("bdat", [False, True])
def test_fault_no_dot_reply(bdat):
    with start_in_thread(fault="no-dot-reply") as fake:
        with SMTPClient(fake.port) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@src.test>").code == 250
            assert c.cmd("RCPT TO:<b@remote.test>").code == 250
            if bdat:
                c.send(b"BDAT 5 LAST\r\nhi\r\n")
            else:
                assert c.cmd("DATA").code == 354
                c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
            c.sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                c.sock.recv(100)
        _wait(lambda: fake.stats()["fault_sessions_open"] == 0)
        assert fake.stats()["accepted"] == 0


def test_fault_trickle_sends_one_byte_at_a_time():
    with start_in_thread(fault="trickle", trickle_delay_ms=20) as fake:
        s = _raw(fake.port)
        t0 = time.monotonic()
        first = s.recv(100)
        assert first == b"2"  # one byte per write
        got = first
        while not got.endswith(b"\r\n"):
            got += s.recv(100)
        elapsed = time.monotonic() - t0
        assert got.startswith(b"220 mx.fake-remote.test")
        assert elapsed >= 0.02 * (len(got) - 2), elapsed
        s.close()


def test_fault_giant_reply_is_100000_lines():
    with start_in_thread(fault="giant-reply") as fake:
        with SMTPClient(fake.port) as c:
            c.sock.settimeout(10)
            c.send(b"EHLO client.test\r\n")
            data = b""
            while not re.search(rb"(^|\n)250 [^\n]*\r\n$", data):
                chunk = c.sock.recv(1 << 16)
                assert chunk
                data += chunk
        lines = data.split(b"\r\n")[:-1]
        assert len(lines) == 100_000
        assert all(l.startswith(b"250-") for l in lines[:-1]) and lines[-1].startswith(b"250 ")
        assert fake.stats()["giant_bytes_sent"] == len(data)


def test_fault_giant_reply_stops_when_the_client_leaves():
    with start_in_thread(fault="giant-reply") as fake:
        s = _raw(fake.port)
        assert s.recv(100).startswith(b"220 ")
        s.sendall(b"EHLO client.test\r\n")
        s.recv(4096)
        s.close()
        _wait(lambda: fake.stats()["fault_sessions_open"] == 0, timeout=15)


def test_fault_stall_tls_needs_no_certificate():
    with start_in_thread(fault="stall-tls") as fake:
        with SMTPClient(fake.port) as c:
            r = c.ehlo()
            assert "STARTTLS" in r.text.upper()
            assert c.cmd("STARTTLS").code == 220
            c.sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                c.sock.recv(100)  # no ServerHello ever comes, whatever is sent
            c.send(b"\x16\x03\x01\x00\x05hello")
            with pytest.raises(socket.timeout):
                c.sock.recv(100)
        _wait(lambda: fake.stats()["fault_sessions_open"] == 0)


def test_fault_rejects_an_unknown_mode():
    with pytest.raises(ValueError):
        start_in_thread(fault="explode")


def test_script_mode_fault_option():
    proc = subprocess.Popen(
        [sys.executable, str(FAKES / "remote_smtp.py"), "--listen", "127.0.0.1:0", "--fault", "never-greet",
         "--fault-sessions", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", proc.stdout.readline())
        assert m
        s = _raw(int(m.group(1)), timeout=0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.close()
        with _smtp(int(m.group(1))) as c:
            assert c.ehlo()[0] == 250
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
