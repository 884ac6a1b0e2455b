"""The ``forming`` sweep against the emulator's ground truth (virgin chips).

Stated tolerance: the ramp brackets each forming voltage between two pulses ``step_v``
apart and reports the midpoint, so every formed device's forming voltage is within
``step_v / 2`` (10 mV at the default 20 mV step) of the truth ``forming_voltage_v`` and
the median error is at most ``step_v / 3``; every device the sweep reports formed is
formed in the truth and every functional virgin device is formed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benches import HARSH, characterization_bench

from nvmlab.characterization.sweep import run_sweep
from nvmlab.errors import ConfigError
from nvmlab.storage.profile import load_profile
from nvmlab.storage.query import fetch_arrays

STEP_V = 0.02


def _form(tmp_path: Path, *, rows: int, seed: int, physics: dict[str, Any], smu: str,
          tcp: bool = False, params: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    with characterization_bench(
        tmp_path, rows=rows, cols=rows, seed=seed, physics=physics, smu=smu, tcp=tcp
    ) as cb:
        before = cb.truth()
        result = run_sweep("forming", station=cb.station, db=cb.db, chip=cb.chip, params=params)
        world = cb.bench.bench
        pulses = fetch_arrays(cb.db, "pulses", columns=["amplitude_v"], run_id=result.run_id)
        return {
            "result": result,
            "before": before,
            "after": cb.truth(),
            "profile": load_profile(cb.db, cb.chip),
            "max_smu_v": max(world.max_applied_v["A"], world.max_applied_v.get("B", 0.0)),
            "max_board_v": world.max_applied_v["board"],
            "pulses": pulses["amplitude_v"],
            "outputs": dict(world.terminal_v),
            "lines": [s.mode for s in (*world.rows_state, *world.cols_state)],
        }


def _check(run: dict[str, Any], step_v: float = STEP_V) -> None:
    before, after = run["before"], run["after"]
    v = run["result"].arrays["forming_voltage_v"]
    measured = np.isfinite(v)
    functional = before["defect"] == 0
    assert not before["formed"].any()
    # every functional virgin device formed and measured; no stuck device reported formed
    assert np.array_equal(measured, functional)
    assert after["formed"][functional].all()
    error = v[measured] - before["forming_voltage_v"][measured]
    assert np.max(np.abs(error)) <= step_v / 2 + 1e-9
    assert np.median(np.abs(error)) <= step_v / 3
    assert np.allclose(run["profile"].forming_voltage_v, v, equal_nan=True)
    # forming voltages reach the device only through the SMU and within the forming limit
    assert run["max_smu_v"] <= 3.0 + 1e-9 and np.max(run["pulses"]) <= 3.0 + 1e-9
    assert run["max_board_v"] == 0.0
    assert all(v is None or v == 0.0 for v in run["outputs"].values())  # off (2636B: 0 V)
    assert set(run["lines"]) == {"gnd"}


def test_forming_default_physics_keithley2400(tmp_path: Path) -> None:
    run = _form(tmp_path, rows=16, seed=51, physics={"virgin": True}, smu="keithley2400")
    _check(run)
    summary = run["result"].summary
    assert summary["formed"] == int(np.sum(run["before"]["defect"] == 0))
    assert summary["forming_voltage_mean_v"] == pytest.approx(2.2, abs=0.05)


def test_forming_harsh_physics_two_channel_smu_and_coarser_step(tmp_path: Path) -> None:
    run = _form(
        tmp_path, rows=12, seed=52, physics={**HARSH, "virgin": True}, smu="keithley2636b",
        params={"step_v": 0.05},
    )  # fmt: skip
    _check(run, step_v=0.05)


def test_forming_over_tcp(tmp_path: Path) -> None:
    run = _form(tmp_path, rows=8, seed=53, physics={"virgin": True}, smu="keysight_b2902a",
                tcp=True)  # fmt: skip
    _check(run)


def test_formed_devices_are_left_alone(tmp_path: Path) -> None:
    run = _form(tmp_path, rows=6, seed=54, physics={}, smu="keithley2400")
    assert run["result"].summary["already_conducting"] == 36
    assert run["pulses"].size == 0
    assert np.isnan(run["result"].arrays["forming_voltage_v"]).all()


def test_interrupted_forming_resumes(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=6, cols=6, seed=55,
                                physics={"virgin": True}) as cb:  # fmt: skip
        before = cb.truth()

        def stop(done: int, total: int) -> None:
            if done == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_sweep("forming", station=cb.station, db=cb.db, chip=cb.chip, progress=stop)
        result = run_sweep("forming", station=cb.station, db=cb.db, chip=cb.chip, resume=1)
        assert (result.units_skipped, result.units_measured) == (2, 4)
        v = result.arrays["forming_voltage_v"]
        functional = before["defect"] == 0
        assert np.isfinite(v[functional]).all()
        err = np.abs(v[functional] - before["forming_voltage_v"][functional])
        assert err.max() <= STEP_V / 2 + 1e-9


def test_forming_refuses_amplitudes_above_the_forming_limit(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=4, cols=4, physics={"virgin": True}) as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(ConfigError, match=r"3\.2 V is not allowed.*forming limit is 3 V"):
            run_sweep("forming", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"max_v": 3.2})  # fmt: skip
        with pytest.raises(ConfigError, match="start_v"):
            run_sweep("forming", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"start_v": 2.0, "max_v": 1.8})  # fmt: skip
        assert cb.bench.instrument_time_s() == before
