"""The admin center's service-health pages in a real browser (Debian's headless Chromium through
chromedriver and Selenium), on a live server with the monitor running: the Service health page
(nav link, one card per service), the Report an issue form (its errors, and three tenants' reports
opening an advisory), the issue page with its timeline chart and posts, and the forms an admin
works an issue with (post, status, post-incident review). Hostile text stays text. Screenshots of
the Service health page and of the issue page are written to the output folder
($MAILFLOW_TEST_OUTPUT, default tests/e2e/output): health.png and health-issue.png."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from mfutil import REPO_ROOT, wait_for

OUTPUT = Path(os.environ.get("MAILFLOW_TEST_OUTPUT", REPO_ROOT / "tests" / "e2e" / "output"))
HOSTILE_TENANT = "<b>woodgrove</b>"
HOSTILE_POST = "<script>alert('post')</script> rerouting & retrying"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    from conftest import _factory, _teardown
    start, servers = _factory(tmp_path_factory.mktemp("health-web"))
    srv = start({
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice"]},
            {"name": "fabrikam", "domains": ["fabrikam.test"], "catch_all": True},
        ],
        "forests": [{"name": "NAMPR01", "region": "nam", "tenants": ["contoso", "fabrikam"], "max_connections": 10}],
    })
    token = srv.add_token("alice")
    yield srv, token
    _teardown(servers)


def click(browser, element):
    """Click something that loads a new page and wait for it (as in test_admin_web.py)."""
    browser.execute_script("window.__mailflowOldPage = true")
    element.click()

    def loaded(d):
        return d.execute_script("return window.__mailflowOldPage !== true && document.readyState === 'complete'")
    WebDriverWait(browser, 20, poll_frequency=0.1, ignored_exceptions=(WebDriverException,)).until(loaded)


def text(browser, css):
    return browser.find_element(By.CSS_SELECTOR, css).text


def sign_in(browser, srv, token):
    browser.get(srv.admin_url + "login")
    browser.find_element(By.ID, "token").send_keys(token)
    click(browser, browser.find_element(By.ID, "signin"))
    wait_for(lambda: browser.current_url == srv.admin_url, what="the overview after sign-in")


def report(browser, tenant, region, what, error=""):
    click(browser, browser.find_element(By.ID, "report-link"))
    assert browser.current_url.endswith("/health/report")
    for field, value in (("report-tenant", tenant), ("report-region", region), ("report-text", what),
                         ("report-errortext", error)):
        el = browser.find_element(By.ID, field)
        el.clear()
        el.send_keys(value)
    click(browser, browser.find_element(By.ID, "send-report"))


def test_sign_in_page_shows_only_known_error_codes(browser, web):
    srv, _ = web
    browser.delete_all_cookies()
    browser.get(srv.admin_url + "login?error=Your%20account%20is%20locked.%20Call%20%2B1-555-0100")
    assert browser.find_elements(By.ID, "login-error") == []
    assert "locked" not in browser.page_source
    browser.get(srv.admin_url + "login?error=session_expired")
    assert text(browser, "#login-error") == "Your session has ended; sign in again."
    # The health pages need a session too.
    for page in ("health", "health/report", "health/issues/MF1"):
        browser.get(srv.admin_url + page)
        assert browser.current_url == srv.admin_url + "login", page


def test_service_health_page_report_form_and_issue_page(browser, web):
    srv, token = web
    sign_in(browser, srv, token)
    click(browser, browser.find_element(By.LINK_TEXT, "Service health"))
    assert browser.current_url == srv.admin_url + "health"
    assert browser.find_element(By.LINK_TEXT, "Service health").get_attribute("class") == "active"
    cards = {c.get_attribute("data-service"): c.get_attribute("data-status")
             for c in browser.find_elements(By.CSS_SELECTOR, "#services .card")}
    assert cards == {"Inbound mail flow": "serviceOperational", "Outbound mail flow": "serviceOperational",
                     "Admin": "serviceOperational"}, cards
    assert text(browser, "#open-issues tbody") == "No open issues."

    # A report that is refused keeps what was typed, as text.
    report(browser, "contoso", "   ", "</textarea><b>bold?</b>")
    assert browser.current_url.endswith("/health/report")
    assert text(browser, "#report-error") == "region must contain more than white space"
    assert browser.find_element(By.ID, "report-text").get_attribute("value") == "</textarea><b>bold?</b>"
    assert browser.find_elements(By.CSS_SELECTOR, "#report-form b") == []
    click(browser, browser.find_element(By.LINK_TEXT, "Service health"))

    # Three tenants of a region report: the monitor opens an advisory within seconds.
    for tenant in ("contoso", "fabrikam", HOSTILE_TENANT):
        report(browser, tenant, "nam", "Mail from our partners bounces", "451 4.7.500 Server busy")
        assert browser.current_url == srv.admin_url + "health?done=report"
        assert text(browser, "#notice").startswith("Thank you: the report was received.")

    def listed():
        browser.get(srv.admin_url + "health")
        rows = browser.find_elements(By.CSS_SELECTOR, "#open-issues tbody tr[data-issue]")
        return rows[0].get_attribute("data-issue") if rows else None
    iid = wait_for(listed, timeout=60, what="the reported issue on the Service health page")
    api = srv.api_json("GET", f"/api/v1/health/issues/{iid}", token)
    assert api["origin"] == "customer" and sorted(api["scope"]["tenants"]) == sorted(
        ["contoso", "fabrikam", HOSTILE_TENANT])
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, f'tr[data-issue="{iid}"] td')]
    assert cells[0] == iid and cells[1] == api["title"], cells
    assert cells[2:5] == ["Advisory", "Investigating", "Inbound mail flow"], cells
    assert HOSTILE_TENANT in cells[6] and cells[7] == "3", cells  # the tenant's name as text
    assert browser.find_elements(By.CSS_SELECTOR, "#open-issues b") == []
    inbound = browser.find_element(By.CSS_SELECTOR, '#services .card[data-service="Inbound mail flow"]')
    assert inbound.get_attribute("data-status") == "investigating" and iid in inbound.text
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "health.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    # The issue page: fields, scope, the timeline, the opening post.
    click(browser, browser.find_element(By.LINK_TEXT, iid))
    assert text(browser, "h1") == f"{iid}: {api['title']}"
    fields = {r.find_element(By.TAG_NAME, "th").text: r.find_element(By.TAG_NAME, "td").text
              for r in browser.find_elements(By.CSS_SELECTOR, "#issue-fields tr")}
    assert fields["Classification"] == "Advisory" and fields["Origin"] == "customer", fields
    assert fields["User reports"] == "3 (nam: 3)", fields
    # Reports only: no failing shares or failure counts, the reports' error text instead.
    assert "failing share" not in text(browser, "#issue-scope")
    assert "451 4.7.500 Server busy" in text(browser, "#issue-evidence")
    assert "Error texts in the reports" in text(browser, "#issue-evidence")
    assert HOSTILE_TENANT in text(browser, "#issue-scope")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-timeline circle.mark")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-reports rect.bar")) == 1
    assert text(browser, "#review-unavailable").startswith("A post-incident review is published once")

    # A post through the form: on top, as preformatted text.
    browser.find_element(By.ID, "post-text").send_keys(HOSTILE_POST + "\nNext update in 30 minutes.")
    click(browser, browser.find_element(By.ID, "add-post"))
    assert browser.current_url.endswith(f"/health/issues/{iid}?done=posts")
    assert text(browser, "#notice") == "Your post was added."
    first = browser.find_elements(By.CSS_SELECTOR, "#posts article.post")[0]
    assert first.get_attribute("data-kind") == "regular" and "Admin post · web:alice" in first.text
    assert first.find_element(By.TAG_NAME, "pre").text == HOSTILE_POST + "\nNext update in 30 minutes."
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-timeline circle.mark")) == 2
    assert browser.find_elements(By.CSS_SELECTOR, "#posts script") == []

    # The status form, then the review form with the monitor's draft in it.
    Select(browser.find_element(By.ID, "status-select")).select_by_value("serviceRestored")
    click(browser, browser.find_element(By.ID, "set-status"))
    assert text(browser, "#notice") == "The status was changed."
    draft = browser.find_element(By.ID, "review-text").get_attribute("value")
    assert draft.startswith(f"Post-incident review for {iid}: ") and "Timeline:" in draft
    click(browser, browser.find_element(By.ID, "publish-review"))
    assert text(browser, "#notice") == "The post-incident review was published."
    first = browser.find_elements(By.CSS_SELECTOR, "#posts article.post")[0]
    assert first.get_attribute("data-kind") == "postIncidentReview"
    assert browser.find_elements(By.ID, "status-form") == []
    # The whole page in one picture: a window as tall as the page.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(1000, height + 140), 6000))
    shot = OUTPUT / "health-issue.png"
    assert browser.save_screenshot(str(shot))
    browser.set_window_size(1280, 1000)
    done = srv.api_json("GET", f"/api/v1/health/issues/{iid}", token)
    assert done["status"] == "postIncidentReviewPublished"
    assert [p["author"] for p in done["posts"]][-3:] == ["web:alice"] * 3
    # No page carries a script.
    assert "<script" not in browser.page_source.replace("&lt;script", "")

    # The ended issue is listed under the ended ones.
    click(browser, browser.find_element(By.LINK_TEXT, "Service health"))
    assert browser.find_elements(By.CSS_SELECTOR, f'#ended-issues tr[data-issue="{iid}"]')
    assert text(browser, "#open-issues tbody") == "No open issues."


def test_health_forms_need_the_session_csrf_token(browser, web):
    srv, token = web
    sign_in(browser, srv, token)
    cookie = browser.get_cookie("mailflow_session")
    headers = {"Cookie": f"mailflow_session={cookie['value']}", "Content-Type": "application/x-www-form-urlencoded"}
    before = srv.api_json("GET", "/api/v1/health/issues", token)["issues"]
    for path, body in [("/health/report", b"tenant=a&region=b&text=c"), ("/health/report", b"csrf=x&tenant=a"),
                       ("/health/issues/MF1/posts", b"text=x"), ("/health/issues/MF1/status", b"status=falsePositive"),
                       ("/health/issues/MF1/review", b"")]:
        status, h, _ = srv.api("POST", path, body=body, headers=headers)
        assert status == 403, (path, status)
        assert h["X-Frame-Options"] == "DENY"
    assert srv.api_json("GET", "/api/v1/health/issues", token)["issues"] == before
