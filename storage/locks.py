"""The station lock: one station, one job.

A job takes its station's lock (a row of ``station_locks`` keyed by the station's name)
before it touches any instrument and gives it back when it ends. The row records the
holder as a run records its process (:class:`~nvmlab.storage.liveness.Owner`: host, pid,
process start time, a heartbeat refreshed every few seconds) and the run it is running.

A second job on the same station is refused with a :class:`StationLocked` error naming
the run and the process that hold it. A lock whose holder is dead (its process gone on
this host, or no heartbeat for :data:`~nvmlab.storage.liveness.STALE_AFTER_S` from another
host: kill -9, a power cut) is taken over; the take-over is a compare-and-set on the old
holder, so of two processes taking over at once exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from nvmlab.errors import StorageError
from nvmlab.storage.database import Database
from nvmlab.storage.liveness import STALE_AFTER_S, Owner, Verdict, database_now, judge
from nvmlab.storage.models import StationLock, utcnow

__all__ = [
    "LockHolder",
    "StationLocked",
    "acquire_station_lock",
    "refresh_station_lock",
    "release_station_lock",
    "station_lock_holder",
]


class StationLocked(StorageError):
    """The station is held by a live job; the message names its run and process."""

    def __init__(self, message: str, *, station: str, run_id: int | None) -> None:
        super().__init__(message)
        self.station = station
        self.run_id = run_id


@dataclass(frozen=True)
class LockHolder:
    """Who holds a station: the run, the process and whether it is alive (and why)."""

    station: str
    run_id: int | None
    owner: Owner
    verdict: Verdict


def _holder(conn: Any, station: str, stale_after_s: float) -> LockHolder | None:
    row = conn.execute(select(StationLock.__table__).where(StationLock.station == station)).first()
    if row is None:
        return None
    now = conn.execute(select(database_now(conn.dialect.name))).scalar_one()
    owner = Owner(row.host, row.pid, row.process_start_s, row.heartbeat_at)
    return LockHolder(
        station, row.run_id, owner, judge(owner, now=now, stale_after_s=stale_after_s)
    )


def station_lock_holder(
    db: Database, station: str, *, stale_after_s: float = STALE_AFTER_S
) -> LockHolder | None:
    """The holder of ``station``'s lock, or None when nobody holds it."""
    with db.errors(f"read the lock of station {station!r}"), db.read_connection() as conn:
        return _holder(conn, station, stale_after_s)


def acquire_station_lock(
    db: Database,
    station: str,
    *,
    run_id: int | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> str | None:
    """Take ``station``'s lock for this process (and ``run_id``).

    Returns None when the lock was free, or the reason the previous holder was judged
    dead when its lock was taken over. Raises :class:`StationLocked` when a live process
    holds it (this process included: one job per station, even within one process).
    """
    me = Owner.current()
    values = {
        "run_id": run_id,
        "host": me.host,
        "pid": me.pid,
        "process_start_s": me.process_start_s,
        "acquired_at": utcnow(),
    }
    for _try in range(3):
        with db.errors(f"take the lock of station {station!r}"), db.engine.begin() as conn:
            holder = _holder(conn, station, stale_after_s)
            if holder is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(StationLock).values(
                                station=station,
                                heartbeat_at=database_now(conn.dialect.name),
                                **values,
                            )
                        )
                except IntegrityError:
                    continue  # taken meanwhile: judge the new holder
                return None
            if holder.verdict.alive:
                who = f"run {holder.run_id}" if holder.run_id is not None else "a job starting"
                raise StationLocked(
                    f"station {station!r} is locked by {who} ({holder.verdict.reason}); one "
                    "station runs one job at a time: wait for it to end, or stop it "
                    "(Ctrl-C) and resume it later",
                    station=station,
                    run_id=holder.run_id,
                )
            old = holder.owner
            taken = conn.execute(
                update(StationLock)
                .where(
                    StationLock.station == station,
                    StationLock.host.is_(None)
                    if old.host is None
                    else StationLock.host == old.host,
                    StationLock.pid.is_(None) if old.pid is None else StationLock.pid == old.pid,
                )
                .values(heartbeat_at=database_now(conn.dialect.name), **values)
            )
            if taken.rowcount == 1:
                who = f"run {holder.run_id}" if holder.run_id is not None else "a job starting"
                return f"took over the lock of {who}: {holder.verdict.reason}"
    raise StorageError(
        f"could not take the lock of station {station!r}: other processes keep taking it"
    )


def refresh_station_lock(db: Database, station: str, *, run_id: int | None = None) -> None:
    """Refresh the heartbeat of this process's lock (and set its run when given)."""
    me = Owner.current()
    values: dict[str, Any] = {}
    if run_id is not None:
        values["run_id"] = run_id
    with db.errors(f"refresh the lock of station {station!r}"), db.engine.begin() as conn:
        conn.execute(
            update(StationLock)
            .where(
                StationLock.station == station,
                StationLock.host == me.host,
                StationLock.pid == me.pid,
            )
            .values(heartbeat_at=database_now(conn.dialect.name), **values)
        )


def release_station_lock(db: Database, station: str) -> bool:
    """Give ``station``'s lock back if this process holds it; True when it did."""
    me = Owner.current()
    with db.errors(f"release the lock of station {station!r}"), db.engine.begin() as conn:
        result = conn.execute(
            delete(StationLock).where(
                StationLock.station == station,
                StationLock.host == me.host,
                StationLock.pid == me.pid,
            )
        )
        return bool(result.rowcount)
