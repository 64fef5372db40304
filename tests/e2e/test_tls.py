"""STARTTLS with real TLS stacks: `openssl s_client` and Python's ssl, protocol versions, certificates."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import time
import pytest

from mfutil import HOSTNAME, SMTPClient, client_tls_context

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"


def _s_client(need_tool, port: int, version_flag: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [need_tool("openssl"), "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}",
         version_flag, "-brief", "-crlf", "-cipher", LEGACY_CIPHERS, "-servername", HOSTNAME],
        input=b"EHLO openssl.client.test\r\nQUIT\r\n", capture_output=True, timeout=30)


@pytest.mark.parametrize("flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_openssl_starttls_accepted(server, need_tool, flag, version):
    r = _s_client(need_tool, server.port, flag)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, out
    assert "CONNECTION ESTABLISHED" in out, out
    assert f"Protocol version: {version}" in out, out
    assert f"Peer certificate: CN = {HOSTNAME}" in out, out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openssl_tls11_refused(server, need_tool):
    # Control: this openssl client can speak TLS 1.1 at all (against openssl's own server), so a
    # failure against Mailflow is Mailflow's refusal.
    port = _free_port()
    cert, key = server.data_dir / "tls" / "cert.pem", server.data_dir / "tls" / "key.pem"
    s_server = subprocess.Popen(
        [need_tool("openssl"), "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key),
         "-tls1_1", "-cipher", LEGACY_CIPHERS, "-naccept", "1", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        control = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            control = subprocess.run(
                [need_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1", "-brief",
                 "-cipher", LEGACY_CIPHERS],
                input=b"", capture_output=True, timeout=20)
            if b"connect:errno" not in control.stderr and b"Connection refused" not in control.stderr:
                break
            time.sleep(0.1)
        if b"Protocol version: TLSv1.1" not in control.stdout + control.stderr:
            pytest.skip("this openssl cannot negotiate TLS 1.1 even with itself: "
                        + (control.stdout + control.stderr).decode(errors="replace"))
    finally:
        s_server.kill()
        s_server.wait()

    r = _s_client(need_tool, server.port, "-tls1_1")
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode != 0, out
    assert "CONNECTION ESTABLISHED" not in out, out
    assert "protocol version" in out.lower(), out


def _python_tls_control(version: ssl.TLSVersion, cert, key) -> bool:
    """Whether Python's ssl here can negotiate `version` with itself (client and server)."""
    srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_ctx.load_cert_chain(str(cert), str(key))
    srv_ctx.set_ciphers(LEGACY_CIPHERS)
    srv_ctx.minimum_version = srv_ctx.maximum_version = version
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        import threading

        result = {}

        def serve():
            conn, _ = ls.accept()
            try:
                with srv_ctx.wrap_socket(conn, server_side=True) as t:
                    result["server"] = t.version()
            except (ssl.SSLError, OSError) as e:
                result["server"] = e

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        try:
            with socket.create_connection(ls.getsockname(), timeout=5) as c:
                ctx = client_tls_context(version, version, legacy=True)
                with ctx.wrap_socket(c) as t:
                    ok = t.version() == version.name.replace("_", ".").replace("TLSv1.0", "TLSv1")
        except (ssl.SSLError, OSError):
            ok = False
        th.join(5)
        return ok


@pytest.mark.parametrize("version,accepted", [
    (ssl.TLSVersion.TLSv1, False),
    (ssl.TLSVersion.TLSv1_1, False),
    (ssl.TLSVersion.TLSv1_2, True),
    (ssl.TLSVersion.TLSv1_3, True),
], ids=["tls1.0-refused", "tls1.1-refused", "tls1.2-accepted", "tls1.3-accepted"])
def test_python_tls_versions(server, version, accepted):
    if not accepted and not _python_tls_control(version, server.data_dir / "tls" / "cert.pem",
                                                server.data_dir / "tls" / "key.pem"):
        pytest.skip(f"Python's ssl cannot speak {version.name} here, so a refusal would prove nothing")
    c = SMTPClient(server.port)
    try:
        c.ehlo()
        r = c.cmd("STARTTLS")
        assert (r.code, r.enhanced) == (220, "2.0.0"), r
        ctx = client_tls_context(version, version, legacy=True)
        if accepted:
            c.wrap_tls(ctx)
            expected = {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
            assert c.sock.version() == expected
            ehlo = c.ehlo()
            assert "STARTTLS" not in ehlo.lines
            assert c.cmd("NOOP").first.startswith("250 2.0.0")
        else:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                c.wrap_tls(ctx)
    finally:
        c.close()


def test_generated_certificate_is_used(server):
    cert_path = server.data_dir / "tls" / "cert.pem"
    assert cert_path.exists() and (server.data_dir / "tls" / "key.pem").exists()
    expected = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    with SMTPClient(server.port) as c:
        c.ehlo()
        c.starttls()
        got = c.sock.getpeercert(binary_form=True)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_configured_certificate_is_used(mailflow_server, tmp_path, need_tool):
    cert, key = tmp_path / "own-cert.pem", tmp_path / "own-key.pem"
    r = subprocess.run(
        [need_tool("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=configured.example.test"],
        capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    srv = mailflow_server({"tls": {"certificate": str(cert), "key": str(key)}})
    with SMTPClient(srv.port) as c:
        c.ehlo()
        c.starttls()
        got = c.sock.getpeercert(binary_form=True)
    assert got == ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert not (srv.data_dir / "tls" / "cert.pem").exists(), "no pair is generated when one is configured"
