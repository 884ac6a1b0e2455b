"""The buffered record writer: measurement records of one run, batched into transactions.

::

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

``add_*`` calls only append a tuple to an in-memory buffer; a background thread flushes
the buffer at least every ``flush_interval_s`` (1 s), and at once when ``batch_rows`` rows
are pending. One flush is one transaction: either the whole batch is stored or none of it
(a process killed mid-batch leaves the previous batches intact). The rows go in through
the engine's bulk path (:mod:`nvmlab.storage.bulk`). The measurement loop blocks only when
the database falls ``max_pending_rows`` behind, or at a unit boundary (one short commit).
A failed flush keeps its rows in the buffer and the next call on the writer raises
:class:`~nvmlab.errors.StorageError` (password masked).

Interrupts: a flush removes its rows from the buffer only once their transaction has
committed, so any exception before the commit (KeyboardInterrupt included) leaves them
buffered for the next flush, and one after it never stores them twice. On the main thread
a Ctrl-C arriving during the commit itself is held until the commit and the writer's
bookkeeping are done, then raised (:func:`_sigint_deferred`). If the commit that completes
a unit does not happen, the attempt is marked ``interrupted`` (or ``failed``), best effort,
never left ``running``.

Units: if the block raises, the records already buffered are flushed (they were really
applied) and the attempt is marked ``interrupted`` (KeyboardInterrupt, SystemExit) or
``failed``. :meth:`RecordWriter.unit` refuses a key that already has a completed attempt
in the resume chain (checked in the transaction that opens the attempt, and again in the
one that completes it, so a second copy of a job racing for the same unit keeps its
measured records under an attempt marked ``failed``). On SQLite the write transactions
are serialized (``BEGIN IMMEDIATE``), which makes these checks exact; on both engines the
database itself refuses a second completed attempt per (``chain_run_id``, ``unit_key``),
so two PostgreSQL transactions completing the same unit at the same instant cannot both
commit: the second fails with a StorageError.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import Connection, func, insert, select, update

from nvmlab.clock import Clock
from nvmlab.errors import StorageError
from nvmlab.storage.bulk import BULK_TABLES, COLUMNS, insert_rows, records_from_columns
from nvmlab.storage.database import Database
from nvmlab.storage.liveness import HEARTBEAT_INTERVAL_S
from nvmlab.storage.models import EVENT_LEVELS, Chip, Unit, utcnow
from nvmlab.storage.runs import beat, claim_run, require_run, resume_chain

log = logging.getLogger(__name__)


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


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT while the block runs (on the main thread), then deliver it.

    A Ctrl-C arriving in the block is recorded instead of raising KeyboardInterrupt at
    whatever bytecode runs then (between a commit and the bookkeeping that must follow
    it); after the block the previous handler is restored and the signal raised again, so
    the program sees it at once. Elsewhere (another thread, a handler installed outside
    Python) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for signum in caught:
            signal.raise_signal(signum)


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
    heartbeat_interval_s:
        Seconds between refreshes of the run's heartbeat (liveness,
        :mod:`nvmlab.storage.liveness`). The first flush records this process as the
        run's owner (host, pid, start time); the flushing thread then refreshes the
        heartbeat inside its flush transactions, an empty flush included. Without the
        background thread the heartbeat is refreshed only when the writer flushes.
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
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
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
        if not heartbeat_interval_s > 0:
            raise StorageError(f"heartbeat_interval_s = {heartbeat_interval_s}; must be > 0 s")
        self.heartbeat_interval_s = float(heartbeat_interval_s)
        self._claimed = False
        self._last_beat = time.monotonic()
        with db.errors(f"open a writer for run {run_id}"), db.read_connection() as conn:
            run = require_run(conn, db, run_id)
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
        records = records_from_columns(table, columns, n, defaults, self._now)
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
        except BaseException as exc:
            self._current = None
            self._end_unit_after(handle, exc)
            raise
        self._current = None
        try:
            self._end_unit(handle, "completed", None)
        except BaseException as exc:
            # The commit completing the unit did not happen (its records stay buffered),
            # or happened and something after it raised: either way the attempt must not
            # stay running. Marking it is conditional on it still being running, so a
            # committed completion is never overwritten.
            if handle.status == "running":
                self._end_unit_after(handle, exc)
            raise

    def _end_unit_after(self, handle: UnitAttempt, exc: BaseException) -> None:
        """Best effort, after ``exc``: flush the unit's records and mark the attempt
        ``failed`` (an Exception) or ``interrupted`` (KeyboardInterrupt, SystemExit);
        tried twice (a second Ctrl-C may strike the first try), never raising."""
        if isinstance(exc, Exception):
            status, message = "failed", f"{type(exc).__name__}: {exc}"
        else:
            status, message = "interrupted", type(exc).__name__
        for attempt in (1, 2):
            try:
                self._end_unit(handle, status, message)
                return
            except BaseException as error:  # noqa: BLE001 - best effort; exc propagates
                log.error(
                    "could not mark unit %r of run %d %s (try %d): %r",
                    handle.key, self.run_id, status, attempt, error,
                )  # fmt: skip

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
            marked = conn.execute(
                update(Unit).where(Unit.id == handle.id, Unit.status == "running").values(**values)
            )
            if not marked.rowcount:  # already ended (a completing commit that did happen)
                values["status"] = conn.execute(
                    select(Unit.status).where(Unit.id == handle.id)
                ).scalar_one()

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
        """A copy of what is buffered now; the rows stay in the buffer until
        :meth:`_drop` removes them once they are committed."""
        with self._buffer_lock:
            return {name: rows[:] for name, rows in self._buffer.items()}, self._pending

    def _drop(self, taken: dict[str, list[tuple[Any, ...]]], count: int) -> None:
        """Remove the committed rows ``taken`` (the oldest of each table) from the buffer."""
        with self._buffer_lock:
            for name, rows in taken.items():
                if rows:
                    del self._buffer[name][: len(rows)]
            self._pending -= count
            self._space.notify_all()

    def _insert(self, conn: Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
        insert_rows(conn, table, rows, self._bulk_sql)

    def _beat(self, conn: Connection) -> None:
        """Liveness, inside a flush transaction: the first one records this process as the
        run's owner, later ones refresh the run's heartbeat."""
        if self._claimed:
            beat(conn, self.run_id)
        else:
            claim_run(conn, self.run_id)

    def _flush(
        self, extra: Callable[[Connection], None] | None = None, action: str = "flush"
    ) -> int:
        with self._db_lock:
            taken, count = self._take()
            beat_due = (
                not self._claimed or time.monotonic() - self._last_beat >= self.heartbeat_interval_s
            )
            if count == 0 and extra is None and not beat_due:
                self._last_flush = time.monotonic()
                return 0
            # Until the commit, any exception leaves the rows in the buffer; the commit
            # and their removal happen with Ctrl-C held, so they are never split.
            with (
                self.db.errors(f"{action} ({count} records of run {self.run_id})"),
                self.db.engine.connect() as conn,
            ):
                transaction = conn.begin()
                try:
                    for table in COLUMNS:
                        if taken[table]:
                            self._insert(conn, table, taken[table])
                    if extra is not None:
                        extra(conn)
                    if beat_due:
                        self._beat(conn)
                except BaseException:
                    transaction.rollback()
                    raise
                with _sigint_deferred():
                    try:
                        transaction.commit()
                    except BaseException:
                        # Not committed; the connection's state is unknown: discard it
                        # (closing it rolls back whatever it still holds).
                        with contextlib.suppress(Exception):
                            conn.invalidate()
                        raise
                    self._drop(taken, count)
                    if beat_due:
                        self._claimed = True
                        self._last_beat = time.monotonic()
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


__all__ = ["RecordWriter", "UnitAttempt"]
