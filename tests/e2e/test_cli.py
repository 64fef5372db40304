"""The command line: `config check`, `serve` with bad configs, `queue list` / `queue show`, `version`."""

from __future__ import annotations

import re
import subprocess
import time
import uuid

import pytest

from mfutil import (
    HOSTNAME,
    QUEUE_ID_RE,
    SMTPClient,
    default_config,
    mailflow_bin,
    make_message,
    run_cli,
    to_yaml,
    wait_for_delivery,
)


def _lines(r: subprocess.CompletedProcess) -> list[str]:
    return [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]


def test_version():
    r = run_cli("version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"mailflow \d+\.\d+\.\d+\n", r.stdout), r.stdout


def test_config_check_good(tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(to_yaml(default_config()))
    r = run_cli("config", "check", str(f), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"{f}: OK ("), r.stdout
    assert f"hostname {HOSTNAME}" in r.stdout and "2 tenant(s)" in r.stdout
    assert str(tmp_path / "data") in r.stdout, "relative data paths are relative to the config file"


def test_config_check_empty_file_means_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    r = run_cli("config", "check", str(f), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ": OK (" in r.stdout


GOOD_HEAD = "server:\n  hostname: mx.example.test\n  smtp: [\"127.0.0.1:0\"]\n  data: ./data\n"

# (id, yaml, fragment that must appear, line number or None)
BAD_CONFIGS = [
    ("unknown-key", "server:\n  hostname: mx.example.test\n  hostnme: mx.example.test\n",
     "server.hostnme: unknown key (expected one of: hostname, smtp, data, log_level, log_format)", 3),
    ("unknown-section", GOOD_HEAD + "limit:\n  max_message_size: 1MB\n",
     "limit: unknown key (expected one of:", 5),
    ("unknown-tenant-key", GOOD_HEAD + "tenants:\n  - name: a\n    domains: [a.test]\n    catchall: true\n",
     "tenants[0].catchall: unknown key", 8),
    ("recipients-zero", GOOD_HEAD + "limits:\n  recipients_per_message: 0\n",
     "limits.recipients_per_message: must be between 1 and 1000", 6),
    ("recipients-too-many", GOOD_HEAD + "limits:\n  recipients_per_message: 1001\n",
     "limits.recipients_per_message: must be between 1 and 1000", 6),
    ("size-too-small", GOOD_HEAD + "limits:\n  max_message_size: 10\n", "limits.max_message_size:", 6),
    ("size-not-a-size", GOOD_HEAD + "limits:\n  max_message_size: lots\n", "limits.max_message_size:", 6),
    ("errors-not-a-number", GOOD_HEAD + "limits:\n  max_errors_per_session: many\n",
     "limits.max_errors_per_session:", 6),
    ("timeout-not-a-duration", GOOD_HEAD + "timeouts:\n  command: soon\n", "timeouts.command:", 6),
    ("retry-not-a-duration", GOOD_HEAD + "delivery:\n  retry_intervals: [60, later]\n",
     "delivery.retry_intervals[1]:", 6),
    ("log-level", "server:\n  log_level: loud\n", "server.log_level:", 2),
    ("hostname", "server:\n  hostname: \"bad host!\"\n", "server.hostname:", 2),
    ("listen-not-host-port", "server:\n  smtp: [\"localhost\"]\n", "server.smtp[0]:", None),
    ("listen-not-an-ip", "server:\n  smtp: [\"999.1.1.1:25\"]\n", "server.smtp[0]:", None),
    ("tls-key-missing", GOOD_HEAD + "tls:\n  certificate: cert.pem\n", "tls.key:", None),
    ("domain-twice", GOOD_HEAD + "tenants:\n  - name: a\n    domains: [a.test]\n  - name: b\n    domains: [A.test]\n",
     "tenants[1].domains[0]:", None),
]


@pytest.mark.parametrize("text,fragment,line", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_config_check_bad(tmp_path, text, fragment, line):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = run_cli("config", "check", str(f), cwd=tmp_path)
    assert r.returncode != 0, r.stdout
    out = _lines(r)
    assert len(out) == 1, f"expected one line, got {out}"
    assert fragment in out[0], out[0]
    if line is not None:
        assert f"line {line}: {fragment}" in out[0], out[0]


SERVE_BAD = [c for c in BAD_CONFIGS if c[0] in ("unknown-key", "recipients-zero", "listen-not-an-ip")]


@pytest.mark.parametrize("text,fragment,line", [c[1:] for c in SERVE_BAD], ids=[c[0] for c in SERVE_BAD])
def test_serve_refuses_bad_config(tmp_path, text, fragment, line):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    try:
        r = subprocess.run([mailflow_bin(), "serve", "--config", str(f)], capture_output=True, text=True,
                           timeout=15, cwd=tmp_path, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"serve started with a bad config: {e.stdout!r}")
    assert r.returncode != 0
    assert "listening" not in r.stdout
    out = _lines(r)
    assert len(out) == 1, f"expected one line, got {out}"
    assert fragment in out[0], out[0]
    if line is not None:
        assert f"line {line}: " in out[0], out[0]


@pytest.fixture
def queue_server(mailflow_server):
    return mailflow_server({"delivery": {"retry_intervals": [1, 1, 1]}})


def _deliver_one(srv, subject: str) -> str:
    with SMTPClient(srv.port) as c:
        c.ehlo()
        qid = c.send_message("cli@example.net", ["alice@contoso.test", "bob@contoso.test"],
                             make_message(uuid.uuid4().hex, subject=subject))
    wait_for_delivery(srv.data_dir, qid, count=2)
    srv.wait_queue_empty(timeout=10)
    return qid


def test_queue_list_and_show_after_delivery(queue_server):
    srv = queue_server
    qid = _deliver_one(srv, "cli subject")

    r = srv.cli("queue", "list")
    assert r.returncode == 0, r.stderr
    assert re.match(r"ID\s+SENDER\s+RECIPIENTS\s+STATE\s+ATTEMPTS\s+NEXT ATTEMPT", r.stdout), r.stdout
    assert qid not in r.stdout, "a delivered message is done: listed only with --all"

    r = srv.cli("queue", "list", "--all")
    assert r.returncode == 0, r.stderr
    row = next((l for l in r.stdout.splitlines() if l.startswith(qid)), None)
    assert row is not None, r.stdout
    assert row.split()[:4] == [qid, "cli@example.net", "alice@contoso.test,bob@contoso.test", "done"], row

    rows = srv.queue_json(include_done=True)
    (obj,) = [o for o in rows if o["id"] == qid]
    assert {"id", "sender", "recipients", "state", "attempts", "receivedAt", "size"} <= set(obj), obj
    assert obj["sender"] == "cli@example.net"
    assert obj["recipients"] == ["alice@contoso.test", "bob@contoso.test"]
    assert obj["state"] == "done" and obj["attempts"] >= 1
    assert obj.get("nextAttempt") is None
    assert isinstance(obj["size"], int) and obj["size"] > 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", obj["receivedAt"]), obj
    assert qid not in [o["id"] for o in srv.queue_json()]

    r = srv.cli("queue", "show", qid)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(rf"^Queue ID:\s+{qid}$", out, re.M), out
    assert re.search(r"^Sender:\s+<cli@example\.net>$", out, re.M), out
    assert re.search(r"^Subject:\s+cli subject$", out, re.M), out
    assert re.search(r"^Recipients:$", out, re.M), out
    assert re.search(r"^\s+<alice@contoso\.test> delivered", out, re.M), out
    assert re.search(r"^\s+<bob@contoso\.test> delivered", out, re.M), out
    trace = out.split("Trace:", 1)[1]
    assert re.search(r"\breceived\b", trace), out
    assert len(re.findall(r"\bdelivered <", trace)) == 2, out
    assert trace.index("received") < trace.index("delivered")


def test_queue_list_shows_deferred_message(queue_server):
    srv = queue_server
    # a plain file where the mailbox folder must go: delivery fails and is retried
    domain_dir = srv.data_dir / "mailboxes" / "fabrikam.test"
    domain_dir.mkdir(parents=True, exist_ok=True)
    blocker = domain_dir / "blocked"
    blocker.write_text("not a folder")
    with SMTPClient(srv.port) as c:
        c.ehlo()
        qid = c.send_message("cli@example.net", ["blocked@fabrikam.test"], make_message("deferred"))

    deadline = time.monotonic() + 10
    obj = None
    while time.monotonic() < deadline:
        rows = [o for o in srv.queue_json() if o["id"] == qid]
        if rows and rows[0]["attempts"] >= 1:
            obj = rows[0]
            break
        time.sleep(0.05)
    assert obj is not None, "the message should be listed as not done after a failed attempt"
    assert obj["state"] != "done"
    assert obj.get("nextAttempt"), obj
    r = srv.cli("queue", "list")
    row = next(l for l in r.stdout.splitlines() if l.startswith(qid))
    assert "blocked@fabrikam.test" in row and not row.rstrip().endswith(" -"), row
    r = srv.cli("queue", "show", qid)
    assert r.returncode == 0 and "blocked@fabrikam.test" in r.stdout, r.stdout

    blocker.unlink()
    wait_for_delivery(srv.data_dir, qid, timeout=15)
    srv.wait_queue_empty(timeout=10)


def test_queue_show_unknown_and_invalid(queue_server):
    r = queue_server.cli("queue", "show", "B" * 16)
    assert r.returncode != 0
    assert "no message with queue ID" in r.stdout + r.stderr
    r = queue_server.cli("queue", "show", "not-an-id")
    assert r.returncode != 0


def test_queue_list_without_queue(tmp_path):
    cfg = default_config()
    f = tmp_path / "c.yaml"
    f.write_text(to_yaml(cfg))
    r = run_cli("queue", "list", "--config", str(f), cwd=tmp_path)
    assert r.returncode != 0
    assert "no queue at" in r.stdout + r.stderr


def test_queue_ids_sort_by_arrival(queue_server):
    srv = queue_server
    ids = []
    with SMTPClient(srv.port) as c:
        c.ehlo()
        for i in range(3):
            ids.append(c.send_message("s@example.net", ["alice@contoso.test"], make_message(f"order{i}")))
    for q in ids:
        assert re.fullmatch(QUEUE_ID_RE, q)
    assert ids == sorted(ids)
