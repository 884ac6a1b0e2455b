"""Initial nvmlab results schema: stations, instruments, chips, runs, units (attempts),
pulses, reads, traces, tuning outcomes, device parameters, chamber log, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chips",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("lot", sa.String(length=100), nullable=True),
        sa.Column("wafer", sa.String(length=100), nullable=True),
        sa.Column("die", sa.String(length=100), nullable=True),
        sa.Column("array_kind", sa.String(length=20), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("n_cols", sa.Integer(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "array_kind IN ('memristor', 'eflash')", name=op.f("ck_chips_array_kind")
        ),
        sa.CheckConstraint("n_rows > 0 AND n_cols > 0", name=op.f("ck_chips_positive_size")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chips")),
        sa.UniqueConstraint("name", name=op.f("uq_chips_name")),
    )
    op.create_table(
        "stations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stations")),
        sa.UniqueConstraint("name", name=op.f("uq_stations_name")),
    )
    op.create_table(
        "instruments",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "station_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("manufacturer", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("serial", sa.String(length=200), nullable=True),
        sa.Column("firmware", sa.String(length=200), nullable=True),
        sa.Column("resource", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_instruments_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instruments")),
        sa.UniqueConstraint("station_id", "role", name=op.f("uq_instruments_station_id_role")),
    )
    op.create_table(
        "runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "station_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("operator", sa.String(length=200), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("nvmlab_version", sa.String(length=50), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column(
            "resumes_run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'aborted')", name=op.f("ck_runs_status")
        ),
        sa.ForeignKeyConstraint(["chip_id"], ["chips.id"], name=op.f("fk_runs_chip_id_chips")),
        sa.ForeignKeyConstraint(
            ["resumes_run_id"], ["runs.id"], name=op.f("fk_runs_resumes_run_id_runs")
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_runs_station_id_stations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_chip_id"), "runs", ["chip_id"], unique=False)
    op.create_index(op.f("ix_runs_resumes_run_id"), "runs", ["resumes_run_id"], unique=False)
    op.create_index(op.f("ix_runs_station_id"), "runs", ["station_id"], unique=False)

    op.create_table(
        "chamber_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "station_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("t_s", sa.Float(), nullable=False),
        sa.Column("setpoint_c", sa.Float(), nullable=True),
        sa.Column("air_c", sa.Float(), nullable=True),
        sa.Column("chip_c", sa.Float(), nullable=True),
        sa.Column("alarm", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_chamber_log_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_chamber_log_station_id_stations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chamber_log")),
    )
    op.create_index(op.f("ix_chamber_log_run"), "chamber_log", ["run_id", "t_s"], unique=False)

    op.create_table(
        "units",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("unit_key", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("row", sa.Integer(), nullable=True),
        sa.Column("col", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'interrupted', 'failed')",
            name=op.f("ck_units_status"),
        ),
        sa.ForeignKeyConstraint(["chip_id"], ["chips.id"], name=op.f("fk_units_chip_id_chips")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_units_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
        sa.UniqueConstraint(
            "run_id", "unit_key", "attempt", name=op.f("uq_units_run_id_unit_key_attempt")
        ),
    )
    op.create_index(op.f("ix_units_run_id_status"), "units", ["run_id", "status"], unique=False)

    op.create_table(
        "device_parameters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("col", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("text_value", sa.String(length=200), nullable=True),
        sa.Column("unit", sa.String(length=30), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["units.id"],
            name=op.f("fk_device_parameters_attempt_id_units"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["chip_id"], ["chips.id"], name=op.f("fk_device_parameters_chip_id_chips")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_device_parameters_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_parameters")),
    )
    op.create_index(
        op.f("ix_device_parameters_device"),
        "device_parameters",
        ["chip_id", "row", "col", "name"],
        unique=False,
    )
    op.create_index(op.f("ix_device_parameters_run"), "device_parameters", ["run_id"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("t_s", sa.Float(), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "level IN ('info', 'warning', 'fault', 'recovery')", name=op.f("ck_events_level")
        ),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["units.id"],
            name=op.f("fk_events_attempt_id_units"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_run"), "events", ["run_id", "t_s"], unique=False)

    op.create_table(
        "pulses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("col", sa.Integer(), nullable=False),
        sa.Column("t_s", sa.Float(), nullable=False),
        sa.Column("amplitude_v", sa.Float(), nullable=False),
        sa.Column("width_s", sa.Float(), nullable=False),
        sa.Column("polarity", sa.SmallInteger(), nullable=False),
        sa.Column("scheme", sa.String(length=20), nullable=True),
        sa.CheckConstraint("polarity IN (-1, 1)", name=op.f("ck_pulses_polarity")),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["units.id"],
            name=op.f("fk_pulses_attempt_id_units"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["chip_id"], ["chips.id"], name=op.f("fk_pulses_chip_id_chips")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_pulses_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pulses")),
    )
    op.create_index(op.f("ix_pulses_device"), "pulses", ["chip_id", "row", "col"], unique=False)
    op.create_index(op.f("ix_pulses_run"), "pulses", ["run_id", "attempt_id"], unique=False)

    op.create_table(
        "reads",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("col", sa.Integer(), nullable=False),
        sa.Column("t_s", sa.Float(), nullable=False),
        sa.Column("voltage_v", sa.Float(), nullable=False),
        sa.Column("current_a", sa.Float(), nullable=False),
        sa.Column("conductance_s", sa.Float(), nullable=True),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["units.id"], name=op.f("fk_reads_attempt_id_units"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["chip_id"], ["chips.id"], name=op.f("fk_reads_chip_id_chips")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_reads_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reads")),
    )
    op.create_index(op.f("ix_reads_device"), "reads", ["chip_id", "row", "col"], unique=False)
    op.create_index(op.f("ix_reads_run"), "reads", ["run_id", "attempt_id"], unique=False)

    op.create_table(
        "traces",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("col", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("t_s", sa.Float(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("x_name", sa.String(length=50), nullable=False),
        sa.Column("y_name", sa.String(length=50), nullable=False),
        sa.Column("x_data", sa.LargeBinary(), nullable=False),
        sa.Column("y_data", sa.LargeBinary(), nullable=False),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["units.id"],
            name=op.f("fk_traces_attempt_id_units"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["chip_id"], ["chips.id"], name=op.f("fk_traces_chip_id_chips")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_traces_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traces")),
    )
    op.create_index(op.f("ix_traces_device"), "traces", ["chip_id", "row", "col"], unique=False)
    op.create_index(op.f("ix_traces_run"), "traces", ["run_id", "attempt_id"], unique=False)

    op.create_table(
        "tuning_outcomes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "attempt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("chip_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("col", sa.Integer(), nullable=False),
        sa.Column("target_s", sa.Float(), nullable=False),
        sa.Column("final_s", sa.Float(), nullable=True),
        sa.Column("error_rel", sa.Float(), nullable=True),
        sa.Column("pulse_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("algorithm", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["units.id"],
            name=op.f("fk_tuning_outcomes_attempt_id_units"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["chip_id"], ["chips.id"], name=op.f("fk_tuning_outcomes_chip_id_chips")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_tuning_outcomes_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuning_outcomes")),
    )
    op.create_index(
        op.f("ix_tuning_outcomes_device"),
        "tuning_outcomes",
        ["chip_id", "row", "col"],
        unique=False,
    )
    op.create_index(
        op.f("ix_tuning_outcomes_run"), "tuning_outcomes", ["run_id", "attempt_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_tuning_outcomes_run"), table_name="tuning_outcomes")
    op.drop_index(op.f("ix_tuning_outcomes_device"), table_name="tuning_outcomes")

    op.drop_table("tuning_outcomes")
    op.drop_index(op.f("ix_traces_run"), table_name="traces")
    op.drop_index(op.f("ix_traces_device"), table_name="traces")

    op.drop_table("traces")
    op.drop_index(op.f("ix_reads_run"), table_name="reads")
    op.drop_index(op.f("ix_reads_device"), table_name="reads")

    op.drop_table("reads")
    op.drop_index(op.f("ix_pulses_run"), table_name="pulses")
    op.drop_index(op.f("ix_pulses_device"), table_name="pulses")

    op.drop_table("pulses")
    op.drop_index(op.f("ix_events_run"), table_name="events")

    op.drop_table("events")
    op.drop_index(op.f("ix_device_parameters_run"), table_name="device_parameters")
    op.drop_index(op.f("ix_device_parameters_device"), table_name="device_parameters")

    op.drop_table("device_parameters")
    op.drop_index(op.f("ix_units_run_id_status"), table_name="units")

    op.drop_table("units")
    op.drop_index(op.f("ix_chamber_log_run"), table_name="chamber_log")

    op.drop_table("chamber_log")
    op.drop_index(op.f("ix_runs_station_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_resumes_run_id"), table_name="runs")
    op.drop_index(op.f("ix_runs_chip_id"), table_name="runs")

    op.drop_table("runs")
    op.drop_table("instruments")
    op.drop_table("stations")
    op.drop_table("chips")
