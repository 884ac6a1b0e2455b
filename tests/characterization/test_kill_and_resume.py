"""A sweep killed with SIGKILL inside a unit resumes without repeating completed units.

The whole stack runs for real: ``nvmlab emulate`` serves the chip over loopback TCP with a
state file, ``nvmlab characterize`` runs as a separate process and is killed at a seeded
random moment inside a unit, then ``--resume`` finishes the run. The chip's own pulse
counter (ground truth from the state file) shows that devices of units completed before
the kill were not measured again: every pulse the chip received after the kill is one the
resumed run stored, and none of them belongs to a unit completed before it.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from benches import served_emulator
from sqlalchemy import select

from nvmlab.mocks import read_ground_truth
from nvmlab.storage import open_database
from nvmlab.storage.models import Unit
from nvmlab.storage.profile import load_profile
from nvmlab.storage.query import fetch_arrays
from nvmlab.storage.runs import unit_attempts

ROWS = COLS = 8


def _nvmlab(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "nvmlab.cli", *args],
        capture_output=True, text=True, timeout=300, **kwargs,
    )  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``nvmlab emulate`` in the background: (station file, state file)."""
    with served_emulator(tmp_path, rows=ROWS, cols=COLS) as files:
        yield files


def _units(url: str) -> list[tuple[int, str, str, int]]:
    with open_database(url) as db, db.read_connection() as conn:
        rows = conn.execute(
            select(Unit.run_id, Unit.unit_key, Unit.status, Unit.attempt).order_by(Unit.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.mark.tcp
@pytest.mark.parametrize("kill_seed", [1])
def test_sigkill_inside_a_map_unit_then_resume_repeats_no_completed_unit(
    served: tuple[Path, Path], tmp_path: Path, kill_seed: int
) -> None:
    station, state = served
    url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    assert _nvmlab("chip", "add", "chip12", "--kind", "memristor", "--rows", str(ROWS),
                   "--cols", str(COLS), "--db", url).returncode == 0  # fmt: skip
    rng = random.Random(kill_seed)
    # the map reads every row, then probes every row with pulses: kill inside a probe
    kill_after_units = rng.randint(ROWS + 1, 2 * ROWS - 2)
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "nvmlab.cli", "characterize", "map", "--station",
         str(station), "--chip", "chip12", "--db", url, "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            units = _units(url) if (tmp_path / "results.sqlite").exists() else []
            done = [u for u in units if u[2] == "completed"]
            if len(done) >= kill_after_units and any(u[2] == "running" for u in units):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # a seeded moment inside the running unit
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    units = _units(url)
    running = [u for u in units if u[2] == "running"]
    assert len(running) == 1, f"the kill did not land inside a unit: {units}"
    first_run = running[0][0]
    completed_before = {u[1] for u in units if u[2] == "completed"}
    time.sleep(0.5)  # the emulator saves the chip after its last write
    counts_at_kill = np.asarray(read_ground_truth(state)["pulse_count"])

    resumed = _nvmlab("characterize", "map", "--station", str(station), "--chip", "chip12",
                      "--db", url, "--no-progress", "--resume", str(first_run))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr

    with open_database(url) as db:
        final_run = max(u[0] for u in _units(url))
        attempts = unit_attempts(db, final_run)
        profile = load_profile(db, "chip12")
    completed = [a["unit_key"] for a in attempts if a["status"] == "completed"]
    assert sorted(completed) == sorted(set(completed))  # each unit completed once
    assert {f"read-row-{r}" for r in range(ROWS)} | {f"probe-row-{r}" for r in range(ROWS)} <= set(
        completed
    )
    interrupted = [a for a in attempts if a["status"] == "interrupted"]
    assert [a["unit_key"] for a in interrupted] == [running[0][1]]
    for a in attempts:
        if a["unit_key"] in completed_before:
            assert a["attempt"] == 1 and a["run_id"] == first_run

    time.sleep(0.5)
    truth = read_ground_truth(state)
    counts_after = np.asarray(truth["pulse_count"])
    with open_database(url) as db:
        pulses = fetch_arrays(db, "pulses", run_id=final_run, columns=["row", "col", "attempt_id"])
    key_of = {int(a["id"]): a["unit_key"] for a in attempts}
    keys = {key_of[int(a)] for a in pulses["attempt_id"]}
    assert keys and not keys & completed_before, "a unit completed before the kill was redone"
    stored_after = np.zeros_like(counts_after)
    np.add.at(stored_after, (pulses["row"].astype(int), pulses["col"].astype(int)), 1)
    # every pulse the chip received after the kill is one the resumed run stored (the
    # chip counts only pulses whose bias could switch a device: it may count fewer)
    received = counts_after - counts_at_kill
    assert np.all(received <= stored_after)
    assert np.all(received[stored_after == 0] == 0)
    # and the result is right: the defect map of the resumed run against the truth
    assert profile.defect_class is not None
    assert np.mean(profile.defect_class == np.asarray(truth["defect"])) >= 0.99
