"""Message size, recipients per message and text line length limits."""

from __future__ import annotations

import smtplib
import uuid

import pytest

from mfutil import SMTPClient, all_delivered_files, make_message, queue_id_of, split_delivered, \
    wait_for_delivery

LIMIT = 10 * 1024  # max_message_size: 10KB


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from conftest import storage_under_test
    from mfutil import MailflowServer, default_config, merge_config

    srv = MailflowServer(
        tmp_path_factory.mktemp("limits"),
        merge_config(default_config(), {"limits": {"max_message_size": "10KB", "recipients_per_message": 3},
                                        **storage_under_test()}))
    srv.start()
    yield srv
    srv.kill()


def _nothing_for(srv, marker: str) -> None:
    assert [p for p in all_delivered_files(srv.data_dir) if marker in str(p)] == []
    assert not any(marker in r for row in srv.queue_json(include_done=True) for r in row["recipients"])


def test_size_advertised(small):
    with SMTPClient(small.port) as c:
        assert f"SIZE {LIMIT}" in c.ehlo().lines


@pytest.mark.parametrize("size,code,enhanced", [(LIMIT, 250, "2.1.0"), (LIMIT + 1, 552, "5.3.4"),
                                               (10**12, 552, "5.3.4")])
def test_declared_size(small, size, code, enhanced):
    with SMTPClient(small.port) as c:
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<s@example.net> SIZE={size}")
        assert (r.code, r.enhanced) == (code, enhanced), r


def _body_of_size(token: str, size: int) -> bytes:
    head = f"Subject: size {token}\r\nMessage-ID: <{token}@x>\r\n\r\n".encode()
    line = b"x" * 98 + b"\r\n"
    body = head
    while len(body) + len(line) <= size:
        body += line
    body += b"y" * (size - len(body) - 2) + b"\r\n" if size - len(body) >= 2 else b""
    assert len(body) == size, (len(body), size)
    return body


def test_body_over_limit_refused_after_dot(small):
    token = uuid.uuid4().hex[:12]
    with SMTPClient(small.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.net>").code == 250  # no SIZE= declared
        assert c.cmd(f"RCPT TO:<big-{token}@fabrikam.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(_body_of_size(token, 3 * LIMIT) + b".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
        assert c.cmd("NOOP").first == "250 2.0.0 Ok", "the session goes on after a refused message"
        cqid = c.send_message("s@example.net", [f"ok-{token}@fabrikam.test"], make_message(token))
    wait_for_delivery(small.data_dir, cqid)
    _nothing_for(small, f"big-{token}")


def test_body_at_limit_accepted(small):
    token = uuid.uuid4().hex[:12]
    msg = _body_of_size(token, LIMIT)
    with SMTPClient(small.port) as c:
        c.ehlo()
        qid = c.send_message("s@example.net", ["alice@contoso.test"], msg, mail_params=f"SIZE={len(msg)}")
    (f,) = wait_for_delivery(small.data_dir, qid)
    assert split_delivered(f.read_bytes(), qid).original == msg


def test_body_one_over_limit_refused(small):
    token = uuid.uuid4().hex[:12]
    with SMTPClient(small.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd(f"RCPT TO:<over1-{token}@fabrikam.test>")
        assert c.cmd("DATA").code == 354
        c.send(_body_of_size(token, LIMIT + 1) + b".\r\n")
        r = c.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
    _nothing_for(small, f"over1-{token}")


def test_bdat_over_limit_refused(small):
    token = uuid.uuid4().hex[:12]
    body = _body_of_size(token, 2 * LIMIT)
    with SMTPClient(small.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd(f"RCPT TO:<bdatbig-{token}@fabrikam.test>")
        c.send(f"BDAT {len(body)} LAST\r\n".encode() + body)
        r = c.reply()
        assert (r.code, r.enhanced) == (552, "5.3.4"), r
        assert c.cmd("NOOP").code == 250
    _nothing_for(small, f"bdatbig-{token}")


def test_smtplib_size_refused(small):
    msg = _body_of_size("smtplib", 2 * LIMIT)
    with smtplib.SMTP("127.0.0.1", small.port, timeout=10) as s:
        # smtplib adds SIZE= from the message length when the server offers SIZE
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("s@example.net", ["alice@contoso.test"], msg)
        assert e.value.smtp_code == 552
        assert e.value.smtp_error.startswith(b"5.3.4")


def test_too_many_recipients(small):
    token = uuid.uuid4().hex[:12]
    rcpts = [f"r{i}-{token}@fabrikam.test" for i in range(5)]
    with SMTPClient(small.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        got = [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]
        assert [(r.code, r.enhanced) for r in got] == [(250, "2.1.5")] * 3 + [(452, "4.5.3")] * 2, got
        assert c.cmd("DATA").code == 354
        c.send(make_message(token) + b".\r\n")
        qid = queue_id_of(c.reply())
    files = wait_for_delivery(small.data_dir, qid, count=3)
    assert sorted(f.parent.parent.name for f in files) == sorted(r.split("@")[0] for r in rcpts[:3])
    for r in rcpts[3:]:
        _nothing_for(small, r.split("@")[0])


def test_recipient_limit_is_per_transaction(small):
    with SMTPClient(small.port) as c:
        c.ehlo()
        for _ in range(2):
            c.cmd("MAIL FROM:<s@example.net>")
            for i in range(3):
                assert c.cmd(f"RCPT TO:<alice@contoso.test>").code == 250
            assert c.cmd("RCPT TO:<bob@contoso.test>").code == 452
            assert c.cmd("RSET").code == 250


@pytest.mark.parametrize("length,ok", [(998, True), (999, False), (5000, False)])
def test_text_line_length(server, length, ok):
    """RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF."""
    token = uuid.uuid4().hex[:12]
    rcpt = f"line{length}-{token}@fabrikam.test"
    msg = f"Subject: long line\r\nMessage-ID: <{token}@x>\r\n\r\n".encode() + b"z" * length + b"\r\nend\r\n"
    with SMTPClient(server.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd(f"RCPT TO:<{rcpt}>")
        assert c.cmd("DATA").code == 354
        c.send(msg + b".\r\n")
        r = c.reply()
        if ok:
            qid = queue_id_of(r)
        else:
            assert (r.code, r.enhanced) == (550, "5.6.0"), r
        assert c.cmd("NOOP").code == 250
    if ok:
        (f,) = wait_for_delivery(server.data_dir, qid)
        assert split_delivered(f.read_bytes(), qid).original == msg
    else:
        _nothing_for(server, f"line{length}-{token}")


def test_text_line_length_bdat(server):
    token = uuid.uuid4().hex[:12]
    rcpt = f"bdatline-{token}@fabrikam.test"
    msg = b"Subject: long\r\n\r\n" + b"z" * 999 + b"\r\n"
    with SMTPClient(server.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.net>")
        c.cmd(f"RCPT TO:<{rcpt}>")
        c.send(f"BDAT {len(msg)} LAST\r\n".encode() + msg)
        r = c.reply()
        assert (r.code, r.enhanced) == (550, "5.6.0"), r
    _nothing_for(server, f"bdatline-{token}")
