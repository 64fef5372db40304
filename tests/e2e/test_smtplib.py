"""Python's smtplib as a real client: plain, STARTTLS, several messages per connection, SMTPUTF8."""

from __future__ import annotations

import re
import smtplib
import uuid

from mfutil import (
    HOSTNAME,
    QUEUED_RE,
    client_tls_context,
    delivered_files,
    make_message,
    split_delivered,
    wait_for_delivery,
)


def _queue_id(resp: bytes) -> str:
    m = QUEUED_RE.search(resp.decode())
    assert m, resp
    return m.group(1)


def _send(smtp: smtplib.SMTP, sender: str, rcpts: list[str], msg: bytes, mail_options=()) -> str:
    code, resp = smtp.mail(sender, list(mail_options))
    assert code == 250, resp
    for r in rcpts:
        code, resp = smtp.rcpt(r)
        assert code == 250, resp
    code, resp = smtp.data(msg)
    assert code == 250, resp
    assert resp.startswith(b"2.0.0 Ok: queued as "), resp
    return _queue_id(resp)


def _tricky_body(token: str) -> list[str]:
    # smtplib dot-stuffs these; Mailflow must unstuff them back exactly.
    return [".dot", "..two dots", ".", "", "a line with trailing space ", "\tindented", "8bit: caf\u00e9"]


def test_plain_delivery_intact_and_once(server):
    token = uuid.uuid4().hex
    msg = make_message(token, body_lines=_tricky_body(token))
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10) as s:
        code, _ = s.ehlo()
        assert code == 250
        qid = _send(s, "sender@example.net", ["alice@contoso.test"], msg, ["BODY=8BITMIME"])
    files = wait_for_delivery(server.data_dir, qid)
    assert files == [server.data_dir / "mailboxes" / "contoso.test" / "alice" / "new" / f"{qid}.R0.{HOSTNAME}"]
    d = split_delivered(files[0].read_bytes(), qid)
    assert d.return_path == b"<sender@example.net>"
    assert d.original == msg, "the message must arrive byte for byte, dot-unstuffed"
    assert d.added_message_id is None, "the message had a Message-ID; none may be added"
    assert b"\r\n.dot\r\n" in d.original and b"\r\n..two dots\r\n" in d.original
    assert b"with ESMTP\r\n" in d.received
    assert f"id {qid} for <alice@contoso.test>;".encode() in d.received


def test_message_id_added_when_missing(server):
    token = uuid.uuid4().hex
    msg = make_message(token, message_id=False)
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        qid = _send(s, "sender@example.net", ["bob@contoso.test"], msg)
    (f,) = wait_for_delivery(server.data_dir, qid)
    d = split_delivered(f.read_bytes(), qid)
    assert d.added_message_id == f"Message-ID: <{qid}@{HOSTNAME}>\r\n".encode()
    assert d.original == msg


def test_starttls_delivery(server):
    token = uuid.uuid4().hex
    msg = make_message(token, body_lines=_tricky_body(token))
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        code, resp = s.starttls(context=client_tls_context())
        assert code == 220 and resp.startswith(b"2.0.0"), resp
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        s.ehlo()
        assert not s.has_extn("starttls"), "STARTTLS must not be offered once TLS is active"
        qid = _send(s, "sender@example.net", ["alice@contoso.test"], msg, ["BODY=8BITMIME"])
        tls_version = s.sock.version()
    (f,) = wait_for_delivery(server.data_dir, qid)
    d = split_delivered(f.read_bytes(), qid)
    assert d.original == msg
    assert f"with ESMTPS ({tls_version})\r\n".encode() in d.received, d.received


def test_several_messages_on_one_connection(server):
    sent: dict[str, bytes] = {}
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        for i in range(6):
            token = uuid.uuid4().hex
            msg = make_message(token, body_lines=[f"message {i}", ".leading dot"])
            rcpts = ["alice@contoso.test"] if i % 2 == 0 else ["alice@contoso.test", "bob@contoso.test"]
            qid = _send(s, f"sender{i}@example.net", rcpts, msg)
            sent[qid] = (msg, rcpts)
            if i == 3:
                assert s.rset()[0] == 250
                assert s.noop()[0] == 250
    assert len(sent) == 6, "every message needs its own queue ID"
    for qid, (msg, rcpts) in sent.items():
        files = wait_for_delivery(server.data_dir, qid, count=len(rcpts))
        assert len(files) == len(rcpts), files
        boxes = sorted(f.parent.parent.name for f in files)
        assert boxes == sorted(r.split("@")[0] for r in rcpts)
        for f in files:
            assert re.fullmatch(rf"{qid}\.R[01]\.{re.escape(HOSTNAME)}", f.name), f.name
            d = split_delivered(f.read_bytes(), qid)
            assert d.original == msg
    # nothing else arrived twice
    for qid, (msg, rcpts) in sent.items():
        assert len(delivered_files(server.data_dir, qid)) == len(rcpts)


def test_smtputf8_to_utf8_local_part(server):
    token = uuid.uuid4().hex
    local = "j\u00f6s\u00e9." + token[:8]
    rcpt = f"{local}@fabrikam.test"
    msg = ("From: <s\u00e9nder@example.net>\r\nTo: <" + rcpt + ">\r\nSubject: gr\u00fc\u00dfe " + token
           + "\r\n\r\nUTF-8 body \u00e4\u00f6\u00fc \u2603\r\n").encode("utf-8")
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        assert s.has_extn("smtputf8")
        # sendmail() path as real programs use it
        refused = s.sendmail("s\u00e9nder@example.net", [rcpt], msg, mail_options=["SMTPUTF8"])
        assert refused == {}
        # and once more step by step, to learn the queue ID
        qid = _send(s, "s\u00e9nder@example.net", [rcpt], msg, ["SMTPUTF8"])
    (f,) = wait_for_delivery(server.data_dir, qid)
    assert f.parent.parent == server.data_dir / "mailboxes" / "fabrikam.test" / local
    d = split_delivered(f.read_bytes(), qid)
    assert d.return_path == "<s\u00e9nder@example.net>".encode()
    assert d.original == msg
    assert b"with UTF8SMTP\r\n" in d.received, d.received
    # the sendmail() copy arrived too: two files in the mailbox in all
    box_new = f.parent
    assert len(list(box_new.iterdir())) == 2
