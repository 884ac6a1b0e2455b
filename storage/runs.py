"""Run lifecycle and resume: start, finish, resume a run; the units it completed.

:func:`start_run` records a run (status ``running``); :func:`finish_run` closes it
(``completed``, ``failed`` or ``aborted``). Work inside a run is cut into *units*; each try
at a unit is an *attempt*, a row of ``units`` whose id is the attempt id stamped on every
record it produced (the :class:`~nvmlab.storage.writer.RecordWriter` opens and commits
attempts).

If the process dies (kill -9), its attempts stay ``running``; :func:`resume_run` marks them
``interrupted`` and starts a new run linked by ``resumes_run_id``, and
:func:`completed_units` on the new run lists exactly the units completed anywhere in the
chain, so no unit is redone or stored twice. A run can be resumed only once, so a chain
never branches (the database holds ``resumes_run_id`` unique, and at most one completed
attempt per unit key and chain through a partial unique index).
"""

from __future__ import annotations

import contextlib
import getpass
import operator
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, insert, select, update

from nvmlab import __version__
from nvmlab.errors import StorageError
from nvmlab.storage.database import Database
from nvmlab.storage.liveness import (
    HEARTBEAT_INTERVAL_S,
    STALE_AFTER_S,
    Heartbeat,
    Owner,
    Verdict,
    database_now,
    judge,
)
from nvmlab.storage.models import RUN_STATUSES, Run, Unit, utcnow

#: The largest id either engine stores (a signed 64-bit key).
MAX_ID = 2**63 - 1


def check_run_id(run_id: int) -> int:
    """``run_id`` if it can name a stored run (1 .. :data:`MAX_ID`), else a StorageError."""
    try:
        value = operator.index(run_id)
    except TypeError:
        raise StorageError(f"run id {run_id!r} is not an integer") from None
    if not 1 <= value <= MAX_ID:
        raise StorageError(
            f"run id {value} is out of range; allowed: 1 .. {MAX_ID} ('nvmlab runs' lists them)"
        )
    return value


def parse_run_id(text: str) -> int:
    """A run id typed on the command line, checked (a clear StorageError otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise StorageError(f"run id {text!r} is not a number; 'nvmlab runs' lists them") from None
    return check_run_id(value)


def start_run(
    db: Database,
    kind: str,
    *,
    config: Mapping[str, Any] | None = None,
    chip_id: int | None = None,
    station_id: int | None = None,
    operator: str | None = None,
    host: str | None = None,
    seed: int | None = None,
    resumes_run_id: int | None = None,
) -> int:
    """Record a new run (status ``running``) and return its id.

    ``operator`` and ``host`` default to the login name and host name; the nvmlab version
    is recorded automatically, and so is this process (pid, start time, a first
    heartbeat) for :func:`run_liveness`.
    """
    me = Owner.current()
    if operator is None:
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):
            operator = None
    with db.errors(f"start a {kind!r} run"), db.engine.begin() as conn:
        return int(
            conn.execute(
                insert(Run)
                .values(
                    kind=kind,
                    status="running",
                    config=dict(config or {}),
                    chip_id=chip_id,
                    station_id=station_id,
                    started_at=utcnow(),
                    operator=operator,
                    host=host or me.host,
                    pid=me.pid,
                    process_start_s=me.process_start_s,
                    heartbeat_at=database_now(db.dialect),
                    nvmlab_version=__version__,
                    seed=seed,
                    resumes_run_id=resumes_run_id,
                )
                .returning(Run.id)
            ).scalar_one()
        )


def require_run(conn: Connection, db: Database, run_id: int) -> Any:
    """The row of run ``run_id``; a StorageError naming the database if there is none."""
    check_run_id(run_id)
    row = conn.execute(select(Run.__table__).where(Run.id == run_id)).first()
    if row is None:
        raise StorageError(
            f"no run {run_id} in database {db.display_url}; 'nvmlab runs' lists them"
        )
    return row


def finish_run(db: Database, run_id: int, status: str, message: str | None = None) -> None:
    """Close run ``run_id`` with ``status`` (``completed``, ``failed`` or ``aborted``)."""
    if status not in RUN_STATUSES or status == "running":
        raise StorageError(
            f"run {run_id}: final status {status!r}; allowed: completed, failed, aborted"
        )
    with db.errors(f"finish run {run_id}"), db.engine.begin() as conn:
        require_run(conn, db, run_id)
        conn.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=status, ended_at=utcnow(), message=message)
        )


def resume_chain(conn: Connection, run_id: int) -> list[int]:
    """``run_id`` and the runs it resumes, newest first."""
    chain: list[int] = []
    current: int | None = run_id
    while current is not None and current not in chain:
        chain.append(current)
        current = conn.execute(select(Run.resumes_run_id).where(Run.id == current)).scalar()
    return chain


def mark_interrupted(db: Database, run_id: int) -> int:
    """Mark the attempts of ``run_id`` still ``running`` as ``interrupted``; return how many.

    Call only when no process is writing that run any more (the job runner's station lock).
    """
    with db.errors(f"mark interrupted units of run {run_id}"), db.engine.begin() as conn:
        require_run(conn, db, run_id)
        result = conn.execute(
            update(Unit)
            .where(Unit.run_id == run_id, Unit.status == "running")
            .values(
                status="interrupted", ended_at=utcnow(), message="process ended inside the unit"
            )
        )
        return int(result.rowcount or 0)


def resume_run(db: Database, run_id: int, **overrides: Any) -> int:
    """Start a run that resumes ``run_id`` and return the new run's id.

    The old run's attempts still ``running`` become ``interrupted`` and the old run, if
    still ``running``, becomes ``aborted``. The new run copies kind, configuration, chip,
    station and seed (``overrides`` replace any of them, as keywords of :func:`start_run`).
    """
    with db.errors(f"resume run {run_id}"), db.engine.begin() as conn:
        old = require_run(conn, db, run_id)
        later = conn.execute(select(Run.id).where(Run.resumes_run_id == run_id)).scalar()
        if later is not None:
            raise StorageError(
                f"run {run_id} was already resumed by run {later}; resume the newest run of "
                "the chain instead (a chain never branches)"
            )
        conn.execute(
            update(Unit)
            .where(Unit.run_id == run_id, Unit.status == "running")
            .values(
                status="interrupted", ended_at=utcnow(), message="process ended inside the unit"
            )
        )
        if old.status == "running":
            conn.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(
                    status="aborted", ended_at=utcnow(), message="ended without finishing; resumed"
                )
            )
        params: dict[str, Any] = {
            "config": old.config,
            "chip_id": old.chip_id,
            "station_id": old.station_id,
            "seed": old.seed,
        }
        kind = overrides.pop("kind", old.kind)
    params.update(overrides)
    return start_run(db, kind, resumes_run_id=run_id, **params)


def completed_units(db: Database, run_id: int) -> set[str]:
    """Unit keys completed in ``run_id`` or in any run it (transitively) resumes."""
    with db.errors(f"list completed units of run {run_id}"), db.read_connection() as conn:
        require_run(conn, db, run_id)
        chain = resume_chain(conn, run_id)
        keys = conn.execute(
            select(Unit.unit_key)
            .where(Unit.run_id.in_(chain), Unit.status == "completed")
            .distinct()
        ).scalars()
        return set(keys)


# --------------------------------------------------------------------------- liveness


def beat(conn: Connection, run_id: int) -> None:
    """Refresh the heartbeat of run ``run_id`` (if still running) in ``conn``'s transaction."""
    conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running")
        .values(heartbeat_at=database_now(conn.dialect.name))
    )


def claim_run(conn: Connection, run_id: int) -> None:
    """Record this process as the one running ``run_id`` (host, pid, start time, heartbeat):
    the process that writes a run is its owner, whichever process started it."""
    me = Owner.current()
    conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "running")
        .values(
            host=me.host,
            pid=me.pid,
            process_start_s=me.process_start_s,
            heartbeat_at=database_now(conn.dialect.name),
        )
    )


@contextlib.contextmanager
def keep_alive(
    db: Database, run_id: int, interval_s: float = HEARTBEAT_INTERVAL_S
) -> Iterator[Heartbeat]:
    """Refresh the heartbeat of ``run_id`` every ``interval_s`` seconds from a thread of
    its own while the block runs (for a run that has no open
    :class:`~nvmlab.storage.writer.RecordWriter`, which does it from its flushing thread)."""

    def refresh() -> None:
        with db.errors(f"refresh the heartbeat of run {run_id}"), db.engine.begin() as conn:
            beat(conn, run_id)

    with Heartbeat(refresh, interval_s, name=f"nvmlab-heartbeat-run{run_id}") as heartbeat:
        yield heartbeat


def _verdict(conn: Connection, run: Any, stale_after_s: float) -> Verdict | None:
    if run.status != "running":
        return None
    now = conn.execute(select(database_now(conn.dialect.name))).scalar_one()
    owner = Owner(run.host, run.pid, run.process_start_s, run.heartbeat_at)
    return judge(owner, now=now, stale_after_s=stale_after_s)


def run_liveness(
    db: Database, run_id: int, *, stale_after_s: float = STALE_AFTER_S
) -> Verdict | None:
    """Whether the process of a ``running`` run is still there (``None``: the run ended)."""
    with db.errors(f"check run {run_id}"), db.read_connection() as conn:
        return _verdict(conn, require_run(conn, db, run_id), stale_after_s)


def runs_liveness(db: Database, *, stale_after_s: float = STALE_AFTER_S) -> dict[int, Verdict]:
    """The verdict of every ``running`` run, by run id."""
    with db.errors("check running runs"), db.read_connection() as conn:
        rows = conn.execute(select(Run.__table__).where(Run.status == "running")).all()
        verdicts = {int(r.id): _verdict(conn, r, stale_after_s) for r in rows}
    return {run: v for run, v in verdicts.items() if v is not None}


def mark_aborted(db: Database, run_id: int, *, stale_after_s: float = STALE_AFTER_S) -> int:
    """End a ``running`` run whose process is gone: status ``aborted``, its attempts still
    ``running`` marked ``interrupted`` (returns how many), so that it can be resumed.

    Refuses (:class:`StorageError`) a run that has ended, or whose process is alive.
    """
    with db.errors(f"mark run {run_id} aborted"), db.engine.begin() as conn:
        run = require_run(conn, db, run_id)
        verdict = _verdict(conn, run, stale_after_s)
        if verdict is None:
            raise StorageError(
                f"run {run_id} is {run.status}, not running; only a running run whose "
                "process is gone can be marked aborted"
            )
        if verdict.alive:
            raise StorageError(
                f"run {run_id} is alive ({verdict.reason}); refusing to mark it aborted. "
                "Stop that process first (Ctrl-C), or wait for it to finish"
            )
        interrupted = conn.execute(
            update(Unit)
            .where(Unit.run_id == run_id, Unit.status == "running")
            .values(status="interrupted", ended_at=utcnow(), message="process gone inside the unit")
        )
        conn.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(
                status="aborted",
                ended_at=utcnow(),
                message=f"marked aborted: {verdict.reason}",
            )
        )
        return int(interrupted.rowcount or 0)


def unit_attempts(db: Database, run_id: int) -> list[dict[str, Any]]:
    """All attempts of ``run_id`` and the runs it resumes, oldest first, as dicts."""
    with db.errors(f"list units of run {run_id}"), db.read_connection() as conn:
        require_run(conn, db, run_id)
        chain = resume_chain(conn, run_id)
        rows = conn.execute(select(Unit.__table__).where(Unit.run_id.in_(chain)).order_by(Unit.id))
        return [dict(r._mapping) for r in rows]


def set_run_progress(
    db: Database,
    run_id: int,
    *,
    step_index: int,
    step_count: int,
    step_label: str,
    units_done: int,
    units_total: int,
    eta_s: float | None,
) -> None:
    """Store where run ``run_id`` is (``run_progress``, one row per run, replaced): step
    ``step_index`` (0-based) of ``step_count``, its units done of total and the ETA (s)."""
    from sqlalchemy import delete

    from nvmlab.storage.models import RunProgress

    values = {
        "step_index": step_index,
        "step_count": step_count,
        "step_label": step_label,
        "units_done": units_done,
        "units_total": units_total,
        "eta_s": eta_s,
        "updated_at": utcnow(),
    }
    with db.errors(f"store the progress of run {run_id}"), db.engine.begin() as conn:
        changed = conn.execute(
            update(RunProgress).where(RunProgress.run_id == run_id).values(**values)
        ).rowcount
        if not changed:
            conn.execute(delete(RunProgress).where(RunProgress.run_id == run_id))
            conn.execute(insert(RunProgress).values(run_id=run_id, **values))
