"""`mailflow check host` and testssl.sh agree on two loopback Postfix targets: one that accepts
anonymous suites (protocols, cipher categories, RC4, certificate verdicts) and one that sends an
incomplete chain. The comparison is scripts/check-vs-testssl's (docs/check.md, "Agreement with
testssl.sh"), which runs every target; testssl is kept off the network as
../shared/reference/test-peers.md says (NXCONNECT, --nodns none, --ip). Postfix needs root.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dnsutil import Dnsmasq
from mfutil import REPO_ROOT, mailflow_bin
from mailflow_testlib.postfix import PostfixInstance, PostfixUnavailable


def load_script():
    path = REPO_ROOT / "scripts" / "check-vs-testssl"
    loader = importlib.machinery.SourceFileLoader("check_vs_testssl", str(path))
    spec = importlib.util.spec_from_loader("check_vs_testssl", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", ["anonymous", "incomplete chain"])
def test_mailflow_and_testssl_agree(target):
    assert shutil.which("testssl"), "testssl is not installed (scripts/install-test-deps installs testssl.sh)"
    vs = load_script()
    work = Path(tempfile.mkdtemp(prefix="mailflow-testssl-"))
    os.chmod(work, 0o755)
    dns = Dnsmasq([f"--host-record={vs.GOOD_NAME},127.0.0.1"]).start()
    postfix = None
    try:
        pki = vs.OpenSSLPKI(work / "pki")
        settings = {name: s for name, _, s in vs.targets(pki)}[target]
        postfix = PostfixInstance(work / "postfix", comment=f"tests/e2e/test_check_testssl.py: {target}")
        try:
            postfix.start({"myhostname": vs.GOOD_NAME, **settings})
        except PostfixUnavailable as e:
            pytest.fail(str(e))
        m, _ = vs.run_mailflow(mailflow_bin(), postfix.port, dns.server, pki.ca_file)
        t, took = vs.run_testssl(postfix.port, pki.ca_file, work)
        cells, differ = vs.row(target, m, t)
        assert differ == [], f"Mailflow {m}\ntestssl {t}"
        # What the two agree on is what the target was made to be.
        assert m["protocols"] == ["TLSv1.2", "TLSv1.3"]
        if target == "anonymous":
            assert "anon" in m["weak"] and "anon" in t["weak"]
            assert m["trust"] and m["chain"] and m["name"] and not m["expired"]
        else:
            assert not m["chain"] and not m["trust"]
            assert "chain incomplete" in t["raw"]["cert_chain_of_trust"]
        print(f"{target}: testssl took {took:.1f} s")
    finally:
        if postfix is not None:
            postfix.stop()
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)
