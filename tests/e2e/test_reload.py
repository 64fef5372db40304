"""SIGHUP reaches every reader of the tenants, not only new SMTP sessions.

A tenant's outbound connector (smart host) is read by delivery for every message, and a DSN's
route by the scheduler for every bounce; both must follow a reload, as the docs promise for tenants.
Two real SMTP receivers on loopback (tests/e2e/fakes/remote_smtp.py) stand for the old and the new
smart host; the test sees each message arrive at the one the configuration named when it was sent.
"""

from __future__ import annotations

import copy
import signal
import smtplib
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))

from remote_smtp import FakeRemoteConfig, start_in_thread  # noqa: E402

REFUSED = "550 5.1.1 No such user here"


@pytest.fixture
def receivers():
    """Two fake smart hosts, A and B; B refuses nobody@remote.test with a 550."""
    a = start_in_thread(FakeRemoteConfig(record_data=True, hostname="smarthost-a.test"))
    b = start_in_thread(FakeRemoteConfig(record_data=True, hostname="smarthost-b.test",
                                         rcpt_rejects=[rf"nobody@remote\.test={REFUSED}"]))
    yield a, b
    a.stop()
    b.stop()


def connector(port: int) -> dict:
    return {"smart_host": f"127.0.0.1:{port}", "tls": "disabled"}


def overrides(smart_host_port: int, with_fabrikam: bool = False) -> dict:
    """contoso sends through the smart host on `smart_host_port`; with_fabrikam adds a catch-all
    tenant fabrikam.test using the same smart host."""
    tenants = [{"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice"],
                "outbound_connector": connector(smart_host_port)}]
    if with_fabrikam:
        tenants.append({"name": "fabrikam", "domains": ["fabrikam.test"], "catch_all": True,
                        "outbound_connector": connector(smart_host_port)})
    return {
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"concurrency": 4, "retry_intervals": ["1s"], "expiry": "24h"},
        "tenants": tenants,
    }


def reload_with(srv, cfg: dict, expect: str, timeout: float = 10.0) -> str:
    """Writes `cfg` as the server's config file, sends SIGHUP, and returns the log written after
    it once it holds `expect`."""
    before = len(srv.stderr())
    srv.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logged = srv.stderr()[before:]
        if expect in logged:
            return logged
        time.sleep(0.05)
    raise AssertionError(f"no {expect!r} in the log {timeout}s after SIGHUP:\n{srv.stderr()[before:]}")


def send(port: int, sender: str, rcpt: str) -> str:
    """One message with a unique token in its subject and body; returns the token."""
    token = uuid.uuid4().hex[:16]
    msg = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: reload {token}\r\n"
           f"Message-ID: <{token}@client.test>\r\n\r\nbody {token}\r\n").encode()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=15) as s:
        s.sendmail(sender, [rcpt], msg)
    return token


def arrived(fake, token: str) -> list[dict]:
    return [r for r in fake.records() if token in r.get("data", "")]


def wait_arrival(fake, token: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = arrived(fake, token)
        if got:
            return got[0]
        time.sleep(0.05)
    raise AssertionError(f"message {token} did not reach {fake.server.config.hostname} in {timeout}s")


def maildir_files(data_dir: Path, domain: str, box: str) -> list[Path]:
    root = data_dir / "mailboxes" / domain / box
    return sorted(p for sub in ("new", "cur") for p in (root / sub).glob("*") if p.is_file())


def test_sighup_moves_a_tenants_mail_to_its_new_smart_host(mailflow_server, receivers):
    a, b = receivers
    srv = mailflow_server(overrides(a.port))

    first = send(srv.port, "alice@contoso.test", "carol@remote.test")
    rec = wait_arrival(a, first)
    assert rec["mail_from"] == "alice@contoso.test" and rec["rcpt_to"] == ["carol@remote.test"]

    cfg = copy.deepcopy(srv.config)
    cfg.update(overrides(b.port))
    reload_with(srv, cfg, "configuration reloaded")

    second = send(srv.port, "alice@contoso.test", "carol@remote.test")
    rec = wait_arrival(b, second)
    assert rec["mail_from"] == "alice@contoso.test" and rec["rcpt_to"] == ["carol@remote.test"]
    assert not arrived(a, second), "the old smart host still got mail after the reload"
    assert not arrived(b, first)

    # A reload with a network that does not parse is refused; the running configuration (B) stays.
    bad = copy.deepcopy(cfg)
    bad["tenants"] = overrides(a.port)["tenants"]
    bad["relay"] = {"trusted_networks": ["127.0.0.0/8", "10.0.0.0/33"]}
    logged = reload_with(srv, bad, "refused, keeping the running configuration")
    assert "relay.trusted_networks: '10.0.0.0/33' has a bad prefix length" in logged, logged
    third = send(srv.port, "alice@contoso.test", "carol@remote.test")
    wait_arrival(b, third)
    assert not arrived(a, third)
    assert srv.running()


def test_sighup_reaches_dsn_routes_of_a_new_tenant(mailflow_server, receivers):
    """fabrikam.test becomes a tenant by reload: its mail leaves through its connector, and the DSN
    for a recipient the smart host refuses comes back into its local mailbox (before the reload
    fabrikam.test was somebody else's domain, and a DSN to it would have been relayed)."""
    a, b = receivers
    srv = mailflow_server(overrides(a.port))
    cfg = copy.deepcopy(srv.config)
    cfg.update(overrides(b.port, with_fabrikam=True))
    reload_with(srv, cfg, "configuration reloaded")

    token = send(srv.port, "dave@fabrikam.test", "nobody@remote.test")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not maildir_files(srv.data_dir, "fabrikam.test", "dave"):
        time.sleep(0.05)
    files = maildir_files(srv.data_dir, "fabrikam.test", "dave")
    assert files, "no DSN delivered to dave@fabrikam.test:\n" + srv.stderr()[-3000:]
    dsn = files[0].read_bytes()
    assert b"nobody@remote.test" in dsn and b"5.1.1" in dsn and token.encode() in dsn, dsn[:2000]
    assert b.stats()["rejected_rcpts"] >= 1 and a.stats()["rejected_rcpts"] == 0
    assert not a.records()
