"""Ports, tools and processes on 127.0.0.1, and the clean-up stack a script unwinds at exit."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAM = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "mailflow"


def log(msg: str) -> None:
    """One progress line, prefixed with the running script's name and the time."""
    print(f"[{PROGRAM} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tool(name: str) -> str | None:
    """The path of a command, also where PATH leaves out /usr/sbin (postfix, postconf)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, alive=lambda: True, host: str = "127.0.0.1") -> bool:
    """True once `host:port` accepts a connection (its greeting is read and the connection closed without
    a word, which servers take as harmless); False after `timeout` or once `alive()` says the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.settimeout(2)
                try:
                    s.recv(512)
                except OSError:
                    pass
                return True
        except OSError:
            time.sleep(0.1)
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def proc_status_kb(pid: int, field: str = "VmRSS") -> int:
    """A `/proc/PID/status` figure in KB (VmRSS, VmHWM, ...); 0 when the process or field is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stop_process(proc: subprocess.Popen, name: str, sig=signal.SIGTERM, timeout: float = 15) -> None:
    """`sig`, then SIGKILL if the process has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {proc.pid}) did not exit in {timeout:.0f}s after {sig.name}; SIGKILL")
            proc.kill()
            proc.wait(10)


class Cleanup:
    """A stack of clean-ups (the shell's `trap`): everything a run starts is pushed, and popped at the end
    or earlier by `pop`; `run_all` unwinds the rest even after Ctrl-C."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, object]] = []

    def push(self, what: str, fn) -> None:
        self.stack.append((what, fn))

    def pop(self, fn) -> None:
        """Run one registered clean-up now (and forget it)."""
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][1] == fn:
                what, f = self.stack.pop(i)
                self._run(what, f)
                return

    def _run(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every clean-up must get its turn
            log(f"clean-up of {what} failed: {e}")

    def run_all(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # let the clean-up finish
            signal.signal(sig, signal.SIG_IGN)
        while self.stack:
            what, fn = self.stack.pop()
            self._run(what, fn)


CLEANUP = Cleanup()


def exit_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise SystemExit, so `finally: CLEANUP.run_all()` runs."""

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def work_folder(prefix: str, keep: bool) -> Path:
    """A temporary folder that daemons dropping to other users (Postfix's) can traverse; removed by
    `CLEANUP.run_all()` unless `keep`."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    if keep:
        log(f"keeping {root}")
    else:
        CLEANUP.push("temporary folder", lambda: shutil.rmtree(root, ignore_errors=True))
    return root
