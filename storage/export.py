"""Exporting one run to files: CSV or Parquet, one file per table plus ``run.json``.

``nvmlab export RUN --format csv|parquet --out DIR`` writes into ``DIR/run-<id>/``:

* ``run.json``: the run's row (kind, status, configuration, operator, host, version, seed,
  the run it resumes) and its resume chain;
* ``units.<ext>``: every attempt (key, attempt number, status, result);
* ``pulses``, ``reads``, ``tuning_outcomes``, ``device_parameters``, ``chamber_log``,
  ``events``: the records, one row per record, units in the column names
  (``amplitude_v``, ``width_s``, ``current_a``, ``conductance_s``, ``temperature_c``);
* ``traces``: one row per trace; in Parquet the samples are list columns ``x`` and ``y``,
  in CSV they are JSON arrays.

Each file is written to a temporary name and renamed, so an interrupted export never
leaves a truncated file under the final name. The database is only read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from nvmlab.errors import StorageError
from nvmlab.storage.database import Database
from nvmlab.storage.query import get_run, load_records, load_traces, run_chain
from nvmlab.storage.runs import unit_attempts

FORMATS = ("csv", "parquet")
EXPORTED_TABLES = (
    "pulses",
    "reads",
    "tuning_outcomes",
    "device_parameters",
    "chamber_log",
    "events",
)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False, engine="pyarrow")
    os.replace(tmp, path)


def export_run(db: Database, run_id: int, fmt: str, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write run ``run_id`` into ``out_dir/run-<id>/`` as ``fmt``; return the files written."""
    if fmt not in FORMATS:
        raise StorageError(f"export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    run = get_run(db, run_id)  # raises for an unknown run before anything is written
    target = Path(out_dir) / f"run-{run_id}"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create export directory {target}: {exc.strerror}") from None
    written: list[Path] = []
    try:
        meta = dict(run)
        meta["resume_chain"] = run_chain(db, run_id)
        meta_path = target / "run.json"
        tmp = meta_path.with_name(".run.json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=_json_default, sort_keys=True) + "\n")
        os.replace(tmp, meta_path)
        written.append(meta_path)

        units = pd.DataFrame(unit_attempts(db, run_id))
        if "result" in units:
            units["result"] = [json.dumps(r) if r is not None else None for r in units["result"]]
        path = target / f"units.{fmt}"
        _write_frame(units, path, fmt)
        written.append(path)

        for table in EXPORTED_TABLES:
            frame = load_records(db, table, run_id)
            path = target / f"{table}.{fmt}"
            _write_frame(frame, path, fmt)
            written.append(path)

        traces = load_traces(db, run_id)
        rows = []
        for item in traces:
            x, y = item.pop("x"), item.pop("y")
            item["meta"] = json.dumps(item["meta"]) if item.get("meta") is not None else None
            if fmt == "csv":
                item["x"], item["y"] = json.dumps(x.tolist()), json.dumps(y.tolist())
            else:
                item["x"], item["y"] = x.tolist(), y.tolist()
            rows.append(item)
        frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["id", "run_id", "x", "y"])
        path = target / f"traces.{fmt}"
        _write_frame(frame, path, fmt)
        written.append(path)
    except OSError as exc:
        raise StorageError(f"cannot write export of run {run_id} into {target}: {exc}") from None
    return written
