"""An interrupt (Ctrl-C) or any exception that strikes while the writer commits: no record
is lost, none is stored twice, and no unit attempt stays ``running``.

The exception is injected once into the commit path: ``before`` the database commits (in
the engine dialect's ``do_commit``), or ``after`` it did (when the committed transaction's
connection is closed). In between, inside the DBAPI's commit (a C call), no exception can
strike; a real SIGINT arriving there is held until the writer's bookkeeping is done (the
last test).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, func, select

from nvmlab.storage import RecordWriter, completed_units, start_run
from nvmlab.storage.ingest import unit_attempts
from nvmlab.storage.models import Read


def _reads(db, run: int) -> int:
    with db.read_connection() as conn:
        query = select(func.count()).select_from(Read).where(Read.run_id == run)
        return int(conn.execute(query).scalar_one())


def _arm(db, monkeypatch: pytest.MonkeyPatch, when: str, raise_it: Callable[[], None]) -> list[str]:
    """Make the next commit on ``db`` call ``raise_it`` ``before`` the database commits,
    or ``after`` it (when its connection is closed); later commits are left alone.
    Returns a log of what happened."""
    dialect = db.engine.dialect
    original = dialect.do_commit
    close = Connection.close
    happened: list[str] = []

    def do_commit(dbapi_connection) -> None:  # type: ignore[no-untyped-def]
        if happened:
            original(dbapi_connection)
            return
        happened.append("commit")
        if when == "before":
            happened.append(when)
            raise_it()
        original(dbapi_connection)

    def close_then_raise(self: Connection) -> None:
        close(self)
        if when == "after" and happened == ["commit"]:
            happened.append(when)
            raise_it()

    monkeypatch.setattr(dialect, "do_commit", do_commit)
    monkeypatch.setattr(Connection, "close", close_then_raise)
    return happened


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _runtime_error() -> None:
    raise RuntimeError("driver surprise")


RAISERS = {"KeyboardInterrupt": _keyboard_interrupt, "RuntimeError": _runtime_error}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("exc_name", list(RAISERS))
def test_an_exception_at_the_flush_commit_loses_no_record_and_duplicates_none(
    db, chip, monkeypatch: pytest.MonkeyPatch, when: str, exc_name: str
) -> None:
    run = start_run(db, "flush-interrupt", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip, background=False, batch_rows=10**9)
    for c in range(10):
        writer.add_read(0, c, 0.2, 1e-6 * (c + 1))
    happened = _arm(db, monkeypatch, when, RAISERS[exc_name])
    with pytest.raises(KeyboardInterrupt if exc_name == "KeyboardInterrupt" else RuntimeError):
        writer.flush()
    assert happened == ["commit", when]
    assert _reads(db, run) == (10 if when == "after" else 0)
    writer.add_read(1, 0, 0.2, 1e-6)
    writer.close()
    assert _reads(db, run) == 11  # the ten kept (or committed once) and the new one


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_interrupt_while_a_unit_completes_never_leaves_it_running(
    db, chip, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Ctrl-C lands on the commit that completes the unit. Before the database commits:
    the attempt is marked ``interrupted`` with its records kept (not completed: resume
    redoes it). Just after: it is completed, its records stored once."""
    run = start_run(db, "unit-interrupt", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip, background=False, batch_rows=10**9)
    with writer.unit("first", kind="test"):
        writer.add_read(0, 0, 0.2, 1e-6)
    happened: list[str] = []
    with pytest.raises(KeyboardInterrupt), writer.unit("second", kind="test") as unit:
        writer.add_read(1, 0, 0.2, 2e-6)
        writer.add_read(1, 1, 0.2, 3e-6)
        happened = _arm(db, monkeypatch, when, _keyboard_interrupt)
    assert happened == ["commit", when]
    statuses = {a["unit_key"]: a["status"] for a in unit_attempts(db, run)}
    if when == "before":
        assert statuses == {"first": "completed", "second": "interrupted"}
        assert completed_units(db, run) == {"first"}
        assert unit.status == "interrupted"
    else:
        assert statuses == {"first": "completed", "second": "completed"}
        assert completed_units(db, run) == {"first", "second"}
        assert unit.status == "completed"
    assert _reads(db, run) == 3
    writer.close()
    assert _reads(db, run) == 3


def test_a_ctrl_c_arriving_during_the_commit_is_raised_after_it_never_splitting_it(
    db, chip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT delivered while the database commits: the commit and the writer's
    bookkeeping finish together, then KeyboardInterrupt is raised; the unit is completed
    and its records are stored once."""
    run = start_run(db, "sigint-commit", chip_id=chip)
    writer = RecordWriter(db, run, chip_id=chip, background=False, batch_rows=10**9)

    def sigint() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    happened: list[str] = []
    with pytest.raises(KeyboardInterrupt), writer.unit("only", kind="test") as unit:
        writer.add_read(2, 2, 0.2, 1e-6)
        happened = _arm(db, monkeypatch, "before", sigint)
    assert happened == ["commit", "before"]
    assert unit.status == "completed"
    assert completed_units(db, run) == {"only"}
    writer.close()
    assert _reads(db, run) == 1
