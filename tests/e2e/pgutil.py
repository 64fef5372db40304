"""A throw-away PostgreSQL for the cluster tests (issue 16), from Debian's packages, no container.

`Postgres().start()` runs `initdb` into a temporary folder under /tmp and `pg_ctl start` on a free
127.0.0.1 port (Unix socket in the same folder), trust authentication for the `mailflow` superuser,
`fsync=off` (a test database: its durability is not what is tested). As root the server runs as the
`postgres` user, which it requires. `stop_server()`/`start_server()` stop and start the same data
directory on the same port (a restart under load); `stop()` ends it for good and removes the folder.
`query(sql)` runs one statement through `psql` and returns its rows as tuples of strings.

Shared by tests/e2e/test_cluster.py and tests/e2e/test_shared_queue.py; `query_url` reads and ages the
queue of a server that the PostgreSQL pass (MAILFLOW_E2E_STORAGE=postgres, conftest.py) started.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at this moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query_url(url: str, sql: str, timeout: float = 30.0) -> list[tuple[str, ...]]:
    """One statement through psql against the database at `url` (a mailflow server's
    `storage.postgres.url`); rows as tuples of strings (NULL as '')."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    r = subprocess.run([found[-1] if found else "psql", "-d", url, "-X", "-q", "-A", "-t", "-F", "\x1f",
                        "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"psql: {r.stderr.strip()} ({sql})"
    return [tuple(line.split("\x1f")) for line in r.stdout.splitlines() if line]


class Postgres:
    """A throw-away PostgreSQL cluster: initdb into a temporary folder, pg_ctl start on a loopback
    port, trust authentication for the `mailflow` superuser. As root it runs as the `postgres` user
    (the server refuses root)."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        assert found, "PostgreSQL's server is missing: apt-get install postgresql (scripts/install-test-deps)"
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="mailflow-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgres://mailflow@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database (one per test keeps their tables apart); returns its URL."""
        self.query(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def run(self, *args: str) -> None:
        r = subprocess.run(self.as_user + [str(self.bin / args[0]), *args[1:]], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"{args[0]}: {r.stdout}{r.stderr}"

    def start(self) -> "Postgres":
        self.run("initdb", "-D", str(self.data), "-U", "mailflow", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start_server()
        return self

    def start_server(self) -> None:
        """pg_ctl start (waits until it accepts connections) on the port chosen at creation."""
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop_server(self, mode: str = "fast") -> None:
        """pg_ctl stop -m MODE (waits until it is down); the data directory stays for start_server()."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def query(self, sql: str, database: str = "postgres", timeout: float = 30.0) -> list[tuple[str, ...]]:
        """One statement through psql over TCP; rows as tuples of strings (NULL as '')."""
        psql = self.bin / "psql"
        r = subprocess.run([str(psql if psql.exists() else "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "mailflow", "-d", database, "-X", "-q", "-A", "-t", "-F", "\x1f",
                            "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"psql: {r.stderr.strip()} ({sql})"
        return [tuple(line.split("\x1f")) for line in r.stdout.splitlines() if line]

    def log(self) -> str:
        try:
            return (self.root / "log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
