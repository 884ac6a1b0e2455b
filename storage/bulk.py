"""The bulk paths: buffered record tuples into their tables, the fastest way per engine.

Pulses and reads (the high-volume tables, :data:`BULK_TABLES`) go in through SQLite
``executemany`` on the driver cursor (SQLAlchemy ``exec_driver_sql``) or PostgreSQL
``COPY ... FROM STDIN`` on the connection and transaction of the batch; ``python -P -m
nvmlab.storage.bench`` prints both beside a plain baseline measured in the same run. The
low-volume tables (traces, outcomes, parameters, chamber log, events) use Core
``insert()`` executemany. Records are tuples in the column order of :data:`COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table, insert

from nvmlab.errors import StorageError
from nvmlab.storage.models import (
    Base,
    ChamberLogEntry,
    DeviceParameter,
    Event,
    Pulse,
    Read,
    Trace,
    TuningOutcome,
)

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


TABLES: dict[str, Table] = {
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
#: Float columns of the bulk tables that must be finite.
FINITE_COLUMNS = ("t_s", "amplitude_v", "width_s", "voltage_v", "current_a")


def insert_rows(
    conn: Connection,
    table: str,
    rows: list[tuple[Any, ...]],
    sql_cache: dict[str, str] | None = None,
) -> None:
    """Insert ``rows`` (tuples in :data:`COLUMNS` order) into ``table`` inside the
    transaction of ``conn``, by the engine's fastest path.

    ``sql_cache`` keeps the compiled SQLite statement between calls (one dict per writer).
    """
    names = COLUMNS[table]
    if table in BULK_TABLES and conn.dialect.name == "postgresql":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        quoted = ", ".join(f'"{n}"' for n in names)
        with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
            for record in rows:
                copy.write_row(record)
        cursor.close()
    elif table in BULK_TABLES:
        cache = sql_cache if sql_cache is not None else {}
        sql = cache.get(table)
        if sql is None:
            compiled = insert(TABLES[table]).compile(dialect=conn.dialect, column_keys=list(names))
            sql = cache[table] = str(compiled)
        conn.exec_driver_sql(sql, rows)  # type: ignore[arg-type]
    else:
        conn.execute(insert(TABLES[table]), [dict(zip(names, r, strict=True)) for r in rows])


def records_from_columns(
    table: str,
    columns: Mapping[str, Any],
    n: int,
    defaults: Mapping[str, Any],
    now: Callable[[], float],
) -> list[tuple[Any, ...]]:
    """Tuples in :data:`COLUMNS` order from equal-length ``columns`` (arrays or lists) of a
    bulk table; a missing column takes its value from ``defaults`` (``t_s``: ``now()``).

    Raises :class:`StorageError` for non-finite values in :data:`FINITE_COLUMNS`, a pulse
    polarity other than +1 / -1, or a required column missing.
    """
    names = COLUMNS[table]
    out: list[Sequence[Any]] = []
    for name in names:
        if name in columns:
            values = columns[name]
            if isinstance(values, np.ndarray):
                if (
                    name in FINITE_COLUMNS
                    and values.dtype.kind == "f"
                    and not np.all(np.isfinite(values))
                ):
                    raise StorageError(f"{table}.{name} holds non-finite values")
                values = values.tolist()
            out.append(values)
        elif name == "t_s":
            out.append([now()] * n)
        elif name in defaults:
            out.append([defaults[name]] * n)
        else:
            raise StorageError(f"{table}: column {name!r} missing")
    if table == "pulses" and not set(out[names.index("polarity")]) <= {1, -1}:
        raise StorageError("pulses.polarity holds values other than +1 / -1")
    return list(zip(*out, strict=True))
