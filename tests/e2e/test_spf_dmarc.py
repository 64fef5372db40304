"""`mailflow spf` and `mailflow dmarc` against a real dnsmasq on loopback.

The zone (all under `test.`, which dnsmasq serves authoritatively) exercises SPF's include, redirect,
mx, ptr (dnsmasq's --host-record also answers the reverse name), exists with macros, exp=, the
10-lookup limit and the void-lookup limit, and DMARC with aligned, unaligned and subdomain
identities, relaxed and strict. The client addresses are only inputs to the evaluation: the only
traffic is DNS to the dnsmasq on 127.0.0.1 (and to a silent socket for the temperror case).
"""

from __future__ import annotations

import subprocess

import pytest

from dnsutil import Dnsmasq, SilentUDP
from mfutil import mailflow_bin

LIMIT_HOSTS = [f"--host-record=h{i}.limit.test,192.0.2.{100 + i}" for i in range(1, 12)]
LIMIT_TERMS = " ".join(f"a:h{i}.limit.test" for i in range(1, 12))

ZONE = [
    # include, and exp= with macros for the fail.
    "--txt-record=inc.test,v=spf1 include:_spf.inc.test -all exp=why.inc.test",
    "--txt-record=_spf.inc.test,v=spf1 ip4:192.0.2.0/25 -all",
    "--txt-record=why.inc.test,%{i} may not send mail for %{d} (%{l})",
    # redirect to the include domain's policy.
    "--txt-record=red.test,v=spf1 redirect=inc.test",
    # mx with a CIDR length.
    "--txt-record=mx.test,v=spf1 mx/30 -all",
    "--mx-host=mx.test,mail.mx.test,10",
    "--host-record=mail.mx.test,198.51.100.20",
    # ptr: the client's PTR name, validated forward, ends in ptr.test. dnsmasq answers the reverse
    # names of --host-record addresses only inside an auth zone that lists the subnet, and then
    # serves only addresses inside the zone's subnets: every address below is in one of them.
    "--auth-zone=test,198.51.100.0/24,192.0.2.0/24,127.0.0.0/8",
    "--txt-record=ptr.test,v=spf1 ptr -all",
    "--host-record=relay.ptr.test,198.51.100.30",
    # exists with the reversed-address macro (a DNS block list shape).
    "--txt-record=exists.test,v=spf1 exists:%{ir}.list.exists.test -all",
    "--host-record=40.100.51.198.list.exists.test,127.0.0.2",
    # 11 a: terms: the 11th DNS-querying term is a permerror (RFC 7208 4.6.4).
    f"--txt-record=limit.test,v=spf1 {LIMIT_TERMS} -all",
    *LIMIT_HOSTS,
    # Void lookups: three names that do not exist is one too many; two is fine.
    "--txt-record=void.test,v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all",
    "--txt-record=void2.test,v=spf1 a:n1.void.test a:n2.void.test -all",
    # A syntax error, and two records.
    "--txt-record=broken.test,v=spf1 ip4:192.0.2.300 -all",
    "--txt-record=twice.test,v=spf1 -all",
    "--txt-record=twice.test,v=spf1 +all",
    "--txt-record=nospf.test,just some text",
    "--txt-record=soft.test,v=spf1 ~all",
    # DMARC.
    "--txt-record=_dmarc.example.test,v=DMARC1; p=reject; sp=quarantine",
    "--txt-record=_dmarc.strict.test,v=DMARC1; p=reject; aspf=s; adkim=s",
    "--txt-record=_dmarc.half.test,v=DMARC1; p=reject; pct=50",
    "--txt-record=_dmarc.bad.test,v=DMARC1; p=reject; pct=150",
    "--txt-record=_dmarc.multi.test,v=DMARC1; p=reject",
    "--txt-record=_dmarc.multi.test,v=DMARC1; p=none",
]


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    server = Dnsmasq(ZONE, log_dir=tmp_path_factory.mktemp("spf-dns")).start()
    yield server
    server.stop()


def mailflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([mailflow_bin(), *args], capture_output=True, text=True, timeout=60)


def spf(dns: Dnsmasq, ip: str, sender: str, *extra: str) -> tuple[int, dict[str, str]]:
    out = mailflow("spf", "--ip", ip, "--sender", sender, "--helo", "client.test", "--dns-server", dns.server,
                   *extra)
    assert out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    fields = {"result": lines[0].removeprefix("spf=")}
    for line in lines[1:]:
        key, _, value = line.partition(": ")
        fields[key] = value
    return out.returncode, fields


SPF_EXIT = {"pass": 0, "fail": 2, "temperror": 3, "permerror": 4, "none": 1, "neutral": 1, "softfail": 1}


@pytest.mark.parametrize("ip,sender,result,mechanism", [
    ("192.0.2.10", "alice@inc.test", "pass", "include:_spf.inc.test"),
    ("192.0.2.200", "alice@inc.test", "fail", "-all"),
    ("192.0.2.10", "bob@red.test", "pass", "include:_spf.inc.test"),
    ("198.51.100.22", "bounce@mx.test", "pass", "mx/30"),
    ("198.51.100.25", "bounce@mx.test", "fail", "-all"),
    ("198.51.100.30", "x@ptr.test", "pass", "ptr"),
    ("198.51.100.31", "x@ptr.test", "fail", "-all"),
    ("198.51.100.40", "x@exists.test", "pass", "exists:%{ir}.list.exists.test"),
    ("198.51.100.41", "x@exists.test", "fail", "-all"),
    ("192.0.2.110", "x@limit.test", "pass", "a:h10.limit.test"),
    ("192.0.2.9", "x@soft.test", "softfail", "~all"),
])
def test_spf_mechanisms(dns, ip, sender, result, mechanism):
    code, fields = spf(dns, ip, sender)
    assert fields["result"] == result, fields
    assert fields["mechanism"] == mechanism, fields
    assert code == SPF_EXIT[result]


def test_fail_carries_the_expanded_explanation(dns):
    code, fields = spf(dns, "192.0.2.200", "alice@inc.test")
    assert code == 2
    assert fields["explanation"] == "192.0.2.200 may not send mail for inc.test (alice)"


def test_the_eleventh_lookup_is_a_permerror(dns):
    code, fields = spf(dns, "192.0.2.111", "x@limit.test")
    assert (code, fields["result"]) == (4, "permerror"), fields
    assert "more than 10 DNS-querying terms" in fields["reason"]
    assert fields["lookups"].startswith("11 of 10")


def test_a_third_void_lookup_is_a_permerror(dns):
    code, fields = spf(dns, "192.0.2.1", "x@void.test")
    assert (code, fields["result"]) == (4, "permerror"), fields
    assert "void lookups: 3 of 2" in fields["lookups"]
    code, fields = spf(dns, "192.0.2.1", "x@void2.test")
    assert (code, fields["result"]) == (2, "fail"), fields


@pytest.mark.parametrize("sender,result,why", [
    ("x@broken.test", "permerror", "192.0.2.300"),
    ("x@twice.test", "permerror", "2 SPF records"),
    ("x@nospf.test", "none", "no SPF record"),
    ("x@nowhere.test", "none", "no SPF record"),
])
def test_records_that_decide_nothing(dns, sender, result, why):
    code, fields = spf(dns, "192.0.2.1", sender)
    assert fields["result"] == result, fields
    assert why in fields["reason"]
    assert code == SPF_EXIT[result]


def test_null_sender_checks_postmaster_at_helo(dns):
    out = mailflow("spf", "--ip", "192.0.2.10", "--sender", "", "--helo", "inc.test", "--dns-server", dns.server,
                   "--authserv-id", "mx.example.net")
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=postmaster@inc.test "
            "smtp.helo=inc.test") in out.stdout.splitlines()


def test_an_unanswering_dns_server_is_a_temperror():
    silent = SilentUDP()
    try:
        code, fields = spf(silent, "192.0.2.1", "x@inc.test", "--timeout", "1")  # type: ignore[arg-type]
    finally:
        silent.close()
    assert (code, fields["result"]) == (3, "temperror"), fields


def dmarc(dns, *args: str) -> tuple[int, dict[str, str]]:
    out = mailflow("dmarc", "--dns-server", dns.server, *args)
    assert out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    fields = {"result": lines[0].removeprefix("dmarc=")}
    for line in lines[1:]:
        key, _, value = line.partition(": ")
        fields[key] = value
    return out.returncode, fields


@pytest.mark.parametrize("args,result,policy,code", [
    # Aligned SPF (relaxed: a subdomain of the same organizational domain).
    (["--from", "example.test", "--spf", "pass", "--spf-domain", "bounce.example.test"], "pass", "none", 0),
    # Aligned DKIM though SPF failed.
    (["--from", "example.test", "--spf", "fail", "--spf-domain", "example.test", "--dkim", "example.test=pass"],
     "pass", "none", 0),
    # Unaligned: SPF and DKIM passed for someone else.
    (["--from", "example.test", "--spf", "pass", "--spf-domain", "mailer.test", "--dkim", "mailer.test=pass"],
     "fail", "reject", 2),
    # A failed signature of the right domain does not align.
    (["--from", "example.test", "--dkim", "example.test=fail"], "fail", "reject", 2),
    # Subdomain: the organizational domain's record applies with its sp=.
    (["--from", "news.example.test", "--spf", "pass", "--spf-domain", "other.test"], "fail", "quarantine", 2),
    (["--from", "news.example.test", "--dkim", "example.test=pass"], "pass", "none", 0),
    # Strict alignment wants the exact name.
    (["--from", "strict.test", "--spf", "pass", "--spf-domain", "mail.strict.test"], "fail", "reject", 2),
    (["--from", "strict.test", "--spf", "pass", "--spf-domain", "strict.test"], "pass", "none", 0),
    # pct=50: a sample at or over 50 gets the milder policy.
    (["--from", "half.test", "--pct-sample", "49"], "fail", "reject", 2),
    (["--from", "half.test", "--pct-sample", "50"], "fail", "quarantine (pct= sample left it out)", 2),
    # No record, two records, a broken record.
    (["--from", "nowhere.test", "--spf", "pass", "--spf-domain", "nowhere.test"], "none", "none", 1),
    (["--from", "multi.test"], "none", "none", 1),
    (["--from", "bad.test", "--spf", "pass", "--spf-domain", "bad.test"], "permerror", "none", 4),
])
def test_dmarc(dns, args, result, policy, code):
    got, fields = dmarc(dns, *args)
    assert fields["result"] == result, fields
    assert fields["policy"] == policy, fields
    assert got == code


def test_dmarc_subdomain_reports_where_the_record_was(dns):
    _, fields = dmarc(dns, "--from", "news.example.test", "--authserv-id", "mx.example.net")
    assert fields["record"] == "_dmarc.example.test"
    assert fields["organizational domain"].startswith("example.test")
    assert fields["requested policy"] == "quarantine"
    assert fields["Authentication-Results"] == (
        "mx.example.net; dmarc=fail (p=quarantine dis=quarantine) header.from=news.example.test")


@pytest.mark.parametrize("args,message", [
    (["spf", "--ip", "not-an-ip", "--sender", "a@b.test"], "is not an IP address"),
    (["dmarc", "--from", "a.test", "--spf", "maybe"], "--spf must be one of"),
    (["dmarc", "--from", "a.test", "--dkim", "nodomain"], "is not DOMAIN=RESULT"),
    (["spf", "--ip", "192.0.2.1", "--sender", "a@b.test", "--dns-server", "nonsense"], "--dns-server"),
])
def test_misuse_is_refused(args, message):
    out = mailflow(*args)
    assert out.returncode == 64, out
    assert message in out.stderr
