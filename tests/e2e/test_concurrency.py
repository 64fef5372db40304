"""Many concurrent clients (group commit): every message acknowledged and delivered exactly once."""

from __future__ import annotations

import smtplib
import threading
import uuid

from mfutil import QUEUED_RE, all_delivered_files, delivered_files, make_message, split_delivered, \
    wait_for_delivery

CONNECTIONS = 20
PER_CONNECTION = 10


def test_200_messages_from_20_connections(mailflow_server):
    srv = mailflow_server()
    results: dict[str, tuple[bytes, str]] = {}
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CONNECTIONS)

    def client(k: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", srv.port, local_hostname=f"gc{k}.client.test", timeout=30) as s:
                s.ehlo()
                barrier.wait(10)  # all connections open before the first message
                for i in range(PER_CONNECTION):
                    token = f"gc-{k}-{i}-{uuid.uuid4().hex[:8]}"
                    rcpt = f"gc{k}@fabrikam.test"
                    msg = make_message(token, to=rcpt, body_lines=[f"connection {k} message {i}"])
                    assert s.mail("s@example.net")[0] == 250
                    assert s.rcpt(rcpt)[0] == 250
                    code, resp = s.data(msg)
                    if code != 250:
                        raise AssertionError(f"{code} {resp!r}")
                    m = QUEUED_RE.search(resp.decode())
                    assert m, resp
                    with lock:
                        results[m.group(1)] = (msg, rcpt)
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                failures.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert len(results) == CONNECTIONS * PER_CONNECTION, "every message gets its own queue ID"

    for qid, (msg, rcpt) in results.items():
        (f,) = wait_for_delivery(srv.data_dir, qid, timeout=30)
        assert f.parent.parent.name == rcpt.split("@")[0]
        assert split_delivered(f.read_bytes(), qid).original == msg
    srv.wait_queue_empty(timeout=30)
    for qid in results:
        assert len(delivered_files(srv.data_dir, qid)) == 1, f"{qid} delivered more than once"
    assert len(all_delivered_files(srv.data_dir)) == CONNECTIONS * PER_CONNECTION
    rows = srv.queue_json(include_done=True)
    assert sorted(r["id"] for r in rows) == sorted(results)
    assert all(r["state"] == "done" for r in rows)
