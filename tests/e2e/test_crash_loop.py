"""Issue 15, crash loops: `kill -9` at random moments under inbound and outbound load, restarted each
time on the same data directory, then drained and stopped cleanly.

Senders (Python's smtplib, several threads) keep handing in messages for local mailboxes (Maildir),
for a remote domain (relayed through the test's dnsmasq to the fake remote SMTP server of
tests/e2e/fakes/remote_smtp.py, which records every message it accepts), or both, while the server is
killed with SIGKILL after a random 0.3-1.5 s and started again. At the end:

- every message acknowledged with 250: exactly one whole copy per local recipient in Maildir, at
  least one whole copy per remote recipient at the remote;
- no message in any mailbox twice, and nothing there that nobody sent (or that is cut short);
- duplicates at the remote counted, and each one explained by a kill: its first copy reached the
  remote before a kill and the next after it (a delivery in flight when the process died, whose
  outcome was never written), so at most `delivery.concurrency` per kill;
- the queue consistent: `PRAGMA integrity_check` is `ok` after the last stop, no message left
  unfinished, one `received` event per message;
- no orphaned spool files (a file in spool/ that no queue row refers to) after the final drain.

CI runs `CYCLES` (8) cycles; `scripts/chaos` runs `run_crash_loop(..., cycles=20)` and prints the
figures (restart time, drain time, duplicates).

Run: MAILFLOW_BIN=... python3 -m pytest tests/e2e/test_crash_loop.py -q -p no:cacheprovider -s
"""

from __future__ import annotations

import random
import re
import smtplib
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dnsutil import Dnsmasq
from mfutil import (
    QUEUE_ID_RE,
    QUEUED_RE,
    MailflowServer,
    all_delivered_files,
    default_config,
    delivered_files,
    merge_config,
    split_delivered,
)

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))

from remote_smtp import FakeRemoteConfig, start_in_thread  # noqa: E402

CYCLES = 8
CLIENTS = 5
CONCURRENCY = 6
REMOTE_IP = "127.0.0.2"
KILL_SLACK = 0.5  # seconds
ZONE = ["--mx-host=remote.test,mx1.remote.test,10", f"--host-record=mx1.remote.test,{REMOTE_IP}"]


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, tuple[bytes, list[str]]] = field(default_factory=dict)  # token -> (message, rcpts)
    accepted: dict[str, str] = field(default_factory=dict)  # queue ID -> token
    errors: int = 0


@dataclass
class CrashLoopResult:
    cycles: int = 0
    sent: int = 0
    accepted: int = 0
    accepted_per_cycle: list[int] = field(default_factory=list)
    client_errors: int = 0
    local_copies: int = 0
    remote_copies: int = 0
    remote_duplicates: int = 0
    duplicate_bound: int = 0
    unacknowledged_delivered: int = 0  # delivered although the client never saw its 250
    maildir_found_after_crash: int = 0  # a repeated local delivery that found its copy (alreadyDelivered)
    restart_seconds: list[float] = field(default_factory=list)
    drain_seconds: float = 0.0
    integrity: str = ""
    orphans: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        r = self.restart_seconds
        return (f"{self.cycles} kills, {self.accepted} acknowledged of {self.sent} sent "
                f"(per cycle {self.accepted_per_cycle}), {self.local_copies} Maildir copies, "
                f"{self.remote_copies} remote copies with {self.remote_duplicates} duplicates "
                f"(bound {self.duplicate_bound}), {self.maildir_found_after_crash} Maildir copies found already "
                f"there after a kill, {self.unacknowledged_delivered} delivered without a 250 seen, "
                f"restart to listening {min(r):.2f}-{max(r):.2f} s, drain after the last restart "
                f"{self.drain_seconds:.1f} s, integrity_check {self.integrity!r}, orphans {len(self.orphans)}, "
                f"problems {len(self.problems)}")


def _make(rng: random.Random, client: int, n: int) -> tuple[str, bytes, list[str]]:
    token = f"k{client}n{n}x{rng.getrandbits(40):010x}"
    size = rng.choice([300, 2000, 9000]) if n % 17 else 300_000  # now and then a spooled body
    lines, total, i = [], 0, 0
    while total < size:
        line = f"{token} line {i} " + "y" * 50 + ("." if i % 9 == 0 else "")
        if i % 13 == 0:
            line = "." + line  # dot-stuffing on the way in and out
        lines.append(line)
        total += len(line) + 2
        i += 1
    msg = (f"From: <k{client}@fabrikam.test>\r\nTo: <x@remote.test>\r\nSubject: {token}\r\n"
           f"Message-ID: <{token}@crash.test>\r\n\r\n" + "\r\n".join(lines) + f"\r\nEND {token}\r\n").encode()
    kind = rng.random()
    if kind < 0.4:
        rcpts = [f"box{client}@fabrikam.test"]
    elif kind < 0.8:
        rcpts = [f"r{client}@remote.test"]
    else:
        rcpts = [f"box{client}@fabrikam.test", f"r{client}@remote.test"]
    return token, msg, rcpts


def _sender(srv: MailflowServer, client: int, stop: threading.Event, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed * 1000 + client)
    n = 0
    while not stop.is_set():
        port = srv.port
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname=f"k{client}.client.test", timeout=5) as s:
                s.ehlo()
                for _ in range(rng.choice([1, 2, 4])):
                    n += 1
                    token, msg, rcpts = _make(rng, client, n)
                    with ledger.lock:
                        ledger.sent[token] = (msg, rcpts)
                    code, resp = s.mail(f"k{client}@fabrikam.test")
                    if code != 250:
                        raise smtplib.SMTPResponseException(code, resp)
                    for r in rcpts:
                        code, resp = s.rcpt(r)
                        if code != 250:
                            raise smtplib.SMTPResponseException(code, resp)
                    code, resp = s.data(msg)
                    if code != 250:
                        raise smtplib.SMTPResponseException(code, resp)
                    m = QUEUED_RE.search(resp.decode(errors="replace"))
                    assert m, resp
                    with ledger.lock:
                        ledger.accepted[m.group(1)] = token
                    if stop.is_set():
                        break
        except (OSError, smtplib.SMTPException, EOFError):
            with ledger.lock:
                ledger.errors += 1
            time.sleep(0.02)


def crash_loop_config(dns_server: str, remote_port: int) -> dict:
    return merge_config(default_config(), {
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "dns": {"servers": [dns_server], "timeout": "1s", "attempts": 1},
        "delivery": {"concurrency": CONCURRENCY, "retry_intervals": ["1s"], "expiry": "24h", "mx_port": remote_port,
                     "helo_name": "out.example.test"},
    })


def run_crash_loop(workdir: Path, cycles: int = CYCLES, seed: int | None = None, min_run: float = 0.3,
                   max_run: float = 1.5, drain_timeout: float = 120.0) -> CrashLoopResult:
    """The whole experiment; every violated property is a line in `result.problems`."""
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result = CrashLoopResult()
    ledger = Ledger()
    kills: list[float] = []
    dns = Dnsmasq(ZONE, log_dir=workdir).start()
    fake = start_in_thread(FakeRemoteConfig(host=REMOTE_IP, record_file=str(workdir / "remote.jsonl"),
                                            record_data=True, per_message_delay_ms=30))
    srv = MailflowServer(workdir / "server", crash_loop_config(dns.server, fake.port))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        srv.start()
        threads = [threading.Thread(target=_sender, args=(srv, k, stop, ledger, seed), daemon=True)
                   for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for _ in range(cycles):
            before = len(ledger.accepted)
            time.sleep(rng.uniform(min_run, max_run))
            srv.kill()
            kills.append(time.time())
            result.cycles += 1
            result.accepted_per_cycle.append(len(ledger.accepted) - before)
            t0 = time.monotonic()
            srv.start()
            result.restart_seconds.append(time.monotonic() - t0)
        stop.set()
        for t in threads:
            t.join(20)
            if t.is_alive():
                result.problems.append("a sender thread is stuck")
        t0 = time.monotonic()
        srv.wait_queue_empty(timeout=drain_timeout)
        result.drain_seconds = time.monotonic() - t0
        code = srv.stop()
        if code != 0:
            result.problems.append(f"the clean stop after the last restart exited {code}")
        _check(srv, fake.records(), ledger, kills, result)
    finally:
        stop.set()
        srv.kill()
        fake.stop()
        dns.stop()
    result.sent, result.accepted, result.client_errors = len(ledger.sent), len(ledger.accepted), ledger.errors
    return result


def _check(srv: MailflowServer, records: list[dict], ledger: Ledger, kills: list[float],
           result: CrashLoopResult) -> None:
    problems = result.problems
    # 1. Maildir: one whole copy per local recipient of every acknowledged message.
    for qid, token in ledger.accepted.items():
        msg, rcpts = ledger.sent[token]
        local = sorted(r.split("@")[0] for r in rcpts if r.endswith("@fabrikam.test"))
        files = delivered_files(srv.data_dir, qid)
        if sorted(f.parent.parent.name for f in files) != local:
            problems.append(f"{qid} ({token}): Maildir copies {[str(f) for f in files]} for {local}")
        for f in files:
            if split_delivered(f.read_bytes(), qid).original != msg:
                problems.append(f"{f}: not the message sent (cut short or altered)")
    # 2. Every file in any mailbox: whole, sent by someone, and not there twice.
    seen: dict[tuple[str, str], str] = {}
    acked_tokens = set(ledger.accepted.values())
    for f in all_delivered_files(srv.data_dir):
        m = re.match(QUEUE_ID_RE, f.name)
        if not m:
            problems.append(f"unexpected file name {f}")
            continue
        d = split_delivered(f.read_bytes(), m.group(0))
        s = re.search(rb"\r\nSubject: (\S+)\r\n", b"\r\n" + d.original)
        token = s.group(1).decode() if s else "?"
        if token not in ledger.sent or d.original != ledger.sent[token][0]:
            problems.append(f"{f}: a message nobody sent, or a copy cut short ({token})")
            continue
        key = (token, f.parent.parent.name)
        if key in seen:
            problems.append(f"{token} delivered twice to {key[1]}: {seen[key]} and {f}")
        seen[key] = str(f)
        result.local_copies += 1
        if token not in acked_tokens:
            result.unacknowledged_delivered += 1
    # 3. The remote: at least one whole copy per remote recipient; duplicates explained by a kill.
    copies: dict[tuple[str, str], list[float]] = {}
    for rec in records:
        mid = (rec.get("message_id") or "").strip("<>")
        token = mid.split("@")[0]
        if token not in ledger.sent:
            problems.append(f"the remote got a message nobody sent: {mid!r}")
            continue
        data = rec["data"].encode("utf-8", "surrogateescape")
        if not data.endswith(ledger.sent[token][0]):
            problems.append(f"the remote got a copy of {token} that is cut short or altered")
        for r in rec["rcpt_to"]:
            copies.setdefault((token, r.lower()), []).append(rec["time"])
        result.remote_copies += len(rec["rcpt_to"])
        if token not in acked_tokens:
            result.unacknowledged_delivered += 1
    for qid, token in ledger.accepted.items():
        for r in ledger.sent[token][1]:
            if r.endswith("@remote.test") and (token, r) not in copies:
                problems.append(f"{qid} ({token}): acknowledged, never reached the remote for {r}")
    result.duplicate_bound = len(kills) * CONCURRENCY
    for (token, r), times in copies.items():
        times.sort()
        for first, again in zip(times, times[1:]):
            result.remote_duplicates += 1
            # The remote may read a message's last bytes (and record it) a moment after the kill
            # that ended its sender: KILL_SLACK.
            if not any(first - KILL_SLACK <= k <= again for k in kills):
                problems.append(f"{token} reached the remote twice for {r} with no kill between "
                                f"({first:.3f}, {again:.3f}): a duplicate not caused by a crash")
    if result.remote_duplicates > result.duplicate_bound:
        problems.append(f"{result.remote_duplicates} duplicates at the remote, more than {result.duplicate_bound} "
                        f"({CONCURRENCY} deliveries in flight per kill)")
    # 4. The queue database after the clean stop.
    db = sqlite3.connect(srv.data_dir / "queue.sqlite")
    try:
        result.integrity = ";".join(r[0] for r in db.execute("PRAGMA integrity_check"))
        if result.integrity != "ok":
            problems.append(f"PRAGMA integrity_check: {result.integrity}")
        unfinished = db.execute("SELECT count(*) FROM message WHERE state != 'done'").fetchone()[0]
        if unfinished:
            problems.append(f"{unfinished} messages not done after the drain")
        pending = db.execute("SELECT count(*) FROM recipient WHERE status = 'pending'").fetchone()[0]
        if pending:
            problems.append(f"{pending} recipients still pending after the drain")
        ids = {r[0] for r in db.execute("SELECT id FROM message")}
        missing = [q for q in ledger.accepted if q not in ids]
        if missing:
            problems.append(f"{len(missing)} acknowledged queue IDs have no queue row: {missing[:5]}")
        twice = db.execute("SELECT queue_id, count(*) FROM trace_event WHERE kind = 'received' "
                           "GROUP BY queue_id HAVING count(*) > 1").fetchall()
        if twice:
            problems.append(f"messages received twice in the trace: {twice[:5]}")
        twice = db.execute("SELECT queue_id, recipient, count(*) FROM trace_event WHERE kind = 'delivered' "
                           "GROUP BY queue_id, recipient HAVING count(*) > 1").fetchall()
        if twice:
            problems.append(f"recipients delivered twice in the trace: {twice[:5]}")
        result.maildir_found_after_crash = db.execute(
            "SELECT count(*) FROM trace_event WHERE kind = 'delivered' AND detail LIKE '%(already present)%'"
        ).fetchone()[0]
        referenced = {r[0] for r in db.execute("SELECT body_path FROM message WHERE body_path IS NOT NULL")}
    finally:
        db.close()
    spool = srv.data_dir / "spool"
    for f in sorted(spool.iterdir()) if spool.exists() else []:
        if str(f) not in referenced:
            result.orphans.append(f.name)
    if result.orphans:
        problems.append(f"{len(result.orphans)} orphaned spool files: {result.orphans[:5]}")


@pytest.mark.slow
def test_kill_loop_under_inbound_and_outbound_load(tmp_path):
    seed = random.randrange(1 << 30)
    result = run_crash_loop(tmp_path, cycles=CYCLES, seed=seed)
    print(f"crash loop (seed {seed}): {result.summary()}")
    assert not result.problems, f"seed {seed}:\n" + "\n".join(result.problems[:30])
    assert result.cycles == CYCLES
    assert sum(1 for n in result.accepted_per_cycle if n >= 3) >= CYCLES // 2, (
        f"too few messages acknowledged between kills to test anything: {result.accepted_per_cycle}")
    assert result.local_copies > 0 and result.remote_copies > 0
