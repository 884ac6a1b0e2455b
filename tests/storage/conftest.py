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
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from nvmlab.storage.engine import mask_url

PG_URL = os.environ.get("NVMLAB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_schema_counter = itertools.count()


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL]:
    """A PostgreSQL database created for this test session (dropped at the end)."""
    server = make_url(PG_URL).set(drivername="postgresql+psycopg")
    try:
        admin = psycopg.connect(_conninfo(server), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL server at {mask_url(server)} is unreachable ({exc}). The storage "
            "tests use it for real and are never skipped: start the server or set "
            "NVMLAB_TEST_PG_URL to a reachable one.",
            pytrace=False,
        )
    name = f"nvmlab_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def fresh_pg_schema(database: URL) -> str:
    """Create a new empty schema and return a URL whose connections use it."""
    schema = f"t{os.getpid()}_{next(_schema_counter)}"
    with psycopg.connect(_conninfo(database), autocommit=True) as conn:
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
