"""Opening the results database: schema revision checks, upgrades and clear errors.

:func:`open_database` is the one entry point the rest of nvmlab uses. It connects, checks
that the schema is at the revision this nvmlab ships (Alembic, ``nvmlab.storage.migrations``)
and returns a :class:`Database`. Every failure becomes a one-line
:class:`~nvmlab.errors.StorageError` naming the database (password masked) and what to do:

* unreachable server / missing file: says so, nothing is created;
* empty database: created at the current revision when ``create=True`` (a laptop's first
  run), otherwise "run nvmlab db upgrade";
* older revision, or tables without a revision: "run nvmlab db upgrade --db URL";
* newer revision than this nvmlab knows: "upgrade nvmlab";
* read-only file: "read-only", and nothing stored is altered.

:func:`upgrade_database` (``nvmlab db upgrade``) applies the shipped revisions; migrations
never autogenerate at runtime.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from nvmlab.errors import StorageError
from nvmlab.storage.engine import (
    create_engine_for,
    mask_text,
    mask_url,
    parse_url,
    sqlite_path,
)

log = logging.getLogger(__name__)

#: Where the shipped Alembic revisions live (inside the installed package).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _alembic_config(script_location: Path | str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location or MIGRATIONS_DIR))
    return config


def head_revision(script_location: Path | str | None = None) -> str:
    """The newest schema revision this nvmlab ships."""
    script = ScriptDirectory.from_config(_alembic_config(script_location))
    heads = script.get_heads()
    if len(heads) != 1:
        raise StorageError(f"nvmlab migrations have {len(heads)} heads {heads}; expected one")
    return heads[0]


def describe_db_error(exc: BaseException, url: str | URL, action: str) -> StorageError:
    """Turn a driver/SQLAlchemy error into a one-line StorageError (password masked)."""
    shown = mask_url(url)
    orig = getattr(exc, "orig", None) or exc
    detail = mask_text(" ".join(str(orig).split()), url)
    low = detail.lower()
    if "readonly" in low or "read-only" in low or "read only" in low:
        return StorageError(
            f"cannot {action}: database {shown} is read-only ({detail}); nothing was "
            "stored or changed. Use a writable file or pass --db URL"
        )
    if "unable to open database file" in low:
        folder = _sqlite_folder(url)
        if folder is not None:
            return StorageError(
                f"cannot {action}: {shown} names the folder {folder}, not a database file; "
                f"allowed: a file such as sqlite:///{folder.as_posix().rstrip('/')}/nvmlab.sqlite"
            )
        return StorageError(
            f"cannot {action}: cannot open SQLite database {shown} ({detail}); check that "
            "the directory exists and is writable"
        )
    if "file is not a database" in low:
        return StorageError(
            f"cannot {action}: {shown} is not an SQLite database ({detail}); nothing was "
            "changed. Pass the results database file, or a new file name to create one"
        )
    if "does not exist" in low and 'database "' in low:
        return StorageError(f"cannot {action}: {detail} (URL {shown}); create it first")
    if (
        isinstance(exc, DBAPIError)
        and exc.connection_invalidated
        or any(
            word in low
            for word in ("connection refused", "could not connect", "connection failed", "timeout")
        )
    ):
        return StorageError(
            f"cannot {action}: database server {shown} is unreachable ({detail}); check that "
            "it runs and that the URL (host, port, database, user) is right"
        )
    if "does not exist" in low and "database" in low:
        return StorageError(f"cannot {action}: {detail} (URL {shown}); create it first")
    return StorageError(f"cannot {action} on database {shown}: {detail}")


def _sqlite_folder(url: str | URL) -> Path | None:
    """The folder an SQLite URL names instead of a file, else None."""
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError, TypeError):
        return None
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        return None
    path = Path(parsed.database)
    return path if path.is_dir() else None


@contextlib.contextmanager
def storage_errors(url: str | URL, action: str) -> Iterator[None]:
    """Re-raise database errors inside the block as :class:`StorageError`."""
    try:
        yield
    except StorageError:
        raise
    except (SQLAlchemyError, OSError) as exc:
        raise describe_db_error(exc, url, action) from None


class Database:
    """An open results database: its engine and its URL (printable, password masked)."""

    def __init__(self, url: str | URL, engine: Engine) -> None:
        self._url = url if isinstance(url, URL) else parse_url(url)
        self.engine = engine

    @property
    def url(self) -> URL:
        """The parsed URL (its ``str()`` masks the password)."""
        return self._url

    @property
    def display_url(self) -> str:
        """The URL with any password replaced by ``***``."""
        return mask_url(self._url)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """Context manager turning database errors into :class:`StorageError`."""
        return storage_errors(self._url, action)

    def read_connection(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection for reading only (SQLite: a plain deferred BEGIN, no write lock)."""
        return self.engine.connect().execution_options(sqlite_begin="DEFERRED")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"


def schema_state(conn: Connection, script_location: Path | str | None = None) -> tuple[str, str]:
    """``(state, current_revision)`` where state is one of ``current``, ``empty``,
    ``unversioned`` (tables but no revision), ``older``, ``newer``."""
    current = MigrationContext.configure(conn).get_current_heads()
    head = head_revision(script_location)
    if not current:
        tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
        return ("unversioned" if tables else "empty"), ""
    rev = current[0]
    if rev == head:
        return "current", rev
    script = ScriptDirectory.from_config(_alembic_config(script_location))
    try:
        known = script.get_revision(rev) is not None
    except CommandError:
        known = False
    return ("older" if known else "newer"), rev


def open_database(
    url: str | URL,
    *,
    create: bool = True,
    script_location: Path | str | None = None,
) -> Database:
    """Connect to ``url`` and check its schema revision; return the :class:`Database`.

    ``create=True`` creates the schema in an *empty* database (and, for SQLite, the file).
    ``create=False`` (read-only tools such as ``nvmlab runs``) refuses a missing file or
    an empty database. An outdated or foreign schema always raises :class:`StorageError`
    telling the user to run ``nvmlab db upgrade``.
    """
    parsed = url if isinstance(url, URL) else parse_url(url)
    shown = mask_url(parsed)
    path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not create and not os.path.exists(path):
        raise StorageError(
            f"no results database at {shown} (file {path} does not exist); pass --db URL "
            f"or create it with 'nvmlab db upgrade --db {shown}'"
        )
    engine = create_engine_for(parsed)
    db = Database(parsed, engine)
    try:
        with db.errors("open the results database"), db.read_connection() as conn:
            state, rev = schema_state(conn, script_location)
        upgrade_hint = f"run 'nvmlab db upgrade --db {shown}'"
        if state == "empty":
            if not create:
                raise StorageError(f"database {shown} holds no nvmlab schema yet; {upgrade_hint}")
            upgrade_database(db, script_location=script_location)
        elif state == "unversioned":
            raise StorageError(
                f"database {shown} holds tables but no nvmlab schema revision; {upgrade_hint} "
                "(or point --db at an nvmlab results database)"
            )
        elif state == "older":
            raise StorageError(
                f"database {shown} is at schema revision {rev}, this nvmlab needs "
                f"{head_revision(script_location)}; {upgrade_hint}"
            )
        elif state == "newer":
            raise StorageError(
                f"database {shown} is at schema revision {rev}, newer than this nvmlab knows "
                f"(head {head_revision(script_location)}); upgrade nvmlab"
            )
    except BaseException:
        engine.dispose()
        raise
    return db


#: Alembic's ``op`` and ``context`` are process-wide proxies: two migrations at once in
#: one process (two jobs in two threads, each on its own database) would mix them up.
_MIGRATING = threading.Lock()


def upgrade_database(
    target: Database | str | URL, *, script_location: Path | str | None = None
) -> tuple[str, str]:
    """Create or upgrade the schema to the newest shipped revision.

    Returns ``(revision_before, revision_after)`` (``""`` before means the database was
    empty). Runs in one transaction on both engines (their DDL is transactional), so a
    failed upgrade leaves the database as it was.
    """
    own = not isinstance(target, Database)
    db = target if isinstance(target, Database) else Database(target, create_engine_for(target))
    try:
        with (
            _MIGRATING,
            db.errors("upgrade the schema"),
            db.engine.connect() as conn,
        ):
            before = MigrationContext.configure(conn).get_current_heads()
            conn.rollback()
            config = _alembic_config(script_location)
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
            except CommandError as exc:
                raise StorageError(
                    f"cannot upgrade database {db.display_url}: {mask_text(str(exc), db.url)}"
                ) from None
            conn.commit()
            after = MigrationContext.configure(conn).get_current_heads()
            conn.rollback()
        rev_before = before[0] if before else ""
        rev_after = after[0] if after else ""
        log.info("database %s upgraded from %r to %r", db.display_url, rev_before, rev_after)
        return rev_before, rev_after
    finally:
        if own:
            db.close()
