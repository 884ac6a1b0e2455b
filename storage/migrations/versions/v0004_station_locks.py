"""The station lock: one job per station (``station_locks``).

One row per station held by a job's process (host, pid, process start time, heartbeat),
with the run it is running; :mod:`nvmlab.storage.locks` takes it, refreshes it, takes over
a lock whose holder is dead and releases it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "station_locks",
        sa.Column("station", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("process_start_s", sa.Float(), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_station_locks_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("station", name=op.f("pk_station_locks")),
    )


def downgrade() -> None:
    op.drop_table("station_locks")
