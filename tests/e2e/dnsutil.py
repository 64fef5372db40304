"""A private dnsmasq for end-to-end tests of outbound delivery, and a tiny DNS query for probing it.

`Dnsmasq(records).start()` runs /usr/sbin/dnsmasq in the foreground on a free 127.0.0.1 port (UDP and
TCP), authoritative for the zone `test.` so that negative answers carry an SOA (RFC 2308), serving
only the records given as dnsmasq flags (`--mx-host=...`, `--host-record=...`). It never reads
/etc/resolv.conf or /etc/hosts and never forwards a query. `stop()` kills it (SIGKILL) and reaps it.

The flags are those that work with dnsmasq 2.90 here (see /work/dnsdev Tests/DNSClientTests/
TestSupport.swift): `--txt-record` values without quotes, `--mx-host=nullmx.test,.,0` for a Null MX.
"""

from __future__ import annotations

import random
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

DNSMASQ = "/usr/sbin/dnsmasq"
TTL = 300

TYPE_A, TYPE_MX, TYPE_SOA = 1, 15, 6
RCODE_NOERROR, RCODE_SERVFAIL, RCODE_NXDOMAIN = 0, 2, 3


def _free_port_pair() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 at this moment."""
    for _ in range(50):
        port = random.randint(20000, 60000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP+TCP port pair on 127.0.0.1")


def query(port: int, name: str, qtype: int = TYPE_MX, timeout: float = 0.3,
          host: str = "127.0.0.1") -> tuple[int, int, int] | None:
    """One UDP question; returns (rcode, answer count, authority count), or None on timeout."""
    qid = random.randint(0, 0xFFFF)
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split(".")) + b"\x00"
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (host, port))
            while True:
                data, _ = s.recvfrom(4096)
                if len(data) >= 12 and struct.unpack("!H", data[:2])[0] == qid:
                    break
        except (socket.timeout, TimeoutError, ConnectionRefusedError):
            return None
    _, flags, _, an, ns, _ = struct.unpack("!HHHHHH", data[:12])
    return flags & 0xF, an, ns


class Dnsmasq:
    """dnsmasq as a child process; `records` are extra dnsmasq flags describing the zone's data."""

    def __init__(self, records: list[str], log_dir: Path | None = None):
        self.records = list(records)
        self.log_dir = Path(log_dir) if log_dir else None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    def args(self, port: int) -> list[str]:
        return [
            DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--conf-file=/dev/null",
            "--pid-file=", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--user=root",
            "--log-facility=/dev/null",
            "--auth-server=ns.test,127.0.0.1", "--auth-zone=test", f"--auth-ttl={TTL}",
            "--auth-soa=1,hostmaster.test", "--local=/test/", f"--local-ttl={TTL}",
            *self.records,
        ]

    @property
    def server(self) -> str:
        """The `dns.servers` entry for Mailflow's config."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Dnsmasq":
        last = ""
        for _ in range(10):
            port = _free_port_pair()
            err = open(self.log_dir / "dnsmasq.stderr", "ab") if self.log_dir else subprocess.DEVNULL
            try:
                self.proc = subprocess.Popen(self.args(port), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=err, restore_signals=True)
            finally:
                if err is not subprocess.DEVNULL:
                    err.close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"dnsmasq exited with {self.proc.returncode}"
                    break
                if query(port, "test", TYPE_SOA, timeout=0.1) is not None:
                    self.port = port
                    return self
            self.stop()
        raise RuntimeError(f"dnsmasq did not start: {last}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def __enter__(self) -> "Dnsmasq":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SilentUDP:
    """A bound UDP socket on 127.0.0.1 that never answers: a DNS server that times out."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
