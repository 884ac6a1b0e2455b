"""Database URLs and engines for the results database.

One engine factory, :func:`create_engine_for`, serves both engines nvmlab supports:

* SQLite (the default, ``sqlite:///./nvmlab.sqlite``): every connection is switched to WAL
  journaling (readers never block the writer), foreign keys on, ``synchronous=FULL`` (a
  committed batch survives a process kill *and* a power cut; with one commit per second
  the fsync costs nothing measurable) and a busy timeout so that two processes writing the
  same file wait for each other instead of failing. Write transactions start with
  ``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade; read-only work can
  ask for a plain ``BEGIN`` with ``execution_options(sqlite_begin="DEFERRED")``.
* PostgreSQL through ``postgresql+psycopg://user:password@host:port/db`` (psycopg 3).

The database URL is chosen by :func:`resolve_database`: ``--db``, then the ``NVMLAB_DB``
environment variable, then the job file, then the station file, then ``./nvmlab.sqlite``. A password in
a URL is never printed: every message goes through :func:`mask_url` / :func:`mask_text`.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from nvmlab.errors import StorageError
from nvmlab.masking import mask_passwords

#: The database used when neither ``--db``, ``NVMLAB_DB`` nor a job/station file names one.
DEFAULT_DATABASE_URL = "sqlite:///./nvmlab.sqlite"
#: Environment variable naming the database (second in precedence, after ``--db``).
DATABASE_ENV = "NVMLAB_DB"
#: How long (s) a SQLite writer waits for another process's transaction before failing.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: Seconds to wait for a PostgreSQL server before reporting it unreachable.
PG_CONNECT_TIMEOUT_S = 10

# The password runs to the LAST "@" of the URL token: an unencoded "@" inside a password
# ("u:se@cret@host") must not leave its tail ("cret") visible.


class DatabaseChoice(NamedTuple):
    """The database URL a command uses and the level of the precedence rule it came from:
    ``"--db"``, ``"NVMLAB_DB"``, ``"job file"``, ``"station file"`` or ``"default"``."""

    url: str
    source: str


def resolve_database(
    cli_url: str | None,
    *,
    job_file_url: str | None = None,
    station_file_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> DatabaseChoice:
    """Choose the results database by the lab's precedence rule and say which level won.

    ``cli_url`` (the ``--db`` option) wins, then the ``NVMLAB_DB`` variable of ``env``
    (default: the process environment), then ``job_file_url`` (the ``database`` value of a
    job file), then ``station_file_url`` (the ``database`` value of the station file), then
    :data:`DEFAULT_DATABASE_URL` (``./nvmlab.sqlite`` in the working directory). Empty or
    blank values count as unset; values are stripped of surrounding white space.
    """
    environment = os.environ if env is None else env
    for source, candidate in (
        ("--db", cli_url),
        (DATABASE_ENV, environment.get(DATABASE_ENV)),
        ("job file", job_file_url),
        ("station file", station_file_url),
    ):
        if candidate is not None and candidate.strip():
            return DatabaseChoice(candidate.strip(), source)
    return DatabaseChoice(DEFAULT_DATABASE_URL, "default")


def resolve_database_url(cli_db: str | None, file_db: str | None = None) -> str:
    """The URL :func:`resolve_database` chooses, ``file_db`` being a job file's value."""
    return resolve_database(cli_db, job_file_url=file_db).url


def mask_url(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***`` (safe to print or log)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return mask_text(str(url))
    if parsed.host and "@" in parsed.host:  # "u:se@cret@host": the parse split the password
        return mask_text(str(url))
    return parsed.render_as_string(hide_password=True)


def mask_text(text: str, *urls: str | URL) -> str:
    """Remove passwords from arbitrary text (driver messages, tracebacks).

    Masks ``scheme://user:password@`` patterns and, in addition, every literal occurrence of
    the passwords of ``urls`` (a driver may echo a password outside URL syntax).
    """
    return mask_passwords(text, (pw for pw in map(_password_of, urls) if pw))


def _password_of(url: str | URL) -> str | None:
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.host and "@" in parsed.host:  # mis-split password: the URL pattern masks it
        return None
    return parsed.password if parsed.password else None


def parse_url(url: str) -> URL:
    """Parse and check a database URL; raise :class:`StorageError` naming what is allowed."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(
            f"invalid database URL {mask_url(url)!r}: {mask_text(str(exc), url)}; expected "
            "sqlite:///path/to/file.sqlite or postgresql+psycopg://user@host:port/database"
        ) from None
    backend = parsed.get_backend_name()
    if parsed.host and "@" in parsed.host:
        raise StorageError(
            f"invalid database URL {mask_url(url)!r}: the user or password holds a literal "
            "'@'; percent-encode it as %40 (postgresql+psycopg://user:p%40ss@host/db)"
        )
    if backend not in ("sqlite", "postgresql"):
        raise StorageError(
            f"unsupported database {mask_url(parsed)!r}: nvmlab stores results in SQLite "
            "(sqlite:///file.sqlite) or PostgreSQL (postgresql+psycopg://user@host/db)"
        )
    if backend == "postgresql" and parsed.get_driver_name() not in ("psycopg", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "postgresql" and parsed.get_driver_name() == "psycopg2":
        raise StorageError(
            f"database URL {mask_url(parsed)!r} names the psycopg2 driver; nvmlab uses "
            "psycopg 3: write postgresql+psycopg://..."
        )
    return parsed


def sqlite_path(url: str | URL) -> str | None:
    """The file path of a SQLite URL (``None`` for in-memory databases)."""
    parsed = url if isinstance(url, URL) else make_url(url)
    database = parsed.database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return database[len("file:") :].split("?", 1)[0]
    return database


def sqlite_file_uri(path: str, **query: str) -> str:
    """The SQLite ``file:`` URI of ``path`` (absolute, percent-encoded) with ``query``."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path))
    return f"{uri}?{urllib.parse.urlencode(query)}" if query else uri


def sqlite_read_only_uri(path: str) -> str | None:
    """A read-only ``file:`` URI for a SQLite file this process cannot write, else ``None``.

    A file we may not write (permissions, read-only mount) is opened with ``mode=ro``: reads
    work, every write fails with "attempt to write a readonly database". A WAL database
    also needs its ``-shm`` index; when that does not exist and cannot be created (the
    directory is read-only too: an archive on a read-only share) and no ``-wal`` file
    exists (so the main file holds every committed transaction), SQLite can read it only
    with ``immutable=1``, which nvmlab then adds.
    """
    if not os.path.exists(path) or os.access(path, os.W_OK):
        return None
    query = {"mode": "ro"}
    directory = os.path.dirname(os.path.abspath(path))
    if (
        _sqlite_header_is_wal(path)
        and not os.path.exists(path + "-wal")
        and not os.path.exists(path + "-shm")
        and not os.access(directory, os.W_OK)
    ):
        query["immutable"] = "1"
    return sqlite_file_uri(path, **query)


def _sqlite_header_is_wal(path: str) -> bool:
    # Bytes 18-19 of a SQLite file are the read/write format versions: 2 means WAL.
    try:
        with open(path, "rb") as file:
            header = file.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 2


def create_engine_for(url: str | URL, **kwargs: Any) -> Engine:
    """Create the SQLAlchemy engine for ``url`` with nvmlab's settings.

    SQLite: WAL, foreign keys, ``synchronous=FULL``, busy timeout
    (:data:`SQLITE_BUSY_TIMEOUT_S`), ``BEGIN IMMEDIATE`` for transactions; a file this
    process may not write is opened read-only (:func:`sqlite_read_only_uri`).
    PostgreSQL: psycopg 3, pre-ping, connect timeout (:data:`PG_CONNECT_TIMEOUT_S`).
    Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        connect_args.setdefault("check_same_thread", False)
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            read_only = sqlite_read_only_uri(database)
            if read_only is not None:
                parsed = parsed.set(database=read_only)
                database = read_only
        if database.startswith("file:"):
            parsed = parsed.update_query_dict({"uri": "true"})
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, connect_args=connect_args, **kwargs)


def create_worker_engine(url: str | URL) -> Engine:
    """An engine without pooling, for short-lived tools (CLI commands, subprocesses)."""
    return create_engine_for(url, poolclass=NullPool)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not open transactions on its own: we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = FULL")
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                # A read-only file keeps its journal mode; reading still works.
                with contextlib.suppress(Exception):
                    cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode not in ("IMMEDIATE", "DEFERRED", "EXCLUSIVE"):
            raise StorageError(f"sqlite_begin={mode!r}; allowed: IMMEDIATE, DEFERRED, EXCLUSIVE")
        connection.exec_driver_sql(f"BEGIN {mode}")
