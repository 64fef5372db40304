"""SMTP over raw sockets, byte for byte: reply codes, framing, smuggling, BDAT, PIPELINING, STARTTLS."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from mfutil import (
    HOSTNAME,
    QUEUE_ID_RE,
    SMTPClient,
    all_delivered_files,
    make_message,
    queue_id_of,
    split_delivered,
    wait_for_delivery,
)

E = ["EHLO client.test"]
EM = E + ["MAIL FROM:<s@example.net>"]
EMR = EM + ["RCPT TO:<alice@contoso.test>"]

# (id, setup commands that must succeed, command, expected code, expected enhanced code or None)
CASES = [
    # unknown commands and garbage
    ("unknown-command", E, "FOO", 502, "5.5.1"),
    ("unknown-command-before-hello", [], "XYZZY", 502, "5.5.1"),
    ("unknown-command-with-args", E, "TURN now please", 502, "5.5.1"),
    ("garbage-symbols", E, "!!!", 500, "5.5.2"),
    ("garbage-digits", E, "12345 hello", 500, "5.5.2"),
    ("empty-line", E, "", 500, "5.5.2"),
    ("nul-in-command", E, "NO\x00OP", 500, "5.5.2"),
    # bad sequence
    ("mail-before-ehlo", [], "MAIL FROM:<s@example.net>", 503, "5.5.1"),
    ("rcpt-before-mail", E, "RCPT TO:<alice@contoso.test>", 503, "5.5.1"),
    ("data-before-mail", E, "DATA", 503, "5.5.1"),
    ("data-before-rcpt", EM, "DATA", 503, "5.5.1"),
    ("nested-mail", EM, "MAIL FROM:<t@example.net>", 503, "5.5.1"),
    ("rcpt-after-rset", EM + ["RSET"], "RCPT TO:<alice@contoso.test>", 503, "5.5.1"),
    ("rcpt-after-new-ehlo", EM + ["EHLO client.test"], "RCPT TO:<alice@contoso.test>", 503, "5.5.1"),
    ("data-after-rset", EMR + ["RSET"], "DATA", 503, "5.5.1"),
    ("starttls-in-transaction", EM, "STARTTLS", 503, "5.5.1"),
    # bad arguments
    ("ehlo-without-name", [], "EHLO", 501, "5.5.4"),
    ("helo-without-name", [], "HELO", 501, "5.5.4"),
    ("mail-without-colon", E, "MAIL FROM s@example.net", 501, "5.5.4"),
    ("mail-without-from", E, "MAIL <s@example.net>", 501, "5.5.4"),
    ("rcpt-without-to", EM, "RCPT alice@contoso.test", 501, "5.5.4"),
    ("rset-with-argument", E, "RSET now", 501, "5.5.4"),
    ("quit-with-argument", E, "QUIT now", 501, "5.5.4"),
    ("data-with-argument", EMR, "DATA now", 501, "5.5.4"),
    ("starttls-with-argument", E, "STARTTLS now", 501, "5.5.4"),
    ("bdat-bad-size", EMR, "BDAT abc", 501, "5.5.4"),
    ("bdat-bad-last", EMR, "BDAT 1 FIRST", 501, "5.5.4"),
    ("vrfy-without-argument", E, "VRFY", 501, "5.5.4"),
    ("size-not-a-number", E, "MAIL FROM:<s@example.net> SIZE=abc", 501, "5.5.4"),
    ("ret-bad-value", E, "MAIL FROM:<s@example.net> RET=ALL", 501, "5.5.4"),
    ("envid-bad-xtext", E, "MAIL FROM:<s@example.net> ENVID=a+zz", 501, "5.5.4"),
    ("notify-never-combined", EM, "RCPT TO:<alice@contoso.test> NOTIFY=NEVER,SUCCESS", 501, "5.5.4"),
    ("notify-bad-value", EM, "RCPT TO:<alice@contoso.test> NOTIFY=SOMETIMES", 501, "5.5.4"),
    ("orcpt-without-type", EM, "RCPT TO:<alice@contoso.test> ORCPT=alice@contoso.test", 501, "5.5.4"),
    ("duplicate-mail-param", E, "MAIL FROM:<s@example.net> SIZE=10 SIZE=20", 501, "5.5.4"),
    # bad addresses
    ("sender-without-domain", E, "MAIL FROM:<alice>", 501, "5.1.7"),
    ("sender-empty-domain", E, "MAIL FROM:<alice@>", 501, "5.1.7"),
    ("sender-double-at", E, "MAIL FROM:<a@@example.net>", 501, "5.1.7"),
    ("sender-unclosed", E, "MAIL FROM:<s@example.net", 501, "5.1.7"),
    ("sender-bad-domain", E, "MAIL FROM:<s@exa..mple.net>", 501, "5.1.7"),
    ("sender-local-part-too-long", E, "MAIL FROM:<" + "a" * 65 + "@example.net>", 501, "5.1.7"),
    ("recipient-double-at", EM, "RCPT TO:<alice@@contoso.test>", 501, "5.1.3"),
    ("recipient-empty", EM, "RCPT TO:<>", 501, "5.1.3"),
    ("recipient-without-domain", EM, "RCPT TO:<alice>", 501, "5.1.3"),
    ("recipient-bad-domain", EM, "RCPT TO:<alice@contoso..test>", 501, "5.1.3"),
    # unknown ESMTP parameters
    ("unknown-mail-param", E, "MAIL FROM:<s@example.net> FOO=BAR", 555, "5.5.4"),
    ("unknown-body-type", E, "MAIL FROM:<s@example.net> BODY=BINARYMIME", 555, "5.5.4"),
    ("unknown-rcpt-param", EM, "RCPT TO:<alice@contoso.test> FOO=1", 555, "5.5.4"),
    # SMTPUTF8
    ("utf8-sender-without-smtputf8", E, "MAIL FROM:<j\u00f6s\u00e9@example.net>", 553, "5.6.7"),
    ("utf8-recipient-without-smtputf8", EM, "RCPT TO:<j\u00f6s\u00e9@fabrikam.test>", 553, "5.6.7"),
    # recipient policy
    ("unknown-mailbox", EM, "RCPT TO:<carol@contoso.test>", 550, "5.1.1"),
    ("relay-denied", EM, "RCPT TO:<alice@elsewhere.test>", 550, "5.7.1"),
    ("relay-denied-subdomain", EM, "RCPT TO:<alice@sub.contoso.test>", 550, "5.7.1"),
    ("size-over-limit", E, "MAIL FROM:<s@example.net> SIZE=1048577", 552, "5.3.4"),
    # things that work
    ("ehlo-lower-case", [], "ehlo client.test", 250, None),
    ("helo", [], "HELO client.test", 250, None),
    ("ehlo-address-literal", [], "EHLO [127.0.0.1]", 250, None),
    ("mail", E, "MAIL FROM:<s@example.net>", 250, "2.1.0"),
    ("mail-lower-case", E, "mail from:<s@example.net>", 250, "2.1.0"),
    ("mail-null-sender", E, "MAIL FROM:<>", 250, "2.1.0"),
    ("mail-ipv4-literal", E, "MAIL FROM:<a@[127.0.0.1]>", 250, "2.1.0"),
    ("mail-ipv6-literal", E, "MAIL FROM:<a@[IPv6:::1]>", 250, "2.1.0"),
    ("mail-size-at-limit", E, "MAIL FROM:<s@example.net> SIZE=1048576", 250, "2.1.0"),
    ("mail-8bitmime", E, "MAIL FROM:<s@example.net> BODY=8BITMIME", 250, "2.1.0"),
    ("mail-smtputf8", E, "MAIL FROM:<j\u00f6s\u00e9@example.net> SMTPUTF8", 250, "2.1.0"),
    ("mail-dsn", E, "MAIL FROM:<s@example.net> RET=HDRS ENVID=abc+2Bdef", 250, "2.1.0"),
    ("rcpt", EM, "RCPT TO:<alice@contoso.test>", 250, "2.1.5"),
    ("rcpt-domain-case", EM, "RCPT TO:<alice@CONTOSO.TEST>", 250, "2.1.5"),
    ("rcpt-postmaster", EM, "RCPT TO:<Postmaster>", 250, "2.1.5"),
    ("rcpt-postmaster-of-domain", EM, "RCPT TO:<postmaster@contoso.test>", 250, "2.1.5"),
    ("rcpt-quoted-local-part", EM, 'RCPT TO:<"alice"@contoso.test>', 250, "2.1.5"),
    ("rcpt-catch-all", EM, "RCPT TO:<anyone-at-all@fabrikam.test>", 250, "2.1.5"),
    ("rcpt-dsn", EM, "RCPT TO:<alice@contoso.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@contoso.test",
     250, "2.1.5"),
    ("rset", EMR, "RSET", 250, "2.0.0"),
    ("noop", [], "NOOP", 250, "2.0.0"),
    ("vrfy", E, "VRFY alice", 252, "2.5.0"),
    ("help", [], "HELP", 214, "2.0.0"),
]


@pytest.mark.parametrize("setup,command,code,enhanced", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_command_replies(server, setup, command, code, enhanced):
    with SMTPClient(server.port, timeout=5) as c:
        for s in setup:
            r = c.cmd(s)
            assert r.code < 400, f"setup {s!r} failed: {r!r}"
        r = c.cmd(command)
        assert r.code == code, f"{command!r}: expected {code} {enhanced}, got {r!r}"
        if enhanced is None:
            assert r.enhanced is None, f"{command!r}: no enhanced code expected (RFC 2034), got {r!r}"
        else:
            assert r.enhanced == enhanced, f"{command!r}: expected {code} {enhanced}, got {r!r}"
        # the session is still there and in step: the very next reply is NOOP's
        r = c.cmd("NOOP")
        assert (r.code, r.enhanced) == (250, "2.0.0"), f"after {command!r}: {r!r}"


def test_bare_lf_in_command_line_is_refused(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.send(b"NOOP\nNOOP\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (500, "5.5.2"), r
        assert c.cmd("NOOP").code == 250


def test_greeting_and_ehlo(server):
    with SMTPClient(server.port, timeout=5) as c:
        assert c.greeting.code == 220
        assert c.greeting.lines == ["mx.example.test ESMTP Mailflow ready"]
        r = c.cmd("EHLO client.test")
        assert r.code == 250 and len(r.lines) > 1, r
        assert r.lines[0].startswith("mx.example.test"), r
        assert all(not re.match(r"\d\.\d+\.\d+ ", l) for l in r.lines), f"EHLO carries no enhanced code: {r!r}"
        keywords = r.lines[1:]
        for kw in ["PIPELINING", "SIZE 1048576", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
                   "DSN", "STARTTLS", "HELP"]:
            assert kw in keywords, f"{kw} missing from {keywords}"
        r = c.cmd("HELO client.test")
        assert r.code == 250 and len(r.lines) == 1 and r.enhanced is None, r
        r = c.cmd("QUIT")
        assert (r.code, r.enhanced) == (221, "2.0.0"), r
        c.expect_closed()


def test_data_reply_texts(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        for s in EMR[1:]:
            c.cmd(s)
        r = c.cmd("DATA")
        assert r.code == 354 and r.lines == ["End data with <CR><LF>.<CR><LF>"], r
        c.send(b"Subject: t\r\n\r\nx\r\n.\r\n")
        r = c.reply()
        assert re.fullmatch(r"2\.0\.0 Ok: queued as " + QUEUE_ID_RE, r.lines[0]), r
        assert c.cmd("RSET").lines == ["2.0.0 Ok"]
        assert c.cmd("NOOP").lines == ["2.0.0 Ok"]


DATE_RE = rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}"


@pytest.mark.parametrize("hello,tls,utf8,rcpts,proto", [
    ("EHLO", False, False, ["alice@contoso.test"], b"ESMTP"),
    ("HELO", False, False, ["alice@contoso.test"], b"SMTP"),
    ("EHLO", True, False, ["alice@contoso.test"], b"ESMTPS"),
    ("EHLO", False, True, ["alice@contoso.test"], b"UTF8SMTP"),
    ("EHLO", True, True, ["alice@contoso.test"], b"UTF8SMTPS"),
    ("EHLO", False, False, ["alice@contoso.test", "bob@contoso.test"], b"ESMTP"),
], ids=["esmtp", "smtp", "esmtps", "utf8smtp", "utf8smtps", "two-recipients"])
def test_received_header_exact_format(server, hello, tls, utf8, rcpts, proto):
    token = uuid.uuid4().hex
    msg = make_message(token)
    with SMTPClient(server.port, timeout=5) as c:
        if tls:
            c.ehlo("client.test")
            c.starttls()
            version = c.sock.version()
        assert c.cmd(f"{hello} client.test").code == 250
        qid = c.send_message("s@example.net", rcpts, msg, mail_params="SMTPUTF8" if utf8 else "")
    files = wait_for_delivery(server.data_dir, qid, count=len(rcpts))
    tls_part = f" ({version})".encode() if tls else b""
    for_part = f" for <{rcpts[0]}>".encode() if len(rcpts) == 1 else b""
    expected = (rb"Return-Path: <s@example\.net>\r\n"
                rb"Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n"
                rb"\tby mx\.example\.test \(Mailflow\) with " + re.escape(proto + tls_part) + rb"\r\n"
                rb"\tid " + qid.encode() + re.escape(for_part) + rb"; " + DATE_RE + rb"\r\n")
    for f in files:
        data = f.read_bytes()
        head = data[: len(data) - len(msg)]
        assert data.endswith(msg)
        assert re.fullmatch(expected, head), f"stamp is not in the documented form:\n{head!r}"


def test_data_end_split_across_packets(server):
    """The end marker arriving one octet at a time is still the end marker (and only it)."""
    token = uuid.uuid4().hex
    msg = make_message(token, body_lines=["before the end"])
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd("RCPT TO:<bob@contoso.test>")
        assert c.cmd("DATA").code == 354
        c.send(msg[:-2])
        for piece in (b"\r", b"\n", b".", b"\r", b"\n"):
            time.sleep(0.02)
            c.send(piece)
        qid = queue_id_of(c.reply())
    (f,) = wait_for_delivery(server.data_dir, qid)
    assert split_delivered(f.read_bytes(), qid).original == msg


def test_dot_unstuffing_raw(server):
    token = uuid.uuid4().hex
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
        assert c.cmd("DATA").code == 354
        wire = (f"Subject: dots {token}\r\nMessage-ID: <{token}@x>\r\n\r\n"
                "..dot\r\n....\r\n..\r\n.x\r\nend\r\n.\r\n").encode()
        c.send(wire)
        qid = queue_id_of(c.reply())
    (f,) = wait_for_delivery(server.data_dir, qid)
    d = split_delivered(f.read_bytes(), qid)
    assert d.original == (f"Subject: dots {token}\r\nMessage-ID: <{token}@x>\r\n\r\n"
                          ".dot\r\n...\r\n.\r\nx\r\nend\r\n").encode()


def test_dsn_parameters_recorded(server):
    token = uuid.uuid4().hex
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net> RET=HDRS ENVID=abc+2Bdef").code == 250
        r = c.cmd("RCPT TO:<alice@contoso.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@contoso.test")
        assert (r.code, r.enhanced) == (250, "2.1.5"), r
        assert c.cmd("DATA").code == 354
        c.send(make_message(token) + b".\r\n")
        qid = queue_id_of(c.reply())
    wait_for_delivery(server.data_dir, qid)
    r = server.cli("queue", "show", qid)
    assert r.returncode == 0, r.stderr
    assert "RET=HDRS ENVID=abc+def" in r.stdout, r.stdout
    assert "NOTIFY=SUCCESS,FAILURE" in r.stdout, r.stdout
    assert "ORCPT=rfc822;alice@contoso.test" in r.stdout, r.stdout


@pytest.mark.parametrize("rcpt,box", [
    ('"alice"@contoso.test', ("contoso.test", "alice")),
    ("Postmaster", None),
    ("alice@CONTOSO.TEST", ("contoso.test", "alice")),
])
def test_special_recipients_deliver(server, rcpt, box):
    token = uuid.uuid4().hex
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        qid = c.send_message("s@example.net", [rcpt], make_message(token))
    (f,) = wait_for_delivery(server.data_dir, qid)
    if box is None:
        assert f.parent.parent.name == "postmaster", f
    else:
        assert (f.parent.parent.parent.name, f.parent.parent.name) == box, f


@pytest.mark.parametrize("sender", ["a@[127.0.0.1]", "a@[IPv6:::1]", ""])
def test_special_senders_deliver(server, sender):
    token = uuid.uuid4().hex
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        qid = c.send_message(sender, ["bob@contoso.test"], make_message(token))
    (f,) = wait_for_delivery(server.data_dir, qid)
    assert split_delivered(f.read_bytes(), qid).return_path == f"<{sender}>".encode()


# ---------------------------------------------------------------------------------------------
# SMTP smuggling (CVE-2023-51764 and friends): only CRLF.CRLF ends DATA; bare CR/LF refuse the message

SMUGGLE_VARIANTS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "bare-cr-mid-line": b"mid\rline\r\n",
    "bare-lf-mid-line": b"mid\nline\r\n",
    "bare-lf-line-end": b"line\n",
}


def _nothing_for(server, marker: str) -> None:
    hits = [p for p in all_delivered_files(server.data_dir) if marker in str(p)]
    assert hits == [], f"smuggled or refused content was delivered: {hits}"
    for row in server.queue_json(include_done=True):
        assert not any(marker in r for r in row["recipients"]), f"refused message queued: {row}"


@pytest.mark.parametrize("variant", list(SMUGGLE_VARIANTS.values()), ids=list(SMUGGLE_VARIANTS))
def test_data_smuggling_refused(server, variant):
    token = uuid.uuid4().hex[:12]
    victim = f"victim-{token}@fabrikam.test"
    target = f"target-{token}@fabrikam.test"
    control = f"control-{token}@fabrikam.test"
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd(f"RCPT TO:<{target}>").code == 250
        assert c.cmd("DATA").code == 354
        body = (b"Subject: smuggle\r\n\r\nhello" + variant
                + b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<" + victim.encode() + b">\r\nDATA\r\n"
                + b"Subject: smuggled\r\n\r\nsmuggled body\r\n.\r\n")
        c.send(body)
        r = c.reply()
        assert (r.code, r.enhanced) == (550, "5.6.11"), f"expected exactly one 550 5.6.11, got {r!r}"
        r = c.cmd("NOOP")
        assert (r.code, r.enhanced) == (250, "2.0.0"), f"stray reply after the refused message: {r!r}"
        # a clean message afterwards on the same connection works and is the only one delivered
        cqid = c.send_message("s@example.net", [control], make_message(token))
    wait_for_delivery(server.data_dir, cqid)
    _nothing_for(server, f"victim-{token}")
    _nothing_for(server, f"target-{token}")


@pytest.mark.parametrize("content", [
    b"Subject: b\r\n\r\nhello\n.\nworld\r\n",
    b"Subject: b\r\n\r\nhello\r.\rworld\r\n",
    b"Subject: b\r\n\r\nhello\rworld\r\n",
    b"Subject: b\r\n\r\nhello\nworld\r\n",
    b"Subject: b\r\n\r\nends with a bare CR\r",
], ids=["lf-dot-lf", "cr-dot-cr", "bare-cr", "bare-lf", "trailing-cr"])
def test_bdat_bare_line_endings_refused(server, content):
    token = uuid.uuid4().hex[:12]
    target = f"bdat-{token}@fabrikam.test"
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.send(f"MAIL FROM:<s@example.net>\r\nRCPT TO:<{target}>\r\nBDAT {len(content)} LAST\r\n".encode() + content)
        assert c.reply().code == 250
        assert c.reply().code == 250
        r = c.reply()
        assert (r.code, r.enhanced) == (550, "5.6.11"), r
        assert c.cmd("NOOP").code == 250
        cqid = c.send_message("s@example.net", [f"control-{token}@fabrikam.test"], make_message(token))
    wait_for_delivery(server.data_dir, cqid)
    _nothing_for(server, f"bdat-{token}")


# ---------------------------------------------------------------------------------------------
# BDAT (CHUNKING)


def test_bdat_chunks_delivered_verbatim(server):
    token = uuid.uuid4().hex
    # no dot-stuffing in BDAT: leading dots and a lone "." line are content
    msg = (f"Subject: chunks {token}\r\nMessage-ID: <{token}@x>\r\n\r\n"
           "..two dots stay two\r\n.\r\nline split across chunks\r\nend\r\n").encode()
    cut1, cut2 = 40, msg.index(b"split") + 3
    # make the second cut fall between CR and LF to check line ends across chunk boundaries
    cut3 = msg.index(b"\r\nend") + 1
    chunks = [msg[:cut1], msg[cut1:cut2], msg[cut2:cut3], msg[cut3:]]
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250
        assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
        for ch in chunks[:-1]:
            c.send(f"BDAT {len(ch)}\r\n".encode() + ch)
            r = c.reply()
            assert (r.code, r.lines) == (250, ["2.0.0 Chunk received"]), r
        c.send(f"BDAT {len(chunks[-1])} LAST\r\n".encode() + chunks[-1])
        qid = queue_id_of(c.reply())
        assert c.cmd("NOOP").code == 250
    (f,) = wait_for_delivery(server.data_dir, qid)
    assert split_delivered(f.read_bytes(), qid).original == msg


def test_bdat_before_mail_consumes_octets(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        payload = b"QUIT\r\n"  # if taken as a command, the server would say 221 and close
        c.send(f"BDAT {len(payload)}\r\n".encode() + payload + b"NOOP\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (503, "5.5.1"), r
        r = c.reply()
        assert (r.code, r.enhanced) == (250, "2.0.0"), f"BDAT content was interpreted: {r!r}"
        payload = b"MAIL FROM:<x@example.net>\r\n"
        c.send(f"BDAT {len(payload)} LAST\r\n".encode() + payload)
        r = c.reply()
        assert (r.code, r.enhanced) == (503, "5.5.1"), r
        # no transaction was opened by the content
        r = c.cmd("RCPT TO:<alice@contoso.test>")
        assert (r.code, r.enhanced) == (503, "5.5.1"), r


def test_bdat_pipelined_in_one_write(server):
    token = uuid.uuid4().hex
    msg = make_message(token)
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@contoso.test>\r\nRCPT TO:<bob@contoso.test>\r\n"
               + f"BDAT {len(msg)} LAST\r\n".encode() + msg + b"NOOP\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (250, "2.1.0"), r
        for _ in range(2):
            r = c.reply()
            assert (r.code, r.enhanced) == (250, "2.1.5"), r
        qid = queue_id_of(c.reply())
        assert c.reply().lines == ["2.0.0 Ok"]
    files = wait_for_delivery(server.data_dir, qid, count=2)
    for f in files:
        assert split_delivered(f.read_bytes(), qid).original == msg


def test_bdat_zero_last_ends_message(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd("RCPT TO:<alice@contoso.test>")
        body = b"Subject: zero last\r\n\r\nbody\r\n"
        c.send(f"BDAT {len(body)}\r\n".encode() + body)
        assert c.reply().lines == ["2.0.0 Chunk received"]
        c.send(b"BDAT 0 LAST\r\n")
        qid = queue_id_of(c.reply())
    (f,) = wait_for_delivery(server.data_dir, qid)
    assert split_delivered(f.read_bytes(), qid).original == body


def test_data_after_bdat_refused(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd("RCPT TO:<alice@contoso.test>")
        c.send(b"BDAT 3\r\nabc")
        assert c.reply().code == 250
        r = c.cmd("DATA")
        assert (r.code, r.enhanced) == (503, "5.5.1"), r


# ---------------------------------------------------------------------------------------------
# PIPELINING


def test_pipelining_replies_in_order(server):
    token = uuid.uuid4().hex
    msg = make_message(token)
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<s@example.net>\r\n"
               b"RCPT TO:<alice@contoso.test>\r\n"
               b"RCPT TO:<nobody@contoso.test>\r\n"
               b"RCPT TO:<bob@contoso.test>\r\n"
               b"RCPT TO:<x@elsewhere.test>\r\n"
               b"DATA\r\n")
        got = [c.reply() for _ in range(6)]
        assert [(r.code, r.enhanced) for r in got] == [
            (250, "2.1.0"), (250, "2.1.5"), (550, "5.1.1"), (250, "2.1.5"), (550, "5.7.1"), (354, None)], got
        c.send(msg + b".\r\nRSET\r\nMAIL FROM:<t@example.net>\r\nNOOP\r\n")
        qid = queue_id_of(c.reply())
        assert [c.reply().first for _ in range(3)] == ["250 2.0.0 Ok", "250 2.1.0 Sender <t@example.net> OK",
                                                       "250 2.0.0 Ok"]
    files = wait_for_delivery(server.data_dir, qid, count=2)
    assert sorted(f.parent.parent.name for f in files) == ["alice", "bob"]
    assert all(f.name in (f"{qid}.R0.{HOSTNAME}", f"{qid}.R1.{HOSTNAME}") for f in files)


def test_pipelined_messages_in_one_write(server):
    msgs = [make_message(uuid.uuid4().hex) for _ in range(3)]
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        # RFC 2920: a client may not send past DATA before the 354, so send each transaction up to DATA
        qids = []
        for m in msgs:
            c.send(b"MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n")
            assert [c.reply().code for _ in range(3)] == [250, 250, 354]
            c.send(m + b".\r\n")
            qids.append(queue_id_of(c.reply()))
    assert len(set(qids)) == 3
    for q, m in zip(qids, msgs):
        (f,) = wait_for_delivery(server.data_dir, q)
        assert split_delivered(f.read_bytes(), q).original == m


# ---------------------------------------------------------------------------------------------
# STARTTLS


def test_starttls_command_injection(server):
    """CVE-2011-0411: commands sent in plaintext together with STARTTLS must be thrown away."""
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nRSET\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (220, "2.0.0") and r.lines == ["2.0.0 Ready to start TLS"], r
        assert c.buf == b"", f"the server answered the injected RSET in plaintext: {c.buf!r}"
        c.wrap_tls()
        c.send(b"EHLO client.test\r\n")
        r = c.reply()
        assert r.code == 250 and r.lines[0].startswith("mx.example.test"), (
            f"first reply over TLS must be our EHLO's, not the injected RSET's: {r!r}")
        assert "STARTTLS" not in r.lines
        assert c.cmd("NOOP").first == "250 2.0.0 Ok"


def test_starttls_injected_mail_not_executed(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\n")
        assert c.reply().code == 220
        c.wrap_tls()
        c.ehlo()
        # had the injected MAIL been executed, this would be a nested MAIL
        r = c.cmd("MAIL FROM:<s@example.net>")
        assert (r.code, r.enhanced) == (250, "2.1.0"), r


def test_starttls_state_reset_and_no_second_starttls(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.starttls()
        r = c.cmd("MAIL FROM:<s@example.net>")
        assert (r.code, r.enhanced) == (503, "5.5.1"), f"EHLO must be repeated after TLS: {r!r}"
        r = c.ehlo()
        assert "STARTTLS" not in r.lines
        r = c.cmd("STARTTLS")
        assert (r.code, r.enhanced) == (503, "5.5.1"), r
        assert c.cmd("NOOP").code == 250


def test_starttls_before_ehlo(server):
    with SMTPClient(server.port, timeout=5) as c:
        r = c.cmd("STARTTLS")
        assert (r.code, r.enhanced) == (503, "5.5.1"), r


# ---------------------------------------------------------------------------------------------
# framing limits, errors, timeouts


@pytest.mark.parametrize("length,ok", [(512, True), (513, False), (1000, False), (5000, False), (70000, False)])
def test_command_line_length(server, length, ok):
    """RFC 5321 4.5.3.1.4: 512 octets with CRLF; a longer line earns one 500 and the session goes on."""
    line = b"NOOP " + b"x" * (length - 7) + b"\r\n"
    assert len(line) == length
    with SMTPClient(server.port, timeout=3) as c:
        c.ehlo()
        c.send(line + b"NOOP\r\n")  # pipelined: the NOOP must be answered on its own
        r = c.reply()
        if ok:
            assert (r.code, r.enhanced) == (250, "2.0.0"), r
        else:
            assert (r.code, r.enhanced) == (500, "5.5.2"), r
        try:
            r = c.reply()
        except (TimeoutError, OSError) as e:
            pytest.fail(f"the NOOP sent after a {length}-octet line got no reply ({e!r}): the server "
                        "swallowed the next command along with the long line")
        assert r.first == "250 2.0.0 Ok", f"exactly one reply for the long line, then NOOP's: {r!r}"
        assert c.cmd("RSET").first == "250 2.0.0 Ok"


def test_too_many_errors_closes(server):
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.send(b"FOO\r\n" * 21 + b"NOOP\r\n")
        for i in range(20):
            r = c.reply()
            assert (r.code, r.enhanced) == (502, "5.5.1"), f"error {i + 1}: {r!r}"
        r = c.reply()
        assert r.first == "421 4.7.0 Too many errors on this connection, closing transmission channel", r
        c.expect_closed()


def test_configured_error_limit(mailflow_server):
    srv = mailflow_server({"limits": {"max_errors_per_session": 3}})
    with SMTPClient(srv.port, timeout=5) as c:
        c.ehlo()
        for _ in range(3):
            assert c.cmd("RCPT TO:<alice@contoso.test>").code == 503
        r = c.cmd("NOOP")
        assert r.code == 250, "successful commands are not errors"
        r = c.cmd("RCPT TO:<alice@contoso.test>")
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
        c.expect_closed()


def test_mixed_errors_count(server):
    """Errors of any kind (5xx syntax, 550 policy) count towards the limit; successes do not reset it."""
    with SMTPClient(server.port, timeout=5) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        for i in range(20):
            cmd = "RCPT TO:<nobody@contoso.test>" if i % 2 else "XYZ"
            assert c.cmd(cmd).code >= 500
            assert c.cmd("NOOP").code == 250
        r = c.cmd("RCPT TO:<x@elsewhere.test>")
        assert (r.code, r.enhanced) == (421, "4.7.0"), r
        c.expect_closed()


@pytest.fixture(scope="module")
def quick_timeout_server(tmp_path_factory):
    from mfutil import MailflowServer, default_config, merge_config

    srv = MailflowServer(tmp_path_factory.mktemp("timeouts"),
                         merge_config(default_config(), {"timeouts": {"command": 1, "data": 1}}))
    srv.start()
    yield srv
    srv.kill()


@pytest.mark.parametrize("setup", [[], E, EM, EMR], ids=["after-greeting", "after-ehlo", "after-mail",
                                                         "after-rcpt"])
def test_command_timeout(quick_timeout_server, setup):
    with SMTPClient(quick_timeout_server.port, timeout=10) as c:
        for s in setup:
            assert c.cmd(s).code == 250
        t0 = time.monotonic()
        r = c.reply()
        waited = time.monotonic() - t0
        assert (r.code, r.enhanced) == (421, "4.4.2"), r
        assert 0.5 <= waited <= 5, f"timed out after {waited:.2f}s with command timeout 1s"
        c.expect_closed()


def test_data_timeout_discards_message(quick_timeout_server):
    token = uuid.uuid4().hex[:12]
    with SMTPClient(quick_timeout_server.port, timeout=10) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd(f"RCPT TO:<slow-{token}@fabrikam.test>")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: half\r\n\r\nhalf a message\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (421, "4.4.2"), r
        c.expect_closed()
    _nothing_for(quick_timeout_server, f"slow-{token}")


def test_session_time_cap(mailflow_server):
    srv = mailflow_server({"timeouts": {"session": 2}})
    with SMTPClient(srv.port, timeout=10) as c:
        c.ehlo()
        t0 = time.monotonic()
        while True:
            time.sleep(0.2)
            try:
                r = c.cmd("NOOP")
            except EOFError:
                pytest.fail("closed without a 421")
            if r.code != 250:
                break
            assert time.monotonic() - t0 < 6, "a busy session outlived timeouts.session"
        assert (r.code, r.enhanced) == (421, "4.4.2"), r
        assert time.monotonic() - t0 >= 1.5
        c.expect_closed()


def test_activity_keeps_session_alive(quick_timeout_server):
    with SMTPClient(quick_timeout_server.port, timeout=10) as c:
        c.ehlo()
        for _ in range(4):
            time.sleep(0.5)
            assert c.cmd("NOOP").code == 250
