"""`mailflow check` against a real dnsmasq zone on loopback, a Mailflow instance as the MX target and
an HTTPS MTA-STS policy server with a test CA (passed with --ca-file).

Findings are asserted by their stable `check` id and severity from `--json`, the JSON is validated
against docs/check.schema.json, and the exit code is checked against the verdict. Nothing leaves
127.0.0.1: the check is given only the dnsmasq port as its DNS server.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import ssl
import subprocess
import threading
import time
from pathlib import Path

import jsonschema
import pytest

from dnsutil import Dnsmasq
from mfutil import REPO_ROOT, MailflowServer, default_config, mailflow_bin, merge_config

SCHEMA = json.loads((REPO_ROOT / "docs" / "check.schema.json").read_text())
EXIT = {"ok": 0, "info": 0, "warning": 1, "failure": 2}


def openssl(*args: str, cwd: Path, input: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, input=input, check=True, capture_output=True).stdout


def spki_der(pem_path: Path, cwd: Path, pub: bool = False) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate (or of a private key when `pub`)."""
    if pub:
        return openssl("pkey", "-in", str(pem_path), "-pubout", "-outform", "DER", cwd=cwd)
    pem = openssl("x509", "-in", str(pem_path), "-pubkey", "-noout", cwd=cwd)
    return openssl("pkey", "-pubin", "-outform", "DER", cwd=cwd, input=pem)


def txt_chunks(text: str) -> str:
    """A dnsmasq --txt-record value: character-strings of at most 200 bytes, comma-separated."""
    return ",".join(text[i:i + 200] for i in range(0, len(text), 200))


class PolicyHandler(http.server.BaseHTTPRequestHandler):
    policies: dict[str, str] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        host = (self.headers.get("Host") or "").split(":")[0]
        body = self.policies.get(host)
        if self.path != "/.well-known/mta-sts.txt" or body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("check")
    # The MX target: one Mailflow listener, named by two MX hosts.
    mf = MailflowServer(work / "mailflow", merge_config(default_config(), {}))
    mf.start()
    port = mf.port
    cert = mf.data_dir / "tls" / "cert.pem"
    tlsa = hashlib.sha256(spki_der(cert, work)).hexdigest()

    # A test CA and the policy host's certificate.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=Mailflow check test CA", cwd=work)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "sts.key",
            "-out", "sts.csr", "-subj", "/CN=mta-sts.good.test", cwd=work)
    (work / "san.ext").write_text("subjectAltName=DNS:mta-sts.good.test,DNS:mta-sts.mismatch.test\n")
    openssl("x509", "-req", "-in", "sts.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "sts.pem", "-days", "2", "-extfile", "san.ext", cwd=work)
    PolicyHandler.policies = {
        "mta-sts.good.test": "version: STSv1\r\nmode: enforce\r\nmx: mx1.good.test\r\nmx: *.good.test\r\n"
                             "max_age: 604800\r\n",
        "mta-sts.mismatch.test": "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PolicyHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(work / "sts.pem", work / "sts.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    https_port = httpd.server_address[1]

    # DKIM keys.
    dkim = {}
    for bits in (1024, 2048):
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", f"rsa{bits}.key",
                cwd=work)
        dkim[f"rsa{bits}"] = "v=DKIM1; k=rsa; p=" + base64.b64encode(
            spki_der(work / f"rsa{bits}.key", work, pub=True)).decode()
    openssl("genpkey", "-algorithm", "ED25519", "-out", "ed.key", cwd=work)
    raw = spki_der(work / "ed.key", work, pub=True)[-32:]
    dkim["ed"] = "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()

    many = " ".join(f"a:h{i}.many.test" for i in range(1, 12))
    records = [
        # good.test: two MX on Mailflow, SPF, DMARC, MTA-STS, TLS-RPT, TLSA on mx1, DKIM keys.
        "--mx-host=good.test,mx1.good.test,10", "--mx-host=good.test,mx2.good.test,20",
        "--host-record=mx1.good.test,127.0.0.1", "--host-record=mx2.good.test,127.0.0.1",
        "--txt-record=good.test,v=spf1 mx ip4:192.0.2.0/24 -all",
        "--txt-record=_dmarc.good.test,v=DMARC1; p=reject; rua=mailto:dmarc@good.test",
        "--txt-record=_mta-sts.good.test,v=STSv1; id=20260101T000000",
        "--host-record=mta-sts.good.test,127.0.0.1",
        "--txt-record=_smtp._tls.good.test,v=TLSRPTv1; rua=mailto:tls-reports@good.test",
        f"--dns-rr=_{port}._tcp.mx1.good.test,52,030101{tlsa}",
        f"--dns-rr=_{port}._tcp.mx2.good.test,52,030101{'00' * 32}",
        f"--txt-record=k2048._domainkey.good.test,{txt_chunks(dkim['rsa2048'])}",
        f"--txt-record=k1024._domainkey.nullmx.test,{txt_chunks(dkim['rsa1024'])}",
        f"--txt-record=k2048._domainkey.nullmx.test,{txt_chunks(dkim['rsa2048'])}",
        f"--txt-record=ked._domainkey.nullmx.test,{txt_chunks(dkim['ed'])}",
        "--txt-record=revoked._domainkey.nullmx.test,v=DKIM1; p=",
        # Null MX, implicit MX, CNAME'd MX.
        "--mx-host=nullmx.test,.,0", "--txt-record=nullmx.test,v=spf1 -all",
        "--host-record=implicit.test,127.0.0.1",
        "--mx-host=cname.test,mxalias.cname.test,10", "--cname=mxalias.cname.test,mx1.good.test",
        # SPF: too many lookups, +all; DMARC: broken.
        "--mx-host=many.test,mx1.good.test,10", f"--txt-record=many.test,v=spf1 {many} -all",
        *[f"--host-record=h{i}.many.test,192.0.2.{i}" for i in range(1, 12)],
        "--mx-host=plusall.test,mx1.good.test,10", "--txt-record=plusall.test,v=spf1 +all",
        "--txt-record=_dmarc.plusall.test,v=DMARC1; p=bogus",
        # MTA-STS enforcing a policy the MX does not match.
        "--mx-host=mismatch.test,mx1.good.test,10", "--txt-record=_mta-sts.mismatch.test,v=STSv1; id=1",
        "--host-record=mta-sts.mismatch.test,127.0.0.1",
        # Reverse DNS for check ip: dnsmasq serves 0.0.127.in-addr.arpa from its host records.
        "--auth-zone=test,127.0.0.0/24", "--host-record=loop.test,127.0.0.9",
    ]
    dns = Dnsmasq(records, log_dir=work).start()
    try:
        yield {"mf": mf, "port": port, "dns": dns, "ca": work / "ca.pem", "https_port": https_port, "work": work}
    finally:
        dns.stop()
        httpd.shutdown()
        mf.kill()


def check(env, *args: str, timeout: float = 60.0) -> tuple[dict, int, float]:
    cmd = [mailflow_bin(), "check", *args, "--json", "--dns-server", env["dns"].server, "--timeout", "5",
           "--ca-file", str(env["ca"]), "--mta-sts-port", str(env["https_port"]),
           "--config", str(env["mf"].config_path)]
    started = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=env["mf"].workdir)
    elapsed = time.monotonic() - started
    assert p.stdout, p.stderr
    report = json.loads(p.stdout)
    jsonschema.validate(report, SCHEMA)
    assert p.returncode == EXIT[report["verdict"]] == report["exitCode"], (p.returncode, report["verdict"])
    return report, p.returncode, elapsed


def sev(report: dict, check_id: str, subject: str | None = None) -> list[str]:
    return [f["severity"] for f in report["findings"]
            if f["check"] == check_id and (subject is None or subject in f["subject"])]


def test_two_mx_domain(env):
    report, rc, elapsed = check(env, "domain", "good.test", "--port", str(env["port"]), "--dkim-selector", "k2048")
    print(f"check domain good.test (two MX, one Mailflow): {elapsed:.2f} s; reported {report['durationSeconds']:.2f} s")
    assert elapsed < 15
    assert sev(report, "mx.records") == ["ok"]
    assert len(sev(report, "address.records")) == 2
    assert sev(report, "spf.record") == ["ok"] and sev(report, "spf.all") == ["ok"]
    assert sev(report, "dmarc.policy") == ["ok"]
    assert sev(report, "tls-rpt.record") == ["ok"]
    assert sev(report, "mta-sts.record") == ["ok"]
    assert sev(report, "mta-sts.policy-fetch") == ["ok"], report
    assert sev(report, "mta-sts.mode") == ["ok"]
    assert sev(report, "mta-sts.mx-match") == ["ok", "ok"]
    assert sev(report, "dkim.key") == ["ok"]
    # dnsmasq does not validate DNSSEC: TLSA is reported but only informational.
    assert sev(report, "dane.dnssec") == ["info", "info"]
    assert sev(report, "dane.match", "mx1.good.test") == ["info"]
    match = [f for f in report["findings"] if f["check"] == "dane.match"]
    assert "matches a TLSA record" in next(f["summary"] for f in match if "mx1.good.test" in f["subject"])
    assert "No TLSA record matches" in next(f["summary"] for f in match if "mx2.good.test" in f["subject"])
    # The host probe ran on both MX (the other helper's findings, by category only).
    subjects = {f["subject"] for f in report["findings"] if f["category"] in ("smtp", "starttls", "tls")}
    assert any("mx1.good.test" in s for s in subjects) and any("mx2.good.test" in s for s in subjects)
    assert sev(report, "trace.delivery") == ["info"]


def test_null_implicit_and_cname_mx(env):
    null, rc, _ = check(env, "domain", "nullmx.test")
    assert sev(null, "mx.null") == ["info"]
    assert not [f for f in null["findings"] if f["category"] in ("smtp", "tls")]
    implicit, _, _ = check(env, "domain", "implicit.test", "--port", str(env["port"]))
    assert sev(implicit, "mx.implicit") == ["warning"]
    cname, _, _ = check(env, "domain", "cname.test", "--port", str(env["port"]))
    assert sev(cname, "mx.cname") == ["warning"]
    missing, rc, _ = check(env, "domain", "nonexistent.test")
    assert sev(missing, "mx.domain") == ["failure"] and rc == 2


def test_spf_and_dmarc_failures(env):
    many, rc, _ = check(env, "domain", "many.test", "--port", "1")
    assert sev(many, "spf.lookups") == ["failure"] and rc == 2
    plus, rc, _ = check(env, "domain", "plusall.test", "--port", "1")
    assert sev(plus, "spf.all") == ["failure"]
    assert sev(plus, "dmarc.syntax") == ["failure"] and rc == 2


@pytest.mark.parametrize("selector,severity", [
    ("k1024", "warning"), ("k2048", "ok"), ("ked", "ok"), ("revoked", "failure"),
])
def test_dkim_keys(env, selector, severity):
    report, _, _ = check(env, "domain", "nullmx.test", "--dkim-selector", selector)
    dkim = [f for f in report["findings"] if f["category"] == "dkim"]
    assert [f["severity"] for f in dkim if f["check"] == "dkim.key"] == [severity], dkim


def test_mta_sts_mx_mismatch(env):
    report, rc, _ = check(env, "domain", "mismatch.test", "--port", str(env["port"]))
    assert sev(report, "mta-sts.mx-match") == ["failure"] and rc == 2
    assert sev(report, "mta-sts.max-age") == ["ok"]


def test_check_host_with_tlsa(env):
    report, _, _ = check(env, "host", f"mx1.good.test:{env['port']}")
    assert report["kind"] == "host" and report["target"] == f"mx1.good.test:{env['port']}"
    assert sev(report, "dane.tlsa") == ["info"]
    assert sev(report, "dane.match") == ["info"]


def test_check_ip_reverse_dns(env):
    good, rc, _ = check(env, "ip", "127.0.0.9")
    assert sev(good, "reverse-dns.ptr") == ["ok"] and sev(good, "reverse-dns.fcrdns") == ["ok"]
    assert sev(good, "blocklist.none") == ["info"]
    assert sev(good, "trace.received") == ["info"] and rc == 0
    none, rc, _ = check(env, "ip", "127.0.0.7", "--blocklist", "bl.test")
    assert sev(none, "reverse-dns.ptr") == ["warning"]
    assert sev(none, "blocklist.listed") == ["ok"] and rc == 1


def test_check_ip_blocklists_from_config(tmp_path):
    """`diagnostics.blocklists` in the config file is what `check ip --config` asks, through the config's
    dns.servers (no --dns-server); `--blocklist` replaces it. listed.test lists 127.0.0.9 (RFC 5782:
    an A record 127.0.0.2 and a TXT reason), clean.test lists nothing."""
    dns = Dnsmasq(["--host-record=9.0.0.127.listed.test,127.0.0.2",
                   "--txt-record=9.0.0.127.listed.test,Listed for the Mailflow test"], log_dir=tmp_path).start()
    try:
        config = tmp_path / "config.yaml"
        config.write_text(f"server:\n  data: {tmp_path / 'data'}\ndns:\n  servers: ['{dns.server}']\n"
                          "diagnostics:\n  blocklists: [listed.test, Clean.Test.]\n")

        def check_ip(*extra: str) -> tuple[int, dict]:
            p = subprocess.run([mailflow_bin(), "check", "ip", "127.0.0.9", "--json", "--timeout", "5",
                                "--config", str(config), *extra], capture_output=True, text=True, timeout=60)
            return p.returncode, json.loads(p.stdout)

        rc, report = check_ip()
        listed = {f["subject"]: f for f in report["findings"] if f["check"] == "blocklist.listed"}
        assert set(listed) == {"listed.test", "clean.test"}, report["findings"]
        assert listed["listed.test"]["severity"] == "failure"
        assert listed["listed.test"]["summary"] == "Listed on listed.test (127.0.0.2)"
        assert listed["listed.test"]["detail"] == "Listed for the Mailflow test"
        assert listed["clean.test"]["severity"] == "ok"
        assert not any(f["check"] == "blocklist.none" for f in report["findings"])
        assert rc == 2

        rc, report = check_ip("--blocklist", "clean.test")
        assert [f["subject"] for f in report["findings"] if f["check"] == "blocklist.listed"] == ["clean.test"]

        config.write_text(f"server:\n  data: {tmp_path / 'data'}\ndns:\n  servers: ['{dns.server}']\n")
        rc, report = check_ip()
        assert sev(report, "blocklist.none") == ["info"]

        config.write_text("diagnostics:\n  blocklists: [not_a_zone!]\n")
        p = subprocess.run([mailflow_bin(), "check", "ip", "127.0.0.9", "--config", str(config)],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and "diagnostics.blocklists[0]" in p.stderr, p.stderr
    finally:
        dns.stop()


def test_human_output(env):
    p = subprocess.run([mailflow_bin(), "check", "domain", "plusall.test", "--port", "1", "--dns-server",
                        env["dns"].server, "--timeout", "2", "--config", str(env["mf"].config_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "\x1b[" not in p.stdout  # no colour when not a terminal
    assert "\nSPF\n" in p.stdout and "FAIL  +all" in p.stdout
    assert p.stdout.rstrip().splitlines()[-1].startswith("Verdict: FAIL")
    assert p.stderr == ""  # no progress when stderr is not a terminal


def test_check_ip_reads_the_trace(env, mailflow_server):
    """What 127.0.0.1 did at a Mailflow with a connection rate of 2 a minute: one message, refusals."""
    from mfutil import SMTPClient
    srv = mailflow_server({"limits": {"per_source": {"connections_per_minute": 2}}})
    with SMTPClient(srv.port) as c:
        c.cmd("EHLO client.test")
        c.send_message("sender@client.test", ["alice@contoso.test"], b"Subject: t\r\n\r\nhello\r\n")
        c.cmd("QUIT")
    refused = 0
    for _ in range(3):
        c = SMTPClient(srv.port)
        refused += c.greeting.code == 421
        c.close()
    assert refused >= 1
    cmd = [mailflow_bin(), "check", "ip", "127.0.0.1", "--json", "--dns-server", env["dns"].server,
           "--config", str(srv.config_path)]
    deadline = time.monotonic() + 10
    while True:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=srv.workdir)
        report = json.loads(p.stdout)
        jsonschema.validate(report, SCHEMA)
        throttled = [f for f in report["findings"] if f["check"] == "trace.throttled"]
        if throttled and throttled[0]["severity"] == "warning" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    received = next(f for f in report["findings"] if f["check"] == "trace.received")
    assert received["summary"].startswith("1 message"), received
    assert throttled[0]["severity"] == "warning", throttled
    assert "421 4.7.0 Connection rate limit exceeded" in throttled[0]["detail"]
    assert sev(report, "trace.last-replies") == ["info"]
    assert p.returncode == 1


def test_mta_sts_policy_untrusted_and_silent(env):
    """Without the test CA the policy certificate is refused; a server that never answers is cut off."""
    base = [mailflow_bin(), "check", "domain", "good.test", "--json", "--dns-server", env["dns"].server,
            "--port", "1", "--config", str(env["mf"].config_path)]
    p = subprocess.run([*base, "--mta-sts-port", str(env["https_port"])], capture_output=True, text=True,
                       timeout=60, cwd=env["mf"].workdir)
    report = json.loads(p.stdout)
    fetch = [f for f in report["findings"] if f["check"] == "mta-sts.policy-fetch"]
    assert [f["severity"] for f in fetch] == ["failure"], fetch
    assert "certificate" in fetch[0]["detail"].lower() or "verify" in fetch[0]["detail"].lower(), fetch
    import socket
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        p = subprocess.run([*base, "--mta-sts-port", str(silent.getsockname()[1]), "--timeout", "1",
                            "--ca-file", str(env["ca"])], capture_output=True, text=True, timeout=60,
                           cwd=env["mf"].workdir)
        elapsed = time.monotonic() - started
    report = json.loads(p.stdout)
    fetch = [f for f in report["findings"] if f["check"] == "mta-sts.policy-fetch"]
    assert [f["severity"] for f in fetch] == ["failure"], fetch
    assert "no complete response in time" in fetch[0]["detail"]
    assert elapsed < 8, elapsed


def test_check_domain_reads_deferrals_from_the_trace(env, mailflow_server):
    """The "them" side: a Mailflow relaying to good.test, whose MX port is closed, sees deferrals."""
    import socket
    from mfutil import SMTPClient
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    srv = mailflow_server({
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "dns": {"servers": [env["dns"].server], "timeout": "1s", "attempts": 1},
        "delivery": {"retry_intervals": ["1s"], "mx_port": closed},
        "tenants": [{"name": "src", "domains": ["src.test"], "mailboxes": ["sender"]}],
    })
    with SMTPClient(srv.port) as c:
        c.cmd("EHLO client.test")
        c.send_message("sender@src.test", ["someone@good.test"], b"Subject: t\r\n\r\nhello\r\n")
        c.cmd("QUIT")
    cmd = [mailflow_bin(), "check", "domain", "good.test", "--json", "--port", "1", "--timeout", "2",
           "--dns-server", env["dns"].server, "--config", str(srv.config_path)]
    deadline = time.monotonic() + 15
    while True:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=srv.workdir)
        report = json.loads(p.stdout)
        deferrals = [f for f in report["findings"] if f["check"] == "trace.deferrals"]
        if deferrals or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    jsonschema.validate(report, SCHEMA)
    assert deferrals, [f for f in report["findings"] if f["category"] == "trace"]
    assert deferrals[0]["severity"] == "warning"  # nothing was delivered
    delivery = next(f for f in report["findings"] if f["check"] == "trace.delivery")
    assert "0 delivered" in delivery["summary"]
    print("deferral signatures:", deferrals[0]["detail"])
