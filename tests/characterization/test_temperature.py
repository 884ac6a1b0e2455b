"""The temperature sweep, judged against the emulator's ground truth.

Compared: the profile's ``temp_coeff_s_per_k`` with the truth's
``conductance_temp_coeff_s_per_k`` (d(I(0.2 V)/0.2 V)/dT at 25 C), per-device relative
error, median over the devices measured (acceptance: within 10 %). Chamber waits and soaks
run on the bench's virtual clock (no wall time).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from benches import HARSH, characterization_bench

from nvmlab.characterization.sweep import run_sweep
from nvmlab.characterization.temperature import TemperatureSweep, effective_age_s
from nvmlab.errors import ConfigError
from nvmlab.storage.profile import load_profile
from nvmlab.storage.query import fetch_arrays


def _errors(cb: Any, coeff: np.ndarray) -> np.ndarray:
    truth = cb.truth()["conductance_temp_coeff_s_per_k"]
    measured = np.isfinite(coeff)
    return ((coeff - truth) / truth)[measured]


def test_temperature_default_physics_against_truth_on_64x64(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=64, cols=64, seed=1) as cb:
        result = run_sweep("temperature", station=cb.station, db=cb.db, chip=cb.chip)
        assert result.status == "completed"
        coeff = result.arrays["temp_coeff_s_per_k"]
        assert int(np.isfinite(coeff).sum()) == 64  # the default sample
        err = _errors(cb, coeff)
        assert float(np.median(np.abs(err))) < 0.10
        # six temperatures, each state's mean conductance rises with temperature
        plot = result.summary["plot"]
        assert plot["temperatures_c"] == [25.0, 40.0, 55.0, 70.0, 85.0, 100.0]
        assert len(plot["mean_conductance_s"]) == 4
        for row in plot["mean_conductance_s"]:
            assert len(row) == 6 and np.all(np.diff(row) > 0)
        # the chamber was logged; the reads carry the chamber temperature
        log = fetch_arrays(cb.db, "chamber_log", columns=["setpoint_c", "air_c"])
        assert set(np.round(log["setpoint_c"]).astype(int)) == {25, 40, 55, 70, 85, 100}
        profile = load_profile(cb.db, cb.chip)
        assert profile.temp_coeff_s_per_k is not None
        assert result.instrument_s > 6 * 600  # six soaks at least


def test_temperature_harsh_physics_over_tcp(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=16, cols=16, seed=2, physics=HARSH, tcp=True) as cb:
        result = run_sweep("temperature", station=cb.station, db=cb.db, chip=cb.chip,
                           params={"sample": 24, "reads": 3})  # fmt: skip
        err = _errors(cb, result.arrays["temp_coeff_s_per_k"])
        assert err.size == 24
        assert float(np.median(np.abs(err))) < 0.10


def test_relaxation_drift_is_not_taken_for_a_temperature_coefficient(tmp_path: Path) -> None:
    """Twenty times the default relaxation (1 % per decade): the return read and the
    Arrhenius drift term keep the coefficient right, where a straight line G(T) through
    the same reads is off by much more."""
    physics = {"relax_per_decade_rel": 0.01}
    with characterization_bench(tmp_path, rows=16, cols=16, seed=3, physics=physics) as cb:
        result = run_sweep("temperature", station=cb.station, db=cb.db, chip=cb.chip,
                           params={"sample": 20})  # fmt: skip
        coeff = result.arrays["temp_coeff_s_per_k"]
        err = _errors(cb, coeff)
        assert float(np.median(np.abs(err))) < 0.05
        # the naive fit on the same stored reads (no drift term)
        rec = fetch_arrays(cb.db, "device_parameters", columns=["row", "col", "name", "value"],
                           run_id=result.run_id)  # fmt: skip
        points: dict[tuple[int, int], dict[str, float]] = {}
        for r, c, name, value in zip(rec["row"], rec["col"], rec["name"], rec["value"],
                                     strict=True):  # fmt: skip
            points.setdefault((int(r), int(c)), {})[name] = value
        truth = cb.truth()["conductance_temp_coeff_s_per_k"]
        naive = []
        for (r, c), p in points.items():
            g = np.array([p[f"temp_g_s@{i}"] for i in range(7)])
            t = np.array([p[f"temp_c@{i}"] for i in range(7)])
            slope = np.polyfit(t, g, 1)[0]
            naive.append(abs(slope - truth[r, c]) / truth[r, c])
        assert float(np.median(naive)) > 2 * float(np.median(np.abs(err)))


def test_a_resumed_run_does_not_program_again(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=8, cols=8, seed=4) as cb:
        done: list[int] = []

        def stop_after_three(n: int, total: int) -> None:
            done.append(n)
            if n == 3:  # program, T0 and T1 completed
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_sweep("temperature", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"sample": 16}, progress=stop_after_three)  # fmt: skip
        first_pulses = len(fetch_arrays(cb.db, "pulses", columns=["row"], run_id=1)["row"])
        assert first_pulses > 0
        result = run_sweep("temperature", station=cb.station, db=cb.db, chip=cb.chip,
                           resume=1)  # fmt: skip
        assert result.status == "completed"
        assert (result.units_skipped, result.units_measured) == (3, 5)
        resumed_pulses = fetch_arrays(cb.db, "pulses", columns=["row"], run_id=result.run_id)
        assert len(resumed_pulses["row"]) == 0  # the states were not set again
        err = _errors(cb, result.arrays["temp_coeff_s_per_k"])
        assert err.size == 16
        assert float(np.median(np.abs(err))) < 0.10


def test_temperatures_outside_the_station_or_chamber_range_are_refused(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=8, cols=8) as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(ConfigError, match=r"value 130 C is not allowed.*-10 to 125 C") as err:
            run_sweep("temperature", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"temperatures_c": [25, 130], "sample": 4})  # fmt: skip
        assert err.value.field == "temperatures_c"
        with pytest.raises(ConfigError, match="at least two different") as err:
            run_sweep("temperature", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"temperatures_c": [25, 25], "sample": 4})  # fmt: skip
        assert cb.bench.instrument_time_s() == before
    # a station whose limits reach beyond the chamber model's datasheet range
    station = SimpleNamespace(
        limits=SimpleNamespace(min_temperature_c=-100.0, max_temperature_c=250.0, max_read_v=0.5),
        config=SimpleNamespace(instruments={"chamber": SimpleNamespace(driver="espec")}),
    )
    chip = SimpleNamespace(name="c", rows=8, cols=8)
    sweep = TemperatureSweep()
    params = {"temperatures_c": [25.0, 160.0], "sample": 4, "read_v": 0.2}
    with pytest.raises(ConfigError, match=r"160 C is not allowed; the espec chamber's range is "
                       r"-40 to 150 C") as err:  # fmt: skip
        sweep.check(params, chip, station)  # type: ignore[arg-type]
    assert err.value.field == "temperatures_c"


def test_effective_age_weights_hot_intervals() -> None:
    times = np.array([100.0, 200.0, 300.0])
    temps = np.array([25.0, 100.0, 25.0])
    age = effective_age_s(times, temps, 0.0, 1.0)
    assert age[0] == pytest.approx(100.0)
    factor = np.exp(1.0 / 8.617333262e-5 * (1 / 298.15 - 1 / 373.15))
    assert age[1] == pytest.approx(100.0 + 100.0 * factor)
    assert age[2] == pytest.approx(age[1] + 100.0)
