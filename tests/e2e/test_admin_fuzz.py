"""Property-based testing of the admin API from its own OpenAPI document (schemathesis): generated
valid and invalid requests, including stateful sequences that follow the links it infers (list the
queue, then act on an ID it returned). Every check must pass: no server error, status codes and
content types as documented, responses valid against their schemas, invalid input refused, an
undeclared method answered 405. A service-health issue exists (three tenants' reports open one) so
the generated requests on `/api/v1/health/issues/{id}` reach a real issue through the document's
links, not only the 404 of an unknown one."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from mailflow_testlib.processes import free_port
from mfutil import REPO_ROOT, send_mail, wait_for


def test_schemathesis_finds_nothing(mailflow_server):
    st = shutil.which("schemathesis")
    if st is None:
        pytest.fail("schemathesis is not installed (pip install -r tests/e2e/requirements.txt)")
    srv = mailflow_server({
        # Nothing here looks a name up off loopback (see the exclusion of the check routes below).
        "dns": {"servers": [f"127.0.0.1:{free_port()}"], "timeout": "1s", "attempts": 1},
        "relay": {"trusted_networks": ["127.0.0.0/8"]},
        "delivery": {"retry_intervals": ["1h"]},
        "tenants": [
            {"name": "contoso", "domains": ["contoso.test"], "mailboxes": ["alice"]},
            {"name": "src", "domains": ["src.test"], "mailboxes": ["sender"],
             "outbound_connector": {"smart_host": "127.0.0.1:1", "tls": "disabled"}},
        ],
    })
    token = srv.add_token("fuzz")
    # Something in every state for the generated requests to find.
    for i in range(5):
        send_mail(srv, "sender@src.test", ["far@remote.test"], f"fuzz-out-{i}")
        send_mail(srv, "anne@elsewhere.test", ["alice@contoso.test"], f"fuzz-in-{i}")
    for tenant in ("contoso", "src", "woodgrove"):
        status, _, body = srv.api("POST", "/api/v1/health/reports", token, headers={"Content-Type": "application/json"},
                                  body=json.dumps({"tenant": tenant, "region": "nam", "text": "mail bounces"}).encode())
        assert status == 202, body
    wait_for(lambda: srv.api_json("GET", "/api/v1/health/issues", token)["issues"], timeout=60,
             what="a service-health issue from the reports")
    r = subprocess.run(
        [st, "run", str(REPO_ROOT / "docs" / "openapi.yaml"), "--url", srv.admin_url.rstrip("/"),
         "--header", f"Authorization: Bearer {token}", "--max-examples", "25", "--seed", "1",
         "--checks", "all", "--request-timeout", "10", "--workers", "1", "--no-color",
         # The diagnostics routes probe whatever host or address they are given: generated targets
         # would reach off loopback. tests/e2e/test_admin_diagnostics.py and test_admin_api.py cover them.
         # The users routes: a schema-valid address outside every tenant's domains is rightly a 400, which
         # schemathesis counts as a failure, and each accepted one costs a PBKDF2; UsersAPITests and
         # tests/e2e/test_submission.py cover them.
         "--exclude-path-regex", "^/api/v1/(check|users)"],
        capture_output=True, text=True, timeout=600, cwd=srv.workdir)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "passed" in r.stdout
    assert srv.running(), srv.stderr()
