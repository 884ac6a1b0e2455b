"""Alembic environment for the nvmlab results database.

Used in two ways:

* by nvmlab itself (:func:`nvmlab.storage.database.upgrade_database`), which passes an open
  SQLAlchemy connection in ``config.attributes["connection"]``;
* by developers running the ``alembic`` command with ``storage/alembic.ini`` and
  ``-x db=URL`` (or ``NVMLAB_DB``) to create a new revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from nvmlab.storage.engine import create_worker_engine, resolve_database_url
from nvmlab.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = resolve_database_url(context.get_x_argument(as_dictionary=True).get("db"), None)
    engine = create_worker_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("nvmlab migrations run online only: use `nvmlab db upgrade --db URL`")
run_migrations_online()
