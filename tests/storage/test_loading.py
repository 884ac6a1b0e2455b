"""Large SQLite loads: the ADBC child-process reader gives the same frames as sqlite3 and
never touches this process's locks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

import nvmlab.storage.query as query
from nvmlab.errors import StorageError
from nvmlab.storage import (
    RecordWriter,
    ensure_chip,
    fetch_arrays,
    load_pulses,
    load_reads,
    open_database,
    start_run,
)


@pytest.fixture
def sqlite_db(tmp_path: Path):
    db = open_database(f"sqlite:///{tmp_path / 'large.sqlite'}")
    yield db
    db.close()


@pytest.fixture
def reader_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the queries that went through the ADBC child process."""
    calls: list[str] = []
    real = query.read_arrow

    def spy(uri: str, sql: str):
        calls.append(uri)
        return real(uri, sql)

    monkeypatch.setattr(query, "read_arrow", spy)
    return calls


def _run_with_leading_nulls(db, n_null: int = 1100, n_valued: int = 400) -> int:
    """Reads whose first 1100 rows have no conductance, temperature or attempt (more than
    the ADBC driver's default 1024-row type inference window), then valued ones."""
    chip = ensure_chip(db, "big", array_kind="memristor", n_rows=64, n_cols=64)
    run = start_run(db, "sweep", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w:
        for i in range(n_null):
            w.add_read(i % 64, i // 64, 0.0, 0.0, t_s=float(i))  # 0 V: no conductance
            w.add_pulse(i % 64, i // 64, 1.0, 1e-6, t_s=float(i))  # no scheme
        with w.unit("tail"):
            for i in range(n_valued):
                w.add_read(i % 64, 0, 0.2, 1e-6 * (i + 1), temperature_c=85.0, t_s=1e4 + i)
                w.add_pulse(i % 64, 0, -1.1, 2e-6, -1, "V/2", t_s=1e4 + i)
    return run


def test_arrow_reader_and_sqlite3_give_identical_frames(
    sqlite_db, reader_calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run_with_leading_nulls(sqlite_db)
    monkeypatch.setattr(query, "ARROW_MIN_ROWS", 10**12)
    reads_sqlite3, pulses_sqlite3 = load_reads(sqlite_db, run), load_pulses(sqlite_db, run)
    assert reader_calls == []
    monkeypatch.setattr(query, "ARROW_MIN_ROWS", 1)
    reads_arrow, pulses_arrow = load_reads(sqlite_db, run), load_pulses(sqlite_db, run)
    assert len(reader_calls) == 2 and reader_calls[0].endswith("mode=ro")
    pd.testing.assert_frame_equal(reads_arrow, reads_sqlite3)
    pd.testing.assert_frame_equal(pulses_arrow, pulses_sqlite3)
    assert len(reads_arrow) == 1500
    assert reads_arrow["conductance_s"].isna().sum() == 1100
    assert reads_arrow["conductance_s"].iloc[-1] == pytest.approx(400e-6 / 0.2)
    assert reads_arrow["attempt_id"].isna().sum() == 1100
    assert pulses_arrow["scheme"].isna().sum() == 1100
    assert set(pulses_arrow["scheme"].iloc[1100:]) == {"V/2"}
    # A device filter and a column subset go through the same reader.
    one = fetch_arrays(sqlite_db, "reads", columns=["t_s", "temperature_c"], run_id=run, row=3,
                       col=0)  # fmt: skip
    assert one["t_s"].tolist() == [3.0, 1e4 + 3, 1e4 + 67, 1e4 + 131, 1e4 + 195, 1e4 + 259,
                                   1e4 + 323, 1e4 + 387]  # fmt: skip


def test_a_load_keeps_the_write_lock_of_this_process(sqlite_db, reader_calls, monkeypatch) -> None:
    """The ADBC driver links its own SQLite; in this process, closing its file would drop
    every POSIX lock we hold on the file (sqlite.org/howtocorrupt.html 2.2.1). In the child
    process it cannot: another process stays locked out while our transaction is open."""
    run = _run_with_leading_nulls(sqlite_db, n_null=10, n_valued=10)
    monkeypatch.setattr(query, "ARROW_MIN_ROWS", 1)
    path = sqlite_db.engine.url.database
    probe = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)\n"
        "try:\n    c.execute('BEGIN IMMEDIATE'); print('got the write lock')\n"
        "except sqlite3.OperationalError as e:\n    print('locked out:', e)\n"
    )
    with sqlite_db.engine.begin() as conn:  # BEGIN IMMEDIATE: we hold the write lock
        conn.execute(text("INSERT INTO events (t_s, level, message) VALUES (0, 'info', 'x')"))
        assert len(load_reads(sqlite_db, run)) == 20 and len(reader_calls) == 1
        other = subprocess.run(
            [sys.executable, "-c", probe, path], capture_output=True, text=True, check=True
        )
        assert other.stdout.strip() == "locked out: database is locked"


def test_wrong_types_in_a_numeric_column_are_a_clear_error(sqlite_db, monkeypatch) -> None:
    run = _run_with_leading_nulls(sqlite_db, n_null=5, n_valued=5)
    with sqlite_db.engine.begin() as conn:  # a foreign tool writes text into a REAL column
        conn.execute(text("UPDATE reads SET current_a = 'n/a' WHERE id = 3"))
    monkeypatch.setattr(query, "ARROW_MIN_ROWS", 1)
    with pytest.raises(StorageError, match=r"a column holds values of the wrong type .*must hold"):
        load_reads(sqlite_db, run)
