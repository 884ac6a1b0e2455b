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

import getpass
import operator
import socket
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select, update

from nvmlab import __version__
from nvmlab.errors import StorageError
from nvmlab.storage.database import Database
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
    is recorded automatically.
    """
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
                    host=host or socket.gethostname(),
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


def unit_attempts(db: Database, run_id: int) -> list[dict[str, Any]]:
    """All attempts of ``run_id`` and the runs it resumes, oldest first, as dicts."""
    with db.errors(f"list units of run {run_id}"), db.read_connection() as conn:
        require_run(conn, db, run_id)
        chain = resume_chain(conn, run_id)
        rows = conn.execute(select(Unit.__table__).where(Unit.run_id.in_(chain)).order_by(Unit.id))
        return [dict(r._mapping) for r in rows]
