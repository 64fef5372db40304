"""DKIM against dkimpy (PyPI), both ways, both algorithms (rsa-sha256, ed25519-sha256).

- Mailflow signs (`mailflow dkim keygen`, `mailflow dkim sign`), dkimpy verifies: dkimpy's `dnsfunc`
  returns the TXT record keygen printed, so no DNS is involved on that side.
- dkimpy signs, Mailflow verifies (`mailflow dkim verify --json`) with its own resolver asking a
  dnsmasq on 127.0.0.1 that serves the key records (tests/e2e/dnsutil.py).
- `mailflow serve` signs relayed mail with the tenant's keys (`tenants[].dkim`): a trusted client
  relays through a smart host (the Python fake remote, tests/e2e/fakes/remote_smtp.py, on loopback)
  and dkimpy verifies the message as it arrived.

Messages have folded header fields and bodies ending in blank lines. Bad input: a 512-bit key
(permerror, RFC 8301), `l=` with content appended (policy, never pass), a changed body (fail), a
revoked key, a missing key, CLI misuse. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import stat
import subprocess
import sys
import time
from pathlib import Path

import dkim
import nacl.signing
import pytest

from dnsutil import Dnsmasq
from mfutil import mailflow_bin

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))
from remote_smtp import FakeRemoteConfig, start_in_thread  # noqa: E402

DOMAIN = "example.test"

MESSAGE = (
    "From: Alice Example <alice@example.test>\r\n"
    "To: Bob <bob@example.net>,\r\n"
    "  Carol <carol@example.net>\r\n"
    "Subject: A folded\r\n"
    "\tsubject line\r\n"
    "Date: Tue, 1 Dec 2026 12:00:00 +0000\r\n"
    "Message-ID: <dkim-e2e@example.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello Bob,   \r\n"
    "\r\n"
    "  indented line\twith tab\r\n"
    "\r\n"
    "\r\n"
    "\r\n"
).encode()


def mailflow(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([mailflow_bin(), "dkim", *args], input=input, capture_output=True, timeout=60)


def record_from_zone_line(text: str) -> str:
    """The TXT record's text from keygen's zone-file line (its quoted strings joined)."""
    line = next(l for l in text.splitlines() if "IN TXT" in l)
    return "".join(re.findall(r'"([^"]*)"', line))


def txt_chunks(text: str) -> str:
    """A dnsmasq --txt-record value: character-strings of at most 200 bytes, comma-separated."""
    return ",".join(text[i:i + 200] for i in range(0, len(text), 200))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Keys made by `mailflow dkim keygen` (selectors mf-rsa, mf-ed) and for dkimpy (py-rsa, py-ed, py-512)."""
    work = tmp_path_factory.mktemp("dkim")
    out: dict[str, dict] = {}
    for selector, algorithm in (("mf-rsa", "rsa"), ("mf-ed", "ed25519")):
        r = mailflow("keygen", DOMAIN, selector, "--algorithm", algorithm, "--out", str(work))
        assert r.returncode == 0, r.stderr
        path = work / f"{DOMAIN}.{selector}.pem"
        out[selector] = {"path": path, "record": record_from_zone_line(r.stdout.decode()), "stdout": r.stdout.decode()}
    for selector, bits in (("py-rsa", 2048), ("py-512", 512)):
        pem = subprocess.run(["openssl", "genrsa", str(bits)], capture_output=True, check=True).stdout
        der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True,
                             check=True).stdout
        out[selector] = {"private": pem, "record": "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()}
    sk = nacl.signing.SigningKey.generate()
    out["py-ed"] = {"private": base64.b64encode(bytes(sk)),
                    "record": "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(sk.verify_key)).decode()}
    out["work"] = work
    return out


@pytest.fixture(scope="module")
def dns(keys):
    records = [f"--txt-record={s}._domainkey.{DOMAIN},{txt_chunks(keys[s]['record'])}"
               for s in ("mf-rsa", "mf-ed", "py-rsa", "py-ed", "py-512")]
    records.append(f"--txt-record=revoked._domainkey.{DOMAIN},v=DKIM1; k=rsa; p=")
    records.append(f"--txt-record=mf-rsa._domainkey.rsa.{DOMAIN},{txt_chunks(keys['mf-rsa']['record'])}")
    server = Dnsmasq(records, log_dir=keys["work"]).start()
    yield server
    server.stop()


def dnsfunc_for(keys):
    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        m = re.fullmatch(r"([^.]+)\._domainkey\.(?:[a-z0-9-]+\.)*" + re.escape(DOMAIN) + r"\.?", name)
        return keys[m.group(1)]["record"].encode() if m and m.group(1) in keys else None
    return dnsfunc


def dkimpy_verifies(keys, message: bytes) -> bool:
    """dkimpy's verdict on the first signature (dkim.verify turns its exceptions into False)."""
    return dkim.verify(message, dnsfunc=dnsfunc_for(keys))


def verify(dns, message: bytes) -> tuple[int, list[dict]]:
    r = mailflow("verify", "--dns-server", dns.server, "--json", "-", input=message)
    assert r.stderr == b"", r.stderr
    return r.returncode, json.loads(r.stdout)["signatures"]


# --------------------------------------------------------------------------------------------
# keygen


def test_keygen_writes_a_private_pkcs8_key_and_prints_the_record(keys):
    for selector, k in (("mf-rsa", "rsa"), ("mf-ed", "ed25519")):
        path = keys[selector]["path"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        pem = path.read_text()
        assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
        # openssl reads it as PKCS#8 and derives the same public key the record publishes.
        der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"], capture_output=True,
                             check=True).stdout
        record = keys[selector]["record"]
        assert record.startswith(f"v=DKIM1; k={k}; p=")
        p = base64.b64decode(record.split("p=", 1)[1])
        assert p == (der if k == "rsa" else der[-32:])
        assert f"{selector}._domainkey.{DOMAIN}. IN TXT (" in keys[selector]["stdout"]
    rsa_bits = subprocess.run(["openssl", "pkey", "-in", str(keys["mf-rsa"]["path"]), "-text", "-noout"],
                              capture_output=True, check=True, text=True).stdout
    assert "2048 bit" in rsa_bits


def test_keygen_never_overwrites_and_refuses_weak_sizes(keys):
    r = mailflow("keygen", DOMAIN, "mf-rsa", "--out", str(keys["work"]))
    assert r.returncode == 1 and b"exists" in r.stderr
    r = mailflow("keygen", DOMAIN, "weak", "--bits", "1024", "--out", str(keys["work"]))
    assert r.returncode != 0 and b"--bits must be 2048, 3072 or 4096" in r.stderr
    assert not (keys["work"] / f"{DOMAIN}.weak.pem").exists()
    r = mailflow("keygen", "not a domain", "s1", "--out", str(keys["work"]))
    assert r.returncode != 0 and b"is not a domain name" in r.stderr


# --------------------------------------------------------------------------------------------
# Mailflow signs, dkimpy verifies


@pytest.mark.parametrize("selector,algorithm", [("mf-rsa", "rsa-sha256"), ("mf-ed", "ed25519-sha256")])
def test_mailflow_signs_dkimpy_verifies(keys, selector, algorithm):
    r = mailflow("sign", "--domain", DOMAIN, "--selector", selector, "--key", str(keys[selector]["path"]), "-",
                 input=MESSAGE)
    assert r.returncode == 0, r.stderr
    signed = r.stdout
    assert signed.endswith(MESSAGE) and signed.startswith(b"DKIM-Signature: v=1; a=" + algorithm.encode())
    header = signed[:len(signed) - len(MESSAGE)].decode()
    assert "c=relaxed/relaxed" in header and " l=" not in header and ";l=" not in header
    assert all(len(line) <= 78 for line in header.split("\r\n"))
    assert dkimpy_verifies(keys, signed), "dkimpy did not verify Mailflow's signature"
    # From is oversigned: a From added after signing breaks it.
    added = signed.replace(b"To: Bob", b"From: Mallory <m@evil.test>\r\nTo: Bob", 1)
    assert not dkimpy_verifies(keys, added)
    # Relaxed body: more trailing blank lines do not matter; a changed word does.
    assert dkimpy_verifies(keys, signed + b"\r\n\r\n")
    assert not dkimpy_verifies(keys, signed.replace(b"Hello Bob", b"Hello Eve"))


def test_mailflow_signs_lf_files_as_crlf(keys):
    lf = MESSAGE.replace(b"\r\n", b"\n")
    r = mailflow("sign", "--domain", DOMAIN, "--selector", "mf-ed", "--key", str(keys["mf-ed"]["path"]), input=lf)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(MESSAGE)
    assert dkimpy_verifies(keys, r.stdout)


def test_sign_errors_are_clear(keys, tmp_path):
    r = mailflow("sign", "--domain", DOMAIN, "--selector", "s", "--key", str(tmp_path / "nope.pem"), input=MESSAGE)
    assert r.returncode == 1 and b"cannot read the key" in r.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    r = mailflow("sign", "--domain", DOMAIN, "--selector", "s", "--key", str(bad), input=MESSAGE)
    assert r.returncode == 1 and b"not a PEM private key" in r.stderr
    weak = tmp_path / "weak.pem"
    weak.write_bytes(keys["py-512"]["private"])
    r = mailflow("sign", "--domain", DOMAIN, "--selector", "s", "--key", str(weak), input=MESSAGE)
    assert r.returncode == 1 and b"RFC 8301" in r.stderr
    r = mailflow("sign", "--domain", DOMAIN, "--selector", "mf-ed", "--key", str(keys["mf-ed"]["path"]),
                 input=b"To: bob@example.net\r\n\r\nno From\r\n")
    assert r.returncode == 1 and b"no From field" in r.stderr
    r = mailflow("sign", "--domain", "bad domain", "--selector", "s", "--key", str(bad), input=MESSAGE)
    assert r.returncode != 0 and b"is not a domain name" in r.stderr


# --------------------------------------------------------------------------------------------
# dkimpy signs, Mailflow verifies through dnsmasq


def dkimpy_sign(keys, selector: str, message: bytes = MESSAGE, **kw) -> bytes:
    algorithm = b"ed25519-sha256" if selector == "py-ed" else b"rsa-sha256"
    sig = dkim.sign(message, selector.encode(), DOMAIN.encode(), keys[selector]["private"],
                    signature_algorithm=algorithm, **kw)
    return sig + message


@pytest.mark.parametrize("selector,canon", [("py-rsa", b"relaxed"), ("py-ed", b"relaxed"), ("py-rsa", b"simple"),
                                            ("py-ed", b"simple")])
def test_dkimpy_signs_mailflow_verifies(keys, dns, selector, canon):
    signed = dkimpy_sign(keys, selector, canonicalize=(canon, canon))
    code, results = verify(dns, signed)
    assert code == 0, results
    assert len(results) == 1
    r = results[0]
    assert r["result"] == "pass" and r["d"] == DOMAIN and r["s"] == selector
    assert r["a"] == ("ed25519-sha256" if selector == "py-ed" else "rsa-sha256")
    if selector == "py-rsa":
        assert r["key_bits"] == 2048
    # Trailing blank lines added in transit are ignored by both canonicalizations.
    code, results = verify(dns, signed + b"\r\n\r\n")
    assert code == 0 and results[0]["result"] == "pass", results


def test_both_signatures_of_a_doubly_signed_message(keys, dns):
    once = dkimpy_sign(keys, "py-ed")
    sig = dkim.sign(once, b"py-rsa", DOMAIN.encode(), keys["py-rsa"]["private"])
    code, results = verify(dns, sig + once)
    assert code == 0
    assert [(r["s"], r["result"]) for r in results] == [("py-rsa", "pass"), ("py-ed", "pass")]


def test_changed_body_fails(keys, dns):
    signed = dkimpy_sign(keys, "py-rsa").replace(b"Hello Bob", b"Hello Eve")
    code, results = verify(dns, signed)
    assert code == 2
    assert results[0]["result"] == "fail" and "body hash" in results[0]["reason"]


def test_body_length_with_appended_content_is_policy_not_pass(keys, dns):
    signed = dkimpy_sign(keys, "py-ed", length=True)
    assert b"l=" in signed
    code, results = verify(dns, signed)
    assert code == 0 and results[0]["result"] == "pass", results
    code, results = verify(dns, signed + b"Unsigned: click http://evil.test/\r\n")
    assert code == 2
    assert results[0]["result"] == "policy", results
    assert "unsigned" in results[0]["reason"]
    # dkimpy itself passes it: what l= allows.
    assert dkimpy_verifies(keys, signed + b"Unsigned: click http://evil.test/\r\n")


def test_a_512_bit_key_is_a_permerror(keys, dns):
    signed = dkimpy_sign(keys, "py-512")
    code, results = verify(dns, signed)
    assert code == 2
    assert results[0]["result"] == "permerror" and results[0]["key_bits"] == 512
    assert "RFC 8301" in results[0]["reason"]


def test_revoked_and_missing_keys(keys, dns):
    signed = dkimpy_sign(keys, "py-rsa")
    for selector, words in (("revoked", "revoked"), ("absent", "no key at absent._domainkey.example.test")):
        changed = signed.replace(b"s=py-rsa;", f"s={selector};".encode(), 1)
        code, results = verify(dns, changed)
        assert code == 2 and results[0]["result"] == "permerror" and words in results[0]["reason"], results


def test_unsigned_message_and_text_output(keys, dns):
    r = mailflow("verify", "--dns-server", dns.server, input=MESSAGE)
    assert r.returncode == 1 and r.stdout.startswith(b"dkim=none")
    r = mailflow("verify", "--dns-server", dns.server, input=dkimpy_sign(keys, "py-ed"))
    assert r.returncode == 0
    assert r.stdout.decode().strip() == f"dkim=pass header.d={DOMAIN} header.s=py-ed header.a=ed25519-sha256"


def test_a_dns_server_that_does_not_answer_is_a_temperror(keys, tmp_path):
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        r = mailflow("verify", "--dns-server", f"127.0.0.1:{port}", "--timeout", "0.5", "--json",
                     input=dkimpy_sign(keys, "py-ed"))
    assert r.returncode == 3, r.stdout
    assert json.loads(r.stdout)["signatures"][0]["result"] == "temperror"


def test_verify_refuses_bad_options(tmp_path):
    r = mailflow("verify", "--dns-server", "not-an-ip", input=MESSAGE)
    assert r.returncode != 0 and b"--dns-server" in r.stderr
    r = mailflow("verify", str(tmp_path / "missing.eml"))
    assert r.returncode == 1 and b"cannot read" in r.stderr


# --------------------------------------------------------------------------------------------
# mailflow serve signs relayed mail with the tenant's keys (tenants[].dkim)


def test_relayed_mail_is_signed_with_the_tenants_key(mailflow_server, keys, dns):
    """A trusted client relays through Mailflow to a smart host (the fake remote on loopback); what
    arrives there carries a DKIM-Signature over the message as sent, which dkimpy verifies: Ed25519
    for example.test, RSA for the tenant's subdomain rsa.example.test (the From domain picks the key).
    Another tenant without keys sends unsigned."""
    fake = start_in_thread(FakeRemoteConfig(host="127.0.0.1", port=0, record_data=True))
    try:
        connector = {"smart_host": f"127.0.0.1:{fake.port}", "tls": "disabled"}
        srv = mailflow_server({
            "relay": {"trusted_networks": ["127.0.0.0/8"]},
            "dns": {"servers": [dns.server], "timeout": "1s", "attempts": 1},
            "delivery": {"retry_intervals": ["1s"], "expiry": "24h"},
            "tenants": [
                {"name": "signed", "domains": [DOMAIN, f"rsa.{DOMAIN}"], "mailboxes": ["alice"],
                 "outbound_connector": connector,
                 "dkim": [{"domain": DOMAIN, "selector": "mf-ed", "key_file": str(keys["mf-ed"]["path"])},
                          {"domain": f"rsa.{DOMAIN}", "selector": "mf-rsa", "key_file": str(keys["mf-rsa"]["path"])}]},
                {"name": "plain", "domains": ["plain.test"], "mailboxes": ["carl"], "outbound_connector": connector},
            ],
        })
        sends = [
            ("alice@example.test", MESSAGE),
            ("alice@rsa.example.test", MESSAGE.replace(b"alice@example.test", b"alice@rsa.example.test")),
            ("carl@plain.test", MESSAGE.replace(b"alice@example.test", b"carl@plain.test")),
        ]
        with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test", timeout=15) as s:
            for sender, msg in sends:
                s.sendmail(sender, ["bob@example.net"], msg)
        deadline = time.monotonic() + 30
        while len(fake.records()) < len(sends) and time.monotonic() < deadline:
            time.sleep(0.1)
        records = {r["mail_from"]: r["data"].encode("utf-8", "surrogateescape") for r in fake.records()}
        assert set(records) == {sender for sender, _ in sends}, records.keys()
        for sender, algorithm, d in (("alice@example.test", b"ed25519-sha256", DOMAIN),
                                     ("alice@rsa.example.test", b"rsa-sha256", f"rsa.{DOMAIN}")):
            data = records[sender]
            assert data.startswith(b"DKIM-Signature: v=1; a=" + algorithm), data[:200]
            assert f"d={d};".encode() in data.split(b"\r\n\r\n", 1)[0]
            assert dkimpy_verifies(keys, data), data[:600]
            # Mailflow's own verifier agrees, through dnsmasq.
            code, results = verify(dns, data)
            assert code == 0 and results[0]["result"] == "pass", results
        assert b"DKIM-Signature" not in records["carl@plain.test"]
    finally:
        fake.stop()


def test_a_tenant_key_that_cannot_be_read_is_a_config_error(tmp_path, keys):
    config = tmp_path / "mailflow.yaml"
    config.write_text(json.dumps({
        "tenants": [{"name": "t", "domains": [DOMAIN], "mailboxes": ["a"],
                     "dkim": [{"domain": DOMAIN, "selector": "s1", "key_file": "missing.pem"}]}],
    }))
    r = subprocess.run([mailflow_bin(), "config", "check", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "tenants[0].dkim[0].key_file: cannot read" in r.stdout + r.stderr
    config.write_text(json.dumps({
        "tenants": [{"name": "t", "domains": [DOMAIN], "mailboxes": ["a"],
                     "dkim": [{"domain": "elsewhere.test", "selector": "s1", "key_file": "k.pem"}]}],
    }))
    r = subprocess.run([mailflow_bin(), "config", "check", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is not one of this tenant's domains" in r.stdout + r.stderr
