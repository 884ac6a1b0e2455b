"""Run liveness (process id, process start time, heartbeat) and typed chip profiles.

``runs`` gains ``pid``, ``process_start_s`` and ``heartbeat_at`` (all nullable: runs stored
before this revision have none, and ``nvmlab runs`` shows them as dead when still
``running``). ``chip_profiles`` holds a chip's typed profile
(:class:`nvmlab.storage.profile.ChipProfile`): the scalars as columns, the per-device
arrays as one compressed NPZ blob. Plain ``ALTER TABLE ADD COLUMN`` / ``CREATE TABLE``:
no table is rebuilt (a SQLite rebuild of ``runs`` would cascade-delete every record).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_COLUMNS = (
    ("pid", sa.Integer()),
    ("process_start_s", sa.Float()),
    ("heartbeat_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    bind = op.get_bind()
    existing = {column["name"] for column in sa.inspect(bind).get_columns("runs")}
    for name, type_ in RUN_COLUMNS:
        if name not in existing:  # an old SQLite kept them through a downgrade: reused
            op.add_column("runs", sa.Column(name, type_, nullable=True))
    op.create_table(
        "chip_profiles",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("safe_read_v", sa.Float(), nullable=True),
        sa.Column("amplitude_cap_half_select_v", sa.Float(), nullable=True),
        sa.Column("amplitude_cap_third_select_v", sa.Float(), nullable=True),
        sa.Column("arrays_npz", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["chip_id"],
            ["chips.id"],
            name=op.f("fk_chip_profiles_chip_id_chips"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_chip_profiles_run_id_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chip_profiles")),
    )
    op.create_index("ix_chip_profiles_chip", "chip_profiles", ["chip_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_chip_profiles_chip", table_name="chip_profiles")
    op.drop_table("chip_profiles")
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35, 0):
        # No ALTER TABLE DROP COLUMN before SQLite 3.35, and a rebuild of ``runs`` would
        # cascade-delete every record: the nullable columns stay, unused by 0002.
        return
    for name, _type in reversed(RUN_COLUMNS):
        op.execute(f"ALTER TABLE runs DROP COLUMN {name}")
