#!/usr/bin/env python3
"""A scriptable fake remote SMTP server for fault injection and benchmarks (pure asyncio).

Run as a script:

    python3 tests/e2e/fakes/remote_smtp.py --listen 127.0.0.1:0 --max-sessions 3 \
        --per-message-delay 30 --record /tmp/rec.jsonl --stats /tmp/stats.json

prints `listening on 127.0.0.1:PORT` (flushed) once it accepts connections, and runs until
SIGTERM/SIGINT, when it writes the stats file one last time and exits 0.

Or import it:

    from remote_smtp import FakeRemoteConfig, start_in_thread
    with start_in_thread(FakeRemoteConfig(max_sessions=3)) as fake:
        ... connect to fake.port ...
        fake.stats()      # {"accepted": .., "refused_sessions": .., ...}
        fake.records()    # list of recorded messages (dicts)

Protocol: EHLO/HELO, MAIL, RCPT, DATA (dot-unstuffing, ends only at CRLF.CRLF), BDAT n [LAST]
(exactly n octets), RSET, NOOP, VRFY, QUIT, STARTTLS (when a certificate is configured; bytes
pipelined after STARTTLS are discarded). Commands are processed as they arrive and answered in
order, so pipelining works. Everything is meant for 127.0.0.1.

Faults:
  --max-sessions N         sessions past N get a 421 4.3.2 "resource forest" greeting and are closed
  --per-message-delay MS   sleep before the reply to the end of a message
  --reject REGEX=REPLY     RCPT whose address fully matches REGEX (case-insensitive) gets REPLY
  --reject-mail REGEX=REPLY  the same for MAIL FROM (an empty reverse path is "")
  --reset-mid-data K       the first K message transfers (DATA or BDAT) end in a TCP RST
                           (SO_LINGER 0) after part of the body has arrived

Hostile remotes (--fault MODE, for the first --fault-sessions N sessions, all when N is 0; later
sessions behave). A hostile session never closes first: it waits for the client to give up, and
`fault_sessions_open` in the stats says how many are still held open.
  never-greet              accept TCP, never send the 220 greeting
  no-data-reply            answer everything until DATA, then never answer DATA
  no-dot-reply             take the body, then never answer the final dot
  trickle                  send every reply one byte at a time, --trickle-delay MS apart
  giant-reply              answer EHLO with a --giant-lines line multiline reply (default 100,000)
  stall-tls                offer STARTTLS (no certificate needed), answer 220, then never handshake
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

FOREST_REPLY = (
    "421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a "
    "limit, closing transmission channel"
)
DEFAULT_EXTENSIONS = ["PIPELINING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]
MAX_LINE = 1 << 20  # generous: the fake is not where line-length limits are tested
FAULTS = ("never-greet", "no-data-reply", "no-dot-reply", "trickle", "giant-reply", "stall-tls")


@dataclass
class FakeRemoteConfig:
    host: str = "127.0.0.1"
    port: int = 0
    hostname: str = "mx.fake-remote.test"
    max_sessions: int = 0  # 0 = unlimited
    per_message_delay_ms: float = 0.0
    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    tls_cert: str | None = None
    tls_key: str | None = None
    rcpt_rejects: list = field(default_factory=list)  # (compiled regex, reply) or "REGEX=REPLY"
    mail_rejects: list = field(default_factory=list)
    reset_mid_data: int = 0
    record_file: str | None = None
    record_data: bool = False
    stats_file: str | None = None
    stats_interval: float = 1.0
    idle_timeout: float = 300.0
    esmtp: bool = True  # False: EHLO gets 502 (an old HELO-only server)
    keep_records: bool = True  # keep records in memory for records() (off in script mode)
    fault: str = ""  # one of FAULTS, or "" for a well-behaved remote
    fault_sessions: int = 0  # sessions that get the fault (0 = all); later ones behave
    trickle_delay_ms: float = 100.0
    giant_lines: int = 100_000

    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def parse_reject(spec: str) -> tuple[re.Pattern, str]:
    """`REGEX=REPLY` -> (compiled regex, reply). The regex may itself contain `=`: the split is at
    the last `=` that is followed by a three-digit reply code."""
    m = re.match(r"^(.*)=([2-5]\d\d(?:[ -].*)?)$", spec, re.S)
    if not m:
        raise ValueError(f"--reject expects REGEX=REPLY (e.g. 'nobody@.*=550 5.1.1 No such user'), got {spec!r}")
    return re.compile(m.group(1), re.I), m.group(2)


def parse_extensions(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if part:
                out.append(part)
    return out


class _ResetConnection(Exception):
    """Raised to abandon a session after an injected reset."""


class FakeRemote:
    """The server. Create, `await start()`, read `port`; `await stop()` to close."""

    def __init__(self, config: FakeRemoteConfig):
        # Rejects may be given as "REGEX=REPLY" strings too.
        config.rcpt_rejects = [parse_reject(r) if isinstance(r, str) else r for r in config.rcpt_rejects]
        config.mail_rejects = [parse_reject(r) if isinstance(r, str) else r for r in config.mail_rejects]
        if config.fault and config.fault not in FAULTS:
            raise ValueError(f"unknown fault {config.fault!r} (expected one of {', '.join(FAULTS)})")
        self.config = config
        self.port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stats_task: asyncio.Task | None = None
        self._sessions: set[asyncio.Task] = set()
        self._lock = threading.Lock()  # guards counters/records for readers in other threads
        self._ssl_ctx: ssl.SSLContext | None = None
        if config.tls_enabled():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(config.tls_cert, config.tls_key)
            self._ssl_ctx = ctx
        # counters
        self.active = 0
        self.accepted = 0
        self.refused_sessions = 0
        self.max_concurrent_seen = 0
        self.resets = 0
        self.sessions_total = 0
        self.rejected_rcpts = 0
        self._transfers = 0  # message transfers begun (for --reset-mid-data)
        self.faulted = 0  # sessions that got the fault
        self.fault_open = 0  # faulted sessions the client has not closed yet
        self.fault_held: list[float] = []  # seconds each faulted session lasted until the client closed it
        self.giant_bytes_sent = 0
        self._records: list[dict] = []

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._on_connect, self.config.host, self.config.port, limit=MAX_LINE, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.stats_file:
            self.write_stats()
            self._stats_task = asyncio.get_running_loop().create_task(self._stats_loop())
        return self.port

    async def stop(self) -> None:
        if self._stats_task:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        if self._server:
            self._server.close()
        for t in list(self._sessions):
            t.cancel()
        if self._sessions:
            await asyncio.gather(*self._sessions, return_exceptions=True)
        if self._server:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self.config.stats_file:
            self.write_stats()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval)
            try:
                self.write_stats()
            except OSError as e:  # a vanished temp dir must not kill the server
                print(f"remote_smtp: cannot write stats: {e}", file=sys.stderr)

    def stats(self) -> dict:
        with self._lock:
            return {
                "accepted": self.accepted,
                "refused_sessions": self.refused_sessions,
                "max_concurrent_seen": self.max_concurrent_seen,
                "resets": self.resets,
                "active_sessions": self.active,
                "sessions": self.sessions_total,
                "rejected_rcpts": self.rejected_rcpts,
                "fault_sessions": self.faulted,
                "fault_sessions_open": self.fault_open,
                "fault_held_seconds": list(self.fault_held),
                "giant_bytes_sent": self.giant_bytes_sent,
                "time": time.time(),
            }

    def records(self) -> list[dict]:
        with self._lock:
            return list(self._records)

    def write_stats(self) -> None:
        path = self.config.stats_file
        if not path:
            return
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.stats(), f)
            f.write("\n")
        os.replace(tmp, path)

    # ---------------------------------------------------------------- sessions

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._sessions.add(task)
        try:
            cfg = self.config
            if cfg.max_sessions and self.active >= cfg.max_sessions:
                with self._lock:
                    self.refused_sessions += 1
                with contextlib.suppress(Exception):
                    writer.write((FOREST_REPLY + "\r\n").encode())
                    await asyncio.wait_for(writer.drain(), 5)
                    writer.close()
                    await asyncio.wait_for(writer.wait_closed(), 5)
                return
            with self._lock:
                self.active += 1
                self.sessions_total += 1
                self.max_concurrent_seen = max(self.max_concurrent_seen, self.active)
            try:
                await _Session(self, reader, writer).run()
            except (_ResetConnection, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError,
                    asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                pass
            finally:
                with self._lock:
                    self.active -= 1
                if not writer.is_closing():
                    writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)
        except asyncio.CancelledError:
            writer.transport.abort()
        finally:
            self._sessions.discard(task)

    def begin_transfer(self) -> bool:
        """Counts a message transfer; True if this one is to be reset."""
        with self._lock:
            self._transfers += 1
            return self._transfers <= self.config.reset_mid_data

    def take_fault(self) -> str:
        """The fault for a new session ("" once --fault-sessions have had theirs)."""
        with self._lock:
            cfg = self.config
            if not cfg.fault or (cfg.fault_sessions and self.faulted >= cfg.fault_sessions):
                return ""
            self.faulted += 1
            self.fault_open += 1
            return cfg.fault

    def fault_ended(self, seconds: float) -> None:
        with self._lock:
            self.fault_open -= 1
            self.fault_held.append(round(seconds, 3))

    def note_reset(self) -> None:
        with self._lock:
            self.resets += 1

    def record(self, mail_from: str, rcpts: list[str], data: bytes, tls: bool) -> None:
        rec: dict[str, Any] = {
            "time": time.time(),
            "mail_from": mail_from,
            "rcpt_to": list(rcpts),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "message_id": message_id_of(data),
            "tls": tls,
        }
        if self.config.record_data:
            rec["data"] = data.decode("utf-8", "surrogateescape")
        with self._lock:
            self.accepted += 1
            if self.config.keep_records:
                self._records.append(rec)
            if self.config.record_file:
                with open(self.config.record_file, "a") as f:
                    f.write(json.dumps(rec) + "\n")


def message_id_of(data: bytes) -> str | None:
    """The Message-ID header's value (unfolded, stripped) from the header section, or None."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]
    text = head.decode("utf-8", "replace")
    unfolded = re.sub(r"\r?\n[ \t]+", " ", text)
    for line in unfolded.split("\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "message-id":
            return value.strip() or None
    return None


_MAIL_RE = re.compile(r"^MAIL\s+FROM:\s*<([^>]*)>(.*)$", re.I)
_RCPT_RE = re.compile(r"^RCPT\s+TO:\s*<([^>]*)>(.*)$", re.I)
_BDAT_RE = re.compile(r"^BDAT\s+(\d+)(\s+LAST)?\s*$", re.I)


class _Session:
    def __init__(self, server: FakeRemote, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.srv = server
        self.cfg = server.config
        self.reader = reader
        self.writer = writer
        self.greeted = False
        self.tls = False
        self.fault = server.take_fault()
        self.fault_started = time.monotonic()
        self.reset_transaction()

    def reset_transaction(self) -> None:
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.bdat_buf: bytearray | None = None  # BDAT chunks so far (None: no BDAT in progress)
        self.bdat_failed = False

    # ----------------------------------------------------------- I/O helpers

    async def reply(self, text: str) -> None:
        await self.send((text + "\r\n").encode())

    async def send(self, data: bytes) -> None:
        if self.fault == "trickle":
            for i in range(len(data)):
                self.writer.write(data[i:i + 1])
                await self.writer.drain()
                await asyncio.sleep(self.cfg.trickle_delay_ms / 1000.0)
            return
        self.writer.write(data)
        await self.writer.drain()

    async def hang(self) -> bool:
        """Say nothing more: read and drop whatever comes until the client closes (or the idle
        timeout); returns False to end the session."""
        while True:
            chunk = await asyncio.wait_for(self.reader.read(65536), self.cfg.idle_timeout)
            if not chunk:
                return False

    async def giant_reply(self) -> None:
        """A multiline EHLO reply of --giant-lines lines, written in blocks while the client reads."""
        n = self.cfg.giant_lines
        block = 1000
        for start in range(0, n, block):
            lines = []
            for i in range(start, min(n, start + block)):
                sep = " " if i == n - 1 else "-"
                lines.append(f"250{sep}X-FILLER-{i:06d} a capability line of a remote that does not stop\r\n")
            data = "".join(lines).encode()
            self.writer.write(data)
            await self.writer.drain()
            with self.srv._lock:
                self.srv.giant_bytes_sent += len(data)

    async def readline(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), self.cfg.idle_timeout)
        if not line:
            raise ConnectionResetError("client closed")
        return line

    def extensions(self) -> list[str]:
        exts = list(self.cfg.extensions)
        if self.fault == "stall-tls":
            return exts + ["STARTTLS"]
        if self.cfg.tls_enabled() and not self.tls and not any(e.upper() == "STARTTLS" for e in exts):
            exts.append("STARTTLS")
        if self.tls or not self.cfg.tls_enabled():
            exts = [e for e in exts if e.upper() != "STARTTLS"]
        return exts

    def advertised(self, name: str) -> bool:
        return any(e.split()[0].upper() == name for e in self.extensions())

    def size_limit(self) -> int | None:
        for e in self.extensions():
            parts = e.split()
            if parts[0].upper() == "SIZE" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) > 0:
                return int(parts[1])
        return None

    def reset_socket(self) -> None:
        """Abort with RST: SO_LINGER on, timeout 0, then close."""
        self.srv.note_reset()
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        raise _ResetConnection()

    # ----------------------------------------------------------- main loop

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.fault:
                self.srv.fault_ended(time.monotonic() - self.fault_started)

    async def _run(self) -> None:
        if self.fault == "never-greet":
            await self.hang()
            return
        await self.reply(f"220 {self.cfg.hostname} ESMTP fake remote ready")
        while True:
            raw = await self.readline()
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            verb = line.split(" ", 1)[0].upper()
            handler = getattr(self, f"cmd_{verb.lower()}", None) if verb.isalpha() else None
            if handler is None:
                await self.reply("500 5.5.2 Command not recognized")
                continue
            if await handler(line) is False:
                return

    # ----------------------------------------------------------- commands

    async def cmd_ehlo(self, line: str) -> None:
        arg = line[4:].strip()
        if not self.cfg.esmtp:
            await self.reply("502 5.5.1 Command not implemented")
            return
        if not arg:
            await self.reply("501 5.5.4 Syntax: EHLO hostname")
            return
        self.reset_transaction()
        self.greeted = True
        if self.fault == "giant-reply":
            await self.giant_reply()
            return
        lines = [f"{self.cfg.hostname} greets {arg}"] + self.extensions()
        out = [f"250-{l}" for l in lines[:-1]] + [f"250 {lines[-1]}"]
        await self.send(("\r\n".join(out) + "\r\n").encode())

    async def cmd_helo(self, line: str) -> None:
        arg = line[4:].strip()
        if not arg:
            await self.reply("501 5.5.4 Syntax: HELO hostname")
            return
        self.reset_transaction()
        self.greeted = True
        await self.reply(f"250 {self.cfg.hostname}")

    async def cmd_starttls(self, line: str) -> bool | None:
        if self.fault == "stall-tls":
            await self.reply("220 2.0.0 Ready to start TLS")
            return await self.hang()
        if not self.cfg.tls_enabled() or self.tls:
            await self.reply("502 5.5.1 STARTTLS not available")
            return
        if line.strip().upper() != "STARTTLS":
            await self.reply("501 5.5.4 Syntax: STARTTLS")
            return
        # Anything the client pipelined after STARTTLS is plaintext: discard it (CVE-2011-0411).
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            buffered.clear()
        await self.reply("220 2.0.0 Ready to start TLS")
        await self.writer.start_tls(self.srv._ssl_ctx)
        self.tls = True
        self.greeted = False
        self.reset_transaction()

    async def cmd_mail(self, line: str) -> None:
        if not self.greeted:
            await self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.mail_from is not None:
            await self.reply("503 5.5.1 Error: nested MAIL command")
            return
        m = _MAIL_RE.match(line)
        if not m:
            await self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        addr, params = m.group(1), m.group(2).split()
        limit = self.size_limit()
        for p in params:
            k, _, v = p.partition("=")
            if k.upper() == "SIZE" and v.isdigit() and limit and int(v) > limit:
                await self.reply("552 5.3.4 Message size exceeds fixed maximum message size")
                return
        for rx, reply in self.cfg.mail_rejects:
            if rx.fullmatch(addr):
                await self.reply(reply)
                return
        self.mail_from = addr
        await self.reply("250 2.1.0 Ok")

    async def cmd_rcpt(self, line: str) -> None:
        if self.mail_from is None:
            await self.reply("503 5.5.1 Error: need MAIL command")
            return
        m = _RCPT_RE.match(line)
        if not m:
            await self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        addr = m.group(1)
        for rx, reply in self.cfg.rcpt_rejects:
            if rx.fullmatch(addr):
                with self.srv._lock:
                    self.srv.rejected_rcpts += 1
                await self.reply(reply)
                return
        self.rcpts.append(addr)
        await self.reply("250 2.1.5 Ok")

    async def cmd_data(self, line: str) -> bool | None:
        if line.strip().upper() != "DATA":
            await self.reply("501 5.5.4 Syntax: DATA")
            return
        if self.bdat_buf is not None:
            await self.reply("503 5.5.1 Error: DATA after BDAT")
            return
        if self.mail_from is None:
            await self.reply("503 5.5.1 Error: need MAIL command")
            return
        if not self.rcpts:
            await self.reply("554 5.5.1 Error: no valid recipients")
            return
        if self.fault == "no-data-reply":
            return await self.hang()
        await self.reply("354 End data with <CR><LF>.<CR><LF>")
        reset = self.srv.begin_transfer()
        body = bytearray()
        prev_crlf = True  # the body starts right after a CRLF
        while True:
            raw = await self.readline()
            if prev_crlf and raw == b".\r\n":
                break
            prev_crlf = raw.endswith(b"\r\n")
            if raw.startswith(b"."):
                raw = raw[1:]
            body += raw
            if reset:
                self.reset_socket()
        if self.fault == "no-dot-reply":
            return await self.hang()
        await self.finish_message(bytes(body))

    async def cmd_bdat(self, line: str) -> bool | None:
        m = _BDAT_RE.match(line)
        if not m:
            await self.reply("501 5.5.4 Syntax: BDAT size [LAST]")
            # The size may still be readable: RFC 3030 asks the server to consume the chunk.
            return
        size, last = int(m.group(1)), bool(m.group(2))
        first_chunk = self.bdat_buf is None
        reset = False
        error = None
        if self.mail_from is None:
            error = "503 5.5.1 Error: need MAIL command"
        elif not self.rcpts:
            error = "554 5.5.1 Error: no valid recipients"
        elif first_chunk:
            reset = self.srv.begin_transfer()
        if reset:
            # Take part of the chunk, then reset.
            await asyncio.wait_for(self.reader.readexactly(min(size, max(1, size // 2))), self.cfg.idle_timeout)
            self.reset_socket()
        chunk = await asyncio.wait_for(self.reader.readexactly(size), self.cfg.idle_timeout) if size else b""
        if error:
            if self.bdat_buf is not None:
                self.bdat_failed = True
            await self.reply(error)
            return
        if self.bdat_buf is None:
            self.bdat_buf = bytearray()
        self.bdat_buf += chunk
        limit = self.size_limit()
        if limit and len(self.bdat_buf) > limit:
            self.bdat_failed = True
        if not last:
            await self.reply(f"250 2.0.0 {size} octets received")
            return
        data, failed = bytes(self.bdat_buf), self.bdat_failed
        if self.fault == "no-dot-reply":
            return await self.hang()
        if failed:
            self.reset_transaction()
            await self.reply("552 5.3.4 Message size exceeds fixed maximum message size")
            return
        await self.finish_message(data)

    async def finish_message(self, data: bytes) -> None:
        limit = self.size_limit()
        if limit and len(data) > limit:
            self.reset_transaction()
            await self.reply("552 5.3.4 Message size exceeds fixed maximum message size")
            return
        if self.cfg.per_message_delay_ms > 0:
            await asyncio.sleep(self.cfg.per_message_delay_ms / 1000.0)
        self.srv.record(self.mail_from or "", self.rcpts, data, self.tls)
        n = self.srv.accepted
        self.reset_transaction()
        await self.reply(f"250 2.0.0 Ok: queued as FAKE{n:08d}")

    async def cmd_rset(self, line: str) -> None:
        self.reset_transaction()
        await self.reply("250 2.0.0 Ok")

    async def cmd_noop(self, line: str) -> None:
        await self.reply("250 2.0.0 Ok")

    async def cmd_vrfy(self, line: str) -> None:
        await self.reply("252 2.0.0 Cannot VRFY user, but will accept message")

    async def cmd_quit(self, line: str) -> bool:
        await self.reply("221 2.0.0 Bye")
        return False


# -------------------------------------------------------------------- running


class ThreadedFakeRemote:
    """A FakeRemote on its own event loop in a daemon thread (for tests in one process)."""

    def __init__(self, config: FakeRemoteConfig):
        self.config = config
        self.server = FakeRemote(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fake-remote")

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def start(self) -> "ThreadedFakeRemote":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def stats(self) -> dict:
        return self.server.stats()

    def records(self) -> list[dict]:
        return self.server.records()

    def __enter__(self) -> "ThreadedFakeRemote":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(config: FakeRemoteConfig | None = None, **kwargs) -> ThreadedFakeRemote:
    """Start a fake remote in a background thread; use as a context manager or call `.stop()`."""
    cfg = config or FakeRemoteConfig(**kwargs)
    return ThreadedFakeRemote(cfg).start()


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Scriptable fake remote SMTP server (fault injection, throttling benchmarks).")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="address to listen on; port 0 picks a free one (default 127.0.0.1:0)")
    p.add_argument("--hostname", default="mx.fake-remote.test", help="name in the greeting and EHLO reply")
    p.add_argument("--max-sessions", type=int, default=0, metavar="N",
                   help="concurrent sessions allowed; beyond N a session gets the 421 4.3.2 resource forest "
                        "greeting and is closed (0 = unlimited)")
    p.add_argument("--per-message-delay", type=float, default=0.0, metavar="MS",
                   help="milliseconds to wait before answering the end of each message")
    p.add_argument("--ehlo-extensions", nargs="+", metavar="EXT",
                   help="EHLO keywords, as separate arguments and/or comma-separated "
                        f"(default: {','.join(DEFAULT_EXTENSIONS)}); add SMTPUTF8 here if wanted; "
                        "STARTTLS is added automatically with --tls-cert/--tls-key; '' for none")
    p.add_argument("--no-esmtp", action="store_true", help="answer EHLO with 502 (a HELO-only server)")
    p.add_argument("--tls-cert", help="PEM certificate (chain) for STARTTLS")
    p.add_argument("--tls-key", help="PEM private key for STARTTLS")
    p.add_argument("--reject", action="append", default=[], metavar="RCPT_REGEX=REPLY",
                   help="RCPT whose address fully matches the regex (case-insensitive) gets REPLY; repeatable")
    p.add_argument("--reject-mail", action="append", default=[], metavar="FROM_REGEX=REPLY",
                   help="the same for MAIL FROM; repeatable")
    p.add_argument("--reset-mid-data", type=int, default=0, metavar="K",
                   help="reset (RST) the connection in the middle of the first K message transfers")
    p.add_argument("--record", metavar="FILE", help="append a JSON line per accepted message")
    p.add_argument("--record-data", action="store_true", help="include the full message text in --record")
    p.add_argument("--stats", metavar="FILE", help="write JSON counters every --stats-interval and at exit")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often --stats is rewritten (default 1)")
    p.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="close a session silent for this long (default 300)")
    p.add_argument("--fault", choices=FAULTS, help="a hostile remote (see the module's doc)")
    p.add_argument("--fault-sessions", type=int, default=0, metavar="N",
                   help="sessions that get --fault (0 = all); later sessions behave")
    p.add_argument("--trickle-delay", type=float, default=100.0, metavar="MS",
                   help="milliseconds between the bytes of a reply with --fault trickle (default 100)")
    p.add_argument("--giant-lines", type=int, default=100_000, metavar="N",
                   help="lines of the EHLO reply with --fault giant-reply (default 100000)")
    return p


def config_from_args(args: argparse.Namespace) -> FakeRemoteConfig:
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--listen expects HOST:PORT, got {args.listen!r}")
    host = host.strip("[]")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    try:
        rcpt_rejects = [parse_reject(s) for s in args.reject]
        mail_rejects = [parse_reject(s) for s in args.reject_mail]
    except (ValueError, re.error) as e:
        raise SystemExit(str(e))
    return FakeRemoteConfig(
        host=host,
        port=int(port),
        hostname=args.hostname,
        max_sessions=args.max_sessions,
        per_message_delay_ms=args.per_message_delay,
        extensions=parse_extensions(args.ehlo_extensions) if args.ehlo_extensions is not None
        else list(DEFAULT_EXTENSIONS),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        rcpt_rejects=rcpt_rejects,
        mail_rejects=mail_rejects,
        reset_mid_data=args.reset_mid_data,
        record_file=args.record,
        record_data=args.record_data,
        stats_file=args.stats,
        stats_interval=args.stats_interval,
        idle_timeout=args.idle_timeout,
        esmtp=not args.no_esmtp,
        keep_records=False,
        fault=args.fault or "",
        fault_sessions=args.fault_sessions,
        trickle_delay_ms=args.trickle_delay,
        giant_lines=args.giant_lines,
    )


async def amain(cfg: FakeRemoteConfig) -> None:
    server = FakeRemote(cfg)
    port = await server.start()
    print(f"listening on {cfg.host}:{port}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(build_arg_parser().parse_args(argv))
    asyncio.run(amain(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
