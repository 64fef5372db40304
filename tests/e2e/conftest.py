"""Fixtures for Mailflow's end-to-end suite: real `mailflow serve` processes in temporary folders.

`mailflow_server(overrides)` starts a server with the default test config merged with `overrides`
and returns a `MailflowServer` that unpacks as `(port, data_dir, proc)`; every server started this
way is killed at teardown, whatever the test did. `server` is one such server shared by a module.

With `MAILFLOW_E2E_STORAGE=postgres` every server whose config names no `storage` keeps its queue
in a throw-away PostgreSQL (one server for the session, a fresh database per mailflow server):
`scripts/test` runs the storage-agnostic files a second time this way (issue 16).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# mailflow_testlib (a throw-away Postfix instance, the mailflow process), shared with the bench scripts.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lib"))

from mfutil import MailflowServer, default_config, mailflow_bin, merge_config  # noqa: E402


def pytest_sessionstart(session):
    binary = mailflow_bin()
    if not os.access(binary, os.X_OK):
        raise pytest.UsageError(
            f"mailflow binary not found at {binary}: run `swift build` or set MAILFLOW_BIN")


_shared_postgres = []


def _storage_under_test(name: str) -> dict:
    """`storage` for a server named `name` when the suite runs against PostgreSQL, else nothing."""
    if os.environ.get("MAILFLOW_E2E_STORAGE", "sqlite") != "postgres":
        return {}
    from pgutil import Postgres
    if not _shared_postgres:
        _shared_postgres.append(Postgres().start())
    pg = _shared_postgres[0]
    return {"storage": {"postgres": {"url": pg.create_database(name)}}}


def pytest_sessionfinish(session, exitstatus):
    for pg in _shared_postgres:
        pg.stop()


_database_counter = [0]


def storage_under_test() -> dict:
    """`storage` for one more mailflow server (a fresh database under MAILFLOW_E2E_STORAGE=postgres),
    else nothing: for tests that build a `MailflowServer` themselves (libfaketime, a fixture of their own)."""
    _database_counter[0] += 1
    return _storage_under_test(f"mf_e2e_{_database_counter[0]}")


def _factory(base_dir: Path):
    servers: list[MailflowServer] = []
    counter = [0]

    def start(overrides: dict | None = None, start: bool = True) -> MailflowServer:
        counter[0] += 1
        config = merge_config(default_config(), overrides)
        if "storage" not in config:
            config.update(storage_under_test())
        srv = MailflowServer(base_dir / f"server{counter[0]}", config)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    return start, servers


def _teardown(servers: list[MailflowServer]) -> None:
    for s in servers:
        try:
            s.kill()
        except Exception:  # noqa: BLE001 - teardown must reach every server
            pass


@pytest.fixture
def mailflow_server(tmp_path):
    """Factory: `mailflow_server({'limits': {...}})` -> a running MailflowServer; killed at teardown."""
    start, servers = _factory(tmp_path)
    yield start
    _teardown(servers)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server with the default test config, shared by the tests of a module."""
    start, servers = _factory(tmp_path_factory.mktemp("shared"))
    srv = start()
    yield srv
    _teardown(servers)


@pytest.fixture(scope="session")
def need_tool():
    def check(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            pytest.fail(f"{name} is not installed (apt-get install -y {name})")
        return path

    return check


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through chromedriver (Selenium), one per test module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromedriver are needed (apt-get install -y chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    # An explicit driver: Selenium never tries to download one.
    d = webdriver.Chrome(service=Service(driver_path), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()
