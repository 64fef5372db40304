"""Issue 15, inbound hostile peers and descriptor exhaustion, each against a real `mailflow serve`.

A client that pipelines 200,000 NOOPs and never reads a reply leaves the server's memory flat and is
closed at its command deadline; TLS handshakes that stall (silence after STARTTLS, half a
ClientHello, silence on the implicit-TLS port) are closed at `timeouts.tls_handshake`, and a flood of
500 of them does not keep smtplib from being served; 1,000 idle sessions cost a bounded amount of
memory; with `ulimit -n 256` new connections get `421 4.3.2` while the sessions already in finish
and their mail is delivered, the server does not spin on failed accepts, and it serves again once
connections close. (Slowloris on commands and bodies: test_hostile_input.py; the session cap:
test_protocol.py.)
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import smtplib
import socket
import ssl
import time

import pytest

from mfutil import (SMTPClient, client_tls_context, make_message, proc_status_kb, queue_id_of, wait_for,
                    wait_for_delivery)


# -- helpers --------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    return proc_status_kb(pid) / 1024


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def snapshot(srv) -> dict:
    """`mailflow limits --json`: the server's usage snapshot (rewritten every second)."""
    r = srv.cli("limits", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def connections(srv) -> int:
    return snapshot(srv)["connections"]


def served(port: int, tag: str, starttls: bool = False, timeout: float = 20) -> float:
    """One smtplib transaction (optionally after STARTTLS); returns how long it took."""
    t0 = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("client.test")
        if starttls:
            s.starttls(context=client_tls_context())
            s.ehlo("client.test")
        refused = s.sendmail("sender@example.net", ["alice@contoso.test"], make_message(tag))
        assert refused == {}, refused
    return time.monotonic() - t0


def client_hello() -> bytes:
    """The first flight of a real TLS client (Python's ssl over memory BIOs)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_tls_context().wrap_bio(incoming, outgoing, server_hostname="mx.example.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]  # a TLS handshake record
    return hello


def closed_within(sock: socket.socket, limit: float) -> float:
    """Reads (and drops) whatever arrives until the server closes; returns the seconds it took, or
    inf if it is still open after `limit`."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            if not sock.recv(65536):
                return time.monotonic() - t0
        except (socket.timeout, TimeoutError):
            continue
        except OSError:  # reset
            return time.monotonic() - t0
    return float("inf")


def starttls_and_stall(port: int, send: bytes) -> socket.socket:
    """EHLO, STARTTLS, then `send` (nothing, or part of a ClientHello) and silence."""
    c = SMTPClient(port)
    c.ehlo()
    r = c.cmd("STARTTLS")
    assert (r.code, r.enhanced) == (220, "2.0.0"), r
    if send:
        c.sock.sendall(send)
    return c.sock


def raise_own_fd_limit(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


# -- a client that never reads its replies ---------------------------------------------------------


def test_a_client_that_never_reads_its_replies_is_bounded_and_closed(mailflow_server):
    srv = mailflow_server({"timeouts": {"command": 4, "data": 30, "session": 3600}})
    served(srv.port, "warm-up")
    base = max(rss_mb(srv.pid) for _ in range(3))
    s = socket.socket()
    # A receive buffer of a few KB: the replies back up into the server at once.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # A small send buffer too: once the server stops reading, what the client can still push is
    # the server's receive buffer (tcp_rmem, up to 6 MB here) and this one. With the default send
    # buffer (up to 4 MB) the 6 MB below all fitted in one fresh-clone CI run, although the server
    # had stopped reading.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.connect(("127.0.0.1", srv.port))
    s.setblocking(False)
    # 12 MB of NOOPs make 28 MB of replies: more than the kernel's socket buffers on both sides hold,
    # so they would pile up in the server.
    pipeline = b"EHLO hostile.test\r\n" + b"NOOP\r\n" * 2_000_000
    sent, peak, t0 = 0, base, time.monotonic()
    last_sent, closed_at = t0, None
    other = None
    while time.monotonic() - t0 < 40 and closed_at is None:
        try:
            if sent < len(pipeline):
                sent += s.send(pipeline[sent:sent + 65536])
                last_sent = time.monotonic()
            else:
                s.send(b"NOOP\r\n")  # a reset shows here once the server has closed
                time.sleep(0.2)
        except BlockingIOError:
            select.select([], [s], [], 0.2)
        except OSError:
            closed_at = time.monotonic()
        peak = max(peak, rss_mb(srv.pid))
        if other is None and time.monotonic() - t0 > 1:
            # Other clients are served meanwhile.
            other = served(srv.port, "meanwhile")
    s.close()
    # Served, not starved: typically well under a second here; a fresh-clone CI run on two busy
    # cores once took 6.2 s. A starved client would hit served()'s 20 s timeout.
    assert other is not None and other < 15, other
    # Closed at the command deadline: 4 s after the last command taken, which is before the last
    # octets the kernel took from the client.
    assert closed_at is not None, f"the session of a client that never reads was not closed ({sent} octets sent)"
    assert closed_at - last_sent < 12, (closed_at - last_sent, sent)
    assert sent < len(pipeline), "the server read every NOOP: it never stopped reading"
    grown = peak - base
    # Measured: +1.6 MB (debug build); 153 MB and a session never closed before the output was bounded.
    assert grown < 24, f"RSS grew {grown:.1f} MB for one client that never reads"
    assert "client does not read its replies" in srv.stderr()
    wait_for(lambda: connections(srv) == 0, timeout=5)
    assert srv.running()


# -- TLS handshakes that stall --------------------------------------------------------------------


@pytest.mark.parametrize("stall", ["silence", "half a ClientHello"])
def test_a_stalled_starttls_handshake_is_closed_at_its_deadline(mailflow_server, stall):
    srv = mailflow_server({"timeouts": {"command": 300, "data": 300, "session": 3600, "tls_handshake": 2}})
    send = b"" if stall == "silence" else client_hello()[:40]
    sock = starttls_and_stall(srv.port, send)
    took = closed_within(sock, 15)
    sock.close()
    # 2 s, and at most a few more for the TLS layer's own close; never the 300 s command timeout.
    assert 1.5 < took < 9, took
    assert "TLS handshake timed out" in srv.stderr()


def test_silence_on_the_implicit_tls_port_is_closed_at_the_handshake_deadline(mailflow_server):
    srv = mailflow_server({
        "submission": {"starttls": [], "implicit_tls": ["127.0.0.1:0"]},
        "timeouts": {"command": 300, "data": 300, "session": 3600, "tls_handshake": 2},
    })
    port = int(re.search(r"mailflow: submission \(implicit TLS\) on 127\.0\.0\.1:(\d+)",
                         srv.stdout_path.read_text()).group(1))
    silent = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(client_hello()[:40])
    assert 1.5 < closed_within(silent, 15) < 9
    assert closed_within(half, 15) < 9
    silent.close()
    half.close()
    # A real client on the same port still gets its greeting inside TLS.
    with smtplib.SMTP_SSL("127.0.0.1", port, context=client_tls_context(), timeout=10) as s:
        assert s.ehlo("client.test")[0] == 250


def test_a_flood_of_half_open_tls_handshakes_does_not_stop_service(mailflow_server):
    raise_own_fd_limit(2048)
    srv = mailflow_server({"timeouts": {"command": 300, "data": 300, "session": 3600, "tls_handshake": 4}})
    hello = client_hello()
    t0 = time.monotonic()
    flood = [starttls_and_stall(srv.port, hello[: 5 + i % 60]) for i in range(500)]
    opened = time.monotonic() - t0
    try:
        assert connections(srv) >= 500 or wait_for(lambda: connections(srv) >= 500, timeout=5)
        # A well-behaved client is served, through STARTTLS, while 500 handshakes hang.
        took = served(srv.port, "through-the-flood", starttls=True)
        assert took < 10, took
        # Every stalled handshake is gone by its deadline (4 s after the last one opened, plus slack).
        wait_for(lambda: connections(srv) == 0, timeout=4 + 10, what="the half-open handshakes to be closed")
    finally:
        for s in flood:
            s.close()
    assert opened < 60
    assert srv.running()


# -- many idle sessions ------------------------------------------------------------------------------


def test_a_thousand_idle_sessions_cost_bounded_memory(mailflow_server):
    raise_own_fd_limit(4096)
    srv = mailflow_server({"limits": {"max_connections": 5000,
                                      "per_source": {"max_connections": 5000, "connections_per_minute": 1000000,
                                                     "messages_per_minute": 1000000}}})
    served(srv.port, "warm-up")
    time.sleep(1)
    base = rss_mb(srv.pid)
    idle = []
    try:
        for _ in range(1000):
            c = SMTPClient(srv.port)
            c.ehlo()
            idle.append(c)
        wait_for(lambda: connections(srv) >= 1000, timeout=5)
        held = rss_mb(srv.pid)
        per_session_kb = (held - base) * 1024 / 1000
        assert served(srv.port, "beside-1000-idle") < 5
    finally:
        for c in idle:
            c.close()
    wait_for(lambda: connections(srv) == 0, timeout=10)
    # Measured: 8 KB a session (1,000 here; scripts/bench-memory --idle 10000 for 10,000); 64 KB is the alarm.
    assert per_session_kb < 64, f"{per_session_kb:.1f} KB an idle session"


# -- descriptor exhaustion ---------------------------------------------------------------------------


def limit_descriptors(srv, n: int) -> None:
    """`prlimit --nofile=n:n` on the running server, then wait for its snapshot to show it."""
    resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, (n, n))
    wait_for(lambda: (snapshot(srv).get("descriptors") or {}).get("limit") == n, timeout=5,
             what="the snapshot to show the new descriptor limit")


def start_transaction(port: int, tag: str) -> SMTPClient:
    """A session with a message half sent: MAIL, RCPT, DATA and the start of the body."""
    c = SMTPClient(port)
    c.ehlo()
    assert c.cmd("MAIL FROM:<sender@example.net>").code == 250
    assert c.cmd("RCPT TO:<alice@contoso.test>").code == 250
    assert c.cmd("DATA").code == 354
    msg = make_message(tag)
    c.send(msg[:40])
    c.rest = msg[40:]
    return c


def first_reply(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    try:
        return s.recv(512)
    except (socket.timeout, TimeoutError):
        return b"(nothing)"
    except OSError as e:
        return f"({e})".encode()


def test_out_of_descriptors_new_connections_get_421_and_sessions_in_flight_finish(mailflow_server):
    raise_own_fd_limit(4096)
    srv = mailflow_server({"limits": {"max_connections": 5000}})
    limit_descriptors(srv, 256)
    in_flight = [start_transaction(srv.port, f"in-flight-{i}") for i in range(5)]
    flood, replies = [], []
    try:
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            flood.append(s)
            replies.append(first_reply(s, 5))
        greeted = sum(r.startswith(b"220 ") for r in replies)
        refused = [r for r in replies if r.startswith(b"421 4.3.2")]
        other = [r for r in replies if not (r.startswith(b"220 ") or r.startswith(b"421 4.3.2"))]
        # Every connection got an answer: a greeting while descriptors were left, then 421 4.3.2.
        assert not other, other[:5]
        assert refused and greeted, (greeted, len(refused))
        assert greeted < 256 - 64, greeted
        # The reserve is kept: 64 of the 256 stay free for the queue, spool and deliveries.
        assert open_fds(srv.pid) <= 256 - 48, open_fds(srv.pid)
        wait_for(lambda: snapshot(srv)["refusals"].get("descriptors", 0) >= len(refused), timeout=5,
                 what="the refusals in the snapshot")
        out = srv.cli("limits").stdout
        assert re.search(r"Descriptors: \d+ of 256 open", out), out
        # The sessions already in finish, and their mail is delivered.
        qids = []
        for c in in_flight:
            c.send(c.rest + b".\r\n")
            qids.append(queue_id_of(c.reply()))
        for q in qids:
            wait_for_delivery(srv.data_dir, q, timeout=20)
    finally:
        for s in flood:
            s.close()
        for c in in_flight:
            c.close()
    # Recovery: once the flood has gone, new sessions are served again.
    wait_for(lambda: connections(srv) == 0, timeout=10)
    time.sleep(1.5)  # one more count of the descriptors
    assert served(srv.port, "after-the-flood") < 5
    assert srv.running()


def test_at_the_descriptor_limit_the_server_backs_off_instead_of_spinning(mailflow_server):
    raise_own_fd_limit(4096)
    # No reserve: sessions take every descriptor, and accept() itself fails with EMFILE.
    srv = mailflow_server({"limits": {"max_connections": 5000, "descriptor_reserve": 0}})
    limit_descriptors(srv, 128)
    held = []
    try:
        for _ in range(160):
            held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        time.sleep(1.5)
        readable, _, _ = select.select(held, [], [], 0)
        # The last ones wait in the listen backlog, unaccepted: the server is out of descriptors.
        waiting = [s for s in held if s not in readable]
        assert waiting, "every connection was accepted: the limit was not reached"
        cpu0 = cpu_seconds(srv.pid)
        time.sleep(3)
        spent = cpu_seconds(srv.pid) - cpu0
        # A loop calling accept() again at once would burn a core: 3 s of CPU in 3 s.
        assert spent < 0.6, f"{spent:.2f} s of CPU in 3 s at the descriptor limit"
        assert "cannot accept connections" in srv.stderr()
        # Sessions close: the waiting connections are accepted and greeted.
        for s in held[:60]:
            s.close()
        greeted = [first_reply(s, 10) for s in waiting[-5:]]
        assert all(g.startswith(b"220 ") for g in greeted), greeted
    finally:
        for s in held:
            s.close()
    wait_for(lambda: connections(srv) == 0, timeout=10)
    assert served(srv.port, "after-emfile") < 5
    assert srv.running()
