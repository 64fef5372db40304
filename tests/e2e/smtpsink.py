"""A slow, recording SMTP sink for the shared-queue tests (issue 16): the remote every node relays to.

It keeps what a test of lost and duplicated mail needs and the general fake remote
(fakes/remote_smtp.py) does not: **who** delivered each message (the EHLO name, which is the
delivering node's `server.hostname`) and **what is in flight** (bodies whose final dot has arrived
and whose reply is still being held back, per EHLO name).

Like a real MTA it takes responsibility for a message when the final dot arrives: a message is
recorded even if the client dies while the reply is held back (`peer_gone` then says so). That is
exactly how a node killed in the middle of a delivery produces a duplicate: the remote has the
message, the node never saw the `250`, and after its lease runs out another node delivers it again.

    sink = SlowSink("127.0.0.2", delay=lambda: 1.0, refuse=lambda rcpt: None).start()
    ... nodes relay to 127.0.0.2:sink.port ...
    sink.records()           # [Received(message_id, helo, ..., mail_at, dot_at, replied_at, peer_gone)]
    sink.in_flight("a.test") # bodies from a.test whose reply is being held
    sink.stop()

Only 127.0.0.0/8. Plain SMTP (no STARTTLS offered): what is tested is the queue, not TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Received:
    message_id: str | None
    helo: str
    mail_from: str
    rcpts: tuple[str, ...]
    mail_at: float      # time.monotonic() when its MAIL command arrived (the delivery began)
    dot_at: float       # when the final dot arrived
    replied_at: float   # when the 250 was written
    peer_gone: bool     # the client had closed its end before the reply (killed mid-delivery)


_MAIL = re.compile(r"^MAIL FROM:\s*<([^>]*)>", re.I)
_RCPT = re.compile(r"^RCPT TO:\s*<([^>]*)>", re.I)


def _message_id(body: bytes) -> str | None:
    head = body.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.search(r"^Message-ID:\s*(\S+)", head, re.I | re.M)
    return m.group(1) if m else None


class SlowSink:
    """An asyncio SMTP server on its own event loop in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", delay: Callable[[], float] = lambda: 0.0,
                 hostname: str = "mx1.remote.test", refuse: Callable[[str], str | None] = lambda rcpt: None):
        self.host = host
        self.delay = delay
        self.refuse = refuse  # RCPT address -> a reply to refuse it with, or None to take it
        self.hostname = hostname
        self.port: int | None = None
        self._records: list[Received] = []
        self._held: dict[int, tuple[str, str | None]] = {}  # session id -> (helo, message id) awaiting reply
        self._sessions: dict[str, int] = {}  # helo -> sessions open now
        self.max_sessions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="smtp-sink")
        self._server: asyncio.AbstractServer | None = None

    # ------------------------------------------------------------------ reading what happened

    def records(self) -> list[Received]:
        with self._lock:
            return list(self._records)

    def in_flight(self, helo: str | None = None) -> list[str | None]:
        """Message IDs whose final dot has arrived and whose reply is still held back."""
        with self._lock:
            return [mid for h, mid in self._held.values() if helo is None or h == helo]

    def open_sessions(self, helo: str) -> int:
        with self._lock:
            return self._sessions.get(helo, 0)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "SlowSink":
        self._thread.start()

        async def listen():
            self._server = await asyncio.start_server(self._session, self.host, 0, limit=1 << 20)
            return self._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close():
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # ------------------------------------------------------------------ one session

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid = id(writer)
        helo = ""
        mail_from: str | None = None
        mail_at = 0.0
        rcpts: list[str] = []

        async def reply(text: str) -> None:
            writer.write((text + "\r\n").encode())
            await writer.drain()

        try:
            await reply(f"220 {self.hostname} ESMTP sink")
            while True:
                raw = await asyncio.wait_for(reader.readline(), 120)
                if not raw:
                    return
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    with self._lock:
                        if helo:
                            self._sessions[helo] -= 1
                        helo = line[5:].strip()
                        self._sessions[helo] = self._sessions.get(helo, 0) + 1
                        self.max_sessions[helo] = max(self.max_sessions.get(helo, 0), self._sessions[helo])
                    mail_from, rcpts = None, []
                    if verb == "EHLO":
                        await reply(f"250-{self.hostname} greets {helo}\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                    "250-ENHANCEDSTATUSCODES\r\n250 SIZE 10485760")
                    else:
                        await reply(f"250 {self.hostname}")
                elif verb == "MAIL" and (m := _MAIL.match(line)):
                    mail_from, rcpts, mail_at = m.group(1), [], time.monotonic()
                    await reply("250 2.1.0 Ok")
                elif verb == "RCPT" and (m := _RCPT.match(line)) and mail_from is not None:
                    refusal = self.refuse(m.group(1))
                    if refusal:
                        await reply(refusal)
                    else:
                        rcpts.append(m.group(1))
                        await reply("250 2.1.5 Ok")
                elif verb == "DATA" and mail_from is not None and rcpts:
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    body = bytearray()
                    while True:
                        chunk = await asyncio.wait_for(reader.readline(), 120)
                        if not chunk:
                            return  # the client went away before the dot: nothing accepted
                        if chunk == b".\r\n":
                            break
                        body += chunk[1:] if chunk.startswith(b".") else chunk
                    dot_at = time.monotonic()
                    mid = _message_id(bytes(body))
                    with self._lock:
                        self._held[sid] = (helo, mid)
                    try:
                        await asyncio.sleep(max(0.0, self.delay()))
                        # A killed client's kernel has closed its end: the FIN is seen without reading.
                        gone = reader.at_eof() or writer.is_closing()
                        rec = Received(mid, helo, mail_from, tuple(rcpts), mail_at, dot_at, time.monotonic(), gone)
                        with self._lock:
                            self._records.append(rec)
                    finally:
                        with self._lock:
                            self._held.pop(sid, None)
                    mail_from, rcpts = None, []
                    if gone:
                        return
                    await reply("250 2.0.0 Ok: queued")
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    await reply("250 2.0.0 Ok")
                elif verb == "NOOP":
                    await reply("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 Bye")
                    return
                else:
                    await reply("503 5.5.1 Bad sequence of commands")
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): a cancelled session task would be logged as an error by asyncio's streams
        finally:
            with self._lock:
                if helo:
                    self._sessions[helo] -= 1
            writer.close()
