"""Writing results: chips, stations, runs, units (attempts) and the buffered record writer.

Runs and units
--------------
:func:`start_run` records a run (status ``running``); :func:`finish_run` closes it
(``completed``, ``failed`` or ``aborted``). Work inside a run is cut into *units*; each try
at a unit is an *attempt*, a row of ``units`` whose id is the attempt id stamped on every
record it produced::

    with RecordWriter(db, run_id, chip_id=chip) as w:
        for (r, c) in devices:
            key = f"tune:{r},{c}"
            if key in done:                       # done = completed_units(db, run_id)
                continue
            with w.unit(key, kind="tune", row=r, col=c) as unit:
                ...  w.add_pulse(r, c, 1.2, 1e-6)  ...  w.add_read(r, c, 0.2, 1.1e-5)
                w.add_tuning_outcome(r, c, target_s=5e-5, final_s=..., pulse_count=7)
            # leaving the block committed the unit: its remaining buffered records, its
            # outcome and status "completed" in ONE transaction

If the block raises, the records already buffered are flushed (they were really applied)
and the attempt is marked ``interrupted`` (KeyboardInterrupt, SystemExit) or ``failed``.
If the process dies (kill -9), the attempt stays ``running``; :func:`resume_run` marks it
``interrupted`` and starts a new run linked by ``resumes_run_id``, and
:func:`completed_units` on the new run lists exactly the units completed anywhere in the
chain, so no unit is redone or stored twice. :meth:`RecordWriter.unit` refuses a key that
already has a completed attempt in the chain (checked in the transaction that opens the
attempt, and again in the one that completes it, so a second copy of a job racing for the
same unit keeps its measured records under an attempt marked ``failed``); a run can be
resumed only once, so a chain never branches. On SQLite the write transactions are
serialized (``BEGIN IMMEDIATE``), which makes these checks exact; on both engines the
database itself refuses a second completed attempt per (``chain_run_id``, ``unit_key``)
(a partial unique index) and a second run resuming the same run (unique
``resumes_run_id``), so two PostgreSQL transactions completing the same unit at the same
instant cannot both commit: the second fails with a StorageError.

The buffered writer
-------------------
``add_*`` calls only append a tuple to an in-memory buffer (about a microsecond); a
background thread flushes the buffer at least every ``flush_interval_s`` (1 s), and at once
when ``batch_rows`` rows are pending. One flush is one transaction: either the whole batch
is stored or none of it (a process killed mid-batch leaves the previous batches intact).
Pulses and reads go in through the fastest path measured per engine: SQLite
``executemany`` on the driver cursor (SQLAlchemy ``exec_driver_sql``), PostgreSQL
``COPY ... FROM STDIN`` on the same connection and transaction (the benchmark prints
psycopg ``executemany`` at about 41,000-45,000 rows/s there, COPY at 63,000-67,000);
the low-volume tables (traces, outcomes, parameters, chamber log, events) use Core
``insert()`` executemany. The measurement loop blocks only when the database falls
``max_pending_rows`` behind, or at a unit boundary (one short commit).
A failed flush keeps its rows in the buffer and the next call on the writer raises
:class:`~nvmlab.errors.StorageError` (password masked).
"""

from __future__ import annotations

import getpass
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from nvmlab import __version__
from nvmlab.clock import Clock
from nvmlab.errors import StorageError
from nvmlab.storage.database import Database
from nvmlab.storage.models import (
    ARRAY_KINDS,
    EVENT_LEVELS,
    RUN_STATUSES,
    Base,
    ChamberLogEntry,
    Chip,
    DeviceParameter,
    Event,
    Instrument,
    Pulse,
    Read,
    Run,
    Station,
    Trace,
    TuningOutcome,
    Unit,
    utcnow,
)

log = logging.getLogger(__name__)

#: Column order of the tuples buffered for each table.
COLUMNS: dict[str, tuple[str, ...]] = {
    "pulses": (
        "run_id", "attempt_id", "chip_id", "row", "col", "t_s",
        "amplitude_v", "width_s", "polarity", "scheme",
    ),
    "reads": (
        "run_id", "attempt_id", "chip_id", "row", "col", "t_s",
        "voltage_v", "current_a", "conductance_s", "temperature_c",
    ),
    "traces": (
        "run_id", "attempt_id", "chip_id", "row", "col", "kind", "t_s", "n_samples",
        "x_name", "y_name", "x_data", "y_data", "temperature_c", "meta",
    ),
    "tuning_outcomes": (
        "run_id", "attempt_id", "chip_id", "row", "col", "target_s", "final_s",
        "error_rel", "pulse_count", "status", "algorithm",
    ),
    "device_parameters": (
        "run_id", "attempt_id", "chip_id", "row", "col", "name", "value", "text_value", "unit",
    ),
    "chamber_log": (
        "run_id", "station_id", "t_s", "setpoint_c", "air_c", "chip_c", "alarm",
    ),
    "events": ("run_id", "attempt_id", "t_s", "level", "source", "message", "details"),
}  # fmt: skip


def _core_table(model: type[Base]) -> Table:
    """``model``'s Core Table (the ORM stubs type ``model.__table__`` as a bare FromClause)."""
    return Base.metadata.tables[model.__tablename__]


_TABLES: dict[str, Table] = {
    "pulses": _core_table(Pulse),
    "reads": _core_table(Read),
    "traces": _core_table(Trace),
    "tuning_outcomes": _core_table(TuningOutcome),
    "device_parameters": _core_table(DeviceParameter),
    "chamber_log": _core_table(ChamberLogEntry),
    "events": _core_table(Event),
}
#: Tables written through the engine's bulk path (driver executemany / COPY).
BULK_TABLES = ("pulses", "reads")


# --------------------------------------------------------------------------- chips, stations


def ensure_chip(
    db: Database,
    name: str,
    *,
    array_kind: str,
    n_rows: int,
    n_cols: int,
    lot: str | None = None,
    wafer: str | None = None,
    die: str | None = None,
    notes: str | None = None,
) -> int:
    """Return the id of chip ``name``, recording it first if it is new.

    An existing chip must match ``array_kind``, ``n_rows`` and ``n_cols``.
    """
    if array_kind not in ARRAY_KINDS:
        raise StorageError(f"chip {name!r}: array_kind {array_kind!r}; allowed: {ARRAY_KINDS}")
    if n_rows <= 0 or n_cols <= 0:
        raise StorageError(f"chip {name!r}: size {n_rows} x {n_cols}; rows and cols must be > 0")
    query = select(Chip.id, Chip.array_kind, Chip.n_rows, Chip.n_cols).where(Chip.name == name)
    new_chip = insert(Chip).values(
        name=name, array_kind=array_kind, n_rows=n_rows, n_cols=n_cols,
        lot=lot, wafer=wafer, die=die, notes=notes, created_at=utcnow(),
    ).returning(Chip.id)  # fmt: skip
    with db.errors(f"record chip {name!r}"), db.engine.begin() as conn:
        row = conn.execute(query).first()
        if row is None:
            created = _insert_unless_exists(conn, new_chip)
            if created is not None:
                return created
            row = conn.execute(query).one()  # another process recorded it meanwhile
        if (row.array_kind, row.n_rows, row.n_cols) != (array_kind, n_rows, n_cols):
            raise StorageError(
                f"chip {name!r} is stored as {row.array_kind} {row.n_rows} x {row.n_cols}, "
                f"not {array_kind} {n_rows} x {n_cols}; use another chip name"
            )
        return int(row.id)


def _insert_unless_exists(conn: Connection, statement: Any) -> int | None:
    """Run an ``INSERT ... RETURNING id`` in a savepoint; ``None`` if a unique key already
    exists (another process inserted the same name between our SELECT and INSERT)."""
    try:
        with conn.begin_nested():
            return int(conn.execute(statement).scalar_one())
    except IntegrityError:
        return None


def ensure_station(
    db: Database,
    name: str,
    *,
    host: str | None = None,
    instruments: Mapping[str, Mapping[str, str | None]] | None = None,
    notes: str | None = None,
) -> int:
    """Return the id of station ``name`` (recorded if new) and store its instruments.

    ``instruments`` maps a role (``"smu"``, ``"chamber"``, ``"board"``) to its identity:
    keys ``manufacturer``, ``model``, ``serial``, ``firmware``, ``resource``. The identity
    of a role is replaced when it changed (an instrument swapped on the bench).
    """
    allowed = {"manufacturer", "model", "serial", "firmware", "resource"}
    with db.errors(f"record station {name!r}"), db.engine.begin() as conn:
        query = select(Station.id).where(Station.name == name)
        station_id = conn.execute(query).scalar()
        if station_id is None:
            station_id = _insert_unless_exists(
                conn,
                insert(Station)
                .values(name=name, host=host, notes=notes, created_at=utcnow())
                .returning(Station.id),
            )
            if station_id is None:  # recorded by another process meanwhile
                station_id = conn.execute(query).scalar_one()
        for role, identity in (instruments or {}).items():
            unknown = set(identity) - allowed
            if unknown:
                raise StorageError(
                    f"station {name!r} instrument {role!r}: unknown fields {sorted(unknown)}; "
                    f"allowed: {sorted(allowed)}"
                )
            values = {key: identity.get(key) for key in allowed}
            existing = conn.execute(
                select(Instrument.id).where(
                    Instrument.station_id == station_id, Instrument.role == role
                )
            ).scalar()
            if existing is None:
                conn.execute(insert(Instrument).values(station_id=station_id, role=role, **values))
            else:
                conn.execute(update(Instrument).where(Instrument.id == existing).values(**values))
        return int(station_id)


# --------------------------------------------------------------------------- runs


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


def _require_run(conn: Connection, db: Database, run_id: int) -> Any:
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
        _require_run(conn, db, run_id)
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
        _require_run(conn, db, run_id)
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
        old = _require_run(conn, db, run_id)
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
        _require_run(conn, db, run_id)
        chain = resume_chain(conn, run_id)
        keys = conn.execute(
            select(Unit.unit_key)
            .where(Unit.run_id.in_(chain), Unit.status == "completed")
            .distinct()
        ).scalars()
        return set(keys)


# --------------------------------------------------------------------------- the writer


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise StorageError(f"{name} = {value!r}; a stored {name} must be a finite number")
    return number


def _optional(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _refuse_completed(conn: Connection, chain: Sequence[int], key: str) -> None:
    """Raise if unit ``key`` already has a completed attempt in the resume ``chain``."""
    done = conn.execute(
        select(Unit.run_id, Unit.attempt).where(
            Unit.run_id.in_(chain), Unit.unit_key == key, Unit.status == "completed"
        )
    ).first()
    if done is not None:
        raise StorageError(
            f"unit {key!r} was already completed (run {done.run_id}, attempt {done.attempt}); "
            "a unit is completed once per resume chain: skip the keys completed_units() returns"
        )


class UnitAttempt:
    """One attempt at a unit, opened by :meth:`RecordWriter.unit`; ``id`` is the attempt id."""

    def __init__(self, writer: RecordWriter, attempt_id: int, key: str, attempt: int) -> None:
        self._writer = writer
        self.id = attempt_id
        self.key = key
        self.attempt = attempt
        self.result: dict[str, Any] | None = None
        self.status = "running"

    def set_result(self, **values: Any) -> None:
        """Values stored as the unit's JSON result when it completes."""
        self.result = {**(self.result or {}), **values}

    def __repr__(self) -> str:
        return f"UnitAttempt(id={self.id}, key={self.key!r}, attempt={self.attempt}, status={self.status!r})"


class RecordWriter:
    """Buffered, batched writer of measurement records for one run.

    Parameters
    ----------
    db, run_id:
        The database and the run the records belong to.
    chip_id:
        Default chip of device records (a device is ``(chip_id, row, col)``); rows and
        columns are checked against the chip's size.
    clock:
        Source of ``t_s`` when a record gives none (default: ``time.time``, s).
    flush_interval_s:
        Longest time (s) a record waits in memory before its batch is committed.
    batch_rows:
        Pending rows that trigger an immediate flush.
    max_pending_rows:
        Pending rows at which ``add_*`` waits for the database (back-pressure).
    background:
        Flush from a background thread (default). ``False``: flush only on ``flush()``,
        unit boundaries, ``close()`` and when an ``add_*`` finds the interval elapsed.
    """

    def __init__(
        self,
        db: Database,
        run_id: int,
        *,
        chip_id: int | None = None,
        clock: Clock | None = None,
        flush_interval_s: float = 1.0,
        batch_rows: int = 50_000,
        max_pending_rows: int = 2_000_000,
        background: bool = True,
    ) -> None:
        if flush_interval_s <= 0:
            raise StorageError(f"flush_interval_s = {flush_interval_s}; must be > 0 s")
        self.db = db
        self.run_id = run_id
        self.chip_id = chip_id
        self._now: Callable[[], float] = clock.now if clock is not None else time.time
        self.flush_interval_s = float(flush_interval_s)
        self.batch_rows = int(batch_rows)
        self.max_pending_rows = int(max_pending_rows)
        self._buffer: dict[str, list[tuple[Any, ...]]] = {name: [] for name in COLUMNS}
        self._pending = 0
        self._buffer_lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._space = threading.Condition(self._buffer_lock)
        self._wake = threading.Event()
        self._closed = False
        self._error: StorageError | None = None
        self._last_flush = time.monotonic()
        self._current: UnitAttempt | None = None
        self.rows_written = 0
        self.batches_written = 0
        self._chip_sizes: dict[int, tuple[int, int]] = {}
        self._bulk_sql: dict[str, str] = {}
        with db.errors(f"open a writer for run {run_id}"), db.read_connection() as conn:
            run = _require_run(conn, db, run_id)
            if run.status != "running":
                raise StorageError(
                    f"run {run_id} is {run.status}; records go only to a running run "
                    "(resume it with a new run instead)"
                )
            self._chain = resume_chain(conn, run_id)
        if chip_id is not None:
            self._load_chip(chip_id)
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run_flusher, name=f"nvmlab-writer-run{run_id}", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ records

    def _device(self, chip_id: int | None, row: int, col: int) -> tuple[int, int, int]:
        chip = self.chip_id if chip_id is None else chip_id
        if chip is None:
            raise StorageError("device record without chip: pass chip_id here or to RecordWriter")
        size = self._chip_sizes.get(chip) or self._load_chip(chip)
        r, c = int(row), int(col)
        if not (0 <= r < size[0] and 0 <= c < size[1]):
            raise StorageError(
                f"device ({r}, {c}) is outside chip {chip} ({size[0]} rows x {size[1]} cols); "
                f"allowed rows 0..{size[0] - 1}, cols 0..{size[1] - 1}"
            )
        return chip, r, c

    def _load_chip(self, chip: int) -> tuple[int, int]:
        with self.db.errors(f"look up chip {chip}"), self.db.read_connection() as conn:
            found = conn.execute(select(Chip.n_rows, Chip.n_cols).where(Chip.id == chip)).first()
        if found is None:
            raise StorageError(
                f"no chip {chip} in database {self.db.display_url}; ensure_chip() first"
            )
        self._chip_sizes[chip] = (int(found[0]), int(found[1]))
        return self._chip_sizes[chip]

    def _attempt(self, attempt_id: int | None) -> int | None:
        if attempt_id is not None:
            return attempt_id
        return self._current.id if self._current is not None else None

    def _append(self, table: str, record: tuple[Any, ...], count: int = 1) -> None:
        self._check_error()
        with self._buffer_lock:
            if self._closed:
                raise StorageError(f"writer of run {self.run_id} is closed")
            while self._pending >= self.max_pending_rows and self._thread is not None:
                self._wake.set()
                self._space.wait(timeout=0.1)
                if self._error is not None:
                    break
            self._buffer[table].append(record)
            self._pending += count
            full = self._pending >= self.batch_rows
        if full:
            self._wake.set()
            if self._thread is None:
                self.flush()
        elif self._thread is None and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def add_pulse(
        self,
        row: int,
        col: int,
        amplitude_v: float,
        width_s: float,
        polarity: int = 1,
        scheme: str | None = None,
        *,
        t_s: float | None = None,
        attempt_id: int | None = None,
        chip_id: int | None = None,
    ) -> None:
        """Buffer one pulse: amplitude (V), width (s), polarity (+1 set / -1 reset), scheme."""
        chip, r, c = self._device(chip_id, row, col)
        if polarity not in (1, -1):
            raise StorageError(f"pulse polarity {polarity!r}; allowed: +1 or -1")
        self._append(
            "pulses",
            (
                self.run_id, self._attempt(attempt_id), chip, r, c,
                _finite("t_s", self._now() if t_s is None else t_s),
                _finite("amplitude_v", amplitude_v), _finite("width_s", width_s),
                int(polarity), scheme,
            ),
        )  # fmt: skip

    def add_read(
        self,
        row: int,
        col: int,
        voltage_v: float,
        current_a: float,
        conductance_s: float | None = None,
        temperature_c: float | None = None,
        *,
        t_s: float | None = None,
        attempt_id: int | None = None,
        chip_id: int | None = None,
    ) -> None:
        """Buffer one read: voltage (V), current (A), conductance (S), temperature (C).

        ``conductance_s`` defaults to current / voltage when the voltage is non-zero.
        """
        chip, r, c = self._device(chip_id, row, col)
        v = _finite("voltage_v", voltage_v)
        i = _finite("current_a", current_a)
        g = _optional(conductance_s) if conductance_s is not None else (i / v if v else None)
        self._append(
            "reads",
            (
                self.run_id, self._attempt(attempt_id), chip, r, c,
                _finite("t_s", self._now() if t_s is None else t_s),
                v, i, g, _optional(temperature_c),
            ),
        )  # fmt: skip

    def add_records(self, table: str, columns: Mapping[str, Any]) -> None:
        """Buffer many pulses or reads at once from equal-length columns (arrays or lists).

        ``columns`` holds the record fields by name (``row``, ``col``, ``t_s``,
        ``amplitude_v`` ...); ``run_id``, ``attempt_id`` and ``chip_id`` default to the
        writer's. Fields are checked like the one-record calls, vectorized.
        """
        if table not in BULK_TABLES:
            raise StorageError(f"add_records table {table!r}; allowed: {BULK_TABLES}")
        names = COLUMNS[table]
        unknown = set(columns) - set(names)
        if unknown:
            raise StorageError(f"{table}: unknown columns {sorted(unknown)}; allowed: {names}")
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise StorageError(f"{table}: columns of different lengths {sorted(lengths)}")
        n = lengths.pop()
        chip = self.chip_id
        if "chip_id" in columns and n:
            chips = set(np.unique(np.asarray(columns["chip_id"], dtype=np.int64)).tolist())
            if len(chips) != 1:
                raise StorageError(
                    f"{table}: records of chips {sorted(chips)} in one add_records call; "
                    "allowed: one chip per call (rows and cols are checked against its size)"
                )
            chip = chips.pop()
        rows = np.asarray(columns["row"], dtype=np.int64)
        cols = np.asarray(columns["col"], dtype=np.int64)
        if chip is not None and n:
            self._device(chip, int(rows.min()), int(cols.min()))
            self._device(chip, int(rows.max()), int(cols.max()))
        defaults: dict[str, Any] = {
            "run_id": self.run_id,
            "attempt_id": self._attempt(None),
            "chip_id": chip,
            "t_s": None,
            "scheme": None,
            "polarity": 1,
            "conductance_s": None,
            "temperature_c": None,
        }
        out: list[Sequence[Any]] = []
        for name in names:
            if name in columns:
                values = columns[name]
                if isinstance(values, np.ndarray):
                    checked = name in ("t_s", "amplitude_v", "width_s", "voltage_v", "current_a")
                    if checked and values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                        raise StorageError(f"{table}.{name} holds non-finite values")
                    values = values.tolist()
                out.append(values)
            elif name == "t_s":
                out.append([self._now()] * n)
            elif name in defaults:
                out.append([defaults[name]] * n)
            else:
                raise StorageError(f"{table}: column {name!r} missing")
        if table == "pulses" and not set(out[names.index("polarity")]) <= {1, -1}:
            raise StorageError("pulses.polarity holds values other than +1 / -1")
        records = list(zip(*out, strict=True))
        self._check_error()
        with self._buffer_lock:
            self._buffer[table].extend(records)
            self._pending += n
            full = self._pending >= self.batch_rows
        if full:
            self._wake.set()
            if self._thread is None:
                self.flush()

    def add_trace(
        self,
        row: int,
        col: int,
        kind: str,
        x: Sequence[float] | np.ndarray,
        y: Sequence[float] | np.ndarray,
        *,
        x_name: str = "voltage_v",
        y_name: str = "current_a",
        temperature_c: float | None = None,
        meta: Mapping[str, Any] | None = None,
        t_s: float | None = None,
        attempt_id: int | None = None,
        chip_id: int | None = None,
    ) -> None:
        """Buffer a trace (I-V sweep, noise series): x and y as float64 arrays of one length."""
        chip, r, c = self._device(chip_id, row, col)
        xa = np.ascontiguousarray(x, dtype="<f8")
        ya = np.ascontiguousarray(y, dtype="<f8")
        if xa.ndim != 1 or xa.shape != ya.shape:
            raise StorageError(f"trace {kind!r}: x {xa.shape} and y {ya.shape} must be 1-D, equal")
        self._append(
            "traces",
            (
                self.run_id, self._attempt(attempt_id), chip, r, c, kind,
                _finite("t_s", self._now() if t_s is None else t_s), int(xa.size),
                x_name, y_name, xa.tobytes(), ya.tobytes(), _optional(temperature_c),
                dict(meta) if meta else None,
            ),
        )  # fmt: skip

    def add_tuning_outcome(
        self,
        row: int,
        col: int,
        *,
        target_s: float,
        final_s: float | None,
        pulse_count: int,
        status: str = "converged",
        algorithm: str | None = None,
        error_rel: float | None = None,
        attempt_id: int | None = None,
        chip_id: int | None = None,
    ) -> None:
        """Buffer a tuning outcome: target and final conductance (S), pulses used, status.

        ``error_rel`` defaults to (final - target) / target.
        """
        chip, r, c = self._device(chip_id, row, col)
        target = _finite("target_s", target_s)
        final = _optional(final_s)
        if error_rel is None and final is not None and target:
            error_rel = (final - target) / target
        self._append(
            "tuning_outcomes",
            (
                self.run_id, self._attempt(attempt_id), chip, r, c, target, final,
                _optional(error_rel), int(pulse_count), status, algorithm,
            ),
        )  # fmt: skip

    def add_device_parameter(
        self,
        row: int,
        col: int,
        name: str,
        value: float | None = None,
        *,
        unit: str | None = None,
        text_value: str | None = None,
        attempt_id: int | None = None,
        chip_id: int | None = None,
    ) -> None:
        """Buffer a derived parameter of a device (e.g. ``set_threshold_v`` 1.1 ``V``,
        ``defect_class`` text ``stuck_off``)."""
        chip, r, c = self._device(chip_id, row, col)
        if value is None and text_value is None:
            raise StorageError(f"device parameter {name!r}: give a value or a text_value")
        self._append(
            "device_parameters",
            (
                self.run_id,
                self._attempt(attempt_id),
                chip,
                r,
                c,
                name,
                _optional(value),
                text_value,
                unit,
            ),
        )

    def add_chamber(
        self,
        *,
        setpoint_c: float | None,
        air_c: float | None,
        chip_c: float | None = None,
        alarm: str | None = None,
        station_id: int | None = None,
        t_s: float | None = None,
    ) -> None:
        """Buffer a chamber log entry: setpoint, air and chip temperature (C), alarm text."""
        self._append(
            "chamber_log",
            (
                self.run_id, station_id, _finite("t_s", self._now() if t_s is None else t_s),
                _optional(setpoint_c), _optional(air_c), _optional(chip_c), alarm,
            ),
        )  # fmt: skip

    def add_event(
        self,
        level: str,
        message: str,
        *,
        source: str | None = None,
        details: Mapping[str, Any] | None = None,
        t_s: float | None = None,
        attempt_id: int | None = None,
    ) -> None:
        """Buffer an event: ``info``, ``warning``, ``fault`` or ``recovery``."""
        if level not in EVENT_LEVELS:
            raise StorageError(f"event level {level!r}; allowed: {EVENT_LEVELS}")
        self._append(
            "events",
            (
                self.run_id, self._attempt(attempt_id),
                _finite("t_s", self._now() if t_s is None else t_s), level, source, message,
                dict(details) if details else None,
            ),
        )  # fmt: skip

    # ------------------------------------------------------------------ units

    @contextmanager
    def unit(
        self,
        key: str,
        *,
        kind: str | None = None,
        row: int | None = None,
        col: int | None = None,
        chip_id: int | None = None,
    ) -> Iterator[UnitAttempt]:
        """Open an attempt at unit ``key``; commit it atomically when the block ends.

        Records added inside the block carry the attempt id. On normal exit the records
        still buffered, the unit's result and status ``completed`` are committed in one
        transaction. On an exception, buffered records are flushed and the attempt is
        marked ``interrupted`` (KeyboardInterrupt / SystemExit) or ``failed``; the exception
        propagates.
        """
        if self._current is not None:
            raise StorageError(f"unit {key!r} opened inside unit {self._current.key!r}")
        self._check_error()
        chip = self.chip_id if chip_id is None else chip_id
        with self._db_lock, self.db.errors(f"start unit {key!r}"), self.db.engine.begin() as conn:
            _refuse_completed(conn, self._chain, key)
            previous = conn.execute(
                select(func.max(Unit.attempt)).where(
                    Unit.run_id.in_(self._chain), Unit.unit_key == key
                )
            ).scalar()
            attempt = int(previous or 0) + 1
            attempt_id = conn.execute(
                insert(Unit)
                .values(
                    run_id=self.run_id, chain_run_id=self._chain[-1], unit_key=key, kind=kind,
                    attempt=attempt,
                    status="running", chip_id=chip, row=row, col=col, started_at=utcnow(),
                )
                .returning(Unit.id)
            ).scalar_one()  # fmt: skip
        handle = UnitAttempt(self, int(attempt_id), key, attempt)
        self._current = handle
        try:
            yield handle
        except Exception as exc:
            self._current = None
            self._end_unit(handle, "failed", f"{type(exc).__name__}: {exc}")
            raise
        except BaseException as exc:
            self._current = None
            self._end_unit(handle, "interrupted", f"{type(exc).__name__}")
            raise
        self._current = None
        self._end_unit(handle, "completed", None)

    def _end_unit(self, handle: UnitAttempt, status: str, message: str | None) -> None:
        values = {
            "status": status,
            "ended_at": utcnow(),
            "message": message,
            "result": handle.result,
        }

        duplicate: list[str] = []

        def mark(conn: Connection) -> None:
            if status == "completed":
                # Another process on this resume chain may have completed the unit since it
                # started: keep this attempt's records (really measured) but mark it failed.
                try:
                    _refuse_completed(conn, self._chain, handle.key)
                except StorageError as exc:
                    duplicate.append(str(exc))
                    values.update(status="failed", message=str(exc))
            conn.execute(update(Unit).where(Unit.id == handle.id).values(**values))

        self._flush(extra=mark, action=f"commit unit {handle.key!r} as {status}")
        handle.status = str(values["status"])
        if duplicate:
            raise StorageError(duplicate[0])

    # ------------------------------------------------------------------ flushing

    def _check_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _take(self) -> tuple[dict[str, list[tuple[Any, ...]]], int]:
        with self._buffer_lock:
            taken = self._buffer
            count = self._pending
            self._buffer = {name: [] for name in COLUMNS}
            self._pending = 0
            self._space.notify_all()
            return taken, count

    def _put_back(self, taken: dict[str, list[tuple[Any, ...]]], count: int) -> None:
        with self._buffer_lock:
            for name, rows in taken.items():
                self._buffer[name][:0] = rows
            self._pending += count

    def _insert(self, conn: Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
        names = COLUMNS[table]
        if table in BULK_TABLES and self.db.dialect == "postgresql":
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            quoted = ", ".join(f'"{n}"' for n in names)
            with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                for record in rows:
                    copy.write_row(record)
            cursor.close()
        elif table in BULK_TABLES:
            sql = self._bulk_sql.get(table)
            if sql is None:
                compiled = insert(_TABLES[table]).compile(
                    dialect=conn.dialect, column_keys=list(names)
                )
                sql = self._bulk_sql[table] = str(compiled)
            conn.exec_driver_sql(sql, rows)  # type: ignore[arg-type]
        else:
            conn.execute(insert(_TABLES[table]), [dict(zip(names, r, strict=True)) for r in rows])

    def _flush(
        self, extra: Callable[[Connection], None] | None = None, action: str = "flush"
    ) -> int:
        with self._db_lock:
            taken, count = self._take()
            if count == 0 and extra is None:
                self._last_flush = time.monotonic()
                return 0
            try:
                with (
                    self.db.errors(f"{action} ({count} records of run {self.run_id})"),
                    self.db.engine.begin() as conn,
                ):
                    for table in COLUMNS:
                        if taken[table]:
                            self._insert(conn, table, taken[table])
                    if extra is not None:
                        extra(conn)
            except StorageError:
                self._put_back(taken, count)
                raise
            self._last_flush = time.monotonic()
            self.rows_written += count
            self.batches_written += 1
            return count

    def flush(self) -> int:
        """Commit everything buffered now, in one transaction; return the rows written."""
        self._check_error()
        return self._flush()

    def _run_flusher(self) -> None:
        while True:
            self._wake.wait(timeout=self.flush_interval_s)
            self._wake.clear()
            with self._buffer_lock:
                closed = self._closed
            if closed:
                return
            try:
                self._flush()
            except StorageError as exc:
                log.error("%s", exc)
                self._error = exc
                with self._buffer_lock:
                    self._space.notify_all()
                time.sleep(min(self.flush_interval_s, 1.0))
            except Exception as exc:  # noqa: BLE001 - reported to the writer's caller
                self._error = StorageError(f"writer of run {self.run_id} failed: {exc!r}")
                return

    def close(self) -> None:
        """Flush what is buffered and stop the background thread (idempotent)."""
        with self._buffer_lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._error = None
        self._flush()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordWriter(db={self.db.display_url!r}, run_id={self.run_id}, pending={self._pending})"


def unit_attempts(db: Database, run_id: int) -> list[dict[str, Any]]:
    """All attempts of ``run_id`` and the runs it resumes, oldest first, as dicts."""
    with db.errors(f"list units of run {run_id}"), db.read_connection() as conn:
        _require_run(conn, db, run_id)
        chain = resume_chain(conn, run_id)
        rows = conn.execute(select(Unit.__table__).where(Unit.run_id.in_(chain)).order_by(Unit.id))
        return [dict(r._mapping) for r in rows]


__all__ = [
    "COLUMNS",
    "RecordWriter",
    "UnitAttempt",
    "completed_units",
    "ensure_chip",
    "ensure_station",
    "finish_run",
    "mark_interrupted",
    "resume_chain",
    "resume_run",
    "start_run",
    "unit_attempts",
]
