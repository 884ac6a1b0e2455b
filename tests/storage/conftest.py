"""Fixtures for the results-database tests: every test runs on SQLite AND PostgreSQL.

PostgreSQL is used for real: the server named by ``NVMLAB_TEST_PG_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). The session creates a database of
its own (``nvmlab_test_<random>``) through an autocommit connection and drops it at the
end; each test gets a fresh schema inside it. An unreachable server FAILS the tests with a
clear message; they are never skipped.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgtest import conninfo, scratch_database
from sqlalchemy.engine import URL

_schema_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL]:
    """A PostgreSQL database created for this test session (dropped at the end)."""
    with scratch_database("nvmlab_test", who="The storage tests") as url:
        yield url


def fresh_pg_schema(database: URL) -> str:
    """Create a new empty schema and return a URL whose connections use it."""
    schema = f"t{os.getpid()}_{next(_schema_counter)}"
    with psycopg.connect(conninfo(database), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = database.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on each engine (a new file / a new schema)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.sqlite'}"
    return fresh_pg_schema(request.getfixturevalue("pg_database"))


@pytest.fixture
def db(empty_url: str) -> Iterator[object]:
    """An open database at the current schema revision, on each engine."""
    from nvmlab.storage import open_database

    database = open_database(empty_url)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def chip(db: object) -> int:
    from nvmlab.storage import ensure_chip

    return ensure_chip(db, "W07-D12", array_kind="memristor", n_rows=16, n_cols=16, lot="L42")  # type: ignore[arg-type]


def _at_first_revision(url: str) -> dict[str, int]:
    """Create the schema of revision 0001 (the first nvmlab release) at ``url`` and store a
    resume chain in it as that release did (no ``units.chain_run_id`` yet): run 1, resumed
    by run 2; unit ``a`` completed in run 1, ``b`` interrupted in run 1 then completed in
    run 2. Returns the run ids."""
    from alembic import command
    from sqlalchemy import text

    from nvmlab.storage.database import _alembic_config
    from nvmlab.storage.engine import create_worker_engine

    engine = create_worker_engine(url)
    try:
        with engine.begin() as conn:
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            insert_run = text(
                "INSERT INTO runs (id, kind, status, config, started_at, resumes_run_id) "
                "VALUES (:id, 'tune', :status, '{}', CURRENT_TIMESTAMP, :resumes)"
            )
            conn.execute(insert_run, {"id": 1, "status": "aborted", "resumes": None})
            conn.execute(insert_run, {"id": 2, "status": "completed", "resumes": 1})
            insert_unit = text(
                "INSERT INTO units (run_id, unit_key, attempt, status, started_at) "
                "VALUES (:run, :key, :attempt, :status, CURRENT_TIMESTAMP)"
            )
            for run, key, attempt, status in (
                (1, "a", 1, "completed"),
                (1, "b", 1, "interrupted"),
                (2, "b", 2, "completed"),
            ):
                conn.execute(
                    insert_unit, {"run": run, "key": key, "attempt": attempt, "status": status}
                )
    finally:
        engine.dispose()
    return {"root": 1, "resumed": 2}


@pytest.fixture
def at_first_revision():
    """Function creating a revision-0001 database with a resume chain (see above)."""
    return _at_first_revision
