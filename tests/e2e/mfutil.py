"""Helpers for Mailflow's end-to-end tests: a server process, a raw SMTP client, Maildir look-ups.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts" / "lib"))

from mailflow_testlib.mailflow import MailflowProcess  # noqa: E402
from mailflow_testlib.processes import proc_status_kb  # noqa: E402

HOSTNAME = "mx.example.test"
QUEUE_ID_RE = r"[0-9BCDFGHJKLMNPQRSTVWXYZ]{16}"
QUEUED_RE = re.compile(r"Ok: queued as (" + QUEUE_ID_RE + r")\b")


def mailflow_bin() -> str:
    """The server binary: $MAILFLOW_BIN (relative to the repo root if relative) or the debug build."""
    p = os.environ.get("MAILFLOW_BIN")
    path = Path(p) if p else Path(".build/debug/mailflow")
    if not path.is_absolute():
        path = REPO_ROOT / path
    return str(path)


# --------------------------------------------------------------------------------------------
# config


def default_config() -> dict:
    return {
        "server": {
            "hostname": HOSTNAME,
            "smtp": ["127.0.0.1:0"],
            "data": "./data",
            "log_level": "info",
        },
        "limits": {
            "max_message_size": "1MB",
            "recipients_per_message": 500,
            "max_errors_per_session": 20,
            # Every test client is 127.0.0.1: per-source and per-mailbox limits are raised out of the
            # way here and lowered by the tests that exercise them (test_admission.py).
            "per_source": {
                "max_connections": 1000,
                "connections_per_minute": 1000000,
                "messages_per_minute": 1000000,
            },
            "mailbox_messages_per_hour": 1000000,
            "mailbox_messages_per_hour_per_sender": 1000000,
        },
        "timeouts": {"command": 300, "data": 180, "session": 3600, "shutdown_grace": 30},
        # Many servers run side by side in the suite: each admin listener takes a free port. Every
        # client is 127.0.0.1 and some send many invalid tokens (schemathesis's auth probes): sign-in
        # throttling is raised out of the way here and lowered by test_admin_security.py.
        "admin": {"listen": "127.0.0.1:0", "signin_failures": 1000000},
        "delivery": {"concurrency": 4, "retry_intervals": [60, 300], "expiry": "24h"},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"]},
            {"name": "fabrikam", "domains": ["fabrikam.test"], "catch_all": True},
        ],
    }


def merge_config(base: dict, overrides: dict | None) -> dict:
    out = copy.deepcopy(base)
    for section, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(section), dict):
            out[section].update(value)
        elif value is None:
            out.pop(section, None)
        else:
            out[section] = copy.deepcopy(value)
    return out


class _ConfigDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, with paths written as strings (tests hand in `tmp_path / ...`)."""


_ConfigDumper.add_multi_representer(PurePath, lambda d, p: d.represent_str(str(p)))


def to_yaml(cfg: dict) -> str:
    """`cfg` as the YAML file `mailflow serve` and `mailflow config check` read: block style, keys in
    the order given, long strings never folded."""
    return yaml.dump(cfg, Dumper=_ConfigDumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=1 << 20)


# --------------------------------------------------------------------------------------------
# server process


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are returned to the test, not followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class MailflowServer:
    """One `mailflow serve` process in `workdir` (config.yaml, data/, stdout/stderr logs)."""

    def __init__(self, workdir: Path, config: dict):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(to_yaml(config))
        self.data_dir = self.workdir / "data"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.admin_url: str | None = None
        self.starts = 0

    def __iter__(self):
        return iter((self.port, self.data_dir, self.proc))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> "MailflowServer":
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        self.stdout_path = self.workdir / f"stdout.{self.starts}.log"
        self.stderr_path = self.workdir / f"stderr.{self.starts}.log"
        process = MailflowProcess(mailflow_bin(), self.config_path, self.workdir, self.stdout_path, self.stderr_path)
        try:
            process.start(timeout, poll=0.01)
        finally:
            self.proc = process.proc
        self.port, self.admin_url = process.port, process.admin_url
        return self

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except (AttributeError, FileNotFoundError):
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit."""
        self.terminate()
        return self.wait(timeout)

    def cli(self, *args: str, timeout: float = 30.0, input_text: str | None = None) -> subprocess.CompletedProcess:
        """`mailflow <args> --config <this config>`."""
        return run_cli(*args, "--config", str(self.config_path), timeout=timeout, cwd=self.workdir,
                       input_text=input_text)

    def add_token(self, name: str) -> str:
        """`mailflow admin token add NAME`: the token, printed once."""
        r = self.cli("admin", "token", "add", name)
        assert r.returncode == 0, r.stdout + r.stderr
        token = r.stdout.strip()
        assert token.startswith("mf_"), token
        return token

    def api(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
            headers: dict | None = None):
        """One HTTP request to the admin listener: (status, headers, body bytes)."""
        assert self.admin_url, "admin listener not running"
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.admin_url.rstrip("/") + path, data=body, method=method, headers=h)
        opener = urllib.request.build_opener(NoRedirect())
        try:
            with opener.open(req, timeout=15) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def api_json(self, method: str, path: str, token: str, expect: int = 200):
        status, _, body = self.api(method, path, token)
        assert status == expect, (status, body)
        return json.loads(body)

    def queue_json(self, include_done: bool = False) -> list[dict]:
        args = ["queue", "list", "--json"] + (["--all"] if include_done else [])
        r = self.cli(*args)
        assert r.returncode == 0, f"queue list failed: {r.stdout}{r.stderr}"
        return json.loads(r.stdout)

    def wait_queue_empty(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = self.queue_json()
            if not rows:
                return
            time.sleep(0.1)
        raise AssertionError(f"queue not empty after {timeout}s: {rows[:5]} ({len(rows)} rows)")


def run_cli(*args: str, timeout: float = 30.0, cwd: Path | str | None = None,
            input_text: str | None = None) -> subprocess.CompletedProcess:
    """Runs the mailflow CLI; `cwd` defaults to a throw-away folder so nothing lands in the repo;
    `input_text` is its standard input (none otherwise)."""
    if cwd is None:
        import tempfile

        cwd = tempfile.mkdtemp(prefix="mailflow-cli-")
    return subprocess.run(
        [mailflow_bin(), *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL if input_text is None else None, input=input_text, cwd=cwd)


# --------------------------------------------------------------------------------------------
# raw SMTP client


@dataclass
class Reply:
    code: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def first(self) -> str:
        return f"{self.code} {self.lines[0] if self.lines else ''}"

    @property
    def enhanced(self) -> str | None:
        m = re.match(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)", self.lines[0] if self.lines else "")
        return m.group(1) if m else None

    def __repr__(self) -> str:
        return "Reply(" + " | ".join(f"{self.code} {l}" for l in self.lines) + ")"


class SMTPClient:
    """A byte-exact SMTP client over a plain (and later TLS) socket."""

    def __init__(self, port: int, timeout: float = 10.0, read_greeting: bool = True):
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply() if read_greeting else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by server; unread: %r" % self.buf)
        self.buf += chunk

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = self.read_line().decode("utf-8", errors="replace")
            m = re.match(r"(\d{3})([ -])(.*)$", raw)
            assert m, f"malformed reply line {raw!r}"
            lines.append(m.group(3))
            if m.group(2) == " ":
                return Reply(int(m.group(1)), lines)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    def ehlo(self, name: str = "client.test") -> Reply:
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, r
        return r

    def expect_closed(self, timeout: float = 5.0) -> None:
        """The server closes the connection without sending anything more."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        assert self.buf == b"" and data == b"", f"expected close, got {self.buf + data!r}"

    def no_pending_data(self, wait: float = 0.3) -> bool:
        """True if nothing more arrives within `wait` seconds (used only to prove an absence)."""
        if self.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
            self.buf += data
            return False
        except (socket.timeout, TimeoutError):
            return True
        finally:
            self.sock.settimeout(old)

    def starttls(self, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
        r = self.cmd("STARTTLS")
        assert (r.code, r.enhanced) == (220, "2.0.0"), r
        return self.wrap_tls(context)

    def wrap_tls(self, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
        assert self.buf == b"", f"plaintext left over before TLS: {self.buf!r}"
        self.sock = (context or client_tls_context()).wrap_socket(self.sock, server_hostname=HOSTNAME)
        return self.sock

    def send_message(self, sender: str, rcpts: list[str], message: bytes, mail_params: str = "") -> str:
        """A whole DATA transaction; returns the queue ID."""
        r = self.cmd(f"MAIL FROM:<{sender}>{(' ' + mail_params) if mail_params else ''}")
        assert (r.code, r.enhanced) == (250, "2.1.0"), r
        for rc in rcpts:
            r = self.cmd(f"RCPT TO:<{rc}>")
            assert (r.code, r.enhanced) == (250, "2.1.5"), r
        r = self.cmd("DATA")
        assert r.code == 354, r
        self.send(dot_stuff(message) + b".\r\n")
        r = self.reply()
        return queue_id_of(r)


def queue_id_of(r: Reply) -> str:
    assert (r.code, r.enhanced) == (250, "2.0.0"), r
    m = QUEUED_RE.search(r.text)
    assert m, f"no queue ID in {r!r}"
    return m.group(1)


def dot_stuff(message: bytes) -> bytes:
    assert message.endswith(b"\r\n")
    lines = message.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


def client_tls_context(minimum=None, maximum=None, legacy: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's certificate is self-signed
    if legacy:  # allow the client itself to offer TLS 1.0/1.1 so the server's refusal is what is tested
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


# --------------------------------------------------------------------------------------------
# messages and Maildir


def make_message(token: str, subject: str | None = None, body_lines: list[str] | None = None,
                 message_id: bool = True, to: str = "alice@contoso.test") -> bytes:
    """An RFC 5322 message with CRLF line ends; `token` in the subject and body, a known trailer."""
    hdr = [
        "From: Sender <sender@example.net>",
        f"To: <{to}>",
        f"Subject: {subject or 'e2e ' + token}",
        "Date: Sun, 29 Nov 2026 10:00:00 +0000",
    ]
    if message_id:
        hdr.append(f"Message-ID: <{token}@client.example.net>")
    body = [f"token={token}", *(body_lines or []), f"trailer-{token}-end"]
    return ("\r\n".join(hdr + [""] + body) + "\r\n").encode("utf-8")


def mailbox_root(data_dir: Path) -> Path:
    return Path(data_dir) / "mailboxes"


def delivered_files(data_dir: Path, queue_id: str) -> list[Path]:
    """Every delivered copy (in new/ or cur/) whose name starts with the queue ID."""
    root = mailbox_root(data_dir)
    out = []
    if not root.exists():
        return out
    for domain in root.iterdir():
        if not domain.is_dir():
            continue
        for box in domain.iterdir():
            for sub in ("new", "cur"):
                d = box / sub
                if d.is_dir():
                    out.extend(p for p in d.iterdir() if p.name.startswith(queue_id))
    return sorted(out)


def all_delivered_files(data_dir: Path) -> list[Path]:
    root = mailbox_root(data_dir)
    if not root.exists():
        return []
    return sorted(p for p in root.glob("*/*/*/*") if p.parent.name in ("new", "cur") and p.is_file())


def wait_for_delivery(data_dir: Path, queue_id: str, count: int = 1, timeout: float = 10.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    files = []
    while time.monotonic() < deadline:
        files = delivered_files(data_dir, queue_id)
        if len(files) >= count:
            return files
        time.sleep(0.02)
    raise AssertionError(f"{queue_id}: {len(files)} of {count} copies delivered after {timeout}s: {files}")


@dataclass
class Delivered:
    return_path: bytes
    received: bytes
    added_message_id: bytes | None
    original: bytes


def split_delivered(data: bytes, queue_id: str) -> Delivered:
    """Splits a delivered file into Mailflow's prepended fields and the original message."""
    m = re.match(rb"Return-Path: (<[^\r\n]*>)\r\n", data)
    assert m, f"no Return-Path first: {data[:200]!r}"
    rest = data[m.end():]
    rp = m.group(1)
    m2 = re.match(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", rest)
    assert m2, f"no Received after Return-Path: {rest[:300]!r}"
    received = m2.group(0)
    rest = rest[m2.end():]
    added = None
    m3 = re.match(rb"Message-ID: <" + queue_id.encode() + rb"@[^>\r\n]+>\r\n", rest)
    if m3:
        added = m3.group(0)
        rest = rest[m3.end():]
    return Delivered(rp, received, added, rest)


def read_rss_kb(pid: int) -> int:
    kb = proc_status_kb(pid, "VmRSS")
    if not kb:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return kb


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    """Polls `predicate` every 0.2 s until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def send_mail(srv: "MailflowServer", sender: str, rcpts: list[str], tag: str, subject: str | None = None) -> str:
    """One message in one session; returns its queue ID."""
    with SMTPClient(srv.port) as c:
        c.ehlo()
        return c.send_message(sender, rcpts, make_message(tag, subject=subject or tag))
