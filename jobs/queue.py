"""The lab's queue: jobs submitted to the lab's PostgreSQL, run by one worker per station.

The queue engine is procrastinate (3.x), on the lab database beside nvmlab's tables (its
schema comes with ``nvmlab db upgrade``). nvmlab adds what a lab needs around it:

* **Queues.** One per station, ``station:<name>``, and one per kind of chip a station can
  serve, ``any:<kind>:<rows>x<cols>`` (``nvmlab queue submit --any``). A worker listens to
  its station's queue and to the queue of the chip its probe board holds.
* **Stations.** A worker registers its station in ``station_workers`` (its station file
  and what its board serves, read from the board); a job is submitted only to a station
  known there, and checked against that station's file and safety limits at submit, not
  at 3 a.m.
* **Runs.** ``queue_jobs`` ties each queue job to its nvmlab runs (the first and the newest
  of its resume chain). A queue job that starts again (its worker killed, the station PC
  rebooted, a worker stopped with SIGTERM) resumes its run, never starting afresh.

This module holds what the submitting side and the workers share: queue names, the
procrastinate app, submit, list and cancel. The worker is :mod:`nvmlab.jobs.worker`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nvmlab.errors import ConfigError, StorageError

__all__ = [
    "RESUME_PRIORITY",
    "TASK_NAME",
    "QueuedJob",
    "cancel",
    "engine_conninfo",
    "kind_queue",
    "list_queue",
    "open_app",
    "require_postgresql",
    "station_lock_name",
    "station_queue",
    "submit",
]

#: The procrastinate task every queued job runs as.
TASK_NAME = "nvmlab.run_job"
#: Priority of a job that goes back to its station to be resumed: before any new one.
RESUME_PRIORITY = 100


def station_queue(station: str) -> str:
    """The queue of jobs for station ``station`` (and of jobs resumed there)."""
    return f"station:{station}"


def kind_queue(kind: str, rows: int, cols: int) -> str:
    """The queue of jobs for any station whose board holds a ``kind`` chip of that size."""
    return f"any:{kind}:{rows}x{cols}"


def station_lock_name(station: str) -> str:
    """procrastinate's lock of a job pinned to ``station`` (never two at once there)."""
    return f"station:{station}"


def require_postgresql(url: str) -> None:
    """The queue lives on PostgreSQL only: refuse another database with a clear message."""
    from sqlalchemy.engine import make_url

    from nvmlab.storage.engine import mask_url

    try:
        backend = make_url(url).get_backend_name()
    except Exception:  # noqa: BLE001 - the URL's own parser says what is wrong later
        backend = url.split(":", 1)[0]
    if backend != "postgresql":
        raise ConfigError(
            f"the lab's queue needs the lab's PostgreSQL database; {mask_url(url)} is "
            f"{backend}; allowed: postgresql+psycopg://USER@HOST/DB (give --db, NVMLAB_DB "
            "or the station file's database)",
            field="--db",
        )


def engine_conninfo(url: str) -> str:
    """The libpq connection string of SQLAlchemy ``url`` (for procrastinate's psycopg
    connector; keeps the query's options, e.g. a ``search_path``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def open_app(url: str) -> Any:
    """A procrastinate app (not open yet) on the lab database at ``url``."""
    import procrastinate

    require_postgresql(url)
    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=engine_conninfo(url))
    )


@contextlib.contextmanager
def _open_sync(url: str) -> Iterator[Any]:
    app = open_app(url)
    with app.open():
        yield app


# ----------------------------------------------------------------------------- submit


def _station_data(row: Any) -> dict[str, Any]:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    data = tomllib.loads(row.station_text or "")
    data.setdefault("station", {})["name"] = row.station
    return data


def known_stations(db: Any) -> list[Any]:
    """The stations registered by their workers (rows of ``station_workers``)."""
    from sqlalchemy import select

    from nvmlab.storage.models import StationWorker

    with db.read_connection() as conn:
        return list(conn.execute(select(StationWorker.__table__).order_by("station")).all())


def _check_on(job: Any, db: Any, row: Any) -> None:
    """Validate ``job`` against station ``row`` (its file's limits, its board's chip)."""
    from nvmlab.jobs.runner import preflight

    board = {"kind": row.chip_kind, "rows": row.n_rows, "cols": row.n_cols}
    for what in ("kind", "rows", "cols"):
        want, have = getattr(job.chip, what), board[what]
        if want is not None and have is not None and want != have:
            raise ConfigError(
                f"station {row.station!r} holds a {row.chip_kind} chip of {row.n_rows} x "
                f"{row.n_cols}; the job says chip.{what} = {want!r}; allowed: {have!r}",
                file=str(job.source),
                field=f"chip.{what}",
            )
    preflight(
        job, db, station=_station_data(row), chip_shape=(row.chip_kind, row.n_rows, row.n_cols)
    )


@dataclass(frozen=True)
class Submitted:
    """A job put in the queue: its queue job id, queue and the stations that can take it."""

    job_id: int
    queue: str
    stations: tuple[str, ...]
    waiting: tuple[str, ...]


def submit(db: Any, url: str, job_file: str | Path, *, station: str | None) -> Submitted:
    """Queue job file ``job_file`` for ``station`` (a station's name, or a station file
    whose name is registered) or, ``station`` None, for any station that serves its chip.

    Everything is checked before the job is queued: the job file, the station (known to the
    lab), the job against that station's file and board (or against every station that
    could take it). ``waiting`` names the stations with no live worker now.
    """
    from nvmlab.jobs.jobfile import load_job_file

    require_postgresql(url)
    job = load_job_file(job_file, queued=True)
    stations = known_stations(db)
    by_name = {row.station: row for row in stations}
    if station is not None:
        name = _station_name(station)
        if name not in by_name:
            known = ", ".join(by_name) or "none yet"
            raise ConfigError(
                f"unknown station {name!r}: no worker has ever served it on this database; "
                f"allowed: {known} (start 'nvmlab worker --station FILE' on its PC once to "
                "register it)",
                field="--station",
            )
        candidates = [by_name[name]]
        _check_on(job, db, candidates[0])
        queue = station_queue(name)
        lock: str | None = station_lock_name(name)
    else:
        kind, rows, cols = job.chip.kind, job.chip.rows, job.chip.cols
        if kind is None or rows is None or cols is None:
            kind, rows, cols = _registered_shape(db, job)
        candidates = [
            r for r in stations if (r.chip_kind, r.n_rows, r.n_cols) == (kind, rows, cols)
        ]
        if not candidates:
            served = ", ".join(
                f"{r.station} ({r.chip_kind} {r.n_rows}x{r.n_cols})" for r in stations
            )
            raise ConfigError(
                f"no station of this lab serves a {kind} chip of {rows} x {cols}; "
                f"stations: {served or 'none registered yet'}",
                file=str(job_file),
                field="chip",
            )
        for row in candidates:
            _check_on(job, db, row)
        queue = kind_queue(kind, rows, cols)
        lock = None
    from nvmlab.jobs.worker import live_stations

    alive = live_stations(db)
    args = {
        "job_file": str(Path(job_file).resolve()),
        "job_text": job.text,
        "target": station if station is None else _station_name(station),
    }
    with _open_sync(url) as app:
        job_id = app.configure_task(TASK_NAME, queue=queue, lock=lock).defer(**args)
    _record_submission(db, job_id, job, args["target"] or "any")
    return Submitted(
        job_id,
        queue,
        tuple(r.station for r in candidates),
        tuple(r.station for r in candidates if r.station not in alive),
    )


def _station_name(station: str) -> str:
    path = Path(station)
    if path.suffix == ".toml" and path.is_file():
        from nvmlab.instruments.stationfile import load_station_file

        return load_station_file(path).name
    return station


def _registered_shape(db: Any, job: Any) -> tuple[str, int, int]:
    from nvmlab.storage.inventory import list_chips

    chip = next((c for c in list_chips(db) if c.name == job.chip.name), None)
    if chip is None:
        raise ConfigError(
            f"chip {job.chip.name!r} is not registered; give chip.kind, chip.rows and "
            "chip.cols so that the queue knows which stations can serve it",
            file=str(job.source),
            field="chip.kind",
        )
    return chip.kind, chip.rows, chip.cols


def _record_submission(db: Any, job_id: int, job: Any, target: str) -> None:
    from sqlalchemy import insert

    from nvmlab.storage.models import QueueJob, utcnow

    with db.errors(f"record queue job {job_id}"), db.engine.begin() as conn:
        conn.execute(
            insert(QueueJob).values(
                job_id=job_id,
                job_name=job.name,
                chip=job.chip.name,
                job_file=str(job.source.resolve()),
                target=target,
                submitted_at=utcnow(),
                submitted_by=f"{_user()}@{socket.gethostname()}",
            )
        )


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "?"


# ----------------------------------------------------------------------------- list, cancel


@dataclass(frozen=True)
class QueuedJob:
    """A row of ``nvmlab queue list``."""

    job_id: int
    status: str
    queue: str
    job_name: str
    chip: str
    target: str
    station: str | None
    run_id: int | None
    first_run_id: int | None
    attempts: int
    abort_requested: bool
    submitted_at: dt.datetime | None
    shown_status: str


def list_queue(db: Any, url: str) -> list[QueuedJob]:
    """Every job of the queue, oldest first: procrastinate's status, where it runs or ran,
    and its nvmlab runs. A queued job whose station has no live worker shows as waiting."""
    from sqlalchemy import select

    from nvmlab.jobs.worker import live_stations
    from nvmlab.storage.models import QueueJob

    with _open_sync(url) as app:
        engine_jobs = app.job_manager.list_jobs(task=TASK_NAME)
    with db.read_connection() as conn:
        ours = {row.job_id: row for row in conn.execute(select(QueueJob.__table__)).all()}
    alive = live_stations(db)
    rows = []
    for job in sorted(engine_jobs, key=lambda j: j.id or 0):
        mine = ours.get(job.id)
        status = str(job.status)
        shown = status
        if status == "todo":
            serving = [s for s, kinds in alive.items() if job.queue in kinds]
            shown = "queued" if serving else "waiting (no worker)"
        elif status == "doing":
            shown = "stopping" if job.abort_requested else "running"
        rows.append(
            QueuedJob(
                job_id=int(job.id or 0),
                status=status,
                queue=job.queue,
                job_name=mine.job_name if mine else str(job.task_kwargs.get("job_file")),
                chip=mine.chip if mine else "?",
                target=mine.target if mine else "?",
                station=mine.station if mine else None,
                run_id=mine.run_id if mine else None,
                first_run_id=mine.first_run_id if mine else None,
                attempts=job.attempts,
                abort_requested=job.abort_requested,
                submitted_at=mine.submitted_at if mine else None,
                shown_status=shown,
            )
        )
    return rows


def cancel(url: str, job_id: int) -> str:
    """Cancel queue job ``job_id``: a queued one is cancelled; a running one is asked to stop
    at its next unit boundary into the safe state (its run ends ``aborted``, resumable).
    Returns what was done; raises when the job is unknown or already over."""
    with _open_sync(url) as app:
        manager = app.job_manager
        found = manager.list_jobs(id=job_id)
        if not found:
            raise StorageError(f"queue job {job_id} does not exist")
        status = str(found[0].status)
        if status == "todo" and manager.cancel_job_by_id(job_id):
            return "cancelled"
        if status == "doing" and manager.cancel_job_by_id(job_id, abort=True):
            return "stop requested"
        raise StorageError(f"queue job {job_id} is {status}: nothing to cancel")


def resume_run_of(db: Any, job_id: int) -> tuple[int | None, str | None]:
    """The newest run of queue job ``job_id`` and its status, or (None, None) when it has not
    started: from ``queue_jobs``, else from a run whose configuration names the queue job
    (a worker killed between creating the run and recording it)."""
    from sqlalchemy import select

    from nvmlab.storage.models import QueueJob, Run

    with db.read_connection() as conn:
        run_id = conn.execute(
            select(QueueJob.run_id).where(QueueJob.job_id == job_id)
        ).scalar_one_or_none()
        if run_id is None:
            for rid, config in conn.execute(
                select(Run.id, Run.config).where(Run.kind == "job").order_by(Run.id.desc())
            ):
                if isinstance(config, dict) and config.get("queue_job_id") == job_id:
                    run_id = rid
                    break
        if run_id is None:
            return None, None
        # the chain's newest run
        while True:
            newer = conn.execute(
                select(Run.id).where(Run.resumes_run_id == run_id)
            ).scalar_one_or_none()
            if newer is None:
                break
            run_id = newer
        status = conn.execute(select(Run.status).where(Run.id == run_id)).scalar_one()
    return run_id, status


def job_for_station(job_text: str, job_file: str, station_file: Path) -> Any:
    """The queued job, to run on ``station_file`` (paths anchored at its job file)."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from nvmlab.jobs.jobfile import parse_job

    job = parse_job(tomllib.loads(job_text), source=Path(job_file), text=job_text, queued=True)
    return replace(job, station=station_file.resolve())
