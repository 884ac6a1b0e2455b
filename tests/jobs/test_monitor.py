"""``nvmlab monitor``: the lab's read-only web page, checked in a real headless Chromium.

A results database is seeded by really running a small job (map, tune, report) that is
stopped inside its tune step and resumed, so it holds a resume chain and a report. The page
lists those runs, follows a job started meanwhile as its units advance (no reload), opens
a run's report and shows its plots. The monitor's connection cannot write (SQLite and
PostgreSQL); off loopback it needs a token; no page or banner shows a database password; a
report file outside the run's report folder is never served.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobhelp import write_job
from monitorhelp import ServedApp, chromium, pg_schema_url, wait_for
from selenium.webdriver.common.by import By
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from nvmlab.cli import main
from nvmlab.jobs.jobfile import load_job_file
from nvmlab.jobs.monitor import create_app, lab_state, open_read_only, run_state
from nvmlab.jobs.runner import run_job
from nvmlab.storage import open_database
from nvmlab.storage.models import Chip, Run
from nvmlab.storage.runs import finish_run, start_run

pytestmark = pytest.mark.timeout(120)

STEPS = """
[[steps]]
kind = "map"

[[steps]]
kind = "tune"
targets = "targets.npy"

[[steps]]
kind = "report"
"""
#: A job long enough to watch (a 12 x 12 array tuned: several seconds).
TUNE_ONLY = """
[[steps]]
kind = "tune"
targets = "targets.npy"
"""
#: Unit boundaries the first run passes before it is stopped: the map step's 22 units and
#: a few of the tune step's.
STOP_AFTER_UNITS = 26


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SQLite results database holding a real job's resume chain: run 1 stopped inside
    its tune step (``aborted``), run 2 resuming it to the end, with the report."""
    folder = tmp_path_factory.mktemp("lab")
    job = load_job_file(write_job(folder, rows=4, cols=4, steps=STEPS))
    url = f"sqlite:///{folder / 'lab.sqlite'}"
    boundaries = iter(range(1, 10**6))

    def stop_inside_tune() -> str | None:
        return "test: stop inside the tune step" if next(boundaries) > STOP_AFTER_UNITS else None

    with open_database(url, create=True) as db:
        first = run_job(job, db=db, stop_check=stop_inside_tune)
        second = run_job(job, db=db, resume=first.run_id)
    assert (first.status, second.status) == ("aborted", "completed"), first.message
    return {"url": url, "folder": folder, "first": first.run_id, "second": second.run_id}


@pytest.fixture(scope="module")
def monitor(lab: dict[str, Any]) -> Iterator[ServedApp]:
    """The monitor of the seeded database, served from a thread on a free port."""
    db = open_read_only(lab["url"])
    try:
        with ServedApp(create_app(db)) as served:
            yield served
    finally:
        db.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this module at the current schema (queue tables included)."""
    with pg_schema_url() as url:
        open_database(url, create=True).close()
        yield url


def _cell(driver: Any, table: str, row: str, column: str) -> str | None:
    """The text of a cell as the page shows it now (None: no such row)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "const td = document.querySelector(arguments[0]); return td ? td.textContent : null;",
        f'table[data-rows="{table}"] tr[data-key="{row}"] td[data-key="{column}"]',
    )


def _click(driver: Any, css: str) -> None:
    """Click the element ``css`` (the tables are redrawn every second: retried on a redraw)."""

    def click() -> bool:
        driver.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait_for(f"click {css}", click, timeout_s=10)


def _loaded(driver: Any, css: str) -> list[str]:
    """The alt texts of the images ``css`` once every one has loaded and decoded (its
    natural width > 0); empty before (or when there is none)."""
    images = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " i => [i.getAttribute('alt'), i.complete, i.naturalWidth]);",
        css,
    )
    done = images and all(complete and width > 0 for _alt, complete, width in images)
    return [alt for alt, _complete, _width in images] if done else []


def test_the_page_lists_the_runs_and_opens_a_runs_report_with_its_plots(
    lab: dict[str, Any], monitor: ServedApp, browser: Any
) -> None:
    first, second = lab["first"], lab["second"]
    browser.get(monitor.url + "/")
    assert browser.find_element(By.TAG_NAME, "h2").text == "Stations and their workers"
    assert _cell(browser, "runs", f"run-{first}", "status") == "aborted"
    assert _cell(browser, "runs", f"run-{second}", "status") == "completed"
    assert _cell(browser, "runs", f"run-{second}", "chain") == f"{first} \u2192 {second}"
    assert _cell(browser, "runs", f"run-{first}", "step") == "stopped at 2 of 3: s2-tune"
    tuned = _cell(browser, "runs", f"run-{second}", "tuned") or ""
    assert re.fullmatch(r"\d+\.\d \(\d+ of 16 devices\)", tuned), tuned
    assert re.fullmatch(
        r"100\.0 \(\d+ of \d+ attempts\)",
        _cell(browser, "runs", f"run-{second}", "units_passed") or "",
    )
    assert (
        "no queue on SQLite"
        in browser.find_element(By.CSS_SELECTOR, "[data-field=queue_note]").text
    )

    # the run's page: steps with their stored summaries, the report's plots inline
    _click(browser, f'table[data-rows="runs"] tr[data-key="run-{second}"] td[data-key="run"] a')
    wait_for("the run's page", lambda: browser.current_url.endswith(f"/runs/{second}"))
    assert _cell(browser, "steps", "step-s1-map", "status") == f"completed in run {first}"
    assert _cell(browser, "steps", "step-s3-report", "status") == "completed"
    assert "pass_rate_own" in (_cell(browser, "steps", "step-s2-tune", "summary") or "")
    plots = wait_for("the report's plots loaded", lambda: _loaded(browser, ".plots img"))
    assert "tuning.png" in plots

    # the report page itself (the job's page, its plots embedded)
    _click(browser, '[data-links="pages"] a[href$="/job.html"]')
    wait_for("the report", lambda: browser.current_url.endswith(f"/runs/{second}/report/job.html"))
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Job run {second}"
    wait_for("the report's embedded plots loaded", lambda: _loaded(browser, "img"))


def test_a_running_jobs_progress_advances_on_the_page_without_a_reload(
    lab: dict[str, Any], monitor: ServedApp, browser: Any, tmp_path: Path
) -> None:
    job = write_job(tmp_path, rows=12, cols=12, seed=5, steps=TUNE_ONLY)
    browser.get(monitor.url + "/")
    browser.execute_script("window.nvmlabTestMarker = 'no reload';")
    log = (tmp_path / "job.stderr").open("w")  # its progress lines: never a full pipe
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "nvmlab.cli", "run", str(job), "--db", lab["url"],
         "--no-progress"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith("run "), (tmp_path / "job.stderr").read_text()
        row = f"run-{int(first_line.split()[1])}"
        seen: list[int] = []

        def advanced() -> bool:
            units = _cell(browser, "runs", row, "units") or ""
            match = re.match(r"(\d+) of (\d+)$", units)
            if match and int(match[1]) > 0 and (not seen or int(match[1]) != seen[-1]):
                seen.append(int(match[1]))
            return len(seen) >= 3

        wait_for("the units done shown advancing", advanced, timeout_s=30, every_s=0.2)
        assert seen == sorted(seen), seen
        assert _cell(browser, "runs", row, "status") == "running"
        assert _cell(browser, "runs", row, "step") == "1 of 1: s1-tune"
        assert browser.execute_script("return window.nvmlabTestMarker;") == "no reload"
        # stopped after the unit in flight: 'aborted' (or 'completed' on a machine so fast
        # that it ended meanwhile); the page says so, still without a reload
        process.send_signal(signal.SIGTERM)
        wait_for(
            "the run shown ended",
            lambda: _cell(browser, "runs", row, "status") in ("aborted", "completed"),
        )
        assert browser.execute_script("return window.nvmlabTestMarker;") == "no reload"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
        log.close()


def test_report_files_are_served_only_from_the_runs_report_folder(
    lab: dict[str, Any], monitor: ServedApp
) -> None:
    second = lab["second"]
    report = lab["folder"] / "runs" / f"run-{second}" / "report"
    link = report / "database.png"
    link.symlink_to(lab["folder"] / "lab.sqlite")

    def status(path: str) -> tuple[int, str]:
        # raw requests: a client would tidy the dot segments away before sending
        conn = http.client.HTTPConnection("127.0.0.1", monitor.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.getheader("content-type") or ""
        finally:
            conn.close()

    try:
        assert status(f"/runs/{second}/report/tuning.png") == (200, "image/png")
        for escape in (
            "../job.log", "..%2Fjob.log", "%2e%2e/%2e%2e/lab.sqlite", "../../../lab.sqlite",
            "%2Fetc%2Fpasswd", "/etc/passwd", "database.png", ".", "", "nothing.png",
        ):  # fmt: skip
            assert status(f"/runs/{second}/report/{escape}")[0] == 404, escape
        assert status(f"/runs/{lab['first']}/report/tuning.png")[0] == 404  # no report of its own
        assert status("/runs/999/report/tuning.png")[0] == 404
        assert status(f"/runs/{2**70}/report/tuning.png")[0] == 404
        assert status(f"/runs/{2**70}")[0] == 404
        listed = httpx.get(f"{monitor.url}/api/runs/{second}").json()["report"]["files"]
        assert "database.png" not in [f["name"] for f in listed]
    finally:
        link.unlink()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_write_through_the_monitors_connection_fails(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'lab.sqlite'}"
        if engine == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with open_database(url, create=True) as writable:
        run = start_run(writable, "sweep", config={"note": "stored"})
        finish_run(writable, run, "completed")
    monitor = open_read_only(url)
    try:
        with monitor.engine.connect() as conn:
            assert conn.execute(select(Run.status).where(Run.id == run)).scalar() == "completed"
        for statement in (
            text("UPDATE runs SET status = 'failed' WHERE id = :run").bindparams(run=run),
            text("INSERT INTO chips (name, array_kind, n_rows, n_cols, created_at) "
                 "VALUES ('sneaked-in', 'memristor', 4, 4, CURRENT_TIMESTAMP)"),
        ):  # fmt: skip
            with pytest.raises(DBAPIError, match="(?i)read-?only"), monitor.engine.begin() as conn:
                conn.execute(statement)
    finally:
        monitor.close()
    with open_database(url) as writable, writable.read_connection() as conn:
        assert conn.execute(select(Run.status).where(Run.id == run)).scalar() == "completed"
        assert conn.execute(select(Chip.id).where(Chip.name == "sneaked-in")).first() is None


def test_a_missing_or_empty_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite"
    assert main(["monitor", "--db", f"sqlite:///{missing}", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "no results database" in err and "does not exist" in err, err
    assert not missing.exists()

    import sqlite3

    sqlite3.connect(tmp_path / "empty.sqlite").close()
    assert main(["monitor", "--db", f"sqlite:///{tmp_path / 'empty.sqlite'}", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "holds no nvmlab schema" in err and "nvmlab db upgrade" in err, err


def test_off_loopback_the_monitor_refuses_to_start_without_a_token(
    lab: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NVMLAB_MONITOR_TOKEN", raising=False)
    assert main(["monitor", "--db", lab["url"], "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "not a loopback address" in err and "--token" in err, err


def test_with_a_token_every_request_needs_it_and_no_page_shows_the_password(
    pg_url: str, tmp_path: Path
) -> None:
    url = make_url(pg_url)
    password = url.password or "fake-Pa55word-for-the-test"  # the test server trusts loopback
    with_password = url.set(password=password).render_as_string(hide_password=False)
    token = "T0ken-for-the-test"
    stored = "hunter2-in-a-stored-config"  # a run whose configuration holds a database URL
    with open_database(pg_url) as db:
        leaky = start_run(
            db, "job", config={"job": "leaky", "database": f"postgresql://lab:{stored}@db/lab"}
        )
    env = {k: v for k, v in os.environ.items() if k not in ("NVMLAB_MONITOR_TOKEN", "NVMLAB_DB")}
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "nvmlab.cli", "monitor", "--db", with_password,
         "--host", "0.0.0.0", "--port", "0", "--token", token],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    banner: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            banner.append(line)
            if line.startswith("open "):
                break
        shown = "".join(banner)
        assert re.search(r"^open http://\S+:\d+/\?token=T0ken-for-the-test$", shown, re.M), shown
        assert "every request needs the token" in shown and "***" in shown, shown
        port = int(re.search(r":(\d+)/\?token=", shown)[1])  # type: ignore[index]
        base = f"http://127.0.0.1:{port}"
        pages: list[str] = []
        with httpx.Client(base_url=base, timeout=10) as anonymous:
            for path in ("/", "/api/state", "/runs/1", "/static/monitor.js", "/?token=wrong"):
                response = anonymous.get(path)
                assert response.status_code == 401, path
                pages.append(response.text)
            assert anonymous.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with httpx.Client(base_url=base, timeout=10) as browser_like:
            opened = browser_like.get(f"/?token={token}")
            assert (
                opened.status_code == 200 and "nvmlab_monitor_token" in opened.headers["set-cookie"]
            )
            state = browser_like.get("/api/state")  # the cookie alone
            assert state.status_code == 200
            assert state.json()["queue"]["available"] is True  # PostgreSQL: the queue's tables
            pages += [opened.text, state.text]
            run_page = browser_like.get(f"/runs/{leaky}")
            run_api = browser_like.get(f"/api/runs/{leaky}")
            assert run_page.status_code == run_api.status_code == 200
            assert run_api.json()["config"]["database"] == "postgresql://lab:***@db/lab"
            pages += [run_page.text, run_api.text]
        bearer = httpx.get(f"{base}/api/state", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200
        pages.append(bearer.text)
        for page in pages:
            assert password not in page and stored not in page
        assert "***" in state.json()["database"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert process.returncode == 130, err
    assert password not in "".join(banner) + out + err


def test_stations_queue_and_dead_runs_are_judged_as_the_lab_needs(
    pg_url: str, lab: dict[str, Any]
) -> None:
    """Workers alive, stopped or lost (stale heartbeat); a queued job whose station has no
    live worker waits; a running run whose process is gone is shown dead."""
    from nvmlab.storage.liveness import Owner

    me = Owner.current()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    with open_database(pg_url) as db, db.engine.begin() as conn:
        run = start_run(db, "job", config={"job": "left-running", "station": "st-gone"})
        conn.execute(text("UPDATE runs SET pid = :pid, process_start_s = NULL WHERE id = :run"),
                     {"pid": int(gone.stdout), "run": run})  # fmt: skip
        workers = text(
            "INSERT INTO station_workers (station, chip_kind, n_rows, n_cols, state, host, pid, "
            "process_start_s, heartbeat_at, registered_at) VALUES (:station, :kind, :rows, "
            ":cols, :state, :host, :pid, :start, now() - make_interval(secs => :age), now())"
        )
        for station, kind, worker_state, host, pid, start, age in (
            ("st-live", "memristor", "idle", me.host, me.pid, me.process_start_s, 1.0),
            ("st-lost", "memristor", "busy", "another-host", 4242, None, 600.0),
            ("st-off", "eflash", "stopped", None, None, None, 0.0),
        ):
            conn.execute(workers, {"station": station, "kind": kind, "rows": 8, "cols": 8,
                                   "state": worker_state, "host": host, "pid": pid, "start": start,
                                   "age": age})  # fmt: skip
        queued = {}
        for name, queue, status, target, delay_s in (
            ("to-lost", "station:st-lost", "todo", "st-lost", 0),
            ("to-live", "station:st-live", "todo", "st-live", 0),
            ("any-8x8", "any:memristor:8x8", "todo", "any", 0),
            ("any-eflash", "any:eflash:8x8", "todo", "any", 0),
            ("later", "station:st-live", "todo", "st-live", 3600),
            ("running", "station:st-live", "doing", "st-live", 0),
            ("orphaned", "station:st-lost", "doing", "st-lost", 0),
            ("done", "station:st-live", "succeeded", "st-live", 0),
        ):
            job_id = conn.execute(
                text("INSERT INTO procrastinate_jobs (queue_name, task_name, status, scheduled_at) "
                     "VALUES (:queue, 'nvmlab.run_job', CAST(:status AS procrastinate_job_status), "
                     "CASE WHEN :delay > 0 THEN now() + make_interval(secs => :delay) END) "
                     "RETURNING id"), {"queue": queue, "status": status, "delay": delay_s},
            ).scalar_one()  # fmt: skip
            conn.execute(
                text("INSERT INTO queue_jobs (job_id, job_name, chip, target, station, "
                     "submitted_at) VALUES (:id, :name, 'chip-q', :target, :station, now())"),
                {"id": job_id, "name": name, "target": target,
                 "station": target if status == "doing" else None},
            )  # fmt: skip
            queued[name] = job_id
    monitor = open_read_only(pg_url)
    try:
        state = lab_state(monitor)
    finally:
        monitor.close()
    stations = {s["station"]: s["state"] for s in state["stations"]}
    assert stations == {"st-live": "idle", "st-lost": "lost", "st-off": "stopped"}
    jobs = {j["job_name"]: j["status"] for j in state["queue"]["jobs"]}
    assert jobs == {
        "to-lost": "waiting (no worker)", "to-live": "queued", "any-8x8": "queued",
        "any-eflash": "waiting (no worker)", "running": "running", "done": "succeeded",
        "orphaned": "running (worker lost)", "later": jobs["later"],
    }  # fmt: skip
    assert re.fullmatch(r"scheduled \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", jobs["later"])
    shown = {r["id"]: r["shown_status"] for r in state["runs"]}
    assert shown[run] == "dead"
    cells = {r["key"]: r["cells"] for r in state["tables"]["queue"]}
    assert cells[f"job-{queued['to-lost']}"]["status"] == "waiting (no worker)"

    sqlite_monitor = open_read_only(lab["url"])
    try:
        sqlite_state = lab_state(sqlite_monitor)
    finally:
        sqlite_monitor.close()
    assert sqlite_state["queue"] == {
        "available": False,
        "note": "no queue on SQLite (the queue needs PostgreSQL)",
    }


def test_a_runs_state_says_where_each_step_of_the_chain_is(lab: dict[str, Any]) -> None:
    """The stopped run: its first step done, stopped inside the second, the third not
    reached; the run resuming it: every step done, in which run, with its summary (without
    the per-device lists: the page polls it every second) and its report."""
    first, second = lab["first"], lab["second"]
    monitor = open_read_only(lab["url"])
    try:
        stopped, resumed = run_state(monitor, first), run_state(monitor, second)
        assert run_state(monitor, 999) is None
    finally:
        monitor.close()
    assert stopped is not None and resumed is not None
    assert [s["status"] for s in stopped["steps"]] == ["completed", "stopped", "not reached"]
    assert stopped["steps"][1]["units"]["completed"] > 0
    assert stopped["report"]["files"] == []
    assert [s["status"] for s in resumed["steps"]] == [
        f"completed in run {first}",
        "completed",
        "completed",
    ]
    tune = resumed["steps"][1]["summary"]
    assert "pass_rate_own" in tune and "per_device" not in tune
    assert resumed["run"]["chain"] == [first, second] == stopped["run"]["chain"]
    assert resumed["report"]["pages"][0]["href"] == f"/runs/{second}/report/job.html"
    assert f"/runs/{second}/report/tuning.png" in [i["src"] for i in resumed["images"]]
