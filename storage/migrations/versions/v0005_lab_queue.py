"""The lab's queue: procrastinate's schema (PostgreSQL), stations and their workers,
submitted jobs and their runs, and each running job's live progress.

On PostgreSQL this revision applies the queue engine's own schema (``procrastinate_*``
tables, types, functions and triggers), exactly as procrastinate ships it
(:meth:`procrastinate.schema.SchemaManager.get_schema`, procrastinate 3.10), unless the
database has it already (a lab that installed it by hand). A later procrastinate release
comes with its own SQL migrations (``SchemaManager.get_migrations_path()``); the nvmlab
release that moves to it applies them in a revision of its own. SQLite holds no queue
(procrastinate needs PostgreSQL): there only nvmlab's three tables are created, so that
one schema describes both engines.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUN_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _apply_procrastinate_schema() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    present = bind.execute(sa.text("SELECT to_regclass('procrastinate_jobs')")).scalar()
    if present is not None:
        return
    from procrastinate.schema import SchemaManager

    # the engine's SQL, run as it ships (several statements, dollar-quoted functions): through
    # the driver's own connection, inside this migration's transaction
    driver = bind.connection.driver_connection
    assert driver is not None
    driver.execute(SchemaManager.get_schema())


def _drop_procrastinate_schema() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = "current_schema()"
    for kind, query in (
        ("TABLE", f"SELECT tablename FROM pg_tables WHERE schemaname = {schema} "
                  "AND tablename LIKE 'procrastinate%'"),
        ("FUNCTION", "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
                     f"ON n.oid = p.pronamespace WHERE n.nspname = {schema} "
                     "AND p.proname LIKE 'procrastinate%'"),
        # what is left once the tables are gone: the enums and the composite type
        ("TYPE", "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                 f"WHERE n.nspname = {schema} AND t.typname LIKE 'procrastinate%' "
                 "AND t.typtype IN ('e', 'c')"),
    ):  # fmt: skip
        for (name,) in bind.execute(sa.text(query)).all():
            target = name if kind == "FUNCTION" else f'"{name}"'
            bind.execute(sa.text(f"DROP {kind} IF EXISTS {target} CASCADE"))


def upgrade() -> None:
    _apply_procrastinate_schema()
    op.create_table(
        "station_workers",
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("station_file", sa.Text(), nullable=True),
        sa.Column("station_text", sa.Text(), nullable=True),
        sa.Column("chip_kind", sa.String(length=20), nullable=True),
        sa.Column("n_rows", sa.Integer(), nullable=True),
        sa.Column("n_cols", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("queue_job_id", sa.BigInteger(), nullable=True),
        sa.Column("run_id", _RUN_ID, nullable=True),
        sa.Column("engine_worker_id", sa.BigInteger(), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("process_start_s", sa.Float(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_station_workers_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("station", name=op.f("pk_station_workers")),
    )  # fmt: skip
    op.create_table(
        "queue_jobs",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("job_name", sa.String(length=200), nullable=False),
        sa.Column("chip", sa.String(length=200), nullable=False),
        sa.Column("job_file", sa.Text(), nullable=True),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("station", sa.String(length=200), nullable=True),
        sa.Column("first_run_id", _RUN_ID, nullable=True),
        sa.Column("run_id", _RUN_ID, nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["first_run_id"], ["runs.id"], name=op.f("fk_queue_jobs_first_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_queue_jobs_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_queue_jobs")),
    )  # fmt: skip
    op.create_table(
        "run_progress",
        sa.Column("run_id", _RUN_ID, autoincrement=False, nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_count", sa.Integer(), nullable=False),
        sa.Column("step_label", sa.String(length=200), nullable=False),
        sa.Column("units_done", sa.Integer(), nullable=False),
        sa.Column("units_total", sa.Integer(), nullable=False),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_progress_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_progress")),
    )


def downgrade() -> None:
    op.drop_table("run_progress")
    op.drop_table("queue_jobs")
    op.drop_table("station_workers")
    _drop_procrastinate_schema()
