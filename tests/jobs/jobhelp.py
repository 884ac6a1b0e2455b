"""Helpers of the job tests: small job files on an in-process emulated bench, the
``nvmlab`` command run in-process or as a process, and what a run stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from nvmlab.storage import open_database
from nvmlab.storage.models import Event, Run, Unit


def write_job(
    folder: Path,
    *,
    rows: int = 6,
    cols: int = 6,
    seed: int = 3,
    steps: str | None = None,
    bench_file: str | None = None,
    extra: str = "",
    name: str = "job.toml",
) -> Path:
    """A job file on a rows x cols emulated memristor bench (state file in ``folder``)
    with uniform targets (``targets.npy``); ``steps`` replaces the default steps (map,
    tune)."""
    rng = np.random.default_rng(seed)
    np.save(folder / "targets.npy", rng.uniform(15e-6, 90e-6, (rows, cols)))
    bench = f'file = "{bench_file}"\n' if bench_file else ""
    if steps is None:
        steps = """
[[steps]]
kind = "map"

[[steps]]
kind = "tune"
targets = "targets.npy"
"""
    text = f"""[job]
name = "test-job"
output = "runs"
seed = 1

[bench]
{bench}rows = {rows}
cols = {cols}
seed = {seed}
state_file = "chip.npz"

[chip]
name = "chip-{seed}"
{extra}
{steps}"""
    path = folder / name
    path.write_text(text)
    return path


def nvmlab(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``nvmlab ARGS`` as a separate process (its exit status, stdout and stderr)."""
    return subprocess.run(
        [sys.executable, "-P", "-m", "nvmlab.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


def units(url: str) -> list[dict[str, Any]]:
    with open_database(url) as db, db.read_connection() as conn:
        rows = conn.execute(select(Unit.__table__).order_by(Unit.id)).all()
    return [dict(r._mapping) for r in rows]


def runs(url: str) -> list[dict[str, Any]]:
    with open_database(url) as db, db.read_connection() as conn:
        rows = conn.execute(select(Run.__table__).order_by(Run.id)).all()
    return [dict(r._mapping) for r in rows]


def events(url: str) -> list[dict[str, Any]]:
    with open_database(url) as db, db.read_connection() as conn:
        rows = conn.execute(select(Event.__table__).order_by(Event.id)).all()
    return [dict(r._mapping) for r in rows]


def assert_every_unit_completed_once(url: str) -> dict[str, int]:
    """Every unit key of the database's units has exactly one completed attempt, and none
    is left running; returns the completed count by step label."""
    attempts = units(url)
    assert not [a for a in attempts if a["status"] == "running"]
    completed: dict[str, int] = {}
    for a in attempts:
        if a["status"] == "completed":
            completed[a["unit_key"]] = completed.get(a["unit_key"], 0) + 1
    assert set(completed) == {a["unit_key"] for a in attempts}, "a unit was never completed"
    assert max(completed.values()) == 1, "a unit was completed twice"
    by_step: dict[str, int] = {}
    for key in completed:
        by_step[key.split("/")[0]] = by_step.get(key.split("/")[0], 0) + 1
    return by_step
