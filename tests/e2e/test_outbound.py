"""Outbound delivery end to end: Mailflow relaying for a trusted client to other servers.

Mailflow A (tenant src.test, trusted 127.0.0.0/8) sends through DNS (a private dnsmasq, authoritative
for `test.`) or through a tenant's outbound connector (smart host), to another Mailflow B or to the
fake remote SMTP server of tests/e2e/fakes/remote_smtp.py. MX hosts live on other loopback
addresses (127.0.0.2, ...) and `delivery.mx_port` is the receiving listener's port.

What is checked: delivery through MX with STARTTLS (intact, once, trace fields), prompt recording
of outcomes, one transaction per domain, adaptive concurrency against a remote limited to 3 sessions
(smart host and MX) and against one that refuses every session with 421, resets in the middle of
DATA (SuspiciousRemoteServerError, then 554 5.4.300), remote 5xx with DSN parameters (ENVID, RET,
ORCPT, NOTIFY; none for the null sender), expiry (4.4.7), the DNS outcomes (Null MX, NXDOMAIN,
implicit MX, MX preference, timeout), no open relay, SMTPUTF8 towards servers with and without it,
and the connector's TLS policy.

Run: MAILFLOW_BIN=... python3 -m pytest tests/e2e/test_outbound.py -q -p no:cacheprovider
(-s prints the measurements: time, refusals and window of the 3-session runs).
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dnsutil import Dnsmasq, SilentUDP
from mfutil import QUEUED_RE, SMTPClient

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))

from remote_smtp import DEFAULT_EXTENSIONS, FakeRemoteConfig, start_in_thread  # noqa: E402

A_HOST = "mx.a.test"        # A's server.hostname (Reporting-MTA, its own Received)
A_HELO = "out.a.test"       # A's delivery.helo_name (what remotes see in EHLO)
SENDER = "sender@src.test"  # a local mailbox of A: DSNs land in its Maildir

# The zone dnsmasq serves (authoritative for `test.`: anything else under .test is NXDOMAIN).
ZONE = [
    "--mx-host=remote.test,mx1.remote.test,10", "--host-record=mx1.remote.test,127.0.0.2",
    "--mx-host=pref.test,mx-a.pref.test,10", "--mx-host=pref.test,mx-b.pref.test,20",
    "--host-record=mx-a.pref.test,127.0.0.6", "--host-record=mx-b.pref.test,127.0.0.7",
    "--mx-host=nullmx.test,.,0", "--host-record=nullmx.test,127.0.0.8",
    "--host-record=onlya.test,127.0.0.5",
]


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(ZONE, log_dir=tmp_path_factory.mktemp("dnsmasq")).start()
    yield d
    d.stop()


@pytest.fixture
def fake_remote(tmp_path):
    """Factory: `fake_remote(host='127.0.0.2', max_sessions=3, ...)` -> a started ThreadedFakeRemote
    recording to a file; every one is stopped at teardown."""
    started = []

    def start(host: str = "127.0.0.1", port: int = 0, **kw):
        n = len(started) + 1
        cfg = FakeRemoteConfig(host=host, port=port, record_file=str(tmp_path / f"fake{n}.jsonl"),
                               record_data=True, **kw)
        f = start_in_thread(cfg)
        started.append(f)
        return f

    yield start
    for f in started:
        try:
            f.stop()
        except Exception:  # noqa: BLE001 - teardown must reach every fake
            pass


@pytest.fixture(scope="module")
def remote_cert(tmp_path_factory, need_tool):
    """A self-signed certificate and key for a fake remote that offers STARTTLS."""
    d = tmp_path_factory.mktemp("remote-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([need_tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=mx.fake-remote.test"],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def a_config(dns_server: str, mx_port: int = 25, connector: dict | None = None, delivery: dict | None = None,
             trusted: list[str] | None = None) -> dict:
    """Overrides for Mailflow A: tenant src.test (sender, bob), trusted 127.0.0.0/8, DNS at `dns_server`."""
    tenant = {"name": "src", "domains": ["src.test"], "mailboxes": ["sender", "bob"]}
    if connector is not None:
        tenant["outbound_connector"] = connector
    d = {"concurrency": 50, "retry_intervals": ["1s"], "expiry": "24h", "mx_port": mx_port, "helo_name": A_HELO}
    d.update(delivery or {})
    return {
        "server": {"hostname": A_HOST},
        "relay": {"trusted_networks": ["127.0.0.0/8"] if trusted is None else trusted},
        "dns": {"servers": [dns_server], "timeout": "1s", "attempts": 1},
        "delivery": d,
        "tenants": [tenant],
    }


# --------------------------------------------------------------------------------------------
# helpers: sending, queue inspection, DSNs


def smtp(port: int) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=15)
    s.ehlo()
    return s


def message(token: str, to: str, extra_headers: list[str] | None = None, body: list[str] | None = None) -> bytes:
    hdr = [
        f"From: Sender <{SENDER}>",
        f"To: <{to}>",
        f"Subject: outbound {token}",
        "Date: Sun, 29 Nov 2026 10:00:00 +0000",
        f"Message-ID: <{token}@src.test>",
        *(extra_headers or []),
    ]
    lines = [f"token={token}", *(body or []), f"trailer-{token}-end"]
    return ("\r\n".join(hdr + [""] + lines) + "\r\n").encode("utf-8")


def send(port: int, rcpts: list[str], msg: bytes, sender: str = SENDER, mail_options=(),
         rcpt_options: dict | None = None, s: smtplib.SMTP | None = None) -> str:
    """One transaction through smtplib; returns A's queue ID."""
    own = s is None
    s = s or smtp(port)
    try:
        code, resp = s.mail(sender, list(mail_options))
        assert code == 250, resp
        for r in rcpts:
            code, resp = s.rcpt(r, list((rcpt_options or {}).get(r, [])))
            assert (code, resp[:5]) == (250, b"2.1.5"), (r, code, resp)
        code, resp = s.data(msg)
        assert code == 250, resp
        m = QUEUED_RE.search(resp.decode())
        assert m, resp
        return m.group(1)
    finally:
        if own:
            s.quit()


@dataclass
class Shown:
    """`mailflow queue show ID` parsed."""
    text: str
    state: str = ""
    recipients: dict[str, str] = field(default_factory=dict)   # address -> status
    rcpt_lines: dict[str, str] = field(default_factory=dict)   # address -> whole line
    trace: list[tuple[str, str | None, str]] = field(default_factory=list)  # (kind, rcpt, detail)

    def events(self, kind: str, rcpt: str | None = None) -> list[str]:
        return [d for k, r, d in self.trace if k == kind and (rcpt is None or r == rcpt)]


def queue_show(srv, qid: str) -> Shown:
    r = srv.cli("queue", "show", qid)
    assert r.returncode == 0, r.stdout + r.stderr
    out = Shown(r.stdout)
    section = None
    for line in r.stdout.splitlines():
        if line.startswith("State:"):
            out.state = line.split(":", 1)[1].strip().split(",")[0]
        elif line == "Recipients:":
            section = "r"
        elif line == "Trace:":
            section = "t"
        elif section == "r" and line.startswith("  <"):
            m = re.match(r"  <([^>]*)> (\w+) ", line)
            assert m, line
            out.recipients[m.group(1)] = m.group(2)
            out.rcpt_lines[m.group(1)] = line
        elif section == "t" and line.startswith("  "):
            m = re.match(r"  (\S+) (\w+)(?: <([^>]*)>)? ?(.*)$", line)
            assert m, line
            out.trace.append((m.group(2), m.group(3), m.group(4)))
    return out


def wait_for(fn, timeout: float, what, interval: float = 0.1):
    """Polls `fn` until it returns something truthy; fails with `what()` (or `what`) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what() if callable(what) else what}")
        time.sleep(interval)


def wait_status(srv, qid: str, rcpt: str, status: str, timeout: float = 15.0) -> Shown:
    last: list[Shown] = []

    def check():
        s = queue_show(srv, qid)
        last[:] = [s]
        return s if s.recipients.get(rcpt) == status else None

    return wait_for(check, timeout, lambda: f"<{rcpt}> not {status}:\n{last[0].text if last else ''}\n"
                                            f"stderr tail:\n{srv.stderr()[-3000:]}")


def wait_event(srv, qid: str, kind: str, rcpt: str | None = None, timeout: float = 15.0) -> Shown:
    last: list[Shown] = []

    def check():
        s = queue_show(srv, qid)
        last[:] = [s]
        return s if s.events(kind, rcpt) else None

    return wait_for(check, timeout, lambda: f"no {kind} event for {rcpt}:\n{last[0].text if last else ''}\n"
                                            f"stderr tail:\n{srv.stderr()[-3000:]}")


def null_sender_messages(srv) -> list[dict]:
    """DSNs Mailflow generated: messages from <> in its queue (done ones included)."""
    return [r for r in srv.queue_json(include_done=True) if r["sender"] == ""]


def maildir_files(srv, domain: str, box: str) -> list[Path]:
    root = srv.data_dir / "mailboxes" / domain / box
    return sorted(p for sub in ("new", "cur") if (root / sub).is_dir() for p in (root / sub).iterdir())


@dataclass
class DSN:
    raw: bytes
    msg: email.message.Message
    per_message: dict[str, str]
    per_recipient: list[dict[str, str]]
    returned_type: str
    returned: bytes

    def recipient(self, final: str) -> dict[str, str]:
        for r in self.per_recipient:
            if r.get("final-recipient", "").lower() == f"rfc822; {final}".lower():
                return r
        raise AssertionError(f"no per-recipient block for {final}: {self.per_recipient}")


def _fields(block: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in re.sub(r"\r?\n[ \t]+", " ", block).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip().lower()] = v.strip()
    return out


def parse_dsn(raw: bytes) -> DSN:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
    # Split the raw body on the boundary so each part is seen byte for byte.
    boundary = msg.get_boundary().encode()
    parts = raw.split(b"\r\n--" + boundary)
    assert parts[-1].startswith(b"--"), "multipart/report must end with the close delimiter"
    bodies = []
    for p in parts[1:-1]:
        head, _, body = p.lstrip(b"\r\n").partition(b"\r\n\r\n")
        ctype = re.search(rb"(?im)^content-type:\s*([^;\r\n]+)", head)
        bodies.append((ctype.group(1).decode().strip().lower() if ctype else "text/plain", body))
    types = [t for t, _ in bodies]
    assert types[:2] == ["text/plain", "message/delivery-status"] and len(types) == 3, types
    blocks = [b for b in re.split(r"\r\n\r\n", bodies[1][1].decode("utf-8", "replace")) if b.strip()]
    return DSN(raw, msg, _fields(blocks[0]), [_fields(b) for b in blocks[1:]], types[2], bodies[2][1])


def wait_dsns(srv, count: int = 1, timeout: float = 15.0) -> list[DSN]:
    files = wait_for(lambda: (f := maildir_files(srv, "src.test", "sender")) and len(f) >= count and f,
                     timeout, lambda: f"{count} DSN(s) in {SENDER}'s Maildir; stderr tail:\n{srv.stderr()[-3000:]}")
    return [parse_dsn(p.read_bytes()) for p in files]


def check_dsn_envelope(raw: bytes) -> None:
    """A DSN delivered locally: from the null reverse path (RFC 3464 §2, RFC 5321 §4.5.5)."""
    assert raw.startswith(b"Return-Path: <>\r\n"), raw[:200]


def records(fake) -> list[dict]:
    path = Path(fake.config.record_file)
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def listening_port(srv, ip: str) -> int:
    m = re.search(r"mailflow: listening on .*?" + re.escape(ip) + r":(\d+)", srv.stdout_path.read_text())
    assert m, srv.stdout_path.read_text()
    return int(m.group(1))


# --------------------------------------------------------------------------------------------
# 1. A -> B through DNS (MX) with STARTTLS


def test_mx_delivery_to_mailflow_with_starttls(mailflow_server, dns):
    b = mailflow_server({
        "server": {"hostname": "mx1.remote.test", "smtp": ["127.0.0.1:0", "127.0.0.2:0"]},
        "tenants": [{"name": "remote", "domains": ["remote.test"], "mailboxes": ["bob"]}],
    })
    port_b = listening_port(b, "127.0.0.2")
    a = mailflow_server(a_config(dns.server, mx_port=port_b))
    token = uuid.uuid4().hex
    msg = message(token, "bob@remote.test",
                  extra_headers=["X-Custom: kept as is", "Reply-To: <sender+replies@src.test>"],
                  body=[".a dot-started line", "caf\u00e9 8-bit line", "\tindented", ""])
    qid = send(a.port, ["bob@remote.test"], msg, mail_options=["BODY=8BITMIME"])

    shown = wait_status(a, qid, "bob@remote.test", "delivered")
    [detail] = shown.events("delivered", "bob@remote.test")
    assert detail.startswith("250 "), detail
    assert "(remote mx1.remote.test [127.0.0.2] TLSv1.3)" in detail, detail
    assert shown.state == "done", shown.text

    files = wait_for(lambda: maildir_files(b, "remote.test", "bob"), 10, "delivery in B's Maildir")
    time.sleep(0.3)  # A is done; nothing more may arrive
    files = maildir_files(b, "remote.test", "bob")
    assert len(files) == 1, files
    assert len(b.queue_json(include_done=True)) == 1, "B received more than one message"
    data = files[0].read_bytes()
    # Return-Path from B, B's Received for the hop from A, A's Received for the hop from us, the message.
    m = re.match(rb"Return-Path: <([^>]*)>\r\n(Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)"
                 rb"(Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)", data)
    assert m, data[:600]
    assert m.group(1) == SENDER.encode()
    received_b, received_a = m.group(2).decode(), m.group(3).decode()
    assert received_b.startswith(f"Received: from {A_HELO} ("), received_b
    assert "by mx1.remote.test (Mailflow) with ESMTPS (TLSv1.3" in received_b, received_b
    assert "for <bob@remote.test>" in received_b, received_b
    assert received_a.startswith("Received: from client.test ("), received_a
    assert f"by {A_HOST} (Mailflow) with ESMTP" in received_a and f"id {qid}" in received_a, received_a
    assert data[m.end():] == msg, "headers and body must arrive byte for byte"


def test_outcome_recorded_without_waiting_for_the_session_close(mailflow_server, dns, fake_remote):
    """Once the remote has said 250 to the message, the outcome is recorded at once: the delivery
    attempt must not stay open while the finished session is being closed (QUIT)."""
    fake = fake_remote(host="127.0.0.2")
    a = mailflow_server(a_config(dns.server, mx_port=fake.port))
    token = uuid.uuid4().hex
    qid = send(a.port, ["bob@remote.test"], message(token, "bob@remote.test"))
    [rec] = wait_for(lambda: records(fake), 10, "the message at the remote", interval=0.02)
    accepted_at = rec["time"]  # the fake writes its record just before the 250
    wait_status(a, qid, "bob@remote.test", "delivered", timeout=15)
    lag = time.time() - accepted_at
    print(f"\noutcome recorded {lag:.2f}s after the remote accepted the message")
    assert lag < 2.0, f"the delivered outcome was recorded {lag:.1f}s after the remote's 250"


def test_recipients_grouped_per_domain(mailflow_server, dns, fake_remote):
    """One message, two remote domains and a local mailbox: one transaction per domain."""
    remote = fake_remote(host="127.0.0.2")                        # remote.test's MX
    onlya = fake_remote(host="127.0.0.5", port=remote.port)       # onlya.test (implicit MX), same port
    a = mailflow_server(a_config(dns.server, mx_port=remote.port))
    token = uuid.uuid4().hex
    rcpts = ["a@remote.test", "c@onlya.test", "b@remote.test", "bob@src.test"]
    msg = message(token, "a@remote.test")
    qid = send(a.port, rcpts, msg)
    for r in rcpts:
        shown = wait_status(a, qid, r, "delivered")
    assert shown.state == "done", shown.text
    [ra] = records(remote)
    assert sorted(ra["rcpt_to"]) == ["a@remote.test", "b@remote.test"], ra
    [rc] = records(onlya)
    assert rc["rcpt_to"] == ["c@onlya.test"], rc
    for rec in (ra, rc):
        assert rec["mail_from"] == SENDER and rec["data"].encode().endswith(msg), rec
    assert remote.stats()["sessions"] == 1 and onlya.stats()["sessions"] == 1
    [local] = maildir_files(a, "src.test", "bob")
    assert local.read_bytes().endswith(msg)


# --------------------------------------------------------------------------------------------
# 2. A remote that allows 3 sessions (421 4.3.2 past that): smart host and MX


@pytest.mark.parametrize("route", ["smarthost", "mx"])
def test_remote_with_three_sessions(mailflow_server, dns, fake_remote, route):
    n_messages, n_threads = 200, 4
    if route == "smarthost":
        fake = fake_remote(host="127.0.0.1", max_sessions=3)
        a = mailflow_server(a_config(dns.server, connector={"smart_host": f"127.0.0.1:{fake.port}"},
                                     delivery={"destination_concurrency": {"initial": 2, "maximum": 20}}))
        key = f"smarthost:127.0.0.1:{fake.port}"
    else:
        fake = fake_remote(host="127.0.0.2", max_sessions=3)
        a = mailflow_server(a_config(dns.server, mx_port=fake.port,
                                     delivery={"destination_concurrency": {"initial": 2, "maximum": 20}}))
        key = "remote.test"  # mx1.remote.test without its first label
    run = uuid.uuid4().hex[:8]
    mids = [f"<bulk-{route}-{run}-{i}@src.test>" for i in range(n_messages)]
    errors: list[BaseException] = []

    def sender(k: int) -> None:
        try:
            with smtp(a.port) as s:
                for i in range(k, n_messages, n_threads):
                    msg = message(f"bulk-{route}-{run}-{i}", f"user{i}@remote.test")
                    send(a.port, [f"user{i}@remote.test"], msg, s=s)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    # A timeline, printed with the result: (s, at remote, refused, window, ceiling, sessions, waiting, throttles).
    timeline: list[tuple] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            try:
                d = {x["key"]: x for x in json.loads((a.data_dir / "destinations.json").read_text())}.get(key, {})
            except (OSError, ValueError):
                d = {}
            st = fake.stats()
            timeline.append((round(time.monotonic() - t0, 2), st["accepted"], st["refused_sessions"],
                             *(d.get(k) for k in ("window", "ceiling", "sessions", "waiting", "throttles"))))

    t0 = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    accepted_at = time.monotonic() - t0

    def all_arrived():
        return len({r["message_id"] for r in records(fake)}) >= n_messages

    try:
        wait_for(all_arrived, 120, lambda: f"{len(records(fake))} of {n_messages} arrived; fake {fake.stats()}",
                 interval=0.2)
    finally:
        stop.set()
        sampler.join(5)
        print(f"\n[{route}] timeline (s, at remote, refused, window, ceiling, sessions, waiting, throttles):")
        for row in timeline:
            print("   ", row)
    elapsed = time.monotonic() - t0
    a.wait_queue_empty(timeout=20)
    time.sleep(1.3)  # destinations.json is rewritten every second
    recs = records(fake)
    stats = fake.stats()
    got = [r["message_id"] for r in recs]
    dupes = sorted({m for m in got if got.count(m) > 1})
    r = a.cli("queue", "destinations", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    dests = {d["key"]: d for d in json.loads(r.stdout)}
    table = a.cli("queue", "destinations")
    print(f"\n[{route}] {n_messages} messages: accepted by A in {accepted_at:.1f}s, all at the remote after "
          f"{elapsed:.1f}s; remote refused {stats['refused_sessions']} sessions, max concurrent "
          f"{stats['max_concurrent_seen']}, sessions {stats['sessions']}; destination {dests.get(key)}\n"
          f"{table.stdout}")
    assert not dupes, f"delivered more than once: {dupes[:5]}"
    assert sorted(got) == sorted(mids)
    assert all(r["mail_from"] == SENDER for r in recs)
    assert all(r["rcpt_to"] == [f"user{int(r['message_id'].split('-')[-1].split('@')[0])}@remote.test"]
               for r in recs)
    assert stats["max_concurrent_seen"] <= 3, stats
    assert stats["refused_sessions"] <= 30, stats
    assert not null_sender_messages(a), "no recipient may have failed"
    assert key in dests, dests
    d = dests[key]
    assert d["window"] <= 4, d
    assert d["throttles"] >= 1, d
    # The remote's only refusal is the 421 4.3.2 greeting: every refused session is a throttle.
    assert d["deferred"] == d["throttles"], f"refusals not all counted as throttling: {d}"
    assert d["delivered"] >= 1 and d["sessions"] == 0 and d["waiting"] == 0, d
    assert key in table.stdout, table.stdout


def test_remote_refusing_every_session_with_421(mailflow_server, dns, fake_remote):
    """A remote whose sessions are all taken answers each new one with a 421 4.3.2 greeting: the
    messages are deferred with that reply (throttling, not a failure), and go through once it has room."""
    fake = fake_remote(host="127.0.0.1", max_sessions=1)
    holder = smtp(fake.port)  # takes the remote's only session
    try:
        a = mailflow_server(a_config(dns.server, connector={"smart_host": f"127.0.0.1:{fake.port}"},
                                     delivery={"retry_intervals": ["2s"]}))
        key = f"smarthost:127.0.0.1:{fake.port}"
        qids = [send(a.port, [f"u{i}@remote.test"], message(uuid.uuid4().hex, f"u{i}@remote.test"))
                for i in range(4)]
        reasons = {}
        for i, q in enumerate(qids):
            shown = wait_event(a, q, "deferred", f"u{i}@remote.test")
            reasons[q] = shown.events("deferred", f"u{i}@remote.test")[0]
        refused = fake.stats()["refused_sessions"]
    finally:
        holder.quit()
    print(f"\nremote refused {refused} sessions; deferrals: {sorted(set(reasons.values()))}")
    # A remote that refuses even one session gets one session per message and attempt, not six:
    # refusing with nothing else of ours open, it is left to the retry schedule (2 s here).
    assert refused <= 3 * len(qids), f"{refused} sessions refused for the first attempts of {len(qids)} messages"
    for q, reason in reasons.items():
        assert "421 4.3.2 The maximum number of concurrent connections" in reason, (q, reason)
    # Now the remote has room: every message goes through on its next attempt.
    for i, q in enumerate(qids):
        wait_status(a, q, f"u{i}@remote.test", "delivered", timeout=20)
    assert len(records(fake)) == 4
    time.sleep(1.2)  # destinations.json is rewritten every second
    d = {x["key"]: x for x in json.loads(a.cli("queue", "destinations", "--json").stdout)}[key]
    assert d["throttles"] >= 1 and d["deferred"] == d["throttles"], f"refusals not all counted as throttling: {d}"


# --------------------------------------------------------------------------------------------
# 3. Reset in the middle of DATA


def test_reset_mid_data_is_deferred_then_delivered(mailflow_server, dns, fake_remote):
    fake = fake_remote(host="127.0.0.1", reset_mid_data=1)
    a = mailflow_server(a_config(dns.server, connector={"smart_host": f"127.0.0.1:{fake.port}"},
                                 delivery={"retry_intervals": ["1s"]}))
    token = uuid.uuid4().hex
    msg = message(token, "bob@remote.test", body=[f"line {i} " + "x" * 60 for i in range(200)])
    queued_at = time.time()
    qid = send(a.port, ["bob@remote.test"], msg)
    shown = wait_event(a, qid, "deferred", "bob@remote.test")
    [detail] = shown.events("deferred", "bob@remote.test")
    assert detail.startswith("451 4.4.0 remote server disconnected abruptly (SuspiciousRemoteServerError)"), detail
    wait_for(lambda: records(fake), 15, lambda: f"no retry reached the remote: {queue_show(a, qid).text}")
    recs = records(fake)
    assert [r["message_id"] for r in recs] == [f"<{token}@src.test>"], recs
    assert recs[0]["data"].encode().endswith(msg)
    # The retry after an abrupt close waits three times the usual interval (1s, +-10% jitter).
    retry_after = recs[0]["time"] - queued_at
    assert 2.5 <= retry_after <= 6, f"retried {retry_after:.1f}s after the first attempt"
    shown = wait_status(a, qid, "bob@remote.test", "delivered", timeout=15)
    assert shown.state == "done", shown.text
    assert [k for k, _, _ in shown.trace if k in ("deferred", "delivered")] == ["deferred", "delivered"], shown.text
    assert fake.stats()["resets"] == 1
    assert not null_sender_messages(a)


def test_repeated_resets_fail_with_5_4_300_and_dsn(mailflow_server, dns, fake_remote):
    fake = fake_remote(host="127.0.0.1", reset_mid_data=10)
    a = mailflow_server(a_config(dns.server, connector={"smart_host": f"127.0.0.1:{fake.port}"},
                                 delivery={"retry_intervals": ["1s"], "max_abrupt_closes": 2}))
    token = uuid.uuid4().hex
    msg = message(token, "bob@remote.test", body=[f"line {i} " + "x" * 60 for i in range(200)])
    qid = send(a.port, ["bob@remote.test"], msg)
    shown = wait_status(a, qid, "bob@remote.test", "failed", timeout=20)
    assert len(shown.events("deferred", "bob@remote.test")) == 1, shown.text
    [reason] = shown.events("failed", "bob@remote.test")
    assert reason.startswith("554 5.4.300 "), reason
    assert "SuspiciousRemoteServerError" in reason, reason
    assert fake.stats()["resets"] == 2 and fake.stats()["accepted"] == 0, fake.stats()
    [dsn] = wait_dsns(a)
    check_dsn_envelope(dsn.raw)
    r = dsn.recipient("bob@remote.test")
    assert r["action"] == "failed" and r["status"] == "5.4.300", r
    assert r["diagnostic-code"].startswith("smtp; 554 5.4.300"), r
    assert dsn.returned_type == "message/rfc822"
    # The CRLF before the closing delimiter belongs to the delimiter (RFC 2046 §5.1.1); the DSN
    # adds one more, so the returned message keeps its own last line break.
    assert dsn.returned == msg, "RET not given: the whole message is returned"
    assert shown.events("dsn") or queue_show(a, qid).events("dsn"), "a dsn trace event"


# --------------------------------------------------------------------------------------------
# 4. A 550 from the remote: DSN parameters, NOTIFY=NEVER, null sender


def test_remote_550_gives_dsn_with_fields(mailflow_server, dns, fake_remote):
    fake = fake_remote(host="127.0.0.2", rcpt_rejects=["nobody@.*=550 5.1.1 No such user"])
    a = mailflow_server(a_config(dns.server, mx_port=fake.port))
    token = uuid.uuid4().hex
    msg = message(token, "nobody@remote.test", extra_headers=["Cc: <ok@remote.test>"],
                  body=["SECRET-BODY-LINE must not come back with RET=HDRS"])
    qid = send(a.port, ["nobody@remote.test", "ok@remote.test"], msg, mail_options=["ENVID=e1", "RET=HDRS"],
               rcpt_options={"nobody@remote.test": ["ORCPT=rfc822;Nobody@remote.test", "NOTIFY=FAILURE"]})
    shown = wait_status(a, qid, "nobody@remote.test", "failed")
    shown = wait_status(a, qid, "ok@remote.test", "delivered")
    assert shown.state == "done", shown.text
    [reason] = shown.events("failed", "nobody@remote.test")
    assert reason.startswith("550 5.1.1 No such user"), reason
    assert "mx1.remote.test [127.0.0.2]" in reason, reason
    # One transaction for the domain: the remote saw both RCPTs, accepted one.
    recs = records(fake)
    assert len(recs) == 1 and recs[0]["rcpt_to"] == ["ok@remote.test"], recs
    assert fake.stats()["rejected_rcpts"] == 1 and fake.stats()["sessions"] == 1, fake.stats()

    [dsn] = wait_dsns(a)
    check_dsn_envelope(dsn.raw)
    assert dsn.msg["To"] == f"<{SENDER}>", dsn.msg["To"]
    assert dsn.per_message.get("reporting-mta") == f"dns; {A_HOST}", dsn.per_message
    assert dsn.per_message.get("original-envelope-id") == "e1", dsn.per_message
    assert len(dsn.per_recipient) == 1, dsn.per_recipient
    r = dsn.recipient("nobody@remote.test")
    assert r.get("original-recipient") == "rfc822; Nobody@remote.test", r
    assert r["action"] == "failed" and r["status"] == "5.1.1", r
    assert r.get("remote-mta") == "dns; mx1.remote.test", r
    assert r["diagnostic-code"].startswith("smtp; 550 5.1.1 No such user"), r
    assert dsn.returned_type == "text/rfc822-headers", dsn.returned_type
    assert f"Message-ID: <{token}@src.test>".encode() in dsn.returned
    assert b"SECRET-BODY-LINE" not in dsn.raw, "RET=HDRS: the body must not be returned"
    assert queue_show(a, qid).events("dsn"), "a dsn trace event on the original"


def test_remote_550_notify_never_and_null_sender_get_no_dsn(mailflow_server, dns, fake_remote):
    fake = fake_remote(host="127.0.0.2", rcpt_rejects=["nobody@.*=550 5.1.1 No such user"])
    a = mailflow_server(a_config(dns.server, mx_port=fake.port))
    q1 = send(a.port, ["nobody@remote.test"], message(uuid.uuid4().hex, "nobody@remote.test"),
              rcpt_options={"nobody@remote.test": ["NOTIFY=NEVER"]})
    q2 = send(a.port, ["nobody@remote.test"], message(uuid.uuid4().hex, "nobody@remote.test"),
              rcpt_options={"nobody@remote.test": ["NOTIFY=SUCCESS,DELAY"]})
    q3 = send(a.port, ["nobody@remote.test"], message(uuid.uuid4().hex, "nobody@remote.test"), sender="")
    for q in (q1, q2, q3):
        shown = wait_status(a, q, "nobody@remote.test", "failed")
        assert shown.state == "done" and not shown.events("dsn"), shown.text
    # A DSN is queued in the same transaction that records the failure: none exists now, none later.
    assert not null_sender_messages(a)[1:] and all(m["id"] == q3 for m in null_sender_messages(a)), \
        a.queue_json(include_done=True)
    assert not maildir_files(a, "src.test", "sender")
    assert fake.stats()["rejected_rcpts"] == 3


# --------------------------------------------------------------------------------------------
# 5. Expiry


def test_expiry_fails_with_4_4_7_and_dsn(mailflow_server, dns, fake_remote):
    fake = fake_remote(host="127.0.0.1", rcpt_rejects=[".*=451 4.3.0 try later"])
    a = mailflow_server(a_config(dns.server, connector={"smart_host": f"127.0.0.1:{fake.port}"},
                                 delivery={"retry_intervals": ["1s"], "expiry": "3s"}))
    token = uuid.uuid4().hex
    msg = message(token, "bob@remote.test")
    t0 = time.monotonic()
    qid = send(a.port, ["bob@remote.test"], msg)
    shown = wait_status(a, qid, "bob@remote.test", "failed", timeout=20)
    took = time.monotonic() - t0
    assert took >= 2.5, f"failed after {took:.1f}s, before the 3s expiry:\n{shown.text}"
    deferred = shown.events("deferred", "bob@remote.test")
    assert len(deferred) >= 2 and all(d.startswith("451 4.3.0 try later") for d in deferred), shown.text
    [reason] = shown.events("failed", "bob@remote.test")
    assert "4.4.7" in reason.split()[:3], reason
    assert "451 4.3.0 try later" in reason, reason
    [dsn] = wait_dsns(a)
    check_dsn_envelope(dsn.raw)
    r = dsn.recipient("bob@remote.test")
    assert r["action"] == "failed" and r["status"] == "4.4.7", r
    assert fake.stats()["accepted"] == 0


# --------------------------------------------------------------------------------------------
# 6. DNS outcomes


def test_null_mx_fails_5_1_10_with_dsn(mailflow_server, dns):
    a = mailflow_server(a_config(dns.server, mx_port=9))
    qid = send(a.port, ["someone@nullmx.test"], message(uuid.uuid4().hex, "someone@nullmx.test"))
    shown = wait_status(a, qid, "someone@nullmx.test", "failed")
    [reason] = shown.events("failed", "someone@nullmx.test")
    assert reason.startswith("556 5.1.10 "), reason
    [dsn] = wait_dsns(a)
    check_dsn_envelope(dsn.raw)
    r = dsn.recipient("someone@nullmx.test")
    assert r["action"] == "failed" and r["status"] == "5.1.10", r
    assert r["diagnostic-code"].startswith("smtp; 556 5.1.10"), r


def test_nxdomain_fails_5_1_2_with_dsn(mailflow_server, dns):
    a = mailflow_server(a_config(dns.server, mx_port=9))
    qid = send(a.port, ["someone@nosuch.test"], message(uuid.uuid4().hex, "someone@nosuch.test"))
    shown = wait_status(a, qid, "someone@nosuch.test", "failed")
    [reason] = shown.events("failed", "someone@nosuch.test")
    assert reason.startswith("550 5.1.2 "), reason
    [dsn] = wait_dsns(a)
    check_dsn_envelope(dsn.raw)
    r = dsn.recipient("someone@nosuch.test")
    assert r["action"] == "failed" and r["status"] == "5.1.2", r


def test_implicit_mx_uses_the_domains_address(mailflow_server, dns, fake_remote):
    fake = fake_remote(host="127.0.0.5")
    a = mailflow_server(a_config(dns.server, mx_port=fake.port))
    token = uuid.uuid4().hex
    qid = send(a.port, ["someone@onlya.test"], message(token, "someone@onlya.test"))
    shown = wait_status(a, qid, "someone@onlya.test", "delivered")
    [detail] = shown.events("delivered", "someone@onlya.test")
    assert "(remote onlya.test [127.0.0.5]" in detail, detail
    assert [r["message_id"] for r in records(fake)] == [f"<{token}@src.test>"]


def test_mx_preference_order_and_fallback(mailflow_server, dns, fake_remote):
    backup = fake_remote(host="127.0.0.7")                       # MX 20
    primary = fake_remote(host="127.0.0.6", port=backup.port)   # MX 10, same port
    a = mailflow_server(a_config(dns.server, mx_port=backup.port))
    t1 = uuid.uuid4().hex
    q1 = send(a.port, ["x@pref.test"], message(t1, "x@pref.test"))
    shown = wait_status(a, q1, "x@pref.test", "delivered")
    assert "(remote mx-a.pref.test [127.0.0.6]" in shown.events("delivered", "x@pref.test")[0], shown.text
    assert [r["message_id"] for r in records(primary)] == [f"<{t1}@src.test>"] and not records(backup)
    primary.stop()  # now the preferred MX refuses connections: the next one is used
    t2 = uuid.uuid4().hex
    q2 = send(a.port, ["x@pref.test"], message(t2, "x@pref.test"))
    shown = wait_status(a, q2, "x@pref.test", "delivered")
    assert "(remote mx-b.pref.test [127.0.0.7]" in shown.events("delivered", "x@pref.test")[0], shown.text
    assert [r["message_id"] for r in records(backup)] == [f"<{t2}@src.test>"]


def test_dns_timeout_defers_4_4_3_and_keeps_the_message(mailflow_server):
    silent = SilentUDP()
    try:
        a = mailflow_server(a_config(silent.server, delivery={"retry_intervals": ["60s"]}))
        qid = send(a.port, ["bob@remote.test"], message(uuid.uuid4().hex, "bob@remote.test"))
        shown = wait_event(a, qid, "deferred", "bob@remote.test", timeout=15)
        [detail] = shown.events("deferred", "bob@remote.test")
        assert detail.startswith("451 4.4.3 "), detail
        assert shown.recipients["bob@remote.test"] == "pending", shown.text
        [row] = [r for r in a.queue_json(include_done=True) if r["id"] == qid]
        assert row["state"] == "queued" and row["attempts"] == 1, row
        assert not null_sender_messages(a) and not maildir_files(a, "src.test", "sender")
    finally:
        silent.close()


# --------------------------------------------------------------------------------------------
# 7. No open relay


@pytest.mark.parametrize("trusted", [None, ["10.0.0.0/8"]], ids=["no-trusted-networks", "other-network"])
def test_no_open_relay(mailflow_server, trusted):
    overrides = {"tenants": [{"name": "src", "domains": ["src.test"], "mailboxes": ["sender", "bob"]}]}
    if trusted:
        overrides["relay"] = {"trusted_networks": trusted}
    a = mailflow_server(overrides)
    with smtp(a.port) as s:
        code, resp = s.mail(SENDER)
        assert code == 250, resp
        code, resp = s.rcpt("bob@remote.test")
        assert (code, resp[:5]) == (550, b"5.7.1"), (code, resp)
        code, resp = s.rcpt("bob@src.test")  # control: a local recipient is still accepted
        assert (code, resp[:5]) == (250, b"2.1.5"), (code, resp)


# --------------------------------------------------------------------------------------------
# 8. SMTPUTF8 towards a server that does not offer it


@pytest.mark.parametrize("remote_utf8", [False, True], ids=["remote-without-smtputf8", "remote-with-smtputf8"])
def test_utf8_envelope(mailflow_server, dns, fake_remote, remote_utf8):
    exts = list(DEFAULT_EXTENSIONS) + (["SMTPUTF8"] if remote_utf8 else [])
    fake = fake_remote(host="127.0.0.2", extensions=exts)
    a = mailflow_server(a_config(dns.server, mx_port=fake.port))
    token = uuid.uuid4().hex
    rcpt = "\u00fc@remote.test"
    msg = message(token, rcpt, extra_headers=["X-Name: Gr\u00fc\u00dfe"])
    with SMTPClient(a.port) as c:
        assert "SMTPUTF8" in c.ehlo().lines
        r = c.cmd(f"MAIL FROM:<{SENDER}> SMTPUTF8 BODY=8BITMIME")
        assert r.code == 250, r
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        assert (r.code, r.enhanced) == (250, "2.1.5"), r
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(msg + b".\r\n")
        m = QUEUED_RE.search(c.reply().text)
        assert m
        qid = m.group(1)
        c.cmd("QUIT")
    if remote_utf8:
        shown = wait_status(a, qid, rcpt, "delivered")
        recs = records(fake)
        assert len(recs) == 1 and recs[0]["rcpt_to"] == [rcpt] and recs[0]["mail_from"] == SENDER, recs
        assert recs[0]["data"].encode("utf-8", "surrogateescape").endswith(msg)
        return
    shown = wait_status(a, qid, rcpt, "failed")
    [reason] = shown.events("failed", rcpt)
    assert reason.startswith("553 5.6.7 "), reason
    assert "SMTPUTF8" in reason, reason
    assert not records(fake), "nothing may be sent to a server without SMTPUTF8"
    [dsn] = wait_dsns(a)
    check_dsn_envelope(dsn.raw)
    [r] = dsn.per_recipient
    assert r["action"] == "failed" and r["status"] == "5.6.7", r
    assert "\u00fc@remote.test" in r["final-recipient"], r


# --------------------------------------------------------------------------------------------
# 9. The connector's TLS policy


@pytest.mark.parametrize("policy", ["opportunistic", "disabled", "required"])
def test_connector_tls_policy_with_starttls_remote(mailflow_server, dns, fake_remote, remote_cert, policy):
    cert, key = remote_cert
    fake = fake_remote(host="127.0.0.1", tls_cert=cert, tls_key=key)
    a = mailflow_server(a_config(dns.server, connector={"smart_host": f"127.0.0.1:{fake.port}", "tls": policy}))
    token = uuid.uuid4().hex
    qid = send(a.port, ["bob@remote.test"], message(token, "bob@remote.test"))
    shown = wait_status(a, qid, "bob@remote.test", "delivered")
    [detail] = shown.events("delivered", "bob@remote.test")
    [rec] = records(fake)
    assert rec["tls"] is (policy != "disabled"), rec
    assert ("TLSv1.3" in detail) is (policy != "disabled"), detail


def test_connector_tls_required_without_starttls_defers(mailflow_server, dns, fake_remote):
    fake = fake_remote(host="127.0.0.1")  # no certificate: no STARTTLS offered
    a = mailflow_server(a_config(dns.server, connector={"smart_host": f"127.0.0.1:{fake.port}", "tls": "required"},
                                 delivery={"retry_intervals": ["60s"]}))
    # Two messages, one after the other: each deferral must say why (TLS), whatever the
    # destination's state (the second one may find it parked after the first one's failures).
    for i in range(2):
        rcpt = f"bob{i}@remote.test"
        qid = send(a.port, [rcpt], message(uuid.uuid4().hex, rcpt))
        shown = wait_event(a, qid, "deferred", rcpt)
        [detail] = shown.events("deferred", rcpt)
        assert detail.startswith("451 "), detail
        assert "4.7.10 TLS is required, but the remote does not offer STARTTLS" in detail, (i, detail)
        assert shown.recipients[rcpt] == "pending", shown.text
    assert not records(fake) and fake.stats()["accepted"] == 0, "nothing may be sent in the clear"
    assert not null_sender_messages(a)
