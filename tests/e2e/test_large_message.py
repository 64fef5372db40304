"""A 35 MB message through smtplib: delivered intact, and streamed (the server's memory stays flat)."""

from __future__ import annotations

import base64
import hashlib
import os
import smtplib
import threading
import time

import pytest

from mfutil import read_rss_kb, split_delivered, wait_for_delivery

MB = 1024 * 1024


class RSSSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.005):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                self.peak_kb = max(self.peak_kb, read_rss_kb(self.pid))
                self.samples += 1
            except (FileNotFoundError, ProcessLookupError, RuntimeError):
                return
            time.sleep(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)


def _big_message(size: int) -> tuple[bytes, bytes]:
    header = (b"From: <big@example.net>\r\nTo: <alice@contoso.test>\r\nSubject: 35 MB\r\n"
              b"Message-ID: <big-message@example.net>\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    raw = os.urandom(size * 3 // 4)
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")  # 76-character lines
    # a few lines that need dot-stuffing on the wire
    body = b64[: 1000 * 78] + b".\r\n..\r\n.leading\r\n" + b64[1000 * 78:]
    return header, body


@pytest.mark.slow
@pytest.mark.sqlite_only  # the shared queue holds a body whole while it stores and claims it (docs/cluster.md)
def test_35mb_message_streamed_and_intact(mailflow_server):
    srv = mailflow_server({"limits": {"max_message_size": "40MB"}})
    header, body = _big_message(35 * MB)
    msg = header + body
    assert 35 * MB <= len(msg) < 40 * MB

    # warm up: one small message so lazily allocated buffers and threads exist before the baseline
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=60) as s:
        s.sendmail("s@example.net", ["bob@contoso.test"], b"Subject: warm-up\r\n\r\nhi\r\n")
    time.sleep(0.3)
    baseline_kb = read_rss_kb(srv.pid)

    sampler = RSSSampler(srv.pid)
    sampler.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="big.client.test", timeout=120) as s:
            s.ehlo()
            assert s.mail("big@example.net", [f"SIZE={len(msg)}"])[0] == 250
            assert s.rcpt("alice@contoso.test")[0] == 250
            code, resp = s.data(msg)
            assert code == 250, resp
            qid = resp.decode().rsplit(" ", 1)[1]
        (f,) = wait_for_delivery(srv.data_dir, qid, timeout=60)
    finally:
        sampler.stop()

    data = f.read_bytes()
    d = split_delivered(data, qid)
    assert d.original[: len(header)] == header
    assert hashlib.sha256(d.original[len(header):]).hexdigest() == hashlib.sha256(body).hexdigest()
    assert len(d.original) == len(msg)

    growth_mb = (sampler.peak_kb - baseline_kb) / 1024
    assert sampler.samples > 10, "too few RSS samples to judge"
    assert growth_mb < 20, (f"server RSS grew by {growth_mb:.1f} MB while taking a {len(msg) / MB:.0f} MB "
                            f"message (baseline {baseline_kb / 1024:.1f} MB, peak {sampler.peak_kb / 1024:.1f} MB)")
