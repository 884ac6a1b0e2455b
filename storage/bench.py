"""Storage benchmark: ingest and load figures, printed (not asserted).

Run::

    .venv/bin/python -P -m nvmlab.storage.bench [--rows 1000000] [--pg-url URL | --no-pg]

For SQLite (a temporary file) and PostgreSQL (a temporary database created on the server
and dropped afterwards) it prints:

* ingest of read and pulse records, rows per second, through the buffered
  :class:`~nvmlab.storage.ingest.RecordWriter` one ``add_read`` / ``add_pulse`` call per
  record (the measurement-loop path) and through ``add_records`` (arrays), beside a plain
  baseline measured in the same run on the same schema (raw ``sqlite3.executemany``;
  psycopg ``COPY`` and ``executemany``), each measured into an emptied table (inserts
  slow down as a table grows, so the order of the measurements must not favour one).
  Every row counted is a row of the ``reads`` / ``pulses`` table queryable per device
  through its ``(chip_id, row, col)`` index;
* the number of rows stored per device and the time of one per-device query;
* loading a run of ``--rows`` read records into a DataFrame through the fast path
  (:func:`~nvmlab.storage.query.load_reads`: on SQLite the ADBC reader in a child
  process, :mod:`nvmlab.storage.sqlite_arrow`), on SQLite the same load through
  ``sqlite3`` (fetchall + numpy), and ``pandas.read_sql`` on the same query;
* a trace of 100,000 samples stored as one row of arrays versus one row per sample.

Goals (2-core machine): >= 100,000 rows/s SQLite, >= 50,000 rows/s PostgreSQL, 1 M-row
load < 2 s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from nvmlab.errors import StorageError
from nvmlab.storage import query
from nvmlab.storage.database import Database, open_database
from nvmlab.storage.engine import mask_url
from nvmlab.storage.ingest import COLUMNS, RecordWriter, ensure_chip, finish_run, start_run
from nvmlab.storage.query import load_reads

#: PostgreSQL server used when no URL is given (the lab machine's test server).
DEFAULT_PG_URL = os.environ.get(
    "NVMLAB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
N_ROWS, N_COLS = 64, 64
BATCH = 50_000


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>11,.0f} rows/s  ({rows:,} rows in {seconds:.2f} s)"


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _empty(db: Database, table: str) -> None:
    """Empty ``table`` before a measurement: inserts slow down as the table and its indexes
    grow (a second 1,000,000 rows go in ~20 % slower on SQLite), so every rate printed is
    measured from the same empty table, baseline and writer alike."""
    statement = f"DELETE FROM {table}" if db.dialect == "sqlite" else f"TRUNCATE {table}"
    with db.engine.begin() as conn:
        conn.exec_driver_sql(statement)


@dataclass(frozen=True)
class _Records:
    """The records every measurement writes: ``rows`` reads/pulses over a 64 x 64 chip."""

    rows: int
    dev_r: np.ndarray
    dev_c: np.ndarray
    r_list: list[int]
    c_list: list[int]
    current: list[float]
    t_list: list[float]

    @classmethod
    def make(cls, rows: int) -> _Records:
        idx = np.arange(rows)
        dev_r, dev_c = (idx // N_COLS) % N_ROWS, idx % N_COLS
        return cls(
            rows=rows, dev_r=dev_r, dev_c=dev_c, r_list=dev_r.tolist(), c_list=dev_c.tolist(),
            current=(1e-6 * (1 + (idx % 997))).tolist(), t_list=idx.astype(float).tolist(),
        )  # fmt: skip

    def tuples(self, table: str, run: int, chip: int) -> list[tuple[object, ...]]:
        """The records as tuples in ``COLUMNS[table]`` order (what a driver inserts)."""
        if table == "reads":
            return [
                (run, None, chip, r, c, t, 0.2, i, i / 0.2, 25.0)
                for r, c, t, i in zip(self.r_list, self.c_list, self.t_list, self.current,
                                      strict=True)
            ]  # fmt: skip
        return [
            (run, None, chip, r, c, t, 1.2, 1e-6, 1, "V/2")
            for r, c, t in zip(self.r_list, self.c_list, self.t_list, strict=True)
        ]


def _baseline_sqlite(db: Database, url: str, table: str, records: list[tuple[object, ...]]) -> None:
    """Plain ``sqlite3.executemany`` in batches, on the same file and schema."""
    names = COLUMNS[table]
    path = make_url(url).database
    assert path is not None
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

    def raw() -> None:
        for k in range(0, len(records), BATCH):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, records[k : k + BATCH])
            conn.execute("COMMIT")

    _empty(db, table)
    print(f"  {table:6s} baseline sqlite3.executemany : {_rate(len(records), _timed(raw))}")
    conn.close()


def _baseline_postgresql(
    db: Database, url: str, table: str, records: list[tuple[object, ...]]
) -> None:
    """Plain psycopg ``COPY`` and ``executemany`` in batches, on the same schema."""
    names = COLUMNS[table]
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.connect(conninfo)
    cols = ", ".join(f'"{n}"' for n in names)
    copy_sql = f"COPY {table} ({cols}) FROM STDIN"

    def copy() -> None:
        for k in range(0, len(records), BATCH):
            with conn.cursor().copy(copy_sql) as cp:
                for rec in records[k : k + BATCH]:
                    cp.write_row(rec)
            conn.commit()

    _empty(db, table)
    print(f"  {table:6s} baseline psycopg COPY         : {_rate(len(records), _timed(copy))}")
    some = records[: min(len(records), 100_000)]
    insert_sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * len(names))})"

    def many() -> None:
        for k in range(0, len(some), BATCH):
            with conn.cursor() as cur:
                cur.executemany(insert_sql, some[k : k + BATCH])
            conn.commit()

    _empty(db, table)
    print(f"  {table:6s} baseline psycopg executemany  : {_rate(len(some), _timed(many))}")
    conn.close()


def _bench_baseline(db: Database, url: str, chip: int, data: _Records) -> None:
    """The plain driver baseline for reads and pulses, each into an emptied table."""
    run = start_run(db, "bench-baseline", chip_id=chip)
    for table in ("reads", "pulses"):
        records = data.tuples(table, run, chip)
        if db.dialect == "sqlite":
            _baseline_sqlite(db, url, table, records)
        else:
            _baseline_postgresql(db, url, table, records)
    finish_run(db, run, "completed")


def _bench_writer_per_record(db: Database, chip: int, data: _Records) -> int:
    """The buffered writer, one ``add_read`` / ``add_pulse`` call per record (the
    measurement-loop path); returns the run holding the reads."""
    run = start_run(db, "bench-writer", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip)
    add_read, add_pulse = writer.add_read, writer.add_pulse

    def per_record_reads() -> None:
        for r, c, t, i in zip(data.r_list, data.c_list, data.t_list, data.current, strict=True):
            add_read(r, c, 0.2, i, temperature_c=25.0, t_s=t)
        writer.flush()

    def per_record_pulses() -> None:
        for r, c, t in zip(data.r_list, data.c_list, data.t_list, strict=True):
            add_pulse(r, c, 1.2, 1e-6, 1, "V/2", t_s=t)
        writer.flush()

    _empty(db, "reads")
    print(f"  reads  RecordWriter.add_read      : {_rate(data.rows, _timed(per_record_reads))}")
    _empty(db, "pulses")
    print(f"  pulses RecordWriter.add_pulse     : {_rate(data.rows, _timed(per_record_pulses))}")
    writer.close()
    finish_run(db, run, "completed")
    return run


def _bench_writer_arrays(db: Database, chip: int, data: _Records) -> None:
    """The buffered writer fed whole arrays through ``add_records``."""
    run = start_run(db, "bench-writer-arrays", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip)
    columns = {
        "row": data.dev_r, "col": data.dev_c, "t_s": np.asarray(data.t_list),
        "amplitude_v": np.full(data.rows, 1.2), "width_s": np.full(data.rows, 1e-6),
    }  # fmt: skip

    def bulk_pulses() -> None:
        writer.add_records("pulses", columns)
        writer.flush()

    _empty(db, "pulses")
    print(f"  pulses RecordWriter.add_records   : {_rate(data.rows, _timed(bulk_pulses))}")
    writer.close()
    finish_run(db, run, "completed")


def _bench_per_device_query(db: Database, run: int, chip: int) -> None:
    """How many rows one device holds, and the time of the query through its index."""
    with db.read_connection() as conn:
        start = time.perf_counter()
        per_device = conn.execute(
            text('SELECT count(*) FROM reads WHERE run_id = :run AND chip_id = :chip '
                 'AND "row" = 3 AND col = 4'),
            {"run": run, "chip": chip},
        ).scalar_one()  # fmt: skip
        query_s = time.perf_counter() - start
    print(f"  rows per device (3, 4) in the writer run: {per_device} reads, "
          f"queried in {query_s * 1e3:.1f} ms through ix_reads_device")  # fmt: skip


def _bench_load(db: Database, run: int, rows: int) -> None:
    """Loading the run's reads into a DataFrame: the fast path, on SQLite the sqlite3
    path, and ``pandas.read_sql``."""
    fast_s = _timed(lambda: load_reads(db, run))
    frame = load_reads(db, run)
    assert len(frame) == rows, (len(frame), rows)
    paths = f"fast path {fast_s:.2f} s"
    if db.dialect == "sqlite":
        # The same load forced through sqlite3 (what runs below query.ARROW_MIN_ROWS).
        threshold, query.ARROW_MIN_ROWS = query.ARROW_MIN_ROWS, rows + 1
        try:
            plain_s = _timed(lambda: load_reads(db, run))
        finally:
            query.ARROW_MIN_ROWS = threshold
        via = "ADBC child" if rows >= threshold else "sqlite3"
        paths = f"fast path ({via}) {fast_s:.2f} s, sqlite3 fetchall + numpy {plain_s:.2f} s"
    sql = f"SELECT * FROM reads WHERE run_id = {int(run)} ORDER BY id"
    start = time.perf_counter()
    with db.read_connection() as conn:
        slow = pd.read_sql(text(sql), conn)
    slow_s = time.perf_counter() - start
    assert len(slow) == rows
    print(f"  load {rows:,} reads -> DataFrame: {paths}, pandas.read_sql {slow_s:.2f} s")


def _bench_trace(db: Database, chip: int, n: int = 100_000) -> None:
    """A noise trace of ``n`` samples as one row of arrays versus one row per sample."""
    x, y = np.arange(n, dtype=float), np.random.default_rng(1).normal(1e-6, 1e-9, n)
    run = start_run(db, "bench-trace", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip, background=False)

    def as_arrays() -> None:
        writer.add_trace(0, 0, "noise", x, y, x_name="t_s")
        writer.flush()

    def as_rows() -> None:
        writer.add_records("reads", {"row": np.zeros(n, dtype=int), "col": np.zeros(n, dtype=int),
                                     "t_s": x, "voltage_v": np.full(n, 0.2), "current_a": y})  # fmt: skip
        writer.flush()

    print(f"  noise trace of {n:,} samples: one row of arrays {_timed(as_arrays) * 1e3:.1f} ms, "
          f"one row per sample {_timed(as_rows) * 1e3:.1f} ms")  # fmt: skip
    writer.close()
    finish_run(db, run, "completed")


def _bench_engine(label: str, url: str, rows: int) -> None:
    """Every measurement on one engine, in an order that favours none (each rate is
    measured into an emptied table)."""
    print(f"\n== {label}: {mask_url(url)}")
    db = open_database(url)
    try:
        chip = ensure_chip(db, f"bench-{secrets.token_hex(3)}", array_kind="memristor",
                           n_rows=N_ROWS, n_cols=N_COLS)  # fmt: skip
        data = _Records.make(rows)
        _bench_baseline(db, url, chip, data)
        reads_run = _bench_writer_per_record(db, chip, data)
        _bench_writer_arrays(db, chip, data)
        _bench_per_device_query(db, reads_run, chip)
        _bench_load(db, reads_run, rows)
        _bench_trace(db, chip)
    finally:
        db.close()


def run_storage_benchmark(pg_url: str | None, rows: int) -> None:
    """Print ingest and load figures for SQLite and (if ``pg_url``) PostgreSQL.

    ``rows``: records per table per measurement (1,000,000 gives the load figure the
    goal names). PostgreSQL gets a temporary database ``nvmlab_bench_<random>`` on the
    server of ``pg_url``, dropped at the end.
    """
    print(f"nvmlab storage benchmark: {rows:,} records per table, batches of {BATCH:,}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="nvmlab-bench-") as tmp:
        _bench_engine(
            "SQLite (WAL, synchronous=FULL)", f"sqlite:///{Path(tmp) / 'bench.sqlite'}", rows
        )
    if pg_url is None:
        print("\n(PostgreSQL skipped: no server URL given)")
        return
    server: URL = make_url(pg_url).set(drivername="postgresql+psycopg")
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL server {mask_url(server)} is unreachable: {exc}") from None
    name = f"nvmlab_bench_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        _bench_engine(
            "PostgreSQL", server.set(database=name).render_as_string(hide_password=False), rows
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvmlab.storage.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="records per table (default 1,000,000)"
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL server URL")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if args.rows <= 0:
        parser.error(f"--rows {args.rows}: must be > 0")
    run_storage_benchmark(None if args.no_pg else args.pg_url, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
