"""Helpers of the run monitor's tests: the monitor served from a thread on a free port, a
headless Chromium driven by Selenium (the Debian packages, never a download), and a
PostgreSQL database of the tests' own on the lab's server."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgtest import conninfo, scratch_database
from sqlalchemy.engine import URL

from nvmlab.jobs.monitor import bind

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


class ServedApp:
    """An ASGI app served by uvicorn from a thread, on a free port of 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = bind("127.0.0.1", 0)
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive(), "the monitor's server thread ended at start"
            assert time.monotonic() < deadline, "the monitor's server did not start in 10 s"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium under Selenium, from the Debian packages ``chromium`` and
    ``chromium-driver`` (paths given, so Selenium Manager never downloads anything); a
    missing package FAILS the test, naming what to install."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: the monitor's browser tests need the Debian "
            "packages chromium and chromium-driver (apt-get install -y chromium "
            "chromium-driver); they are never skipped",
            pytrace=False,
        )
    with tempfile.TemporaryDirectory(prefix="nvmlab-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000",
            f"--user-data-dir={profile}",
        ):  # fmt: skip
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.set_page_load_timeout(20)
            yield driver
        finally:
            driver.quit()


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """The URL of a new database on the lab's PostgreSQL server (dropped afterwards), its
    connections in a schema of their own (``options=-csearch_path=...``, as the storage
    tests do), still empty. An unreachable server FAILS the test with a clear message."""
    with scratch_database("nvmlab_test_monitor", who="The monitor's PostgreSQL tests") as db:
        with psycopg.connect(conninfo(db), autocommit=True) as conn:
            conn.execute('CREATE SCHEMA "lab"')
        url = db.update_query_dict({"options": "-csearch_path=lab"})
        yield url.render_as_string(hide_password=False)


def wait_for(what: str, check: Any, timeout_s: float = 15.0, every_s: float = 0.1) -> Any:
    """Call ``check()`` until it returns something true (returned); fail after ``timeout_s``
    naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - a page in between two renderings
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last seen: {last!r})")
