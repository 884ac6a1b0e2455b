"""``nvmlab monitor``: a read-only web page of the lab, updating live.

The page shows the stations and their queue workers (idle, busy, stopped, or lost when a
worker's heartbeat is stale), the queue (PostgreSQL only: procrastinate's jobs beside
nvmlab's ``queue_jobs``), and the runs: status (a ``running`` run whose process is gone is
shown ``dead``), resume chain, the step in progress with its units done of total and ETA,
the pass rate (unit attempts completed of completed + failed, and the share of tuned
devices); each run's page adds its steps with their stored summaries and its report (the
report step's files, served from the run's folder only).

Read-only by construction: the monitor's engine cannot write. SQLite files are opened
with ``mode=ro``; PostgreSQL sessions start with ``default_transaction_read_only=on``. It
runs no migration: a database below the schema this nvmlab ships is refused with the
``nvmlab db upgrade`` command to run.

The page is served by Starlette under uvicorn, templates by Jinja2; a small script polls
``/api/state`` (``/api/runs/<id>`` on a run's page) every second and rewrites the tables,
so nothing reloads. Bound to 127.0.0.1 by default; bound to any other address it needs a
token, which every request must carry (``?token=``, the cookie that sets, or an
``Authorization: Bearer`` header).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import signal
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nvmlab.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from nvmlab.storage.database import Database

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "bind",
    "create_app",
    "lab_state",
    "open_read_only",
    "read_only_engine",
    "register",
    "report_file",
    "run_state",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Environment variable holding the token (when ``--token`` is not given).
TOKEN_ENV = "NVMLAB_MONITOR_TOKEN"
#: The cookie a valid ``?token=`` sets, so that the page's images and polls carry it.
TOKEN_COOKIE = "nvmlab_monitor_token"
#: How often (s) the page asks for fresh state.
POLL_INTERVAL_S = 1.0
#: The newest runs listed on the main page.
RUNS_SHOWN = 100
#: The newest finished queue jobs listed (every waiting or running one is listed).
FINISHED_JOBS_SHOWN = 50
#: Templates, style sheet and script of the page (package data).
ASSETS = Path(__file__).resolve().with_name("monitor_assets")
#: PostgreSQL session option that makes every transaction read-only.
PG_READ_ONLY_OPTION = "-c default_transaction_read_only=on"

# --------------------------------------------------------------------------- database


def read_only_engine(url: str | URL) -> Engine:
    """An engine on ``url`` that cannot write: a SQLite file opened ``mode=ro`` (a missing
    file is a :class:`StorageError`, never created), a PostgreSQL session whose every
    transaction is read-only (``default_transaction_read_only=on``, added to any
    ``options`` the URL carries)."""
    from nvmlab.storage.engine import (
        create_engine_for,
        mask_url,
        parse_url,
        sqlite_file_uri,
        sqlite_path,
        sqlite_read_only_uri,
    )

    parsed = parse_url(url) if isinstance(url, str) else url
    shown = mask_url(parsed)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        if path is None:
            raise StorageError(
                f"the monitor reads a database file; {shown} is an in-memory database "
                "(nothing to monitor); pass --db sqlite:///path/to/nvmlab.sqlite"
            )
        if not os.path.isfile(path):
            raise StorageError(
                f"no results database at {shown} (file {path} does not exist); pass --db URL "
                f"of the lab's database (or create one with 'nvmlab db upgrade --db {shown}')"
            )
        uri = sqlite_read_only_uri(path) or sqlite_file_uri(path, mode="ro")
        engine = create_engine_for(parsed.set(database=uri, query={}))
        # reads take no write lock (the engine's default is BEGIN IMMEDIATE)
        return engine.execution_options(sqlite_begin="DEFERRED")
    given = parsed.query.get("options")
    options = " ".join(given) if isinstance(given, tuple) else (given or "")
    return create_engine_for(
        parsed,
        connect_args={"options": f"{options} {PG_READ_ONLY_OPTION}".strip()},
        pool_size=2,
        max_overflow=4,
    )


def open_read_only(url: str | URL) -> Database:
    """The results database at ``url`` through :func:`read_only_engine`, its schema checked
    (at the revision this nvmlab ships, else a :class:`StorageError` naming the
    ``nvmlab db upgrade`` command; the monitor itself never migrates)."""
    from nvmlab.storage.database import Database, head_revision, schema_state
    from nvmlab.storage.engine import parse_url

    parsed = parse_url(url) if isinstance(url, str) else url
    db = Database(parsed, read_only_engine(parsed))
    try:
        with db.errors("open the results database"), db.read_connection() as conn:
            state, revision = schema_state(conn)
        upgrade = f"upgrade it with 'nvmlab db upgrade --db {db.display_url}'"
        if state == "empty":
            raise StorageError(f"database {db.display_url} holds no nvmlab schema; {upgrade}")
        if state == "unversioned":
            raise StorageError(
                f"database {db.display_url} holds tables but no nvmlab schema revision; "
                f"{upgrade} (or pass --db URL of the lab's results database)"
            )
        if state == "older":
            raise StorageError(
                f"database {db.display_url} is at schema revision {revision}; the monitor "
                f"needs {head_revision()} (the lab's queue tables): {upgrade}"
            )
        if state == "newer":
            raise StorageError(
                f"database {db.display_url} is at schema revision {revision}, newer than "
                f"this nvmlab knows ({head_revision()}); upgrade nvmlab"
            )
    except BaseException:
        db.close()
        raise
    return db


# --------------------------------------------------------------------------- formatting


def _when(value: dt.datetime | None) -> str:
    """A UTC time as ``2026-12-01 19:24:54`` (headings say UTC)."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.timezone.utc).isoformat() if value else None


def _hms(seconds: float | None) -> str:
    """Seconds as ``h:mm:ss``; empty when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _percent(part: int, whole: int, noun: str) -> str:
    """``75.0 (12 of 16 devices)``; headings say %."""
    share = _share(part, whole)
    return "" if share is None else f"{share * 100:.1f} ({part} of {whole} {noun})"


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_figure(v)}" for k, v in value.items())
    return str(value)


def _figures_only(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A step's stored summary without its per-device lists (the page polls it every
    second): scalars, and tables of scalars."""

    def scalar(value: Any) -> bool:
        return value is None or isinstance(value, (int, float, str, bool))

    return {
        key: value
        for key, value in summary.items()
        if scalar(value) or (isinstance(value, Mapping) and all(map(scalar, value.values())))
    }


def _summary_text(summary: Mapping[str, Any], limit: int = 6) -> str:
    """A step's stored summary in a line: its scalar figures and small tables."""
    parts = [
        f"{key} {_figure(value)}"
        for key, value in summary.items()
        if isinstance(value, (int, float, str, Mapping)) and not isinstance(value, bool)
    ]
    return "; ".join(parts[:limit])


def _row(
    key: str,
    cells: Mapping[str, Any],
    *,
    links: Mapping[str, str] | None = None,
    classes: Mapping[str, str] | None = None,
    titles: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One table row as both the page and its script lay it out: ``cells`` by column key
    (text), and the links, CSS classes and tool tips of some cells."""
    return {
        "key": key,
        "cells": {k: "" if v is None else str(v) for k, v in cells.items()},
        "links": dict(links or {}),
        "classes": dict(classes or {}),
        "titles": dict(titles or {}),
    }


#: Columns of each table: (key, heading with its unit).
STATION_COLUMNS = (
    ("station", "station"),
    ("state", "state"),
    ("worker", "worker"),
    ("chip", "chip (kind, rows x cols)"),
    ("queue_job", "queue job"),
    ("run", "run"),
    ("heartbeat", "heartbeat age (s)"),
    ("station_file", "station file"),
)
QUEUE_COLUMNS = (
    ("job", "queue job"),
    ("name", "job"),
    ("chip", "chip"),
    ("target", "target"),
    ("status", "status"),
    ("attempts", "attempts"),
    ("station", "station"),
    ("run", "run"),
    ("submitted", "submitted (UTC)"),
    ("by", "by"),
)
#: A run's progress: the columns the runs table and a run's own page share.
_PROGRESS = (
    ("status", "status"),
    ("step", "step"),
    ("units", "units done (of total)"),
    ("eta", "step ETA (h:mm:ss)"),
    ("units_passed", "attempts passed (%)"),
    ("tuned", "devices tuned (%)"),
)
RUN_COLUMNS = (
    ("run", "run"), ("job", "job"), ("station", "station"), ("chip", "chip"),
    *_PROGRESS,
    ("started", "started (UTC)"), ("ended", "ended (UTC)"), ("chain", "resume chain"),
)  # fmt: skip
PROGRESS_COLUMNS = (*_PROGRESS, ("updated", "progress age (s)"))
CHAIN_COLUMNS = (
    ("run", "run"),
    ("status", "status"),
    ("started", "started (UTC)"),
    ("ended", "ended (UTC)"),
    ("message", "message"),
)
STEP_COLUMNS = (
    ("index", "#"),
    ("step", "step"),
    ("kind", "kind"),
    ("status", "status"),
    ("completed", "units completed"),
    ("failed", "attempts failed"),
    ("interrupted", "attempts interrupted"),
    ("instrument", "instrument time (h:mm:ss)"),
    ("summary", "summary"),
)
REPORT_COLUMNS = (("file", "file"), ("size", "size (kB)"))


# --------------------------------------------------------------------------- lab state


def _now(conn: Connection) -> dt.datetime:
    from sqlalchemy import select

    from nvmlab.storage.liveness import database_now

    now: dt.datetime = conn.execute(select(database_now(conn.dialect.name))).scalar_one()
    return now


def _judge(row: Any, now: dt.datetime, stale_after_s: float) -> Any:
    """The liveness verdict of the process a row records (a run, a station's worker)."""
    from nvmlab.storage.liveness import Owner, judge

    owner = Owner(row.host, row.pid, row.process_start_s, row.heartbeat_at)
    return judge(owner, now=now, stale_after_s=stale_after_s)


def _stations(conn: Connection, now: dt.datetime, stale_after_s: float) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from nvmlab.storage.models import StationWorker

    stations = []
    rows = conn.execute(select(StationWorker.__table__).order_by(StationWorker.station)).all()
    for row in rows:
        if row.state == "stopped":
            alive, reason, shown = False, "the worker stopped", "stopped"
        else:
            verdict = _judge(row, now, stale_after_s)
            alive, reason = verdict.alive, verdict.reason
            shown = row.state if alive else "lost"
        age = (now - row.heartbeat_at).total_seconds() if row.heartbeat_at else None
        stations.append(
            {
                "station": row.station, "state": shown, "stored_state": row.state,
                "alive": alive, "reason": reason, "chip_kind": row.chip_kind,
                "n_rows": row.n_rows, "n_cols": row.n_cols, "queue_job_id": row.queue_job_id,
                "run_id": row.run_id, "host": row.host, "pid": row.pid,
                "heartbeat_at": _iso(row.heartbeat_at), "heartbeat_age_s": age,
                "station_file": row.station_file,
            }
        )  # fmt: skip
    return stations


def _serves(station: Mapping[str, Any], queue_name: str | None, target: str) -> bool:
    """Whether a live ``station`` takes jobs of this queue (``station:<name>`` or
    ``any:<kind>:<rows>x<cols>``; the job's target when the queue is unknown)."""
    if not station["alive"] or station["state"] == "stopped":
        return False
    if queue_name and queue_name.startswith("any:"):
        shape = f"any:{station['chip_kind']}:{station['n_rows']}x{station['n_cols']}"
        return queue_name == shape
    if queue_name and queue_name.startswith("station:"):
        return queue_name == f"station:{station['station']}"
    return target in ("any", station["station"])


def _queue_status(row: Any, stations: Sequence[Mapping[str, Any]], now: dt.datetime) -> str:
    """A queue job's status as the lab reads it: procrastinate's, and for a job waiting
    whether any live worker would take it, for a job running whether its worker is lost."""
    status = row.engine_status
    if status is None:
        return "unknown (not in the queue engine)"
    if status == "todo":
        if row.scheduled_at is not None and row.scheduled_at > now:
            return f"scheduled ({_when(row.scheduled_at)} UTC)"
        ready = any(_serves(s, row.queue_name, row.target) for s in stations)
        return "queued" if ready else "waiting (no worker)"
    if status == "doing":
        if row.abort_requested:
            return "stopping (abort requested)"
        lost = any(s["station"] == row.station and s["state"] == "lost" for s in stations)
        return "running (worker lost)" if lost else "running"
    return str(status)


def _queue(
    conn: Connection, stations: Sequence[Mapping[str, Any]], now: dt.datetime
) -> dict[str, Any]:
    """The queue: nvmlab's ``queue_jobs`` beside procrastinate's ``procrastinate_jobs``
    (PostgreSQL only): every waiting or running job, then the newest finished ones."""
    from sqlalchemy import DateTime, String, cast, column, or_, select, table, text

    from nvmlab.storage.models import QueueJob

    if conn.dialect.name != "postgresql":
        return {"available": False, "note": "no queue on SQLite (the queue needs PostgreSQL)"}
    if conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is None:
        return {"available": False, "note": "no queue: the queue engine's tables are missing"}
    engine_jobs = table(
        "procrastinate_jobs", column("id"), column("queue_name"), column("status"),
        column("attempts"), column("abort_requested"),
        column("scheduled_at", DateTime(timezone=True)),
    )  # fmt: skip
    status = cast(engine_jobs.c.status, String)
    query = (
        select(
            QueueJob.__table__, engine_jobs.c.queue_name, status.label("engine_status"),
            engine_jobs.c.attempts, engine_jobs.c.abort_requested, engine_jobs.c.scheduled_at,
        )
        .outerjoin(engine_jobs, engine_jobs.c.id == QueueJob.job_id)
        .order_by(QueueJob.job_id.desc())
    )  # fmt: skip
    pending = or_(status.in_(("todo", "doing")), status.is_(None))
    rows = [
        *conn.execute(query.where(pending)),
        *conn.execute(query.where(~pending).limit(FINISHED_JOBS_SHOWN)),
    ]
    jobs = [
        {
            "job_id": row.job_id, "job_name": row.job_name, "chip": row.chip,
            "job_file": row.job_file, "target": row.target, "queue_name": row.queue_name,
            "status": _queue_status(row, stations, now), "engine_status": row.engine_status,
            "attempts": row.attempts, "station": row.station,
            "first_run_id": row.first_run_id, "run_id": row.run_id,
            "submitted_at": _iso(row.submitted_at), "submitted_by": row.submitted_by,
        }
        for row in rows
    ]  # fmt: skip
    return {"available": True, "note": "", "jobs": jobs}


def _chains(conn: Connection, run_ids: Iterable[int]) -> dict[int, int | None]:
    """``resumes_run_id`` of the runs ``run_ids``, the runs they resume (transitively) and
    the runs that resume them: enough to draw each one's whole chain."""
    from sqlalchemy import select

    from nvmlab.storage.models import Run

    resumes: dict[int, int | None] = {}
    wanted = set(run_ids)
    while wanted:
        rows = conn.execute(select(Run.id, Run.resumes_run_id).where(Run.id.in_(wanted))).all()
        resumes.update({int(i): (int(r) if r is not None else None) for i, r in rows})
        wanted = {r for r in resumes.values() if r is not None and r not in resumes}
    later = set(resumes)
    while later:
        rows = conn.execute(
            select(Run.id, Run.resumes_run_id).where(Run.resumes_run_id.in_(later))
        ).all()
        new = {int(i): int(r) for i, r in rows if r is not None and int(i) not in resumes}
        resumes.update(new)
        later = set(new)
    return resumes


def _chain_of(run_id: int, resumes: Mapping[int, int | None]) -> list[int]:
    """The whole resume chain through ``run_id``, oldest first."""
    back: list[int] = []
    current: int | None = run_id
    while current is not None and current not in back:
        back.append(current)
        current = resumes.get(current)
    back.reverse()
    resumed_by = {r: i for i, r in resumes.items() if r is not None}
    current = resumed_by.get(run_id)
    while current is not None and current not in back:
        back.append(current)
        current = resumed_by.get(current)
    return back


def _earlier(run_id: int, resumes: Mapping[int, int | None]) -> list[int]:
    """``run_id`` and the runs it resumes: what that run had done when it ended."""
    chain = _chain_of(run_id, resumes)
    return chain[: chain.index(run_id) + 1]


def _counts(conn: Connection, run_ids: Sequence[int]) -> tuple[dict[int, dict[str, int]], ...]:
    """Per run: unit attempts by status (the steps' own ``<label>/step`` units left out),
    and tuning outcomes of completed attempts by status."""
    from sqlalchemy import func, not_, select

    from nvmlab.storage.models import TuningOutcome, Unit

    units: dict[int, dict[str, int]] = {}
    outcomes: dict[int, dict[str, int]] = {}
    if not run_ids:
        return units, outcomes
    for run, status, n in conn.execute(
        select(Unit.run_id, Unit.status, func.count())
        .where(Unit.run_id.in_(run_ids), not_(Unit.unit_key.like("%/step")))
        .group_by(Unit.run_id, Unit.status)
    ):
        units.setdefault(int(run), {})[status] = int(n)
    for run, status, n in conn.execute(
        select(TuningOutcome.run_id, TuningOutcome.status, func.count())
        .join(Unit, Unit.id == TuningOutcome.attempt_id)
        .where(TuningOutcome.run_id.in_(run_ids), Unit.status == "completed")
        .group_by(TuningOutcome.run_id, TuningOutcome.status)
    ):
        outcomes.setdefault(int(run), {})[status] = int(n)
    return units, outcomes


def _pass_rates(
    chain: Sequence[int],
    units: Mapping[int, Mapping[str, int]],
    outcomes: Mapping[int, Mapping[str, int]],
) -> dict[str, Any]:
    """Over the runs of ``chain``: unit attempts completed of completed + failed, and the
    devices tuned of all tuning outcomes (None when there were none)."""
    completed = sum(units.get(r, {}).get("completed", 0) for r in chain)
    failed = sum(units.get(r, {}).get("failed", 0) for r in chain)
    tuned = sum(outcomes.get(r, {}).get("tuned", 0) for r in chain)
    devices = sum(sum(outcomes.get(r, {}).values()) for r in chain)
    return {
        "units_completed": completed, "units_failed": failed,
        "unit_pass_rate": _share(completed, completed + failed),
        "devices_tuned": tuned, "devices_with_outcome": devices,
        "tuned_rate": _share(tuned, devices),
    }  # fmt: skip


def _progress(conn: Connection, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    from sqlalchemy import select

    from nvmlab.storage.models import RunProgress

    if not run_ids:
        return {}
    rows = conn.execute(select(RunProgress.__table__).where(RunProgress.run_id.in_(run_ids))).all()
    return {
        int(r.run_id): {
            "step_index": r.step_index, "step_count": r.step_count, "step_label": r.step_label,
            "units_done": r.units_done, "units_total": r.units_total, "eta_s": r.eta_s,
            "updated_at": r.updated_at,
        }
        for r in rows
    }  # fmt: skip


def _run_summary(
    row: Any,
    chip: str | None,
    now: dt.datetime,
    stale_after_s: float,
    resumes: Mapping[int, int | None],
    progress: Mapping[int, Mapping[str, Any]],
    units: Mapping[int, Mapping[str, int]],
    outcomes: Mapping[int, Mapping[str, int]],
) -> dict[str, Any]:
    """A run as the page shows it: stored status and the one to show (``dead`` for a
    ``running`` run whose process is gone), its chain, progress and pass rates."""
    run_id = int(row.id)
    config = row.config or {}
    shown, reason = row.status, ""
    if row.status == "running":
        verdict = _judge(row, now, stale_after_s)
        reason = verdict.reason
        shown = "running" if verdict.alive else "dead"
    where = dict(progress.get(run_id) or {})
    if where:
        where["age_s"] = (now - where["updated_at"]).total_seconds()
        where["updated_at"] = _iso(where["updated_at"])
        if shown != "running":
            where["eta_s"] = None
    return {
        "id": run_id, "kind": row.kind, "status": row.status, "shown_status": shown,
        "liveness": reason, "job": config.get("job"), "station": config.get("station"),
        "chip": chip, "started_at": _iso(row.started_at), "ended_at": _iso(row.ended_at),
        "message": row.message, "resumes_run_id": row.resumes_run_id,
        "chain": _chain_of(run_id, resumes), "progress": where or None,
        "pass": _pass_rates(_earlier(run_id, resumes), units, outcomes),
    }  # fmt: skip


def _step_text(progress: Mapping[str, Any] | None, status: str) -> str:
    """``2 of 3: s2-tune`` (``stopped at ...`` for a run that ended inside it)."""
    if not progress:
        return ""
    count = progress["step_count"]
    if status == "completed":
        return f"{count} of {count} done"
    where = f"{progress['step_index'] + 1} of {count}: {progress['step_label']}"
    return where if status == "running" else f"stopped at {where}"


def _run_cells(run: Mapping[str, Any]) -> dict[str, str]:
    progress, rates, status = run["progress"], run["pass"], run["shown_status"]
    units = ""
    if progress and status != "completed":
        units = f"{progress['units_done']} of {progress['units_total']}"
    return {
        "status": status,
        "step": _step_text(progress, status),
        "units": units,
        "eta": _hms(progress["eta_s"]) if progress else "",
        "units_passed": _percent(
            rates["units_completed"], rates["units_completed"] + rates["units_failed"], "attempts"
        ),
        "tuned": _percent(rates["devices_tuned"], rates["devices_with_outcome"], "devices"),
    }


def _chain_text(chain: Sequence[int]) -> str:
    return " \u2192 ".join(str(r) for r in chain) if len(chain) > 1 else ""


def lab_state(
    db: Database, *, runs_shown: int = RUNS_SHOWN, stale_after_s: float | None = None
) -> dict[str, Any]:
    """Everything the main page shows, read in one transaction (a consistent snapshot):
    ``stations``, ``queue``, ``runs`` (newest first, at most ``runs_shown``), and
    ``tables``/``fields``: the same, laid out for the page (cells as text)."""
    from sqlalchemy import select

    from nvmlab.storage.liveness import STALE_AFTER_S
    from nvmlab.storage.models import Chip, Run

    stale = STALE_AFTER_S if stale_after_s is None else stale_after_s
    with db.errors("read the lab's state"), db.read_connection() as conn:
        now = _now(conn)
        stations = _stations(conn, now, stale)
        queue = _queue(conn, stations, now)
        rows = conn.execute(
            select(Run.__table__, Chip.name.label("chip_name"))
            .outerjoin(Chip, Chip.id == Run.chip_id)
            .order_by(Run.id.desc())
            .limit(runs_shown)
        ).all()
        resumes = _chains(conn, (int(r.id) for r in rows))
        everything = sorted(resumes)
        units, outcomes = _counts(conn, everything)
        progress = _progress(conn, [int(r.id) for r in rows])
    runs = [
        _run_summary(r, r.chip_name, now, stale, resumes, progress, units, outcomes) for r in rows
    ]
    return {
        "database": db.display_url, "engine": db.dialect, "now": _iso(now),
        "stations": stations, "queue": queue, "runs": runs,
        "tables": {
            "stations": [_station_row(s) for s in stations],
            "queue": [_queue_row(j) for j in queue.get("jobs", [])],
            "runs": [_run_row(r) for r in runs],
        },
        "fields": {"queue_note": queue["note"], "now": _when(now)},
    }  # fmt: skip


def _station_row(station: Mapping[str, Any]) -> dict[str, Any]:
    size = (
        f"{station['chip_kind']}, {station['n_rows']} x {station['n_cols']}"
        if station["chip_kind"]
        else ""
    )
    age = station["heartbeat_age_s"]
    run = station["run_id"]
    return _row(
        f"station-{station['station']}",
        {
            "station": station["station"],
            "state": station["state"],
            "worker": ("alive: " if station["alive"] else "") + station["reason"],
            "chip": size,
            "queue_job": station["queue_job_id"],
            "run": run,
            "heartbeat": f"{age:.0f}" if age is not None else "",
            "station_file": station["station_file"],
        },
        links={"run": f"/runs/{run}"} if run is not None else {},
        classes={"state": f"state-{station['state']}"},
    )


def _queue_row(job: Mapping[str, Any]) -> dict[str, Any]:
    run = job["run_id"]
    target = job["target"] + (f" ({job['queue_name']})" if job["queue_name"] else "")
    return _row(
        f"job-{job['job_id']}",
        {
            "job": job["job_id"],
            "name": job["job_name"],
            "chip": job["chip"],
            "target": target,
            "status": job["status"],
            "attempts": job["attempts"],
            "station": job["station"],
            "run": run,
            "submitted": _when(dt.datetime.fromisoformat(job["submitted_at"]))
            if job["submitted_at"]
            else "",
            "by": job["submitted_by"],
        },
        links={"run": f"/runs/{run}"} if run is not None else {},
        classes={"status": "state-" + job["status"].split(" ")[0]},
    )


def _run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    def when(value: str | None) -> str:
        return _when(dt.datetime.fromisoformat(value)) if value else ""

    cells = {
        "run": run["id"], "job": run["job"] or run["kind"], "station": run["station"],
        "chip": run["chip"], "started": when(run["started_at"]),
        "ended": when(run["ended_at"]), "chain": _chain_text(run["chain"]),
        **_run_cells(run),
    }  # fmt: skip
    return _row(
        f"run-{run['id']}",
        cells,
        links={"run": f"/runs/{run['id']}"},
        classes={"status": f"state-{run['shown_status']}"},
        titles={"status": run["liveness"] or run["message"] or ""},
    )


# --------------------------------------------------------------------------- one run


def _step_labels(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The job's steps as ``(label, kind)``: ``s1-map`` ... (as the job runner names them)."""
    steps = config.get("steps") or []
    return [
        (f"s{i + 1}-{s.get('kind', '?')}", str(s.get("kind", "?"))) for i, s in enumerate(steps)
    ]


def _run_folder(config: Mapping[str, Any], run_id: int) -> Path | None:
    """``<output>/run-<id>``, the folder the job runner writes the run's files into."""
    output = config.get("output")
    return Path(output) / f"run-{run_id}" if output else None


def _report_folder(conn: Connection, run_id: int) -> Path | None:
    """The folder of the report run ``run_id``'s report step wrote, when it lies inside the
    run's own folder (``<output>/run-<id>/report`` by default); None otherwise."""
    from sqlalchemy import select

    from nvmlab.storage.models import Run, Unit

    config = conn.execute(select(Run.config).where(Run.id == run_id)).scalar()
    if config is None:
        return None
    base = _run_folder(config, run_id)
    if base is None:
        return None
    base = base.resolve()
    stored = conn.execute(
        select(Unit.result)
        .where(
            Unit.run_id == run_id, Unit.kind == "report", Unit.status == "completed",
            Unit.unit_key.like("%/step"),
        )
        .order_by(Unit.id.desc())
    ).first()  # fmt: skip
    folder = base / "report"
    if stored is not None:
        report_dir = ((stored[0] or {}).get("summary") or {}).get("report_dir")
        if report_dir:
            folder = Path(report_dir).resolve()
    if not folder.is_relative_to(base) or not folder.is_dir():
        return None
    return folder


def report_file(db: Database, run_id: int, relative: str) -> Path | None:
    """The file ``relative`` of run ``run_id``'s report folder, or None: a file outside
    that folder (``..``, an absolute path, a link leading out), a folder or a missing file
    is never served."""
    from nvmlab.storage.runs import MAX_ID

    if not 1 <= run_id <= MAX_ID or not relative or "\x00" in relative:
        return None
    with db.errors(f"find the report of run {run_id}"), db.read_connection() as conn:
        folder = _report_folder(conn, run_id)
    if folder is None:
        return None
    candidate = (folder / relative).resolve()
    if not candidate.is_relative_to(folder) or not candidate.is_file():
        return None
    return candidate


def run_state(
    db: Database, run_id: int, *, stale_after_s: float | None = None
) -> dict[str, Any] | None:
    """Everything a run's page shows (None when there is no such run): the run as on the
    main page, its resume chain, its steps with their stored summaries and unit counts
    (over the run and the runs it resumes), and its report's files."""
    from sqlalchemy import select

    from nvmlab.storage.liveness import STALE_AFTER_S
    from nvmlab.storage.models import Chip, Run, Unit
    from nvmlab.storage.runs import check_run_id

    check_run_id(run_id)
    stale = STALE_AFTER_S if stale_after_s is None else stale_after_s
    with db.errors(f"read run {run_id}"), db.read_connection() as conn:
        row = conn.execute(
            select(Run.__table__, Chip.name.label("chip_name"))
            .outerjoin(Chip, Chip.id == Run.chip_id)
            .where(Run.id == run_id)
        ).first()
        if row is None:
            return None
        now = _now(conn)
        resumes = _chains(conn, [run_id])
        chain = _chain_of(run_id, resumes)
        earlier = _earlier(run_id, resumes)
        units, outcomes = _counts(conn, chain)
        progress = _progress(conn, [run_id])
        chain_rows = conn.execute(
            select(Run.id, Run.status, Run.started_at, Run.ended_at, Run.message)
            .where(Run.id.in_(chain))
            .order_by(Run.id)
        ).all()
        attempts = conn.execute(
            select(Unit.run_id, Unit.unit_key, Unit.kind, Unit.status, Unit.result)
            .where(Unit.run_id.in_(earlier))
            .order_by(Unit.id)
        ).all()
        reports = {r: _report_folder(conn, r) for r in earlier}
    run = _run_summary(row, row.chip_name, now, stale, resumes, progress, units, outcomes)
    steps = _steps(row.config or {}, attempts, run)
    report_run, folder = next(
        ((r, reports[r]) for r in reversed(earlier) if reports[r] is not None), (None, None)
    )
    report = _report_files(report_run, folder)
    return {
        "database": db.display_url, "now": _iso(now), "run": run,
        "config": {k: v for k, v in (row.config or {}).items() if k != "job_text"},
        "operator": row.operator, "host": row.host, "pid": row.pid,
        "nvmlab_version": row.nvmlab_version, "steps": steps, "report": report,
        "tables": _run_tables(run, chain_rows, steps, report),
        "fields": {
            "status": run["shown_status"], "now": _when(now), "started": _when(row.started_at),
        },
        "links": {"pages": report["pages"]},
        "images": report["images"],
    }  # fmt: skip


def _run_tables(
    run: Mapping[str, Any],
    chain_rows: Sequence[Any],
    steps: Sequence[Mapping[str, Any]],
    report: Mapping[str, Any],
) -> dict[str, list[dict[str, Any]]]:
    """The tables of a run's page, laid out (cells as text)."""
    progress = run["progress"]
    age = f"{progress['age_s']:.0f}" if progress else ""
    return {
        "progress": [
            _row(
                f"run-{run['id']}",
                {**_run_cells(run), "updated": age},
                classes={"status": f"state-{run['shown_status']}"},
                titles={"status": run["liveness"] or run["message"] or ""},
            )
        ],
        "chain": [
            _row(
                f"run-{c.id}",
                {
                    "run": c.id,
                    "status": c.status,
                    "started": _when(c.started_at),
                    "ended": _when(c.ended_at),
                    "message": c.message,
                },
                links={"run": f"/runs/{c.id}"} if c.id != run["id"] else {},
                classes={"status": f"state-{c.status}"},
            )
            for c in chain_rows
        ],
        "steps": [_step_row(s) for s in steps],
        "report": [
            _row(
                f"file-{f['name']}",
                {"file": f["name"], "size": f"{f['size'] / 1e3:.1f}"},
                links={"file": f["href"]},
            )
            for f in report["files"]
        ],
    }


def _report_files(run_id: int | None, folder: Path | None) -> dict[str, Any]:
    """The files of run ``run_id``'s report folder as its page lists them: exactly those
    :func:`report_file` serves, the pages (``job.html`` first) and the PNG plots."""
    files: list[Path] = []
    if folder is not None:
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.resolve().is_relative_to(folder)
        )
    base = f"/runs/{run_id}/report/"
    pages = sorted(
        (p for p in files if p.suffix == ".html"), key=lambda p: (p.name != "job.html", p.name)
    )
    return {
        "run_id": run_id,
        "files": [
            {"name": p.name, "size": p.stat().st_size, "href": base + urllib.parse.quote(p.name)}
            for p in files
        ],
        "pages": [{"href": base + urllib.parse.quote(p.name), "text": p.name} for p in pages],
        "images": [
            {"src": base + urllib.parse.quote(p.name), "alt": p.name}
            for p in files
            if p.suffix == ".png"
        ],
    }


def _steps(
    config: Mapping[str, Any], attempts: Sequence[Any], run: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Each step of the job: done (in which run, with its stored summary), running or not
    reached, with its unit attempts by status."""
    steps = []
    progress = run["progress"]
    for index, (label, kind) in enumerate(_step_labels(config)):
        marker = f"{label}/step"
        done = next(
            (a for a in reversed(attempts) if a.unit_key == marker and a.status == "completed"),
            None,
        )
        counts: dict[str, int] = {}
        for a in attempts:
            if a.unit_key.startswith(f"{label}/") and a.unit_key != marker:
                counts[a.status] = counts.get(a.status, 0) + 1
        result = (done.result or {}) if done is not None else {}
        if done is not None:
            status = "completed" + (f" in run {done.run_id}" if done.run_id != run["id"] else "")
        elif progress and progress["step_index"] == index:
            # the step the run is in, or was in when it ended (or its process died)
            status = {"running": "running", "dead": "dead"}.get(run["shown_status"], "stopped")
        else:
            status = "pending" if run["status"] == "running" else "not reached"
        steps.append(
            {
                "index": index + 1, "label": label, "kind": kind, "status": status,
                "units": counts, "summary": _figures_only(result.get("summary") or {}),
                "instrument_s": result.get("instrument_s"),
                "run_id": done.run_id if done is not None else None,
            }
        )  # fmt: skip
    return steps


def _step_row(step: Mapping[str, Any]) -> dict[str, Any]:
    units = step["units"]
    return _row(
        f"step-{step['label']}",
        {
            "index": step["index"],
            "step": step["label"],
            "kind": step["kind"],
            "status": step["status"],
            "completed": units.get("completed", 0),
            "failed": units.get("failed", 0),
            "interrupted": units.get("interrupted", 0),
            "instrument": _hms(step["instrument_s"]),
            "summary": _summary_text(step["summary"]),
        },
        classes={"status": "state-" + step["status"].split(" ")[0]},
    )


# --------------------------------------------------------------------------- web app


def _templates() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ASSETS)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )


#: The monitor's own pages run only its own script and style sheet.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Report files: no script at all (a report's HTML is shown as written, read-only).
REPORT_POLICY = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


def _token_gate(app: Any, token: str) -> Any:
    """ASGI middleware: every request must carry ``token`` (``?token=``, the cookie a
    valid ``?token=`` sets, or ``Authorization: Bearer``); 401 otherwise."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    expected = token.encode()

    def matches(given: str | None) -> bool:
        return given is not None and secrets.compare_digest(given.encode(), expected)

    async def gate(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        in_query = request.query_params.get("token")
        if not (matches(in_query) or matches(request.cookies.get(TOKEN_COOKIE)) or matches(bearer)):
            response = PlainTextResponse(
                "401 Unauthorized: this nvmlab monitor needs its token: open the URL it "
                "printed when it started (...?token=TOKEN), or send 'Authorization: Bearer "
                "TOKEN'\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="nvmlab monitor"'},
            )
            await response(scope, receive, send)
            return
        if not matches(in_query):
            await app(scope, receive, send)
            return

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                cookie = (
                    f"{TOKEN_COOKIE}={urllib.parse.quote(token)}; Path=/; HttpOnly; SameSite=Strict"
                )
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"set-cookie", cookie.encode())]
            await send(message)

        await app(scope, receive, send_with_cookie)

    return gate


def create_app(
    db: Database, *, token: str | None = None, stale_after_s: float | None = None
) -> Starlette:
    """The monitor's web application on the (read-only) database ``db``; with ``token``
    every request must carry it."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from nvmlab.masking import mask_passwords
    from nvmlab.storage.jsonable import jsonable

    templates = _templates()
    common = {"poll_ms": int(POLL_INTERVAL_S * 1000), "database": db.display_url}

    def page(name: str, **context: Any) -> HTMLResponse:
        # a URL with a password stored in a run's configuration is shown masked too
        html = mask_passwords(templates.get_template(name).render(**common, **context))
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY})

    def as_json(content: Any, status_code: int = 200) -> Response:
        text = mask_passwords(json.dumps(jsonable(content), ensure_ascii=False, allow_nan=False))
        return Response(text, status_code=status_code, media_type="application/json")

    def unavailable(exc: StorageError) -> Response:
        return as_json({"error": str(exc)}, 503)

    def index(request: Request) -> Response:
        try:
            state = lab_state(db, stale_after_s=stale_after_s)
        except StorageError as exc:
            return PlainTextResponse(f"503: {exc}\n", status_code=503)
        columns = {"stations": STATION_COLUMNS, "queue": QUEUE_COLUMNS, "runs": RUN_COLUMNS}
        return page("index.html", state=state, columns=columns, source="/api/state")

    def api_state(request: Request) -> Response:
        try:
            return as_json(lab_state(db, stale_after_s=stale_after_s))
        except StorageError as exc:
            return unavailable(exc)

    def _run(request: Request) -> dict[str, Any] | None:
        from nvmlab.storage.runs import MAX_ID

        run_id = int(request.path_params["run_id"])
        if not 1 <= run_id <= MAX_ID:
            return None
        return run_state(db, run_id, stale_after_s=stale_after_s)

    def run_page(request: Request) -> Response:
        try:
            state = _run(request)
        except StorageError as exc:
            return PlainTextResponse(f"503: {exc}\n", status_code=503)
        if state is None:
            return PlainTextResponse("404: no such run\n", status_code=404)
        columns = {
            "progress": PROGRESS_COLUMNS, "chain": CHAIN_COLUMNS, "steps": STEP_COLUMNS,
            "report": REPORT_COLUMNS,
        }  # fmt: skip
        run_id = state["run"]["id"]
        return page("run.html", state=state, columns=columns, source=f"/api/runs/{run_id}")

    def api_run(request: Request) -> Response:
        try:
            state = _run(request)
        except StorageError as exc:
            return unavailable(exc)
        if state is None:
            return as_json({"error": "no such run"}, 404)
        return as_json(state)

    def report(request: Request) -> Response:
        try:
            path = report_file(db, request.path_params["run_id"], request.path_params["path"])
        except StorageError as exc:
            return PlainTextResponse(f"503: {exc}\n", status_code=503)
        if path is None:
            return PlainTextResponse("404: no such report file\n", status_code=404)
        return FileResponse(
            path,
            headers={"Content-Security-Policy": REPORT_POLICY, "X-Content-Type-Options": "nosniff"},
        )

    def asset(name: str, media_type: str) -> Route:
        def serve(request: Request) -> Response:
            return FileResponse(ASSETS / name, media_type=media_type)

        return Route(f"/static/{name}", serve)

    routes = [
        Route("/", index),
        Route("/api/state", api_state),
        Route("/runs/{run_id:int}", run_page),
        Route("/api/runs/{run_id:int}", api_run),
        Route("/runs/{run_id:int}/report/{path:path}", report),
        asset("monitor.js", "text/javascript"),
        asset("monitor.css", "text/css"),
    ]
    middleware = [Middleware(_token_gate, token=token)] if token else []
    return Starlette(routes=routes, middleware=middleware)


# --------------------------------------------------------------------------- command


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (port 0: any free one); a clear
    :class:`ConfigError` when the address is unknown or the port taken."""
    try:
        family, _type, _proto, _name, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"unknown address {host!r} ({exc})", field="--host") from None
    try:
        return socket.create_server(address[:2], family=family)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host} port {port} ({exc.strerror or exc}); allowed: a free "
            "port (--port N, or 0 for any) on an address of this machine",
            field="--port",
        ) from None


def _url_to_open(host: str, port: int, token: str | None) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host.strip("[]")
    if ":" in shown:
        shown = f"[{shown}]"
    query = f"?token={urllib.parse.quote(token)}" if token else ""
    return f"http://{shown}:{port}/{query}"


EPILOG = """\
database: --db, else $NVMLAB_DB, else ./nvmlab.sqlite; opened read-only (SQLite mode=ro,
PostgreSQL default_transaction_read_only=on): the monitor never writes, never migrates.

access: bound to 127.0.0.1 by default. Bound to any other address (--host 0.0.0.0 to be
reached from the lab's network) it needs --token TOKEN (or $NVMLAB_MONITOR_TOKEN), and
every request must carry it: open the printed URL (...?token=TOKEN; a cookie keeps it), or
send 'Authorization: Bearer TOKEN'. Make one with:
  python -c 'import secrets; print(secrets.token_urlsafe())'

pages: / (stations, queue, runs, live), /runs/<id> (steps, summaries, report),
/api/state and /api/runs/<id> (the same as JSON), /runs/<id>/report/<file>.

exit status:
  0    stopped with SIGTERM
  1    the database is missing, unreachable or not at this nvmlab's schema; the port is taken
  2    a command-line option is malformed, or a non-loopback --host without a token
  130  stopped with Ctrl-C

examples:
  nvmlab monitor                                   # ./nvmlab.sqlite on http://127.0.0.1:8765/
  nvmlab monitor --db postgresql+psycopg://nvmlab@labdb/lab --host 0.0.0.0 --token "$TOKEN"
"""


def _cmd_monitor(args: argparse.Namespace) -> int:
    import uvicorn

    from nvmlab.storage.cli import choose_database_url

    token = (args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")).strip()
    if not is_loopback(args.host) and not token:
        print(
            f"nvmlab monitor: error: --host {args.host} is not a loopback address: anyone who "
            "reaches this machine could read the lab's results. Give --token TOKEN (or set "
            f"${TOKEN_ENV}); every request must then carry it. Or bind --host 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    if not 0 <= args.port <= 65535:
        print(f"nvmlab monitor: error: --port {args.port}; allowed: 0 to 65535", file=sys.stderr)
        return 2
    db = open_read_only(choose_database_url(args))
    try:
        app = create_app(db, token=token or None)
        listener = bind(args.host, args.port)
        port = listener.getsockname()[1]
        print(f"nvmlab monitor: database {db.display_url} (read-only)")
        if not is_loopback(args.host):
            print(
                f"bound to {args.host} (not loopback): every request needs the token "
                "(?token=, the cookie it sets, or Authorization: Bearer)"
            )
        print(f"open {_url_to_open(args.host, port, token or None)}")
        print("Ctrl-C stops it", flush=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        with _terminated_cleanly():
            uvicorn.Server(config).run(sockets=[listener])
    finally:
        db.close()
    return 0


class _Terminated(BaseException):
    """SIGTERM: stop serving, exit 0."""


@contextlib.contextmanager
def _terminated_cleanly() -> Iterator[None]:
    """SIGTERM ends the block with exit status 0: uvicorn shuts down gracefully, then
    raises the signal again for the handler it found, this one."""

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(subparsers: Any) -> None:
    from nvmlab.storage.cli import add_database_options

    monitor = subparsers.add_parser(
        "monitor",
        help="serve a read-only web page of the lab: stations, queue, runs with live progress",
        description=(
            "Serve a read-only web page of the results database: the stations and their "
            "workers, the queue (PostgreSQL), every run with its status, resume chain, live "
            "progress (units done of total, pass rate, ETA) updating without a reload, and "
            "each run's steps, summaries and report plots. The database is opened so that it "
            "cannot be written."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_options(monitor, station=False)
    monitor.add_argument("--host", default=DEFAULT_HOST,
                         help=f"address to listen on (default {DEFAULT_HOST}; any other needs "
                         "--token)")  # fmt: skip
    monitor.add_argument("--port", type=int, default=DEFAULT_PORT,
                         help=f"TCP port (default {DEFAULT_PORT}; 0: any free port)")  # fmt: skip
    monitor.add_argument("--token", default=None,
                         help=f"secret every request must carry (default ${TOKEN_ENV}); "
                         "required off loopback")  # fmt: skip
    monitor.set_defaults(handler=_cmd_monitor)
