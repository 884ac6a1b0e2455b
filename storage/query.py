"""Reading results back: runs, per-device records as numpy arrays and pandas DataFrames.

Large record sets (a 64 x 64 array tuned with ~15 pulses and reads per device is already
100,000+ rows; a characterization run reaches millions) are loaded through a fast path
that bypasses ORM objects and ``pandas.read_sql``:

* SQLite, :data:`ARROW_MIN_ROWS` rows or more: the ADBC SQLite driver in a child process
  (:mod:`nvmlab.storage.sqlite_arrow`, which says why not in this process), Arrow columns
  to numpy; fewer rows (and in-memory databases): the ``sqlite3`` cursor's ``fetchall``
  and one ``numpy.array`` conversion of the whole result;
* PostgreSQL: numeric columns by ``COPY (SELECT ...) TO STDOUT (FORMAT binary)`` decoded
  by numpy, text columns by a CSV ``COPY`` parsed by ``pyarrow.csv``, both in one
  REPEATABLE READ snapshot.

The benchmark (``python -P -m nvmlab.storage.bench``) prints these paths beside
``pandas.read_sql`` for a 1,000,000-record run.

Integer columns that may be NULL (``attempt_id``) come back as ``int64`` with ``-1`` for
NULL in numpy arrays and as pandas ``Int64`` (nullable) in DataFrames; float columns use
NaN for NULL; text columns are object arrays.
"""

from __future__ import annotations

import io
import urllib.parse
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Float, Integer, SmallInteger, func, select
from sqlalchemy.sql.type_api import TypeEngine

from nvmlab.errors import StorageError
from nvmlab.storage.bulk import COLUMNS
from nvmlab.storage.database import Database
from nvmlab.storage.engine import sqlite_file_uri, sqlite_path
from nvmlab.storage.liveness import STALE_AFTER_S
from nvmlab.storage.models import Chip, Run, Trace, Unit
from nvmlab.storage.runs import check_run_id, resume_chain, runs_liveness
from nvmlab.storage.sqlite_arrow import ArrowReadError, read_arrow

#: Record tables readable with :func:`load_records` / :func:`fetch_arrays`.
SCALAR_TABLES = ("pulses", "reads", "tuning_outcomes", "device_parameters", "chamber_log", "events")
_FILTERS = ("run_id", "attempt_id", "chip_id", "row", "col")
#: SQLite results of at least this many rows are read by the ADBC child process (slower to
#: start, faster per row than sqlite3; the benchmark prints both); smaller ones through
#: sqlite3.
ARROW_MIN_ROWS = 100_000


def _kind(column_type: TypeEngine[Any]) -> str:
    if isinstance(column_type, Float):
        return "f"
    if isinstance(column_type, (Integer, SmallInteger)):
        return "i"
    inner = getattr(column_type, "impl", None)
    if inner is not None and isinstance(inner, (Integer, SmallInteger)):
        return "i"
    name = type(column_type).__name__.lower()
    if "int" in name:
        return "i"
    return "o"


def _table_columns(table: str) -> list[tuple[str, str, bool]]:
    from nvmlab.storage.models import Base

    sa_table = Base.metadata.tables[table]
    out = []
    for column in sa_table.columns:
        if column.name in ("details", "meta"):
            continue
        out.append((column.name, _kind(column.type), bool(column.nullable)))
    return out


def _check_run(db: Database, run_id: int) -> None:
    check_run_id(run_id)
    with db.errors(f"look up run {run_id}"), db.read_connection() as conn:
        found = conn.execute(select(Run.id).where(Run.id == run_id)).scalar()
    if found is None:
        raise StorageError(
            f"no run {run_id} in database {db.display_url}; 'nvmlab runs' lists them"
        )


def _select_sql(table: str, names: Sequence[str], filters: dict[str, int | None]) -> str:
    where = []
    for key, value in filters.items():
        if value is None:
            continue
        if key not in _FILTERS:
            raise StorageError(f"filter {key!r}; allowed: {_FILTERS}")
        where.append(f'"{key}" = {int(value)}')  # ints only: safe to inline
    quoted = ", ".join(f'"{n}"' for n in names)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {quoted} FROM {table}{clause} ORDER BY id"


def fetch_arrays(
    db: Database,
    table: str,
    *,
    columns: Sequence[str] | None = None,
    run_id: int | None = None,
    chip_id: int | None = None,
    row: int | None = None,
    col: int | None = None,
    attempt_id: int | None = None,
) -> dict[str, np.ndarray]:
    """Records of ``table`` as one numpy array per column, in insertion order.

    Filters combine with AND: a run, an attempt, a chip, a device (chip, row, col).
    """
    if table not in SCALAR_TABLES:
        raise StorageError(f"table {table!r}; allowed: {SCALAR_TABLES}")
    spec = _table_columns(table)
    known = {name: (kind, nullable) for name, kind, nullable in spec}
    names = list(columns) if columns is not None else [name for name, _, _ in spec]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StorageError(f"{table}: unknown columns {unknown}; allowed: {list(known)}")
    filters = {
        "run_id": run_id,
        "chip_id": chip_id,
        "row": row,
        "col": col,
        "attempt_id": attempt_id,
    }
    if table in ("chamber_log", "events"):
        if any(filters[k] is not None for k in ("chip_id", "row", "col")):
            raise StorageError(f"{table} has no device columns; filter by run_id")
        if table == "chamber_log" and attempt_id is not None:
            raise StorageError("chamber_log has no attempt_id; filter by run_id")
    # Columns fixed by a filter (the run, the chip ...) are filled in, not fetched.
    constant = {n: filters[n] for n in names if filters.get(n) is not None}
    fetched = [n for n in names if n not in constant] or ["id"]
    sql = _select_sql(table, fetched, filters)
    kinds = [known[n] for n in fetched]
    with db.errors(f"read {table}"):
        if db.dialect == "postgresql":
            arrays = _fetch_pg(db, sql, fetched, kinds)
        else:
            arrays = _fetch_sqlite(db, sql, fetched, kinds)
    count = len(arrays[fetched[0]])
    return {
        n: np.full(count, constant[n], dtype=np.int64) if n in constant else arrays[n]
        for n in names
    }


def _sqlite_reader_uri(db: Database) -> str | None:
    """A read-only ``file:`` URI of the database file for the Arrow reader (None: in memory)."""
    database = db.engine.url.database or ""
    if database.startswith("file:"):
        head, _, query = database.partition("?")
        params = dict(urllib.parse.parse_qsl(query))
        if params.get("mode") == "memory" or head in ("file:", "file::memory:"):
            return None
        params["mode"] = "ro"
        return f"{head}?{urllib.parse.urlencode(params)}"
    path = sqlite_path(db.engine.url)
    return sqlite_file_uri(path, mode="ro") if path is not None else None


def _fetch_sqlite(
    db: Database, sql: str, names: list[str], kinds: list[tuple[str, bool]]
) -> dict[str, np.ndarray]:
    """Large results through the ADBC reader (:mod:`nvmlab.storage.sqlite_arrow`), small
    ones (and in-memory databases) through ``sqlite3``, which has no process to start."""
    uri = _sqlite_reader_uri(db)
    if uri is not None:
        tail = sql[sql.index(" FROM ") : sql.index(" ORDER BY ")]
        with db.read_connection() as conn:
            count = conn.exec_driver_sql(f"SELECT count(*){tail}").scalar_one()
        if count >= ARROW_MIN_ROWS:
            try:
                return _arrays_from_arrow(read_arrow(uri, sql), names, kinds)
            except ArrowReadError as exc:
                raise StorageError(f"cannot read {db.display_url}: {exc}") from None
            except pa.ArrowInvalid as exc:  # e.g. text written into a REAL column by hand
                numbers = [n for n, (k, _) in zip(names, kinds, strict=True) if k != "o"]
                raise StorageError(
                    f"cannot read {db.display_url}: a column holds values of the wrong "
                    f"type ({exc}); columns {numbers} must hold numbers"
                ) from None
    with db.read_connection() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            rows = cursor.execute(sql).fetchall()
        finally:
            cursor.close()
        conn.rollback()
    if not rows:
        return {n: np.empty(0, dtype=_dtype(k)) for n, (k, _) in zip(names, kinds, strict=True)}
    # One C-level conversion of the whole result (a Python-level transpose costs ~3x more).
    numeric = all(k in ("f", "i") for k, _ in kinds)
    matrix = np.array(rows, dtype=np.float64 if numeric else object)
    del rows
    out: dict[str, np.ndarray] = {}
    for index, (name, (kind, nullable)) in enumerate(zip(names, kinds, strict=True)):
        column = matrix[:, index]
        if kind == "f":
            out[name] = np.ascontiguousarray(column, dtype=np.float64)
        elif kind == "i":
            if numeric:
                values = np.where(np.isnan(column), -1.0, column) if nullable else column
            else:
                values = np.array([-1 if v is None else v for v in column]) if nullable else column
            out[name] = np.ascontiguousarray(values, dtype=np.int64)
        else:
            out[name] = np.ascontiguousarray(column, dtype=object)
    return out


def _arrays_from_arrow(
    table: pa.Table, names: list[str], kinds: list[tuple[str, bool]]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, (kind, _nullable) in zip(names, kinds, strict=True):
        column = table.column(name)
        if kind == "f":
            out[name] = pc.cast(column, pa.float64()).to_numpy()  # NULL -> NaN
        elif kind == "i":
            out[name] = pc.fill_null(pc.cast(column, pa.int64()), -1).to_numpy()
        else:
            out[name] = np.asarray(
                pc.cast(column, pa.string()).to_numpy(zero_copy_only=False), dtype=object
            )
    return out


def _dtype(kind: str) -> Any:
    return {"f": np.float64, "i": np.int64}.get(kind, object)


_PG_BINARY_HEADER = 19  # "PGCOPY\n\377\r\n\0", flags int32, extension length int32


def _copy_out(conn: Any, statement: str) -> bytes:
    buffer = io.BytesIO()
    cursor = conn.connection.driver_connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for chunk in copy:
                buffer.write(chunk)
    finally:
        cursor.close()
    return buffer.getvalue()


def _numeric_copy(conn: Any, numeric: list[tuple[str, str]], tail: str) -> bytes:
    # NULLs become NaN / -1 on the server so that every tuple has the same width.
    exprs = ", ".join(
        f"coalesce(\"{n}\"::float8, 'NaN'::float8)" if k == "f" else f'coalesce("{n}"::int8, -1)'
        for n, k in numeric
    )
    return _copy_out(conn, f"COPY (SELECT {exprs}{tail}) TO STDOUT (FORMAT binary)")


def _text_copy(conn: Any, texts: list[str], tail: str) -> bytes:
    quoted = ", ".join(f'"{n}"' for n in texts)
    return _copy_out(conn, f"COPY (SELECT {quoted}{tail}) TO STDOUT (FORMAT csv)")


def _fetch_pg(
    db: Database, sql: str, names: list[str], kinds: list[tuple[str, bool]]
) -> dict[str, np.ndarray]:
    """Numeric columns by binary COPY decoded with numpy; text columns by CSV COPY."""
    out: dict[str, np.ndarray] = {}
    numeric = [(n, k) for n, (k, _) in zip(names, kinds, strict=True) if k in ("f", "i")]
    texts = [n for n, (k, _) in zip(names, kinds, strict=True) if k not in ("f", "i")]
    tail = sql[sql.index(" FROM ") :]
    # Both COPYs read one snapshot, so numeric and text columns always match row for row.
    with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.begin()
        numeric_data = _numeric_copy(conn, numeric, tail) if numeric else b""
        text_data = _text_copy(conn, texts, tail) if texts else b""
        conn.rollback()
    if numeric:
        data = numeric_data
        fields: list[tuple[str, str]] = [("n_fields", ">i2")]
        for i, (_, k) in enumerate(numeric):
            fields += [(f"len{i}", ">i4"), (f"v{i}", ">f8" if k == "f" else ">i8")]
        body = data[_PG_BINARY_HEADER : len(data) - 2]
        records = np.frombuffer(body, dtype=np.dtype(fields))
        for i, (n, k) in enumerate(numeric):
            out[n] = records[f"v{i}"].astype(np.float64 if k == "f" else np.int64)
    if texts:
        data = text_data
        if data:
            table = pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(column_names=texts, block_size=1 << 24),
                # A NULL in a one-column result is an empty line: keep it as a row.
                parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in texts},
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            for n in texts:
                out[n] = np.array(table.column(n).to_pylist(), dtype=object)
        else:
            for n in texts:
                out[n] = np.empty(0, dtype=object)
    return {n: out[n] for n in names}


def load_records(
    db: Database,
    table: str,
    run_id: int | None = None,
    *,
    columns: Sequence[str] | None = None,
    chip_id: int | None = None,
    row: int | None = None,
    col: int | None = None,
    attempt_id: int | None = None,
) -> pd.DataFrame:
    """Records of ``table`` as a DataFrame (see :func:`fetch_arrays` for the filters).

    An unknown ``run_id`` raises :class:`StorageError`.
    """
    if run_id is not None:
        _check_run(db, run_id)
    arrays = fetch_arrays(
        db, table, columns=columns, run_id=run_id, chip_id=chip_id, row=row, col=col,
        attempt_id=attempt_id,
    )  # fmt: skip
    frame = pd.DataFrame(arrays, copy=False)
    for name, _kind_, nullable in _table_columns(table):
        if name in frame and _kind_ == "i" and nullable:
            values = arrays[name]
            frame[name] = pd.arrays.IntegerArray(np.where(values < 0, 0, values), values < 0)
    return frame


def load_pulses(db: Database, run_id: int | None = None, **filters: Any) -> pd.DataFrame:
    """Pulses (amplitude V, width s, polarity, scheme) as a DataFrame."""
    return load_records(db, "pulses", run_id, **filters)


def load_reads(db: Database, run_id: int | None = None, **filters: Any) -> pd.DataFrame:
    """Reads (voltage V, current A, conductance S, temperature C, time s) as a DataFrame."""
    return load_records(db, "reads", run_id, **filters)


def device_history(db: Database, chip_id: int, row: int, col: int) -> pd.DataFrame:
    """Every read of device (chip, row, col) across all runs, in time of storage."""
    return load_records(db, "reads", chip_id=chip_id, row=row, col=col)


def conductance_map(db: Database, run_id: int, chip_id: int | None = None) -> np.ndarray:
    """The last stored conductance (S) of each device in ``run_id`` as a rows x cols array.

    Devices never read hold NaN. ``chip_id`` defaults to the run's chip.
    """
    check_run_id(run_id)
    with db.errors(f"read the conductance map of run {run_id}"), db.read_connection() as conn:
        run = conn.execute(select(Run.chip_id).where(Run.id == run_id)).first()
        if run is None:
            raise StorageError(
                f"no run {run_id} in database {db.display_url}; 'nvmlab runs' lists them"
            )
        chip = chip_id if chip_id is not None else run.chip_id
        if chip is None:
            raise StorageError(f"run {run_id} names no chip; pass chip_id")
        size = conn.execute(select(Chip.n_rows, Chip.n_cols).where(Chip.id == chip)).first()
    if size is None:
        raise StorageError(f"no chip {chip} in database {db.display_url}")
    arrays = fetch_arrays(
        db, "reads", columns=["row", "col", "conductance_s"], run_id=run_id, chip_id=chip
    )
    out = np.full((int(size[0]), int(size[1])), np.nan)
    # Later reads overwrite earlier ones: fancy assignment keeps the last occurrence.
    out[arrays["row"], arrays["col"]] = arrays["conductance_s"]
    return out


def load_traces(
    db: Database,
    run_id: int | None = None,
    *,
    chip_id: int | None = None,
    row: int | None = None,
    col: int | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Traces as dicts with ``x`` and ``y`` float64 arrays plus their metadata."""
    if run_id is not None:
        _check_run(db, run_id)
    query = select(Trace.__table__).order_by(Trace.id)
    for column, value in (
        ("run_id", run_id),
        ("chip_id", chip_id),
        ("row", row),
        ("col", col),
        ("kind", kind),
    ):
        if value is not None:
            query = query.where(Trace.__table__.c[column] == value)
    with db.errors("read traces"), db.read_connection() as conn:
        rows = conn.execute(query).all()
    out = []
    for r in rows:
        item = dict(r._mapping)
        item["x"] = np.frombuffer(item.pop("x_data"), dtype="<f8")
        item["y"] = np.frombuffer(item.pop("y_data"), dtype="<f8")
        out.append(item)
    return out


def get_run(db: Database, run_id: int) -> dict[str, Any]:
    """The run's row as a dict; :class:`StorageError` if there is no such run."""
    check_run_id(run_id)
    with db.errors(f"look up run {run_id}"), db.read_connection() as conn:
        row = conn.execute(select(Run.__table__).where(Run.id == run_id)).first()
    if row is None:
        raise StorageError(
            f"no run {run_id} in database {db.display_url}; 'nvmlab runs' lists them"
        )
    return dict(row._mapping)


def list_runs(db: Database, *, stale_after_s: float = STALE_AFTER_S) -> pd.DataFrame:
    """All runs, newest first, with chip name, counts of completed/interrupted units, and
    for a ``running`` run whether its process is still there: ``liveness`` is ``alive`` or
    ``dead`` (``None`` for a run that ended) and ``liveness_reason`` says why
    (:func:`nvmlab.storage.runs.run_liveness`)."""
    units = Unit.__table__
    completed = (
        select(func.count())
        .where(units.c.run_id == Run.id, units.c.status == "completed")
        .scalar_subquery()
    )
    interrupted = (
        select(func.count())
        .where(units.c.run_id == Run.id, units.c.status.in_(("interrupted", "failed")))
        .scalar_subquery()
    )
    query = (
        select(
            Run.id, Run.kind, Run.status, Chip.name.label("chip"), Run.started_at, Run.ended_at,
            Run.operator, Run.host, Run.seed, Run.resumes_run_id,
            completed.label("units_completed"), interrupted.label("units_interrupted"),
            Run.pid, Run.heartbeat_at,
        )
        .outerjoin(Chip, Chip.id == Run.chip_id)
        .order_by(Run.id.desc())
    )  # fmt: skip
    with db.errors("list runs"), db.read_connection() as conn:
        rows = conn.execute(query).all()
    columns = [
        "id", "kind", "status", "chip", "started_at", "ended_at", "operator", "host", "seed",
        "resumes_run_id", "units_completed", "units_interrupted", "pid", "heartbeat_at",
    ]  # fmt: skip
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
    verdicts = runs_liveness(db, stale_after_s=stale_after_s)
    frame["liveness"] = [v.state if (v := verdicts.get(int(i))) else None for i in frame["id"]]
    frame["liveness_reason"] = [
        v.reason if (v := verdicts.get(int(i))) else None for i in frame["id"]
    ]
    frame["pid"] = frame["pid"].astype("Int64")
    frame["resumes_run_id"] = frame["resumes_run_id"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def run_chain(db: Database, run_id: int) -> list[int]:
    """``run_id`` and the runs it resumes, newest first."""
    _check_run(db, run_id)
    with db.errors(f"follow the resume chain of run {run_id}"), db.read_connection() as conn:
        return resume_chain(conn, run_id)


__all__ = [
    "COLUMNS",
    "conductance_map",
    "device_history",
    "fetch_arrays",
    "get_run",
    "list_runs",
    "load_pulses",
    "load_reads",
    "load_records",
    "chain_tuning_outcomes",
    "load_traces",
    "run_chain",
]


def chain_tuning_outcomes(db: Any, run_id: int, prefix: str = "") -> dict[str, np.ndarray]:
    """The tuning outcomes stored by completed units of run ``run_id``'s resume chain (of
    unit keys starting with ``prefix``): row, col, target_s, final_s, error_rel, pulse_count,
    status, algorithm."""
    from sqlalchemy import select

    from nvmlab.storage.models import TuningOutcome, Unit
    from nvmlab.storage.runs import resume_chain

    with db.read_connection() as conn:
        chain = resume_chain(conn, run_id)
        rows = conn.execute(
            select(
                TuningOutcome.row, TuningOutcome.col, TuningOutcome.target_s,
                TuningOutcome.final_s, TuningOutcome.error_rel, TuningOutcome.pulse_count,
                TuningOutcome.status, TuningOutcome.algorithm,
            )
            .join(Unit, Unit.id == TuningOutcome.attempt_id)
            .where(
                TuningOutcome.run_id.in_(chain), Unit.status == "completed",
                Unit.unit_key.startswith(prefix),
            )
            .order_by(TuningOutcome.id)
        ).all()  # fmt: skip
    names = ("row", "col", "target_s", "final_s", "error_rel", "pulse_count", "status", "algorithm")
    return {
        n: np.array([r[i] for r in rows], dtype=object if n in ("status", "algorithm") else float)
        for i, n in enumerate(names)
    }
