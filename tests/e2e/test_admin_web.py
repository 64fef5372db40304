"""The web admin center in a real browser: Debian's headless Chromium (driven through chromedriver by
Selenium) signs in with an admin token, loads every page and checks what it shows against the live
server and its API; a screenshot of the overview is written to the output folder
($MAILFLOW_TEST_OUTPUT, default tests/e2e/output)."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

from mfutil import REPO_ROOT, SMTPClient, send_mail, wait_for

OUTPUT = Path(os.environ.get("MAILFLOW_TEST_OUTPUT", REPO_ROOT / "tests" / "e2e" / "output"))


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    from conftest import _factory, _teardown
    start, servers = _factory(tmp_path_factory.mktemp("admin-web"))
    srv = start({
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_intervals": ["1h"], "concurrency": 4},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice", "bob"]},
            {"name": "src", "domains": ["src.test"], "mailboxes": ["sender"],
             "outbound_connector": {"smart_host": "127.0.0.1:1", "tls": "disabled"}},
        ],
        "forests": [{"name": "NAMPR01", "region": "nam", "tenants": ["contoso"], "max_connections": 4}],
    })
    token = srv.add_token("alice")
    yield srv, token
    _teardown(servers)


def sign_in(browser, srv, token):
    browser.get(srv.admin_url + "login")
    browser.find_element(By.ID, "token").send_keys(token)
    click(browser, browser.find_element(By.ID, "signin"))
    wait_for(lambda: browser.current_url == srv.admin_url, what="the overview after sign-in")


def click(browser, element):
    """Click something that loads a new page, and wait until the new page has loaded. The old page is
    marked first; the new one has no mark. (Selenium's staleness check races chromedriver during a
    navigation: it can fail with a generic error instead of reporting the element stale.)"""
    browser.execute_script("window.__mailflowOldPage = true")
    element.click()

    def loaded(d):
        return d.execute_script("return window.__mailflowOldPage !== true && document.readyState === 'complete'")
    WebDriverWait(browser, 20, poll_frequency=0.1, ignored_exceptions=(WebDriverException,)).until(loaded)


def text(browser, css):
    return browser.find_element(By.CSS_SELECTOR, css).text


def test_pages_need_a_signed_in_session(browser, web):
    srv, _ = web
    browser.delete_all_cookies()
    for page in ("", "queue", "trace", "forests"):
        browser.get(srv.admin_url + page)
        assert browser.current_url == srv.admin_url + "login", page
    browser.find_element(By.ID, "token").send_keys("mf_this-is-not-a-token")
    click(browser, browser.find_element(By.ID, "signin"))
    assert "not valid" in text(browser, "#login-error")
    assert browser.current_url == srv.admin_url + "login"
    # No page carries a script: the admin center works without JavaScript.
    assert "<script" not in browser.page_source.lower()


def test_overview_queue_message_trace_forests(browser, web):
    srv, token = web
    stuck = send_mail(srv, "sender@src.test", ["far@remote.test"], "web-stuck", subject="Stuck for the web")
    for i in range(4):
        send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], f"web-in-{i}", subject=f"Inbound {i}")
    wait_for(lambda: any(e["kind"] == "deferred"
                         for e in srv.api_json("GET", f"/api/v1/queue/{stuck}", token)["events"]),
             what="the stuck message's deferral")
    wait_for(lambda: srv.api_json("GET", "/api/v1/overview", token)["activity"][-1]["delivered"] >= 4,
             what="four deliveries")

    sign_in(browser, srv, token)

    # Overview: the cards and the charts show what the API reports.
    api = srv.api_json("GET", "/api/v1/overview", token)
    cards = {c.get_attribute("data-card"): c.find_element(By.CLASS_NAME, "n").text
             for c in browser.find_elements(By.CSS_SELECTOR, "#cards .card")}
    assert cards["queued"] == str(api["queue"]["queuedMessages"]) == "1"
    assert cards["received"] == "5" and cards["delivered"] == "4", cards
    assert cards["sessions"].endswith("/ 5000")
    received = [float(b.get_attribute("data-value")) for b in
                browser.find_elements(By.CSS_SELECTOR, '#chart-messages rect.bar[data-series="Received"]')]
    assert len(received) == 24 and sum(received) == sum(b["received"] for b in api["activity"]) == 5
    deferral = browser.find_elements(By.CSS_SELECTOR, "#chart-deferral rect.bar")
    assert len(deferral) == 24 and float(deferral[-1].get_attribute("data-value")) > 0
    errors = browser.find_elements(By.CSS_SELECTOR, "#errors-table tbody tr")
    assert len(errors) == 1 and "Deferred" in errors[0].text and "4.4.1" in errors[0].text, [e.text for e in errors]
    queue_line = browser.find_element(By.CSS_SELECTOR, "#chart-queue polyline.line")
    assert float(queue_line.get_attribute("data-last")) == 1
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "admin-overview.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    # Queue: the stuck message, then its page; hold and release from the page.
    click(browser, browser.find_element(By.LINK_TEXT, "Queue"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#queue-table tbody tr")
    assert len(rows) == 1 and stuck in rows[0].text and "far@remote.test" in rows[0].text
    assert "remote.test" in text(browser, "#shape-table")
    click(browser, browser.find_element(By.LINK_TEXT, stuck))
    assert text(browser, "h1") == f"Message {stuck}"
    assert "Stuck for the web" in text(browser, "#envelope")
    assert "4.4.1" in text(browser, "#recipients")
    assert "Subject: Stuck for the web" in text(browser, "#headers")
    click(browser, browser.find_element(By.ID, "action-hold"))
    assert text(browser, "#notice") == "Done: hold."
    assert "Held" in text(browser, "#recipients")
    assert srv.api_json("GET", f"/api/v1/queue/{stuck}", token)["state"] == "held"
    assert "hold by web:alice" in text(browser, "#events")
    click(browser, browser.find_element(By.ID, "action-release"))
    assert text(browser, "#notice") == "Done: release."
    assert srv.api_json("GET", f"/api/v1/queue/{stuck}", token)["state"] == "queued"

    # Message trace: search by sender through the form.
    click(browser, browser.find_element(By.LINK_TEXT, "Message trace"))
    browser.find_element(By.NAME, "sender").send_keys("anne@elsewhere")
    click(browser, browser.find_element(By.ID, "search"))
    assert "sender=anne%40elsewhere" in browser.current_url
    assert text(browser, "#result-count") == "4 result(s)"
    trace_rows = browser.find_elements(By.CSS_SELECTOR, "#trace-table tbody tr")
    assert all("Delivered" in r.text and "alice@contoso.test" in r.text for r in trace_rows)
    browser.get(srv.admin_url + "trace?" + urllib.parse.urlencode({"status": "pending", "direction": "outbound"}))
    assert text(browser, "#result-count") == "1 result(s)" and "far@remote.test" in text(browser, "#trace-table")
    browser.get(srv.admin_url + "trace?status=bogus")
    assert "status must be one of" in text(browser, ".error")

    # Forests and tenants, with a live session counted against its forest.
    with SMTPClient(srv.port) as held_open:
        held_open.ehlo()
        assert held_open.cmd("MAIL FROM:<anne@elsewhere.test>").code == 250
        assert held_open.cmd("RCPT TO:<bob@contoso.test>").code == 250
        click(browser, browser.find_element(By.LINK_TEXT, "Forests & tenants"))
        forest = browser.find_element(By.CSS_SELECTOR, 'tr[data-forest="NAMPR01"]')
        cells = [c.text for c in forest.find_elements(By.TAG_NAME, "td")]
        assert cells[0] == "NAMPR01" and cells[1] == "nam" and cells[2].strip() == "1" and cells[3] == "4", cells
        tenant = browser.find_element(By.CSS_SELECTOR, 'tr[data-tenant="contoso"]')
        cells = [c.text for c in tenant.find_elements(By.TAG_NAME, "td")]
        assert cells[2] == "NAMPR01" and cells[3] == "4", cells
        assert "127.0.0.1" in text(browser, "#sources-table")

    # Sign out: the session is gone.
    click(browser, browser.find_element(By.XPATH, "//button[text()='Sign out']"))
    assert browser.current_url == srv.admin_url + "login"
    browser.get(srv.admin_url + "queue")
    assert browser.current_url == srv.admin_url + "login"


def test_forms_need_the_session_csrf_token(browser, web):
    srv, token = web
    stuck = send_mail(srv, "sender@src.test", ["far@remote.test"], "csrf")
    sign_in(browser, srv, token)
    cookie = browser.get_cookie("mailflow_session")
    assert cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"
    headers = {"Cookie": f"mailflow_session={cookie['value']}", "Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"", b"csrf=wrong"):
        status, _, _ = srv.api("POST", f"/queue/{stuck}/hold", body=body, headers=headers)
        assert status == 403
    assert srv.api_json("GET", f"/api/v1/queue/{stuck}", token)["state"] == "queued"
    # A page's own form carries the right token.
    browser.get(srv.admin_url + f"queue/{stuck}")
    click(browser, browser.find_element(By.ID, "action-hold"))
    assert srv.api_json("GET", f"/api/v1/queue/{stuck}", token)["state"] == "held"
    # The pages are not framed, sniffed or scripted.
    status, h, _ = srv.api("GET", "/queue", headers={"Cookie": f"mailflow_session={cookie['value']}"})
    assert status == 200 and h["X-Frame-Options"] == "DENY" and "default-src 'none'" in h["Content-Security-Policy"]
    # Removing the token ends its browser sessions.
    assert srv.cli("admin", "token", "remove", "alice").returncode == 0
    browser.get(srv.admin_url + "queue")
    assert browser.current_url == srv.admin_url + "login"


def test_delete_from_the_message_page_and_notices_from_fixed_codes_only(browser, web):
    srv, _ = web
    token = srv.add_token("bea")  # its own token: another test removes alice's
    browser.delete_all_cookies()
    sign_in(browser, srv, token)
    qid = send_mail(srv, "sender@src.test", ["far@remote.test"], "delete from the web")
    browser.get(srv.admin_url + f"queue/{qid}")
    click(browser, browser.find_element(By.ID, "action-delete"))
    assert browser.current_url == srv.admin_url + "queue?done=delete"
    assert text(browser, "#notice") == "Done: the message was deleted."
    assert srv.api_json("GET", f"/api/v1/queue/{qid}", token)["state"] == "done"
    # A link cannot make the queue pages say something of its own: unknown codes show no notice.
    lure = "Your session is locked: call +1 555 0100"
    for page in ("queue", f"queue/{qid}"):
        browser.get(srv.admin_url + page + "?" + urllib.parse.urlencode({"done": lure}))
        assert browser.find_elements(By.ID, "notice") == [], page
        assert lure not in browser.page_source, page
