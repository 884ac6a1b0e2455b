"""A unit is completed once per resume chain, and a run is resumed once, by constraint.

``units.chain_run_id`` names the first run of the attempt's resume chain (filled in for
existing attempts by following ``runs.resumes_run_id``); a partial unique index allows one
``completed`` attempt per (chain, unit key). ``runs.resumes_run_id`` becomes unique, so a
chain never branches. Both are plain ``ALTER TABLE ADD COLUMN`` / ``CREATE INDEX``: no
table is rebuilt (a SQLite table rebuild would cascade-delete the records of every
attempt through the foreign keys).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMPLETED = sa.text("status = 'completed'")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite adds a column with an inline REFERENCES clause (alembic's add_column would
        # need a batch rebuild of the table for the foreign key). A database downgraded
        # to 0001 kept the column: it is reused.
        columns = {column["name"] for column in sa.inspect(bind).get_columns("units")}
        if "chain_run_id" not in columns:
            op.execute(
                "ALTER TABLE units ADD COLUMN chain_run_id INTEGER "
                "CONSTRAINT fk_units_chain_run_id_runs REFERENCES runs (id)"
            )
    else:
        op.add_column("units", sa.Column("chain_run_id", sa.BigInteger(), nullable=True))
        op.create_foreign_key(
            op.f("fk_units_chain_run_id_runs"), "units", "runs", ["chain_run_id"], ["id"]
        )
    op.execute(
        "WITH RECURSIVE chain (id, root) AS ("
        " SELECT id, id FROM runs WHERE resumes_run_id IS NULL"
        " UNION ALL SELECT runs.id, chain.root FROM runs JOIN chain"
        " ON runs.resumes_run_id = chain.id)"
        " UPDATE units SET chain_run_id = (SELECT root FROM chain WHERE chain.id = units.run_id)"
    )
    op.create_index(
        "uq_units_chain_completed",
        "units",
        ["chain_run_id", "unit_key"],
        unique=True,
        sqlite_where=COMPLETED,
        postgresql_where=COMPLETED,
    )
    op.drop_index(op.f("ix_runs_resumes_run_id"), table_name="runs")
    op.create_index(op.f("ix_runs_resumes_run_id"), "runs", ["resumes_run_id"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_resumes_run_id"), table_name="runs")
    op.create_index(op.f("ix_runs_resumes_run_id"), "runs", ["resumes_run_id"], unique=False)
    op.drop_index("uq_units_chain_completed", table_name="units")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("fk_units_chain_run_id_runs"), "units", type_="foreignkey")
        op.drop_column("units", "chain_run_id")
    # SQLite keeps the (nullable, unused by 0001) column: dropping a column with a foreign
    # key needs a table rebuild, and rebuilding ``units`` with foreign keys on would
    # cascade-delete every record that names an attempt.
