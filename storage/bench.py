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


def _device_columns(n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    return (idx // N_COLS) % N_ROWS, idx % N_COLS


def _bench_engine(label: str, url: str, rows: int) -> None:
    print(f"\n== {label}: {mask_url(url)}")
    db = open_database(url)
    chip = ensure_chip(db, f"bench-{secrets.token_hex(3)}", array_kind="memristor",
                       n_rows=N_ROWS, n_cols=N_COLS)  # fmt: skip
    dev_r, dev_c = _device_columns(rows)
    r_list, c_list = dev_r.tolist(), dev_c.tolist()
    current = (1e-6 * (1 + (np.arange(rows) % 997))).tolist()
    t_list = np.arange(rows, dtype=float).tolist()

    # --- plain baseline on the same schema -------------------------------------------
    base_run = start_run(db, "bench-baseline", chip_id=chip)
    for table in ("reads", "pulses"):
        names = COLUMNS[table]
        records: list[tuple[object, ...]]
        if table == "reads":
            records = [
                (base_run, None, chip, r, c, t, 0.2, i, i / 0.2, 25.0)
                for r, c, t, i in zip(r_list, c_list, t_list, current, strict=True)
            ]
        else:
            records = [
                (base_run, None, chip, r, c, t, 1.2, 1e-6, 1, "V/2")
                for r, c, t in zip(r_list, c_list, t_list, strict=True)
            ]
        if db.dialect == "sqlite":
            path = make_url(url).database
            assert path is not None
            conn_sqlite = sqlite3.connect(path, isolation_level=None)
            conn_sqlite.execute("PRAGMA synchronous = FULL")
            conn_sqlite.execute("PRAGMA foreign_keys = ON")
            sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

            def raw(
                conn: sqlite3.Connection = conn_sqlite, sql: str = sql, recs: list = records
            ) -> None:
                for k in range(0, len(recs), BATCH):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(sql, recs[k : k + BATCH])
                    conn.execute("COMMIT")

            _empty(db, table)
            print(f"  {table:6s} baseline sqlite3.executemany : {_rate(rows, _timed(raw))}")
            conn_sqlite.close()
        else:
            conninfo = (
                make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            )
            conn_pg = psycopg.connect(conninfo)
            cols = ", ".join(f'"{n}"' for n in names)

            copy_sql = f"COPY {table} ({cols}) FROM STDIN"

            def copy(
                conn: psycopg.Connection = conn_pg, recs: list = records, stmt: str = copy_sql
            ) -> None:
                for k in range(0, len(recs), BATCH):
                    with conn.cursor().copy(stmt) as cp:
                        for rec in recs[k : k + BATCH]:
                            cp.write_row(rec)
                    conn.commit()

            _empty(db, table)
            print(f"  {table:6s} baseline psycopg COPY         : {_rate(rows, _timed(copy))}")
            n_many = min(rows, 100_000)
            sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * len(names))})"

            def many(
                conn: psycopg.Connection = conn_pg, recs: list = records[:n_many], stmt: str = sql
            ) -> None:
                for k in range(0, len(recs), BATCH):
                    with conn.cursor() as cur:
                        cur.executemany(stmt, recs[k : k + BATCH])
                    conn.commit()

            _empty(db, table)
            print(f"  {table:6s} baseline psycopg executemany  : {_rate(n_many, _timed(many))}")
            conn_pg.close()
    finish_run(db, base_run, "completed")

    # --- the buffered writer, one call per record --------------------------------------
    run = start_run(db, "bench-writer", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip)
    add_read, add_pulse = writer.add_read, writer.add_pulse

    def per_record_reads() -> None:
        for r, c, t, i in zip(r_list, c_list, t_list, current, strict=True):
            add_read(r, c, 0.2, i, temperature_c=25.0, t_s=t)
        writer.flush()

    def per_record_pulses() -> None:
        for r, c, t in zip(r_list, c_list, t_list, strict=True):
            add_pulse(r, c, 1.2, 1e-6, 1, "V/2", t_s=t)
        writer.flush()

    _empty(db, "reads")
    print(f"  reads  RecordWriter.add_read      : {_rate(rows, _timed(per_record_reads))}")
    _empty(db, "pulses")
    print(f"  pulses RecordWriter.add_pulse     : {_rate(rows, _timed(per_record_pulses))}")
    writer.close()
    finish_run(db, run, "completed")

    run_bulk = start_run(db, "bench-writer-arrays", chip_id=chip)
    writer = RecordWriter(db, run_bulk, chip_id=chip)
    amps = np.full(rows, 1.2)

    def bulk_pulses() -> None:
        writer.add_records("pulses", {"row": dev_r, "col": dev_c, "t_s": np.asarray(t_list),
                                      "amplitude_v": amps, "width_s": np.full(rows, 1e-6)})  # fmt: skip
        writer.flush()

    _empty(db, "pulses")
    print(f"  pulses RecordWriter.add_records   : {_rate(rows, _timed(bulk_pulses))}")
    writer.close()
    finish_run(db, run_bulk, "completed")

    # --- queryable per device -----------------------------------------------------------
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

    # --- loading a run of `rows` reads --------------------------------------------------
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

    # --- a long trace as arrays versus one row per sample -------------------------------
    n = 100_000
    x, y = np.arange(n, dtype=float), np.random.default_rng(1).normal(1e-6, 1e-9, n)
    trace_run = start_run(db, "bench-trace", chip_id=chip)
    tw = RecordWriter(db, trace_run, chip_id=chip, background=False)

    def as_arrays() -> None:
        tw.add_trace(0, 0, "noise", x, y, x_name="t_s")
        tw.flush()

    def as_rows() -> None:
        tw.add_records("reads", {"row": np.zeros(n, dtype=int), "col": np.zeros(n, dtype=int),
                                 "t_s": x, "voltage_v": np.full(n, 0.2), "current_a": y})  # fmt: skip
        tw.flush()

    print(f"  noise trace of {n:,} samples: one row of arrays {_timed(as_arrays) * 1e3:.1f} ms, "
          f"one row per sample {_timed(as_rows) * 1e3:.1f} ms")  # fmt: skip
    tw.close()
    finish_run(db, trace_run, "completed")
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
