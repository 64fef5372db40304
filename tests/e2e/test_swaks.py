"""swaks as a real client: plain, --tls, --pipeline, and a refused recipient."""

from __future__ import annotations

import re
import subprocess
import uuid

from mfutil import QUEUED_RE, make_message, split_delivered, wait_for_delivery


def _swaks(need_tool, port: int, *args: str, data: bytes | None = None, tmp_path=None):
    cmd = [need_tool("swaks"), "--server", f"127.0.0.1:{port}", "--helo", "swaks.client.test",
           "--from", "swaks@example.net", "--timeout", "20", *args]
    if data is not None:
        f = tmp_path / f"msg-{uuid.uuid4().hex}.eml"
        # swaks ends the data with CRLF "." CRLF itself, so the file stops before the last CRLF
        assert data.endswith(b"\r\n")
        f.write_bytes(data[:-2])
        cmd += ["--data", str(f)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def _queue_id(output: str) -> str:
    ids = QUEUED_RE.findall(output)
    assert len(ids) == 1, output
    return ids[0]


def test_swaks_plain(server, need_tool, tmp_path):
    token = uuid.uuid4().hex
    msg = make_message(token, body_lines=[".leading dot line", "plain swaks"])
    r = _swaks(need_tool, server.port, "--to", "alice@contoso.test", data=msg, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  220 mx.example.test ESMTP Mailflow ready" in r.stdout
    qid = _queue_id(r.stdout)
    (f,) = wait_for_delivery(server.data_dir, qid)
    d = split_delivered(f.read_bytes(), qid)
    assert d.return_path == b"<swaks@example.net>"
    assert d.original == msg
    assert re.search(rb"Received: from swaks\.client\.test .*\r\n\tby mx\.example\.test \(Mailflow\) with ESMTP\r\n",
                     d.received), d.received


def test_swaks_tls(server, need_tool, tmp_path):
    token = uuid.uuid4().hex
    msg = make_message(token, to="bob@contoso.test")
    r = _swaks(need_tool, server.port, "--to", "bob@contoso.test", "--tls", data=msg, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<-  220 2.0.0 Ready to start TLS" in r.stdout
    assert "=== TLS started" in r.stdout
    qid = _queue_id(r.stdout)
    (f,) = wait_for_delivery(server.data_dir, qid)
    assert f.parent.parent.name == "bob"
    d = split_delivered(f.read_bytes(), qid)
    assert d.original == msg
    assert re.search(rb"with ESMTPS \(TLSv1\.[23]\)\r\n", d.received), d.received


def test_swaks_pipelining_two_recipients(server, need_tool, tmp_path):
    token = uuid.uuid4().hex
    msg = make_message(token)
    r = _swaks(need_tool, server.port, "--to", "alice@contoso.test,bob@contoso.test", "--pipeline",
               data=msg, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    qid = _queue_id(r.stdout)
    files = wait_for_delivery(server.data_dir, qid, count=2)
    assert sorted(f.parent.parent.name for f in files) == ["alice", "bob"]
    for f in files:
        assert split_delivered(f.read_bytes(), qid).original == msg


def test_swaks_relay_denied(server, need_tool, tmp_path):
    r = _swaks(need_tool, server.port, "--to", "someone@elsewhere.test", data=make_message("x"), tmp_path=tmp_path)
    assert r.returncode == 24, r.stdout + r.stderr  # swaks: no recipients accepted
    assert "<** 550 5.7.1" in r.stdout
