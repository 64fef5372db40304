"""A throw-away Dovecot that only authenticates: `dovecot -F -c ROOT/dovecot.conf` as root, no mail
protocols (`protocols = none`, so no inet listener at all), its base_dir, state and log under one
folder, one `passwd-file` passdb and userdb, and an auth socket a Postfix smtpd can use as
`smtpd_sasl_type = dovecot`. The machine's /etc/dovecot is never read (`-c` names the only config).

Passwords are stored as Dovecot's `{SCRAM-SHA-256}ITERATIONS,SALT,STOREDKEY,SERVERKEY` (RFC 5802 keys,
base64), the same PBKDF2-HMAC-SHA256 keys Mailflow keeps. `doveadm pw -s SCRAM-SHA-256` always writes
4,096 iterations (2.3), but Dovecot reads the count from the stored value when it verifies a PLAIN or
LOGIN password, so `scram_sha256_entry` writes the entry itself with the count asked for (at least
4,096: Dovecot refuses a smaller count).
Used by scripts/bench-submission. Debian: `apt-get install -y dovecot-core`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import time
from pathlib import Path

from .processes import log, stop_process, tool


class DovecotUnavailable(Exception):
    """Dovecot cannot run here (not installed and not installable, or not root); the reason is the message."""


def ensure_dovecot() -> None:
    """Installs Debian's dovecot-core when `dovecot` is missing; raises DovecotUnavailable if it cannot."""
    if tool("dovecot") and tool("doveadm"):
        return
    if os.geteuid() != 0:
        raise DovecotUnavailable("dovecot is not installed and installing it needs root")
    log("installing dovecot-core (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "dovecot-core"]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env)
        subprocess.run(install, check=True, env=env)
    if not tool("dovecot"):
        raise DovecotUnavailable("dovecot-core installed, but `dovecot` still not found")


def dovecot_version() -> str:
    r = subprocess.run([tool("dovecot") or "dovecot", "--version"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def scram_sha256_entry(password: str, iterations: int, salt: bytes | None = None) -> str:
    """`{SCRAM-SHA-256}ITER,SALT,STOREDKEY,SERVERKEY` for a passwd-file: SaltedPassword =
    PBKDF2-HMAC-SHA256(password, salt, iter), StoredKey = SHA256(HMAC(SaltedPassword, "Client Key")),
    ServerKey = HMAC(SaltedPassword, "Server Key") (RFC 5802 §3)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"{{SCRAM-SHA-256}}{iterations},{b64(salt)},{b64(stored)},{b64(server)}"


class DovecotAuth:
    """Dovecot under `root` with only its auth service; `socket` is the listener for Postfix (mode 0660,
    owned by `socket_user`), `users` maps user name to passwd-file password field."""

    def __init__(self, root: Path, users: dict[str, str], socket_user: str = "postfix",
                 mechanisms: str = "plain login") -> None:
        self.root = Path(root)
        self.users = users
        self.socket_user = socket_user
        self.mechanisms = mechanisms
        self.conf = self.root / "dovecot.conf"
        self.passwd = self.root / "passwd"
        self.base_dir = self.root / "run"
        self.logfile = self.root / "dovecot.log"
        self.socket = self.root / "auth-postfix"
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        return f"""\
# a throw-away Dovecot: the auth service only (no protocols, no inet listener), passwd-file users
protocols = none
listen = 127.0.0.1
base_dir = {self.base_dir}
state_dir = {self.root / "state"}
log_path = {self.logfile}
info_log_path = {self.logfile}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {self.mechanisms}
auth_cache_size = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {self.passwd}
}}
userdb {{
  driver = passwd-file
  args = {self.passwd}
}}
service auth {{
  unix_listener {self.socket} {{
    mode = 0660
    user = {self.socket_user}
    group = {self.socket_user}
  }}
}}
"""

    def start(self, timeout: float = 30) -> "DovecotAuth":
        if os.geteuid() != 0:
            raise DovecotUnavailable("the throw-away Dovecot runs as root (its auth process drops privileges)")
        ensure_dovecot()
        for d in (self.root, self.base_dir, self.root / "state"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        # passwd-file: user:password:uid:gid:gecos:home:shell:extra; only the passdb fields matter here.
        self.passwd.write_text("".join(f"{u}:{p}::::::\n" for u, p in self.users.items()))
        os.chmod(self.passwd, 0o644)
        self.conf.write_text(self.config())
        r = subprocess.run([tool("doveconf") or "doveconf", "-c", str(self.conf), "-n"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"doveconf -c {self.conf}: {r.stdout}{r.stderr}")
        with open(self.root / "stderr.log", "wb") as e:
            self.proc = subprocess.Popen([tool("dovecot") or "dovecot", "-F", "-c", str(self.conf)],
                                         stdin=subprocess.DEVNULL, stdout=e, stderr=e)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.exists():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}: {self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"dovecot's auth socket {self.socket} did not appear in {timeout:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = ""
        for f in (self.root / "stderr.log", self.logfile):
            if f.exists():
                text += f.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def auth_test(self, user: str, password: str) -> bool:
        """`doveadm auth test` against this instance: True if the password is accepted."""
        r = subprocess.run([tool("doveadm") or "doveadm", "-c", str(self.conf), "auth", "test", user, password],
                           capture_output=True, text=True, timeout=60)
        return r.returncode == 0 and "succeeded" in r.stdout

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of this instance's processes (the master and its children)."""
        if self.proc is None:
            return []
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = open(f"/proc/{d}/stat").read()
                cmd = open(f"/proc/{d}/cmdline").read().replace("\0", " ").strip()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            if int(d) == self.proc.pid or ppid == self.proc.pid:
                out.append((int(d), cmd))
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, "dovecot", timeout=15)
            self.proc = None
