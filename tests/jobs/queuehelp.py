"""Helpers of the queue tests: a lab database of its own on the real PostgreSQL server,
stations served by ``nvmlab emulate``, workers as processes, and what the queue and the
runs stored."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pgtest import scratch_database
from served import served_emulator
from sqlalchemy import select

from nvmlab.storage import open_database

CLI = [sys.executable, "-P", "-m", "nvmlab.cli"]


@contextlib.contextmanager
def lab_database() -> Iterator[str]:
    """A new PostgreSQL database (dropped afterwards) at nvmlab's schema head, the queue
    engine's schema included; yields its URL. An unreachable server fails the test."""
    with scratch_database("nvmlab_queue", who="The queue tests") as server_url:
        url = server_url.render_as_string(hide_password=False)
        run = subprocess.run([*CLI, "db", "upgrade", "--db", url], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr
        yield url


@dataclass
class Emulated:
    """A station served by ``nvmlab emulate``: its name, station file and chip size."""

    name: str
    station_file: Path
    rows: int
    cols: int


@contextlib.contextmanager
def emulated_station(
    folder: Path, name: str, *, rows: int, cols: int, seed: int, time_scale: float = 5.0
) -> Iterator[Emulated]:
    """``nvmlab emulate`` serving a rows x cols memristor chip over loopback, its station
    file renamed ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    with served_emulator(folder, rows=rows, cols=cols, seed=seed, time_scale=time_scale) as (
        written,
        _state,
    ):
        text = written.read_text().replace('name = "emulated-bench"', f'name = "{name}"')
        station_file = folder / f"{name}.toml"
        station_file.write_text(text)
        yield Emulated(name, station_file, rows, cols)


def job_file(folder: Path, name: str, *, chip: str, rows: int, cols: int, steps: str = "") -> Path:
    """A job file for the queue (no station: the worker's): a conductance map of the chip,
    ``steps`` appended."""
    path = folder / f"{name}.toml"
    path.write_text(f"""[job]
name = "{name}"
output = "runs"
seed = 1

[chip]
name = "{chip}"
kind = "memristor"
rows = {rows}
cols = {cols}

[[steps]]
kind = "map"
{steps}""")
    return path


class Worker:
    """``nvmlab worker`` as a process, its output in a file."""

    def __init__(self, station_file: Path, url: str, log: Path, *extra: str) -> None:
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen(
            [*CLI, "worker", "--station", str(station_file), "--db", url,
             "--stalled-after", "6", "--stalled-sweep", "2", *extra],
            stdout=self.handle, stderr=subprocess.STDOUT, text=True, cwd=log.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self.handle.closed:
            self.handle.flush()
        return self.log.read_text()

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.close()
        return code


def nvmlab(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)  # fmt: skip


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.3) -> Any:
    """Poll ``check()`` until it returns something true; fail naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(every)


def table(url: str, model: Any) -> list[dict[str, Any]]:
    with open_database(url) as db, db.read_connection() as conn:
        return [dict(r._mapping) for r in conn.execute(select(model.__table__)).all()]


def engine_jobs(url: str) -> dict[int, dict[str, Any]]:
    """procrastinate's view of the queue: job id -> status, queue, attempts."""
    from nvmlab.jobs.queue import TASK_NAME, open_app

    app = open_app(url)
    with app.open():
        jobs = app.job_manager.list_jobs(task=TASK_NAME)
    return {
        int(j.id or 0): {"status": str(j.status), "queue": j.queue, "attempts": j.attempts}
        for j in jobs
    }


@contextlib.contextmanager
def monitor(url: str, log: Path) -> Iterator[Callable[[], dict[str, Any]]]:
    """``nvmlab monitor`` on ``url`` as a process (any free port); yields a function that
    returns its ``/api/state``."""
    import httpx

    handle = log.open("w")
    proc = subprocess.Popen([*CLI, "monitor", "--db", url, "--port", "0"], stdout=handle,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        line = wait_for("the monitor's address", lambda: next(
            (x for x in log.read_text().splitlines() if x.startswith("open http")), None
        ), timeout=60)  # fmt: skip
        base = line.split()[1].rstrip("/")
        yield lambda: httpx.get(f"{base}/api/state", timeout=10).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        handle.close()
