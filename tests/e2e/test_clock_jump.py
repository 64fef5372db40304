"""Issue 15, clock jumps: the server's wall clock stepped forward and back by two hours (libfaketime,
driven through a timestamp file that is read on every clock call) while mail is deferred by a
remote that answers 451, and while a per-source rate limit is exhausted.

The monotonic clocks are left alone (DONT_FAKE_MONOTONIC=1), as on a real machine where NTP or an
administrator steps the wall clock: timers and token buckets run on monotonic time, the queue's
`next_attempt` and a message's age on wall time. One thing libfaketime does that a real step does
not: it shifts every absolute timerfd deadline by its offset, so a forward offset makes timers fire
early and a backward one holds them for the whole offset. The backward case therefore writes what a
step back leaves in the queue (next attempts two hours late) instead of moving the clock.

What must hold:
- after a forward jump every deferred message is tried again at most once straight away, never more
  than `delivery.concurrency` at a time, and then at its normal interval (no storm, no loop);
- after a backward jump deferred mail is still retried within its normal interval, not two hours
  later (no stuck queue);
- a rate window neither refills because the wall clock leapt forward nor stays shut because it
  went back.

Run: MAILFLOW_BIN=... python3 -m pytest tests/e2e/test_clock_jump.py -q -p no:cacheprovider -s
(needs `apt-get install -y faketime libfaketime`, which scripts/install-test-deps does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import storage_under_test
from dnsutil import Dnsmasq
from mfutil import MailflowServer, default_config, make_message, merge_config

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))

from pgutil import query_url  # noqa: E402
from remote_smtp import FakeRemoteConfig, start_in_thread  # noqa: E402

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
REMOTE_IP = "127.0.0.3"
ZONE = ["--mx-host=remote.test,mx1.remote.test,10", f"--host-record=mx1.remote.test,{REMOTE_IP}"]
# A greylisting remote: a plain deferral. (A reply that asks to slow down, "try again later" or a
# 4.3.2, is also retried at once on a new session by OutboundDelivery's adaptive concurrency, up to
# six sessions per attempt; that is not what is measured here.)
GREYLIST = r".*@remote\.test=451 4.7.1 Greylisted, come back in a moment"
MESSAGES = 8
CONCURRENCY = 2
INTERVAL = 3.0  # every retry interval, in seconds (10% jitter on top)
WINDOW = 3 * INTERVAL  # how long each phase watches the remote


class WallClock:
    """The offset libfaketime adds to the wall clock of the processes started under `env()`.

    libfaketime adds `FAKETIME_SHARED` (its shared start time) to a process's environment unless
    the variable is there already, and that moves `environ` off the initial stack, where Swift's
    runtime looks for `argv` next to it: `CommandLine.arguments` comes out empty. So a `faketime`
    process (which sets up the shared memory and exports the variable to its child) is kept
    running, and its child's `FAKETIME_SHARED` is handed to the server from the start."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.set("+0")
        self.holder = subprocess.Popen(["faketime", "-f", "+0", "sleep", "3600"], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.shared = self._shared_names()

    def _shared_names(self) -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split()
                for c in children:
                    for var in Path(f"/proc/{c}/environ").read_bytes().split(b"\0"):
                        if var.startswith(b"FAKETIME_SHARED="):
                            return var.split(b"=", 1)[1].decode()
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("faketime did not start its child with FAKETIME_SHARED")

    def close(self) -> None:
        """Ends the `faketime` holder (it removes its shared memory when its child ends)."""
        try:
            for c in Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split():
                os.kill(int(c), signal.SIGTERM)
        except OSError:
            pass
        try:
            self.holder.wait(5)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait(5)

    def set(self, offset: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        os.replace(tmp, self.path)  # never a half-written file for a clock call to read

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": str(self.path), "FAKETIME_NO_CACHE": "1",
                "DONT_FAKE_MONOTONIC": "1", "FAKETIME_SHARED": self.shared}


@contextlib.contextmanager
def environment(extra: dict[str, str]):
    """`os.environ` plus `extra` while a child process is started (Popen copies it then)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def wall_clock(tmp_path):
    if not os.path.exists(LIBFAKETIME) or not shutil.which("faketime"):
        pytest.fail("libfaketime is missing (apt-get install -y faketime libfaketime)")
    clock = WallClock(tmp_path / "faketime")
    yield clock
    clock.close()


def start_under(clock: WallClock, srv: MailflowServer) -> MailflowServer:
    with environment(clock.env()):
        srv.start()
    return srv


class AttemptLog:
    """Samples the fake remote's count of refused RCPTs (one per message per attempt) every 50 ms."""

    def __init__(self, fake):
        self.fake = fake
        self.samples: list[tuple[float, int, int]] = []  # (time, attempts, max concurrent sessions)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            s = self.fake.stats()
            self.samples.append((time.monotonic(), s["rejected_rcpts"], s["active_sessions"]))
            time.sleep(0.05)

    def attempts(self) -> int:
        return self.fake.stats()["rejected_rcpts"]

    def between(self, start: float, end: float) -> tuple[int, int]:
        """(attempts, most sessions open at once) seen between two monotonic times."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        before = [s for s in self.samples if s[0] < start]
        base = before[-1][1] if before else 0
        if not inside:
            return 0, 0
        return inside[-1][1] - base, max(s[2] for s in inside)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@dataclass
class Phase:
    name: str
    attempts: int
    first_two_seconds: int
    max_sessions: int

    def __str__(self) -> str:
        return (f"{self.name}: {self.attempts} attempts in {WINDOW:g} s ({self.first_two_seconds} in the first 2 s), "
                f"at most {self.max_sessions} sessions at once")


def watch(log: AttemptLog, name: str) -> Phase:
    start = time.monotonic()
    time.sleep(WINDOW)
    end = time.monotonic()
    attempts, sessions = log.between(start, end)
    first, _ = log.between(start, start + 2)
    return Phase(name, attempts, first, sessions)


# A negative offset is not among them: under libfaketime it would hold every timer (see the top).
FULL = [("+2h", "forward +2h"), ("+0", "back -2h (to real time)"), ("queue+7200", "back -2h (next attempts 2 h late)")]


def shift_next_attempts(srv: MailflowServer, seconds: float) -> None:
    """What a backward step leaves in the queue, written into it directly: every deferred message's
    next attempt `seconds` later than the (true) wall clock says it should be, as if it had been
    deferred on a clock running that far ahead which was then stepped back."""
    postgres = srv.config.get("storage", {}).get("postgres", {}).get("url")
    if postgres:  # the PostgreSQL pass (MAILFLOW_E2E_STORAGE=postgres)
        query_url(postgres, "UPDATE mailflow_message SET next_attempt = next_attempt + make_interval(secs => "
                            f"{seconds}) WHERE next_attempt IS NOT NULL")
        return
    con = sqlite3.connect(srv.data_dir / "queue.sqlite", timeout=10)
    with con:
        con.execute("UPDATE message SET next_attempt = next_attempt + ? WHERE next_attempt IS NOT NULL", (seconds,))
    con.close()


def run_clock_jumps(workdir: Path, clock: WallClock, steps: list[tuple[str, str]] = FULL) -> list[Phase]:
    """Deferred mail through the clock `steps` (offset, phase name); the phases as measured."""
    dns = Dnsmasq(ZONE, log_dir=workdir).start()
    fake = start_in_thread(FakeRemoteConfig(host=REMOTE_IP, rcpt_rejects=[GREYLIST]))
    srv = MailflowServer(workdir / "server", merge_config(default_config(), {
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "dns": {"servers": [dns.server], "timeout": "1s", "attempts": 1},
        "delivery": {"concurrency": CONCURRENCY, "retry_intervals": [f"{INTERVAL:g}s"], "expiry": "24h",
                     "mx_port": fake.port, "helo_name": "out.example.test"},
        **storage_under_test(),
    }))
    log = AttemptLog(fake)
    try:
        start_under(clock, srv)
        with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=10) as s:
            for i in range(MESSAGES):
                s.sendmail("sender@fabrikam.test", [f"r{i}@remote.test"], make_message(f"jump{i}"))
        deadline = time.monotonic() + 30
        while log.attempts() < 2 * MESSAGES and time.monotonic() < deadline:
            time.sleep(0.1)
        assert log.attempts() >= 2 * MESSAGES, f"the deferred mail is not being retried: {fake.stats()}"
        phases = [watch(log, "steady")]
        for offset, name in steps:
            if offset.startswith("queue+"):
                shift_next_attempts(srv, float(offset.removeprefix("queue+")))
            else:
                clock.set(offset)
            phases.append(watch(log, name))
        assert srv.stop() == 0
        return phases
    finally:
        log.close()
        srv.kill()
        fake.stop()
        dns.stop()


def check_phases(phases: list[Phase]) -> list[str]:
    """What a phase did wrong: stuck (fewer than one attempt per message) or a storm (more attempts
    than one at once plus the normal interval allow, or more sessions than `delivery.concurrency`)."""
    problems = []
    most = MESSAGES * (1 + int(WINDOW / (INTERVAL * 0.9)) + 1)
    for p in phases:
        if p.attempts < MESSAGES:
            problems.append(f"{p}: stuck (fewer than one attempt per deferred message)")
        if p.attempts > most:
            problems.append(f"{p}: a retry storm (more than {most})")
        # Each message once, plus those in flight at the jump (their next attempt was reckoned
        # on the old clock and is due at once on the new one).
        if p.first_two_seconds > MESSAGES + CONCURRENCY:
            problems.append(f"{p}: more than one attempt per message straight after the jump")
        if p.max_sessions > CONCURRENCY:
            problems.append(f"{p}: more sessions than delivery.concurrency ({CONCURRENCY})")
    return problems


@pytest.mark.slow
def test_forward_jump_retries_each_deferred_message_once_then_at_its_interval(tmp_path, wall_clock):
    phases = run_clock_jumps(tmp_path, wall_clock, [("+2h", "forward +2h")])
    for p in phases:
        print(p)
    problems = check_phases(phases)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_backward_jump_does_not_hold_deferred_mail(tmp_path, wall_clock):
    # Not `clock.set("-2h")`: libfaketime also moves every absolute timerfd the process arms (its
    # timerfd_settime wrapper adds the offset even with DONT_FAKE_MONOTONIC), so with a negative
    # offset no timer in the server fires for two hours: NIO's and the scheduler's sleeps alike. A
    # real step leaves monotonic timers alone; what it does leave behind is next attempts two hours
    # late in the queue, and that is what this writes.
    phases = run_clock_jumps(tmp_path, wall_clock, [("queue+7200", "back -2h (next attempts 2 h late)")])
    for p in phases:
        print(p)
    problems = check_phases(phases)
    assert not problems, "\n".join(problems)


def _try_message(port: int, tag: str) -> int:
    """One message from 127.0.0.1; the first code that was not 250, or 250."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        code, _ = s.mail("sender@fabrikam.test")
        if code != 250:
            return code
        code, _ = s.rcpt("alice@contoso.test")
        if code != 250:
            return code
        code, _ = s.data(make_message(tag))
        return code


@pytest.mark.slow
def test_rate_window_ignores_wall_clock_jumps(tmp_path, wall_clock):
    """10 messages a minute from one source: one token every 6 s, on the monotonic clock."""
    srv = MailflowServer(tmp_path / "server", merge_config(default_config(), {
        "limits": {"per_source": {"max_connections": 100, "connections_per_minute": 1000, "messages_per_minute": 10}},
        **storage_under_test(),
    }))
    try:
        start_under(wall_clock, srv)
        codes = [_try_message(srv.port, f"rate{i}") for i in range(10)]
        assert codes == [250] * 10, codes
        assert _try_message(srv.port, "over") // 100 == 4, "the 11th message in a minute was accepted"
        wall_clock.set("+2h")
        time.sleep(0.3)
        assert _try_message(srv.port, "after-forward") // 100 == 4, (
            "a forward jump of the wall clock refilled the rate window")
        wall_clock.set("-2h")
        time.sleep(6.5)  # one token's worth of monotonic time
        assert _try_message(srv.port, "after-back") == 250, "a backward jump left the rate window shut"
        assert _try_message(srv.port, "after-back-2") // 100 == 4, "more than one token came back in 6.5 s"
        assert srv.stop() == 0
    finally:
        srv.kill()
