"""Issue 10, items 3 and 12: hostile config files and open relays, with the real binary.

A file nested thousands of levels deep used to kill `config check`, `serve` and a running server
(on SIGHUP) with SIGSEGV; now each is refused with one short line naming the line, before the YAML
is parsed. Duplicate keys, over-long values and trusted networks that make an open relay are
refused the same way; an open relay confirmed with `relay.allow_open_relay` is warned about.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid

import pytest

from mfutil import SMTPClient, make_message, mailflow_bin, run_cli, to_yaml, default_config, wait_for, wait_for_delivery

DEEP = 5000
NESTED = "lists and mappings nested more than 64 deep"


def alias_chain() -> str:
    """Each anchor wraps the one before in 4 more levels: a15, on line 16, would be 65 deep."""
    text = "a0: &a0 [[[[1]]]]\n"
    for i in range(1, 21):
        text += f"a{i}: &a{i} [[[[*a{i - 1}]]]]\n"
    return text


def billion_laughs() -> str:
    text = "l0: &l0 [" + ", ".join(["x"] * 10) + "]\n"
    for i in range(1, 10):
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n"
    return text


# (id, yaml, the one line's expected text after "<file>: ")
HOSTILE = [
    ("deep-flow-sequence", "server: " + "[" * DEEP + "]" * DEEP + "\n", f"line 1: {NESTED}"),
    ("deep-flow-mapping", "server: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n", f"line 1: {NESTED}"),
    # One space per level keeps a 1000-deep block mapping under 1 MiB; line 65 opens level 65.
    ("deep-block-mapping", "".join(" " * i + "a:\n" for i in range(1000)), f"line 65: {NESTED}"),
    ("deep-block-sequence", "- " * DEEP + "a\n", f"line 1: {NESTED}"),
    ("deep-explicit-keys", "? " * DEEP + "a\n", f"line 1: {NESTED}"),
    ("deep-multi-line-flow", "server:\n" + "  [\n" * DEEP + "  a" + "]" * DEEP + "\n", f"line 65: {NESTED}"),
    ("alias-chain", alias_chain(), f"line 16: {NESTED} through the alias *a14"),
    ("billion-laughs", billion_laughs(), "l5[7][8][8][8][8][9]: aliases expand the document past 1000000 values"),
    ("duplicate-top-level", "server:\n  hostname: a.test\nlimits:\n  tarpit: 1\nserver:\n  log_level: info\n",
     "line 5: server: appears twice in the same mapping, on lines 1 and 5 (a key may appear once)"),
    ("duplicate-nested",
     "tenants:\n  - name: a\n    domains: [a.test]\n  - name: b\n    domains: [b.test]\n    \"name\": c\n",
     "line 6: tenants[1].name: appears twice in the same mapping, on lines 4 and 6 (a key may appear once)"),
    ("duplicate-in-flow", "limits: {per_source: {max_connections: 2, max_connections: 3}}\n",
     "line 1: limits.per_source.max_connections: appears twice in the same mapping, on lines 1 and 1"),
    ("hostname-over-253", "server:\n  hostname: " + "a." * 1000 + "test\n",
     "line 2: server.hostname: is 2004 octets long; a host name has at most 253"),
    ("value-over-4k", "server:\n  data: " + "d" * 10000 + "\n",
     "line 2: server.data: a value of 10000 octets ('" + "d" * 80 + "…'); at most 4096 allowed"),
    ("control-characters", "server:\n  hostname: \"bad\\nhost\\u001b[2J\"\n",
     "line 2: server.hostname: 'bad\\nhost\\u{1b}[2J' is not a valid host name"),
    ("open-relay", "relay:\n  trusted_networks: [127.0.0.0/8, 0.0.0.0/0]\n",
     "line 2: relay.trusted_networks[1]: '0.0.0.0/0' is wider than /8 (IPv4) or /16 (IPv6): anyone in it may "
     "relay, an open relay; narrow it, or confirm with relay.allow_open_relay: true"),
    ("open-relay-halves", "relay:\n  trusted_networks: [0.0.0.0/1, 128.0.0.0/1]\n",
     "line 2: relay.trusted_networks[0]: '0.0.0.0/1' is wider than /8"),
    ("open-relay-ipv6", "relay:\n  trusted_networks:\n    - \"::1\"\n    - \"::/0\"\n",
     "line 4: relay.trusted_networks[1]: '::/0' is wider than /8 (IPv4) or /16 (IPv6)"),
    ("open-relay-not-confirmed", "relay:\n  trusted_networks: [0.0.0.0/0]\n  allow_open_relay: false\n",
     "line 2: relay.trusted_networks[0]: '0.0.0.0/0' is wider than"),
]


def one_line(r: subprocess.CompletedProcess) -> str:
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {[l[:200] for l in lines[:5]]}"
    return lines[0]


@pytest.mark.parametrize("text,expected", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_config_check_refuses_hostile_file(tmp_path, text, expected):
    f = tmp_path / "hostile.yaml"
    f.write_text(text)
    started = time.monotonic()
    r = run_cli("config", "check", str(f), cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert r.returncode == 1, f"exit {r.returncode} (-11 is SIGSEGV): {(r.stdout + r.stderr)[:300]!r}"
    line = one_line(r)
    assert f"{f}: {expected}" in line, line[:300]
    assert len(line) < len(str(f)) + 300, f"{len(line)} characters: {line[:300]}"
    assert elapsed < 10, f"{elapsed:.1f}s"


def test_config_check_answers_a_50_mb_hostname_at_once(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("server:\n  hostname: " + "a." * (25 * 1024 * 1024) + "test\n")
    started = time.monotonic()
    r = run_cli("config", "check", str(f), cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert r.returncode == 1, (r.stdout + r.stderr)[:300]
    line = one_line(r)
    assert line.endswith(f"{f}: the file is larger than 1 MiB (1048576 octets), the most a config file may be"), \
        line[:300]
    assert elapsed < 5, f"{elapsed:.1f}s"


SERVE_HOSTILE = [c for c in HOSTILE if c[0] in ("deep-flow-mapping", "deep-block-mapping", "duplicate-top-level",
                                                "hostname-over-253", "open-relay")]


@pytest.mark.parametrize("text,expected", [c[1:] for c in SERVE_HOSTILE], ids=[c[0] for c in SERVE_HOSTILE])
def test_serve_refuses_hostile_file(tmp_path, text, expected):
    f = tmp_path / "hostile.yaml"
    f.write_text(text)
    try:
        r = subprocess.run([mailflow_bin(), "serve", "--config", str(f)], capture_output=True, text=True,
                           timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"serve started with a hostile config: {e.stdout!r}")
    assert r.returncode == 1, f"exit {r.returncode} (-11 is SIGSEGV): {(r.stdout + r.stderr)[:300]!r}"
    assert "listening" not in r.stdout
    assert f"{f}: {expected}" in one_line(r)


def open_relay_config() -> dict:
    cfg = default_config()
    cfg["relay"] = {"trusted_networks": ["127.0.0.0/8", "0.0.0.0/0"], "allow_open_relay": True}
    return cfg


def test_confirmed_open_relay_passes_config_check(tmp_path):
    f = tmp_path / "open.yaml"
    f.write_text(to_yaml(open_relay_config()))
    r = run_cli("config", "check", str(f), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"{f}: OK ("), r.stdout


def test_confirmed_open_relay_is_warned_about_at_start(mailflow_server):
    srv = mailflow_server({"relay": open_relay_config()["relay"]})
    assert wait_for(lambda: "open relay: relay.trusted_networks lets every client in 0.0.0.0/0" in srv.stderr(),
                    timeout=10, what="the open relay warning"), srv.stderr()
    # 127.0.0.0/8 is no open relay: it is not named.
    assert "127.0.0.0/8 send" not in srv.stderr() and "in 127.0.0.0/8" not in srv.stderr()


def test_no_open_relay_warning_without_one(mailflow_server):
    srv = mailflow_server({"relay": {"trusted_networks": ["127.0.0.0/8"]}})
    with SMTPClient(srv.port) as c:
        assert c.greeting.code == 220
    assert "open relay" not in srv.stderr(), srv.stderr()


def deliver_one(srv) -> None:
    token = uuid.uuid4().hex[:12]
    with SMTPClient(srv.port) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        qid = c.send_message("sender@example.net", ["alice@contoso.test"], make_message(token))
    (f,) = wait_for_delivery(srv.data_dir, qid)
    assert token.encode() in f.read_bytes()


def reload_with(srv, text: str, expect_in_log: str) -> str:
    """Writes `text` as the config, sends SIGHUP and returns what the server logged after it."""
    before = len(srv.stderr())
    srv.config_path.write_text(text)
    srv.proc.send_signal(signal.SIGHUP)
    return wait_for(lambda: expect_in_log in srv.stderr()[before:] and srv.stderr()[before:], timeout=15,
                    what=f"{expect_in_log!r} in the log after SIGHUP")


def test_sighup_with_a_5000_deep_file_keeps_the_server_on_its_old_config(mailflow_server):
    srv = mailflow_server()
    good = srv.config_path.read_text()
    deliver_one(srv)

    for text in (
        "server: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n",
        "server: " + "[" * DEEP + "]" * DEEP + "\n",
        "".join(" " * i + "a:\n" for i in range(1000)),
    ):
        logged = reload_with(srv, text, "refused, keeping the running configuration")
        assert NESTED in logged, logged
        time.sleep(0.3)
        assert srv.running(), f"the server died on SIGHUP (exit {srv.proc.returncode}):\n{srv.stderr()[-2000:]}"
        deliver_one(srv)

    logged = reload_with(srv, good + "server:\n  log_level: debug\n", "refused, keeping the running configuration")
    assert "server: appears twice in the same mapping" in logged, logged

    logged = reload_with(srv, good.replace("hostname: mx.example.test", "hostname: " + "a." * 1000 + "test"),
                         "refused, keeping the running configuration")
    assert "server.hostname: is 2004 octets long; a host name has at most 253" in logged, logged
    assert srv.running()
    deliver_one(srv)


def test_sighup_with_an_open_relay_is_refused_unless_confirmed_and_then_warned(mailflow_server):
    srv = mailflow_server()
    cfg = dict(srv.config)
    cfg["relay"] = {"trusted_networks": ["0.0.0.0/1", "128.0.0.0/1"]}
    logged = reload_with(srv, to_yaml(cfg), "refused, keeping the running configuration")
    assert "relay.trusted_networks[0]: '0.0.0.0/1' is wider than /8" in logged, logged
    assert "open relay: relay.trusted_networks lets" not in logged

    cfg["relay"] = {"trusted_networks": ["0.0.0.0/1", "128.0.0.0/1"], "allow_open_relay": True}
    logged = reload_with(srv, to_yaml(cfg), "configuration reloaded")
    assert wait_for(lambda: "open relay: relay.trusted_networks lets every client in 0.0.0.0/1, 128.0.0.0/1"
                    in srv.stderr(), timeout=5, what="the open relay warning after reload"), logged
    assert srv.running()
    deliver_one(srv)
