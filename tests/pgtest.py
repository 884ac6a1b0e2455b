"""A scratch database on the lab's real PostgreSQL server, for the tests that use it.

The server is ``NVMLAB_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
An unreachable server FAILS the test with a clear message: these tests are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from nvmlab.storage.engine import mask_url

PG_URL = os.environ.get("NVMLAB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def conninfo(url: URL) -> str:
    """libpq's form of SQLAlchemy ``url``."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(prefix: str, *, who: str = "these tests") -> Iterator[URL]:
    """A new, empty database ``<prefix>_<random>`` on the server (dropped afterwards, with
    whatever still connects to it); yields its URL."""
    server = make_url(PG_URL).set(drivername="postgresql+psycopg")
    try:
        admin = psycopg.connect(conninfo(server), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL server at {mask_url(server)} is unreachable ({exc}). {who} use it "
            "for real and are never skipped: start the server or set NVMLAB_TEST_PG_URL to "
            "a reachable one.",
            pytrace=False,
        )
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
