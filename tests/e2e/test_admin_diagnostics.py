"""The admin center's checks (`GET /api/v1/check/...` and the Diagnostics page) against a live Mailflow
whose `dns.servers` is a loopback dnsmasq: the API answers `mailflow check --json`'s schema-valid
report for Mailflow's own SMTP listener, a tenant-scoped token gets 403, a bad target is 400, and the
page in headless Chromium shows the findings grouped by category (screenshot in the output folder)."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import jsonschema
import pytest
from selenium.webdriver.common.by import By

from dnsutil import Dnsmasq
from mfutil import REPO_ROOT
from test_admin_web import click

SCHEMA = json.loads((REPO_ROOT / "docs" / "check.schema.json").read_text())
OUTPUT = Path(os.environ.get("MAILFLOW_TEST_OUTPUT", REPO_ROOT / "tests" / "e2e" / "output"))


# An Ed25519 DKIM key record (RFC 8463): 32 octets of public key.
ED25519_KEY = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


@pytest.fixture(scope="module")
def diag(tmp_path_factory):
    from conftest import _factory, _teardown
    work = tmp_path_factory.mktemp("admin-diagnostics")
    dns = Dnsmasq(["--host-record=mx.diag.test,127.0.0.1", "--auth-zone=test,127.0.0.0/24",
                   f"--txt-record=sel1._domainkey.dkim.test,{ED25519_KEY}",
                   "--txt-record=old._domainkey.dkim.test,v=DKIM1; p="], log_dir=work).start()
    start, servers = _factory(work)
    try:
        srv = start({"dns": {"servers": [dns.server]}})
        operator = srv.add_token("ops")
        r = srv.cli("admin", "token", "add", "contoso-admin", "--tenant", "contoso")
        tenant = r.stdout.strip()
        assert r.returncode == 0 and tenant.startswith("mf_"), r.stdout + r.stderr
        yield srv, operator, tenant
    finally:
        _teardown(servers)
        dns.stop()


def test_api_checks_mailflows_own_listener(diag):
    srv, operator, tenant = diag
    status, headers, body = srv.api("GET", f"/api/v1/check/host/127.0.0.1?port={srv.port}", operator)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    report = json.loads(body)
    jsonschema.validate(report, SCHEMA)
    assert report["kind"] == "host" and report["target"] == f"127.0.0.1:{srv.port}"
    checks = {f["check"]: f["severity"] for f in report["findings"]}
    assert checks.get("smtp.banner") == "ok", checks
    assert "starttls.offered" in checks or any(c.startswith("starttls.") for c in checks), checks
    assert any(c.startswith("tls.version.") for c in checks), checks

    # By name, resolved through the configured dnsmasq (nothing else is asked).
    status, _, body = srv.api("GET", f"/api/v1/check/host/mx.diag.test?port={srv.port}", operator)
    assert status == 200, body
    named = json.loads(body)
    jsonschema.validate(named, SCHEMA)
    assert any(f["check"] == "address.records" and f["severity"] == "ok" for f in named["findings"]), named

    status, _, body = srv.api("GET", "/api/v1/check/ip/127.0.0.1", operator)
    assert status == 200, body
    jsonschema.validate(json.loads(body), SCHEMA)


def test_api_ip_check_asks_the_configured_blocklists(mailflow_server, tmp_path):
    """The admin API's `check ip` asks the zones of `diagnostics.blocklists`, as they are after a reload."""
    import signal
    import time
    import yaml
    dns = Dnsmasq(["--host-record=9.0.0.127.listed.test,127.0.0.2",
                   "--host-record=9.0.0.127.other.test,127.0.0.3"], log_dir=tmp_path).start()
    try:
        srv = mailflow_server({"dns": {"servers": [dns.server]}, "diagnostics": {"blocklists": ["listed.test"]}})
        operator = srv.add_token("ops")

        def listed() -> dict[str, str]:
            status, _, body = srv.api("GET", "/api/v1/check/ip/127.0.0.9", operator)
            assert status == 200, body
            report = json.loads(body)
            jsonschema.validate(report, SCHEMA)
            return {f["subject"]: f["summary"] for f in report["findings"] if f["check"].startswith("blocklist.")}

        assert listed() == {"listed.test": "Listed on listed.test (127.0.0.2)"}

        cfg = yaml.safe_load(srv.config_path.read_text())
        cfg["diagnostics"] = {"blocklists": ["other.test", "clean.test"]}
        before = len(srv.stderr())
        srv.config_path.write_text(yaml.safe_dump(cfg))
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "configuration reloaded" not in srv.stderr()[before:]:
            assert time.monotonic() < deadline, srv.stderr()[before:]
            time.sleep(0.05)
        assert listed() == {"other.test": "Listed on other.test (127.0.0.3)", "clean.test": "Not listed on clean.test"}
    finally:
        dns.stop()


def test_api_domain_check_with_a_dkim_selector(diag):
    """`?dkim_selector=` adds the DKIM key findings of that selector, as --dkim-selector does."""
    srv, operator, _ = diag

    def dkim(query: str) -> dict[str, tuple[str, str]]:
        status, _, body = srv.api("GET", f"/api/v1/check/domain/dkim.test?port=1{query}", operator)
        assert status == 200, body
        report = json.loads(body)
        jsonschema.validate(report, SCHEMA)
        return {f["check"]: (f["severity"], f["subject"]) for f in report["findings"] if f["check"].startswith("dkim.")}

    assert dkim("") == {}
    good = dkim("&dkim_selector=Sel1")
    assert good.get("dkim.key") == ("ok", "sel1._domainkey.dkim.test"), good
    revoked = dkim("&dkim_selector=old")
    assert revoked.get("dkim.key", ("",))[0] == "failure", revoked
    for path, message in (
        ("/api/v1/check/domain/dkim.test?dkim_selector=bad!sel", "dkim_selector must be"),
        ("/api/v1/check/domain/dkim.test?dkim_selector=a..b", "dkim_selector must be"),
        (f"/api/v1/check/host/127.0.0.1?port={srv.port}&dkim_selector=sel1", "only a domain check"),
        ("/api/v1/check/ip/127.0.0.1?dkim_selector=sel1", "only a domain check"),
    ):
        status, _, body = srv.api("GET", path, operator)
        assert status == 400 and message in body.decode(), (path, status, body)


def test_api_refuses_tenant_tokens_and_bad_targets(diag):
    srv, operator, tenant = diag
    status, _, body = srv.api("GET", f"/api/v1/check/host/127.0.0.1?port={srv.port}", tenant)
    assert status == 403, body
    assert "operator token" in json.loads(body)["error"]["message"]
    for path, words in [
        ("/api/v1/check/domain/bad_name.test", "a domain check needs a hostname"),
        ("/api/v1/check/host/127.0.0.1?port=70000", "port must be a number from 1 to 65535"),
        ("/api/v1/check/ip/mx.diag.test", "an ip check needs an IPv4 or IPv6 address"),
    ]:
        status, _, body = srv.api("GET", path, operator)
        assert status == 400, (path, body)
        assert json.loads(body)["error"]["message"].startswith(words), body
    status, _, _ = srv.api("GET", "/api/v1/check/ip/127.0.0.1")
    assert status == 401


def test_diagnostics_page_in_chromium(diag, browser):
    srv, operator, _ = diag
    browser.get(srv.admin_url + "login")
    browser.find_element(By.ID, "token").send_keys(operator)
    click(browser, browser.find_element(By.ID, "signin"))
    click(browser, browser.find_element(By.LINK_TEXT, "Diagnostics"))
    assert browser.current_url.rstrip("/").endswith("/diagnostics")

    browser.find_element(By.CSS_SELECTOR, "#kind option[value=host]").click()
    browser.find_element(By.ID, "target").send_keys("127.0.0.1")
    browser.find_element(By.ID, "port").send_keys(str(srv.port))
    click(browser, browser.find_element(By.ID, "run-check"))

    query = urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query)
    assert query["kind"] == ["host"] and query["target"] == ["127.0.0.1"], browser.current_url
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.get_attribute("data-verdict") in ("ok", "info", "warning", "failure")
    assert f"127.0.0.1:{srv.port}" in verdict.text
    categories = [s.get_attribute("data-category") for s in browser.find_elements(By.CSS_SELECTOR, "section.check-group")]
    assert "smtp" in categories and "tls" in categories, categories
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.finding")
    assert rows and all(r.find_element(By.CSS_SELECTOR, ".badge").text.lower() == r.get_attribute("data-severity")
                        for r in rows)
    banner = browser.find_element(By.CSS_SELECTOR, "tr.finding[data-check='smtp.banner']")
    assert banner.get_attribute("data-severity") == "ok"
    assert browser.find_element(By.ID, "target").get_attribute("value") == "127.0.0.1"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(OUTPUT / "admin-diagnostics.png"))

    # Markup in the target is shown as text, never run: a 400 with the form refilled.
    hostile = '"><script>document.title="pwned"</script>'
    browser.get(srv.admin_url + "diagnostics?kind=domain&target=" + urllib.parse.quote(hostile))
    assert browser.title != "pwned"
    assert "a domain check needs a hostname" in browser.find_element(By.ID, "check-error").text
    assert browser.find_element(By.ID, "target").get_attribute("value") == hostile
