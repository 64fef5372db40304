"""A `mailflow serve` process: started on a config file, found by the lines it prints once listening."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# `mailflow serve` prints these (Sources/mailflow/Mailflow.swift) once its listeners are bound, so tests and
# scripts can use port 0 and read the port back.
LISTEN_RE = re.compile(r"mailflow: listening on 127\.0\.0\.1:(\d+)")
ADMIN_RE = re.compile(r"mailflow: admin center on (http://\S+/)")


def default_binary(given: str | None = None) -> tuple[Path, str]:
    """(binary, build): `given` if set, else the release build if there is one, else the debug build."""
    if given:
        return Path(given).resolve(), "given"
    release = REPO / ".build" / "release" / "mailflow"
    if release.exists():
        return release, "release"
    return REPO / ".build" / "debug" / "mailflow", "debug"


class MailflowProcess:
    """`BINARY serve --config CONFIG` in `cwd`, stdout and stderr to files; `start` returns once it listens.

    `port` is the first SMTP listener on 127.0.0.1, `admin_url` the admin center's URL when it has one.
    """

    def __init__(self, binary: str | Path, config: Path, cwd: Path, stdout_path: Path | None = None,
                 stderr_path: Path | None = None) -> None:
        self.binary = str(binary)
        self.config = Path(config)
        self.cwd = Path(cwd)
        self.stdout_path = stdout_path or self.cwd / "stdout.log"
        self.stderr_path = stderr_path or self.cwd / "stderr.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.admin_url: str | None = None

    def start(self, timeout: float = 30.0, poll: float = 0.05) -> "MailflowProcess":
        with open(self.stdout_path, "wb") as o, open(self.stderr_path, "wb") as e:
            self.proc = subprocess.Popen([self.binary, "serve", "--config", str(self.config)], stdout=o, stderr=e,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            m = LISTEN_RE.search(text)
            if m:
                self.port = int(m.group(1))
                a = ADMIN_RE.search(text)  # printed with the listening line, in the same flush
                self.admin_url = a.group(1) if a else None
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mailflow exited with {self.proc.returncode} before listening:\n{self.stderr()[-4000:]}")
            time.sleep(poll)
        self.proc.kill()
        self.proc.wait(10)
        raise RuntimeError(f"mailflow did not print its listening line in {timeout:g} s:\n{self.stderr()[-4000:]}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive() else None
