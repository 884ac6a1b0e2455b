"""Results database: SQLAlchemy models, engines, migrations, ingest and export.

Public API (see the modules for details)::

    from nvmlab.storage import open_database, resolve_database, RecordWriter
    url, source = resolve_database(args.db, job_file_url=job.database,
                                   station_file_url=station_file_database(args.station))
    db = open_database(url)                                # checks the revision
    chip = ensure_chip(db, "W3-D12", array_kind="memristor", n_rows=64, n_cols=64)
    run = start_run(db, "tune", config=job_dict, chip_id=chip, seed=7)
    with RecordWriter(db, run, chip_id=chip) as w, w.unit("tune:3,4", row=3, col=4):
        w.add_pulse(3, 4, amplitude_v=1.2, width_s=1e-6)
        w.add_read(3, 4, voltage_v=0.2, current_a=9.8e-6)
    finish_run(db, run, "completed")
    reads = load_reads(db, run)          # pandas DataFrame (fast path, no pandas.read_sql)

Modules: ``engine`` (URLs, database precedence, engine factory, password masking),
``models`` (schema), ``database`` (open / revision check / upgrade), ``inventory`` (chips,
stations), ``runs`` (run lifecycle, resume, liveness), ``liveness`` (is a process still
there), ``writer`` (the buffered record writer), ``bulk`` (per-engine insert paths),
``ingest`` (all the writing API under one name), ``profile`` (the typed chip profile),
``query`` (numpy / pandas reads), ``export`` (CSV / Parquet), ``station_database`` (a
station file's ``[station] database``), ``cli``, ``bench``.
"""

from nvmlab.storage.database import Database, open_database, upgrade_database
from nvmlab.storage.engine import (
    DatabaseChoice,
    create_engine_for,
    mask_url,
    resolve_database,
    resolve_database_url,
)
from nvmlab.storage.ingest import (
    RecordWriter,
    RegisteredChip,
    completed_units,
    ensure_chip,
    ensure_station,
    finish_run,
    list_chips,
    mark_interrupted,
    register_chip,
    require_chip,
    resume_run,
    start_run,
)
from nvmlab.storage.profile import ChipProfile, load_profile, save_profile
from nvmlab.storage.query import (
    conductance_map,
    device_history,
    fetch_arrays,
    list_runs,
    load_pulses,
    load_reads,
    load_records,
    load_traces,
)
from nvmlab.storage.station_database import station_file_database

__all__ = [
    "ChipProfile",
    "Database",
    "DatabaseChoice",
    "RecordWriter",
    "RegisteredChip",
    "completed_units",
    "conductance_map",
    "create_engine_for",
    "device_history",
    "ensure_chip",
    "ensure_station",
    "fetch_arrays",
    "finish_run",
    "list_chips",
    "list_runs",
    "load_profile",
    "load_pulses",
    "load_reads",
    "load_records",
    "load_traces",
    "mark_interrupted",
    "mask_url",
    "open_database",
    "register_chip",
    "require_chip",
    "resolve_database",
    "resolve_database_url",
    "station_file_database",
    "resume_run",
    "save_profile",
    "start_run",
    "upgrade_database",
]
