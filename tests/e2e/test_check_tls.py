"""`mailflow check host` against real and fake SMTP servers on loopback: the host probe's SMTP,
STARTTLS, TLS version/cipher and certificate findings (docs/check.md, "Host probe").

Targets: throw-away Postfix instances (scripts/lib/mailflow_testlib) configured as a good server, with
an expired certificate, a wrong name, a self-signed certificate, an incomplete chain, TLS 1.2 only,
TLS 1.0 allowed, weak ciphers allowed and no STARTTLS; two Python fakes (one closes after STARTTLS, one
answers commands pipelined after STARTTLS, CVE-2011-0411); and Mailflow itself. Certificates are made
here with `openssl`. Everything listens on 127.0.0.1; the probe is told the server's name with a
dnsmasq record where the name matters. Postfix needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from dnsutil import Dnsmasq
from mfutil import mailflow_bin
from mailflow_testlib.postfix import PostfixInstance, PostfixUnavailable

GOOD_NAME = "mx.good.test"


# --------------------------------------------------------------------------------------------
# certificates (openssl)


def openssl(*args: str, cwd: Path) -> None:
    # OPENSSL_CONF=/dev/null: Debian's system defaults (security level 2) must not refuse what the
    # test makes on purpose (a 1024-bit key, a SHA-1 signature).
    env = dict(os.environ, OPENSSL_CONF="/dev/null")
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr}")


class OpenSSLPKI:
    """A root CA, an intermediate, and leaves signed by `openssl ca` with any dates and names."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        d = self.dir
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
                "-subj", "/O=Mailflow tests/CN=Test Root CA", "-keyout", "root.key", "-out", "root.pem",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=d)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/O=Mailflow tests/CN=Test Intermediate CA",
                "-keyout", "inter.key", "-out", "inter.csr", cwd=d)
        self.sign("inter.csr", "inter.pem", "root", "20200101000000Z", "20991231000000Z",
                  "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")

    def sign(self, csr: str, out: str, issuer: str, start: str, end: str, extensions: str) -> None:
        d = self.dir
        db = d / f"db-{out}"
        db.mkdir(exist_ok=True)
        (db / "index.txt").write_text("")
        (db / "serial").write_text(os.urandom(8).hex() + "\n")
        (db / "ca.cnf").write_text(
            "[ca]\ndefault_ca = ca\n[ca]\n"
            f"database = {db}/index.txt\nserial = {db}/serial\nnew_certs_dir = {db}\n"
            "default_md = sha256\npolicy = any\nunique_subject = no\ncopy_extensions = none\n"
            "[any]\ncommonName = supplied\norganizationName = optional\n")
        (db / "ext.cnf").write_text("[v3]\n" + extensions)
        openssl("ca", "-batch", "-config", str(db / "ca.cnf"), "-in", csr, "-out", out, "-notext",
                "-cert", f"{issuer}.pem", "-keyfile", f"{issuer}.key", "-startdate", start, "-enddate", end,
                "-extfile", str(db / "ext.cnf"), "-extensions", "v3", cwd=d)

    def leaf(self, name: str, sans: list[str], start: str = "20200101000000Z", end: str = "20991231000000Z",
             issuer: str = "inter") -> tuple[Path, Path]:
        """(key, chain file: leaf then the intermediate when `issuer` is the intermediate)."""
        d = self.dir
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/O=Mailflow tests/CN={sans[0]}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        alt = ",".join(f"IP:{s}" if s[0].isdigit() else f"DNS:{s}" for s in sans)
        self.sign(f"{name}.csr", f"{name}.pem", issuer, start, end,
                  "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                  f"extendedKeyUsage=serverAuth\nsubjectAltName={alt}\n")
        chain = d / f"{name}-chain.pem"
        parts = [(d / f"{name}.pem").read_text()]
        if issuer == "inter":
            parts.append((d / "inter.pem").read_text())
        chain.write_text("".join(parts))
        return d / f"{name}.key", chain

    def self_signed(self, name: str, cn: str) -> tuple[Path, Path]:
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
                "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1",
                "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=self.dir)
        return self.dir / f"{name}.key", self.dir / f"{name}.pem"

    @property
    def ca_file(self) -> Path:
        return self.dir / "root.pem"


# --------------------------------------------------------------------------------------------
# servers


@pytest.fixture(scope="module")
def workdir():
    # Postfix's daemons run as user `postfix`, which cannot enter pytest's private (0700) tmp folders.
    root = Path(tempfile.mkdtemp(prefix="mailflow-check-tls-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(workdir):
    return OpenSSLPKI(workdir / "pki")


@pytest.fixture(scope="module")
def postfixes(workdir):
    """Factory: `postfixes(name, settings)` -> a started PostfixInstance; all stopped at module end."""
    started: list[PostfixInstance] = []

    def start(name: str, settings: dict[str, object]) -> PostfixInstance:
        p = PostfixInstance(workdir / f"postfix-{name}", comment=f"tests/e2e/test_check_tls.py: {name}")
        try:
            p.start({"myhostname": GOOD_NAME, "smtpd_tls_loglevel": "1", **settings})
        except PostfixUnavailable as e:
            pytest.fail(str(e))
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def tls_settings(key: Path, chain: Path, **extra: object) -> dict[str, object]:
    return {"smtpd_tls_security_level": "may", "smtpd_tls_key_file": key, "smtpd_tls_cert_file": chain, **extra}


class FakeSTARTTLSServer:
    """A Python SMTP server on 127.0.0.1 that offers STARTTLS and then misbehaves: `close` closes the
    connection right after its 220; `pipelined` keeps the bytes that came with STARTTLS and answers them
    inside TLS (the CVE-2011-0411 bug)."""

    def __init__(self, mode: str, key: Path, cert: Path) -> None:
        self.mode = mode
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        tls = False
        try:
            conn.sendall(b"220 fake.test ESMTP\r\n")
            while True:
                while b"\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                line, buf = buf.split(b"\r\n", 1)
                cmd = line.upper()
                if cmd.startswith(b"EHLO"):
                    conn.sendall(b"250-fake.test\r\n250-PIPELINING\r\n"
                                 + (b"250 8BITMIME\r\n" if tls else b"250 STARTTLS\r\n"))
                elif cmd == b"STARTTLS" and not tls:
                    conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                    if self.mode == "close":
                        conn.close()
                        return
                    if self.mode == "old-suites" and answer_old_hello(conn):
                        return
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    tls = True
                    if self.mode != "pipelined":
                        buf = b""  # the fix: what came before TLS is forgotten
                elif cmd == b"NOOP":
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif cmd == b"QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except (OSError, ssl.SSLError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self) -> None:
        self.stopped = True
        self.sock.close()


# The fault-injection part of the "old-suites" fake: suites and a version no TLS library on this machine
# can serve (Debian's OpenSSL 3.0 has no SSLv3, RC4, EXPORT or single-DES), answered with a bare
# ServerHello and nothing after it, which is all the probe reads.
FAKE_SUITES = {0x0005: "RC4-SHA", 0x0008: "EXP-DES-CBC-SHA", 0x0009: "DES-CBC-SHA"}


def read_client_hello(conn: socket.socket) -> tuple[int, list[int]] | None:
    """Peeks at the ClientHello (leaving it for a real TLS handshake): (client_version, suites)."""
    head = b""
    for _ in range(50):
        head = conn.recv(16384, socket.MSG_PEEK)
        if len(head) >= 5 and len(head) >= 5 + int.from_bytes(head[3:5], "big"):
            break
        threading.Event().wait(0.02)
    if len(head) < 5 + 4 + 2 + 32 + 1 or head[0] != 22 or head[5] != 1:
        return None
    body = head[9:]
    version = int.from_bytes(body[0:2], "big")
    at = 2 + 32
    at += 1 + body[at]
    n = int.from_bytes(body[at:at + 2], "big")
    suites = [int.from_bytes(body[at + 2 + i:at + 4 + i], "big") for i in range(0, n, 2)]
    return version, suites


def answer_old_hello(conn: socket.socket) -> bool:
    """Answers an SSLv3 ClientHello, or one offering a FAKE_SUITES suite, with a ServerHello and closes;
    False (nothing read) for any other ClientHello, which then gets a real handshake."""
    hello = read_client_hello(conn)
    if hello is None:
        return False
    version, suites = hello
    chosen = next((s for s in suites if s in FAKE_SUITES), None)
    if version == 0x0300 and suites:
        chosen = suites[0]
    if chosen is None:
        return False
    conn.recv(16384)
    answer_version = min(version, 0x0303)
    body = answer_version.to_bytes(2, "big") + os.urandom(32) + b"\x00" + chosen.to_bytes(2, "big") + b"\x00"
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body
    conn.sendall(b"\x16" + answer_version.to_bytes(2, "big") + len(handshake).to_bytes(2, "big") + handshake)
    conn.close()
    return True


# --------------------------------------------------------------------------------------------
# the check


def check_host(target: str, *extra: str, timeout: float = 60) -> tuple[int, dict, dict[str, dict]]:
    """`mailflow check host TARGET --json ...` -> (exit code, report, findings by check id)."""
    r = subprocess.run([mailflow_bin(), "check", "host", target, "--json", "--timeout", "5", *extra],
                       capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"no JSON from mailflow check (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    by_check: dict[str, dict] = {}
    for f in report["findings"]:
        by_check.setdefault(f["check"], f)
    return r.returncode, report, by_check


def severities(findings: dict[str, dict], prefix: str) -> dict[str, str]:
    return {k: v["severity"] for k, v in findings.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def dns():
    """A loopback resolver that knows the test names, all at 127.0.0.1."""
    d = Dnsmasq([f"--host-record={GOOD_NAME},127.0.0.1", "--host-record=mx.other.test,127.0.0.1"]).start()
    yield d
    d.stop()


def by_name(port: int, dns) -> list[str]:
    return [f"{GOOD_NAME}:{port}", "--dns-server", dns.server]


# --------------------------------------------------------------------------------------------
# Postfix targets


def test_good_postfix(pki, postfixes, dns):
    key, chain = pki.leaf("good", [GOOD_NAME, "127.0.0.1"])
    # Postfix's defaults here still accept TLS 1.0 and 1.1, RSA key exchange (phase-out for NCSC-NL)
    # and anonymous suites (insufficient), and serve DHE with a 2048-bit group (phase-out); a good
    # server drops them and gives DHE a 3072-bit group.
    p = postfixes("good", tls_settings(key, chain, smtpd_tls_exclude_ciphers="kRSA, aNULL",
                                       smtpd_tls_protocols=">=TLSv1.2",
                                       smtpd_tls_dh1024_param_file=dh_params(pki, 3072)))
    code, report, f = check_host(*by_name(p.port, dns), "--ca-file", str(pki.ca_file))
    assert f["smtp.banner"]["severity"] == "ok" and GOOD_NAME in f["smtp.banner"]["summary"]
    assert f["starttls.offered"]["severity"] == "ok"
    assert f["starttls.handshake"]["severity"] == "ok"
    assert f["starttls.ehlo"]["severity"] == "ok"
    assert f["starttls.pipelining"]["severity"] == "ok", f["starttls.pipelining"]
    for c in ("certificate.trust", "certificate.chain-order", "certificate.chain-complete", "certificate.name",
              "certificate.expiry", "certificate.key", "certificate.signature"):
        assert f[c]["severity"] == "ok", f[c]
    assert f["certificate.key"]["summary"] == "RSA 2048-bit key"
    assert "accepted" in f["tls.version.tls1_3"]["summary"] and f["tls.version.tls1_3"]["ncsc"] == "good"
    assert "accepted" in f["tls.version.tls1_2"]["summary"]
    assert f["tls.forward-secrecy"]["severity"] == "ok"
    assert f["tls.cipher.tls1_3"]["summary"].split("chose ")[1].startswith("TLS_AES_")
    assert f["tls.cipher.weak.rsa-kx"]["summary"] == "RSA key exchange (no forward secrecy) not accepted"
    assert f["tls.version.tls1_0"]["summary"] == "TLSv1.0 not accepted"
    bad = [x for x in report["findings"] if x["severity"] not in ("ok", "info")]
    assert report["verdict"] in ("ok", "info") and code == 0, bad


def test_expired_certificate(pki, postfixes):
    key, chain = pki.leaf("expired", [GOOD_NAME, "127.0.0.1"], start="20200101000000Z", end="20210101000000Z")
    p = postfixes("expired", tls_settings(key, chain))
    code, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    assert f["certificate.expiry"]["severity"] == "failure"
    assert "expired on 2021-01-01" in f["certificate.expiry"]["summary"]
    assert f["certificate.trust"]["severity"] == "ok"  # expiry is named on its own
    assert code == 2


def test_wrong_name(pki, postfixes, dns):
    key, chain = pki.leaf("wrongname", ["mx.other.test"])
    p = postfixes("wrongname", tls_settings(key, chain))
    code, _, f = check_host(*by_name(p.port, dns), "--ca-file", str(pki.ca_file))
    assert f["certificate.name"]["severity"] == "failure"
    assert "mx.other.test" in f["certificate.name"]["detail"]
    assert f["certificate.trust"]["severity"] == "ok"
    assert code == 2


def test_self_signed(pki, postfixes):
    key, cert = pki.self_signed("selfsigned", GOOD_NAME)
    p = postfixes("selfsigned", tls_settings(key, cert))
    code, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    assert f["certificate.self-signed"]["severity"] == "failure"
    # Nothing is missing from it (testssl agrees: its verdict is "self signed", not "chain incomplete").
    assert f["certificate.chain-complete"]["severity"] == "ok"
    assert f["certificate.trust"]["severity"] == "failure"
    assert "self-signed" in f["certificate.trust"]["summary"]
    assert code == 2


def test_incomplete_chain(pki, postfixes):
    key, _ = pki.leaf("incomplete", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("incomplete", tls_settings(key, pki.dir / "incomplete.pem"))
    code, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    assert f["certificate.chain-complete"]["severity"] == "failure"
    assert "Test Intermediate CA" in f["certificate.chain-complete"]["summary"]
    assert f["certificate.trust"]["severity"] == "failure"
    assert code == 2


def test_tls12_only(pki, postfixes):
    key, chain = pki.leaf("tls12", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("tls12", tls_settings(key, chain, smtpd_tls_protocols="!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3"))
    _, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    assert f["tls.version.tls1_2"]["summary"] == "TLSv1.2 accepted (NCSC-NL: sufficient)"
    for v, name in (("tls1_0", "TLSv1.0"), ("tls1_1", "TLSv1.1"), ("tls1_3", "TLSv1.3")):
        assert f[f"tls.version.{v}"]["summary"] == f"{name} not accepted", f[f"tls.version.{v}"]
    assert f["tls.versions"]["summary"] == "accepted: TLSv1.2"


def old_tls_settings(key: Path, chain: Path, cipherlist: str) -> dict[str, object]:
    # Debian's OpenSSL refuses TLS 1.0/1.1 and 3DES at its default security level 2 (openssl.cnf:
    # MinProtocol = TLSv1.2, CipherString = DEFAULT:@SECLEVEL=2). Postfix sets its own protocol range
    # (smtpd_tls_protocols) and cipher list, and @SECLEVEL=0 in that list lowers the level for it.
    return tls_settings(key, chain, smtpd_tls_protocols=">=TLSv1", smtpd_tls_ciphers="medium",
                        tls_medium_cipherlist=cipherlist)


def test_tls10_allowed(pki, postfixes):
    key, chain = pki.leaf("tls10", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("tls10", old_tls_settings(key, chain, "DEFAULT:@SECLEVEL=0"))
    code, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    assert f["tls.version.tls1_0"]["summary"] == "TLSv1.0 accepted (NCSC-NL: phase-out)", f["tls.version.tls1_0"]
    assert f["tls.version.tls1_0"]["severity"] == "warning"
    assert f["tls.version.tls1_1"]["ncsc"] == "phase-out"
    assert "accepted" in f["tls.version.tls1_3"]["summary"]
    assert f["tls.versions"]["severity"] == "warning"
    assert code == 1


def test_weak_ciphers_allowed(pki, postfixes):
    # Debian's OpenSSL 3.0 is built without 3DES and RC4 TLS suites (`openssl ciphers DES-CBC3-SHA`: no
    # cipher match), so Postfix here cannot offer them; the weak suites it can offer are RSA key exchange.
    key, chain = pki.leaf("weak", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("weak", old_tls_settings(key, chain, "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA:AES256-SHA:@SECLEVEL=0"))
    code, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    assert f["tls.cipher.weak.rsa-kx"]["severity"] == "warning", f["tls.cipher.weak.rsa-kx"]
    assert f["tls.cipher.weak.rsa-kx"]["ncsc"] == "phase-out"
    assert "TLS_RSA_WITH_AES_" in f["tls.cipher.weak.rsa-kx"]["summary"]
    assert f["tls.forward-secrecy"]["severity"] == "warning"
    # Offered by the probe (BoringSSL has 3DES), refused by this server.
    assert f["tls.cipher.weak.3des"]["summary"] == "3DES (64-bit block, Sweet32) not accepted"
    assert f["tls.cipher.weak.rc4"]["summary"] == "RC4 not accepted"
    assert code == 1


def dh_params(pki, bits: int) -> Path:
    """An RFC 7919 ffdhe group as a PEM parameter file for smtpd_tls_dh1024_param_file."""
    out = pki.dir / f"ffdhe{bits}.pem"
    if not out.exists():
        openssl("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", f"group:ffdhe{bits}", "-out", out.name,
                cwd=pki.dir)
    return out


def test_dhe_with_a_2048_bit_group(pki, postfixes):
    # Postfix's built-in DH group (2048 bits) serves DHE: forward secret, but NCSC-NL rates ffdhe2048
    # phase-out. aNULL and RSA key exchange are excluded here.
    key, chain = pki.leaf("dhe", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("dhe", tls_settings(key, chain, smtpd_tls_exclude_ciphers="kRSA, aNULL",
                                      smtpd_tls_protocols=">=TLSv1.2"))
    code, report, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    dhe = f["tls.cipher.weak.dhe"]
    assert dhe["severity"] == "warning" and dhe["ncsc"] == "phase-out", dhe
    assert "DHE key exchange accepted: TLS_DHE_RSA_WITH_" in dhe["summary"], dhe
    assert "over TLSv1.2 with a 2048-bit DH group" in dhe["summary"], dhe
    assert code == 1


def test_dhe_with_a_3072_bit_group(pki, postfixes):
    key, chain = pki.leaf("dhe3072", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("dhe3072", tls_settings(key, chain, smtpd_tls_exclude_ciphers="kRSA, aNULL",
                                          smtpd_tls_protocols=">=TLSv1.2",
                                          smtpd_tls_dh1024_param_file=dh_params(pki, 3072)))
    code, report, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    dhe = f["tls.cipher.weak.dhe"]
    assert dhe["severity"] == "ok" and dhe["ncsc"] == "sufficient", dhe
    assert "over TLSv1.2 with a 3072-bit DH group" in dhe["summary"], dhe
    assert f["tls.cipher.weak.anon"]["summary"] == "anonymous key exchange (ADH, AECDH) not accepted"
    assert f["tls.version.ssl3"]["summary"] == "SSLv3 not accepted"
    assert f["tls.version.ssl3"]["severity"] == "ok"
    for weak in ("rc4", "null", "export", "des"):
        assert f[f"tls.cipher.weak.{weak}"]["severity"] == "ok", f[f"tls.cipher.weak.{weak}"]
    bad = [x for x in report["findings"] if x["severity"] not in ("ok", "info")]
    assert code == 0, bad


def test_anonymous_allowed(pki, postfixes):
    # Postfix's opportunistic smtpd offers aNULL suites unless told not to (its "medium" grade).
    key, chain = pki.leaf("anon", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("anon", tls_settings(key, chain, smtpd_tls_exclude_ciphers="kRSA",
                                       smtpd_tls_protocols=">=TLSv1.2"))
    code, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    anon = f["tls.cipher.weak.anon"]
    assert anon["severity"] == "failure" and anon["ncsc"] == "insufficient", anon
    assert "_anon_WITH_" in anon["summary"], anon
    assert code == 2


def test_null_allowed(pki, postfixes):
    # NULL encryption needs OpenSSL's security level 0 (eNULL is never in DEFAULT).
    key, chain = pki.leaf("null", [GOOD_NAME, "127.0.0.1"])
    p = postfixes("null", old_tls_settings(
        key, chain, "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-NULL-SHA:NULL-SHA256:NULL-SHA:@SECLEVEL=0"))
    code, _, f = check_host(f"127.0.0.1:{p.port}", "--ca-file", str(pki.ca_file))
    null = f["tls.cipher.weak.null"]
    assert null["severity"] == "failure" and null["ncsc"] == "insufficient", null
    assert "_WITH_NULL_" in null["summary"], null
    assert f["tls.cipher.weak.rc4"]["summary"] == "RC4 not accepted"
    assert code == 2


def test_old_suites_fake(pki):
    """A fault-injection FAKE, not a real server: it completes real TLS handshakes (Python's ssl) but
    answers an SSLv3 ClientHello, and one offering RC4-SHA, EXP-DES-CBC-SHA or DES-CBC-SHA, with a bare
    ServerHello choosing it; no TLS library here can serve those (see FAKE_SUITES)."""
    key, cert = pki.self_signed("fake-old", GOOD_NAME)
    fake = FakeSTARTTLSServer("old-suites", key, cert)
    try:
        code, _, f = check_host(f"127.0.0.1:{fake.port}", "--ca-file", str(pki.dir / "fake-old.pem"))
    finally:
        fake.stop()
    assert f["starttls.handshake"]["severity"] == "ok"
    ssl3 = f["tls.version.ssl3"]
    assert ssl3["summary"] == "SSLv3 accepted (NCSC-NL: insufficient)" and ssl3["severity"] == "failure", ssl3
    rc4 = f["tls.cipher.weak.rc4"]
    assert rc4["summary"] == "RC4 accepted: TLS_RSA_WITH_RC4_128_SHA over TLSv1.2 (NCSC-NL: insufficient)", rc4
    export = f["tls.cipher.weak.export"]
    assert export["summary"].startswith("EXPORT (40/56-bit) accepted: TLS_RSA_EXPORT_WITH_DES40_CBC_SHA over TLSv1.0")
    assert f["tls.cipher.weak.des"]["summary"].startswith("single DES (56-bit) accepted: TLS_RSA_WITH_DES_CBC_SHA")
    for weak in ("ssl3", "rc4", "export", "des"):
        key_ = "tls.version.ssl3" if weak == "ssl3" else f"tls.cipher.weak.{weak}"
        assert f[key_]["severity"] == "failure" and f[key_]["ncsc"] == "insufficient", f[key_]
    # What the fake does not answer is refused by Python's ssl.
    assert f["tls.cipher.weak.null"]["summary"] == "NULL encryption not accepted"
    assert code == 2


def test_no_starttls(postfixes):
    p = postfixes("plain", {"smtpd_tls_security_level": "none"})
    code, _, f = check_host(f"127.0.0.1:{p.port}")
    assert f["starttls.offered"]["severity"] == "failure"
    assert not any(k.startswith(("tls.", "certificate.")) for k in f)
    assert code == 2


# --------------------------------------------------------------------------------------------
# fakes and Mailflow


def test_closes_after_starttls(pki):
    key, cert = pki.self_signed("fake-close", GOOD_NAME)
    fake = FakeSTARTTLSServer("close", key, cert)
    try:
        code, _, f = check_host(f"127.0.0.1:{fake.port}")
    finally:
        fake.stop()
    assert f["starttls.dropped"]["severity"] == "failure"
    assert f["starttls.dropped"]["summary"] == "drops the session after STARTTLS"
    assert code == 2


def test_answers_pipelined_bytes_after_starttls(pki):
    key, cert = pki.self_signed("fake-pipelined", GOOD_NAME)
    fake = FakeSTARTTLSServer("pipelined", key, cert)
    try:
        code, _, f = check_host(f"127.0.0.1:{fake.port}", "--ca-file", str(pki.dir / "fake-pipelined.pem"))
    finally:
        fake.stop()
    assert f["starttls.pipelining"]["severity"] == "failure", f["starttls.pipelining"]
    assert "CVE-2011-0411" in f["starttls.pipelining"]["summary"]
    assert code == 2


def test_fixed_fake_does_not_answer_pipelined_bytes(pki):
    key, cert = pki.self_signed("fake-good", GOOD_NAME)
    fake = FakeSTARTTLSServer("fixed", key, cert)
    try:
        _, _, f = check_host(f"127.0.0.1:{fake.port}", "--ca-file", str(pki.dir / "fake-good.pem"))
    finally:
        fake.stop()
    assert f["starttls.pipelining"]["severity"] == "ok", f["starttls.pipelining"]
    assert f["certificate.trust"]["severity"] == "ok"


def test_mailflow_itself(mailflow_server):
    srv = mailflow_server()
    code, _, f = check_host(f"127.0.0.1:{srv.port}")
    assert f["smtp.banner"]["severity"] == "ok"
    assert f["starttls.offered"]["severity"] == "ok"
    assert f["starttls.handshake"]["severity"] == "ok"
    assert f["starttls.pipelining"]["severity"] == "ok", f["starttls.pipelining"]
    assert "accepted" in f["tls.version.tls1_3"]["summary"]
    # Its first-start pair is self-signed.
    assert f["certificate.self-signed"]["severity"] == "failure"
