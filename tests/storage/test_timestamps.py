"""Wall-clock timestamps come back as UTC, zone-aware, on both engines.

SQLite stores a DATETIME as text without a zone (it came back naive) while PostgreSQL's
``timestamp with time zone`` came back aware, so code comparing the two, or a timestamp
with ``utcnow()``, failed on one engine only.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select

from nvmlab.storage import RecordWriter, ensure_chip, finish_run, list_runs, start_run
from nvmlab.storage.ingest import unit_attempts
from nvmlab.storage.models import Chip, Run, utcnow
from nvmlab.storage.query import get_run

UTC = dt.timezone.utc


def _is_utc(value: object) -> bool:
    return (
        isinstance(value, dt.datetime)
        and value.tzinfo is not None
        and value.utcoffset() == dt.timedelta(0)
    )


def test_run_and_unit_times_are_utc_aware_on_both_engines(db) -> None:
    before = utcnow()
    chip = ensure_chip(db, "clock", array_kind="memristor", n_rows=2, n_cols=2)
    run = start_run(db, "read", chip_id=chip)
    with RecordWriter(db, run, chip_id=chip, background=False) as w, w.unit("u"):
        w.add_read(0, 0, 0.2, 1e-6)
    finish_run(db, run, "completed")
    after = utcnow()

    with db.read_connection() as conn:
        started, ended = conn.execute(
            select(Run.started_at, Run.ended_at).where(Run.id == run)
        ).one()
    stored = get_run(db, run)
    attempt = unit_attempts(db, run)[0]
    listed = list_runs(db).iloc[0]
    for value in (started, ended, stored["started_at"], attempt["started_at"],
                  attempt["ended_at"], listed["started_at"].to_pydatetime()):  # fmt: skip
        assert _is_utc(value), repr(value)
        assert before - dt.timedelta(seconds=1) <= value <= after + dt.timedelta(seconds=1)
    assert started <= ended


def test_an_aware_time_in_another_zone_is_stored_as_the_same_instant(db) -> None:
    """A time given at +05:30 comes back as the same instant, in UTC."""
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    given = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=ist)
    with db.engine.begin() as conn:
        conn.execute(
            insert(Chip).values(
                name="zoned", array_kind="eflash", n_rows=1, n_cols=1, created_at=given
            )
        )
    with db.read_connection() as conn:
        back = conn.execute(select(Chip.created_at).where(Chip.name == "zoned")).scalar_one()
    assert _is_utc(back)
    assert back == given
    assert back.replace(tzinfo=None) == dt.datetime(2026, 3, 1, 6, 30, 0, 123456)


def test_a_naive_time_is_taken_as_utc(db) -> None:
    naive = dt.datetime(2026, 3, 1, 6, 30, 0)
    with db.engine.begin() as conn:
        conn.execute(
            insert(Chip).values(
                name="naive", array_kind="eflash", n_rows=1, n_cols=1, created_at=naive
            )
        )
    with db.read_connection() as conn:
        back = conn.execute(select(Chip.created_at).where(Chip.name == "naive")).scalar_one()
    assert back == naive.replace(tzinfo=UTC)
