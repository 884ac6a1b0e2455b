"""Sweep ``disturb``: safe read voltage and half-select amplitude caps against the truth.

What is asserted (the chip's truth, never the sweep's own reads):

- safe: reading every device at ``safe_read_v`` (as many readings as the sweep's rungs)
  moves no functional device's true conductance by more than the sweep's tolerance; a
  pulse train at each cap under its scheme (the sweep's pulses, each polarity), with the
  aggressor next to each of the truth's five weakest devices, moves no other functional
  device by more than the tolerance over either polarity's pulses;
- not needlessly low: a device cannot switch below its switching floor (half its
  threshold, docs/devices.md), so ``safe_read_v`` >= 0.8 x the lowest floor, the V/2 cap
  >= 2 x and the V/3 cap >= 3 x the lowest floor (half-selected devices at or above the
  weakest device's floor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from benches import DEFAULT, HARSH, characterization_bench

from nvmlab.characterization.sweep import run_sweep
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ArrayOperations, ReadSettings
from nvmlab.storage.profile import load_profile

FAST = {"reads_per_level": 30, "pulses": 15, "sample": 8}


def truth_change_after_pulses(cb, ops, aggressor, amplitude, scheme, pulses, functional):
    """Largest |relative change| of the true conductance of a functional device other than
    the aggressor over each polarity's pulse train."""
    worst = 0.0
    for polarity in (1, -1):
        before = cb.truth()["conductance_s"]
        for _ in range(pulses):
            ops.write_pulse(*aggressor, polarity * amplitude, 1e-3, scheme=scheme)
        change = np.abs(cb.truth()["conductance_s"] / before - 1)
        change[aggressor] = 0.0
        worst = max(worst, float(change[functional].max()))
    return worst


@pytest.mark.parametrize(
    ("physics", "seed", "n"), [(DEFAULT, 1, 8), (HARSH, 2, 6)], ids=["default-1", "harsh-2"]
)
def test_caps_and_safe_read_hold_on_the_whole_chip(tmp_path: Path, physics, seed: int, n: int):
    with characterization_bench(tmp_path, rows=n, cols=n, seed=seed, physics=physics) as cb:
        run_sweep("thresholds", station=cb.station, db=cb.db, chip=cb.chip, params={"sample": 0})
        result = run_sweep("disturb", station=cb.station, db=cb.db, chip=cb.chip, params=FAST)
        assert result.status == "completed"
        s = result.summary
        tol = s["tolerance_rel"]
        truth = cb.truth()
        functional = truth["defect"] == 0
        lowest = min(
            truth["set_threshold_v"][functional].min(),
            (-truth["reset_threshold_v"][functional]).min(),
        )
        floor = 0.5 * lowest
        read_v = s["safe_read_v"]["value_v"]
        cap2 = s["amplitude_cap_half_select_v"]["value_v"]
        cap3 = s["amplitude_cap_third_select_v"]["value_v"]
        assert read_v >= 0.8 * floor
        assert cap2 >= 2 * floor
        assert cap3 >= 3 * floor
        profile = load_profile(cb.db, cb.chip)
        assert profile.safe_read_v == pytest.approx(read_v)
        assert profile.amplitude_cap_half_select_v == pytest.approx(cap2)
        assert profile.amplitude_cap_third_select_v == pytest.approx(cap3)
        plot = s["plot"]
        assert len(plot["read_v"]) == len(plot["read_drift_rel"])
        assert (
            len(plot["amplitude_v"]) == len(plot["disturb_v2_rel"]) == len(plot["disturb_v3_rel"])
        )
        assert "profile" in s["scope"]

        ops = ArrayOperations(cb.station.smu, cb.station.board, cb.station.limits)
        before = cb.truth()["conductance_s"]
        settings = ReadSettings(read_v=read_v, averages=FAST["reads_per_level"])
        for r in range(n):
            for c in range(n):
                ops.read_device(r, c, settings)
        change = np.abs(cb.truth()["conductance_s"] / before - 1)
        assert change[functional].max() < tol
        low = np.where(
            functional, np.fmin(truth["set_threshold_v"], -truth["reset_threshold_v"]), np.inf
        )
        for cap, scheme in ((cap2, "v/2"), (cap3, "v/3")):
            for i in np.argsort(low.ravel())[:5]:
                r, c = divmod(int(i), n)
                moved = truth_change_after_pulses(
                    cb, ops, (r, (c + 1) % n), cap, scheme, FAST["pulses"], functional
                )
                assert moved < tol, (scheme, cap, r, c, moved)


def test_without_a_threshold_profile_over_tcp(tmp_path: Path):
    """No profile: the caps hold for the devices the sweep watched (it says so)."""
    params = {**FAST, "sample": 4, "amplitude_start_v": 0.8, "read_v_start": 0.2}
    with characterization_bench(tmp_path, rows=16, cols=16, seed=4, tcp=True) as cb:
        result = run_sweep("disturb", station=cb.station, db=cb.db, chip=cb.chip, params=params)
        s = result.summary
        assert "no threshold profile" in s["scope"]
        truth = cb.truth()
        functional = truth["defect"] == 0
        ops = ArrayOperations(cb.station.smu, cb.station.board, cb.station.limits)
        for key, name, scheme in (
            ("half-select-v/2", "amplitude_cap_half_select_v", "v/2"),
            ("half-select-v/3", "amplitude_cap_third_select_v", "v/3"),
        ):
            ladder = s["ladders"][key]
            cap = s[name]["value_v"]
            assert cap is not None and cap >= 0.8
            aggressor = tuple(ladder["aggressor"])
            watched = np.zeros_like(functional)
            watched[aggressor[0], :] = True
            watched[:, aggressor[1]] = True
            moved = truth_change_after_pulses(
                cb, ops, aggressor, cap, scheme, params["pulses"], functional & watched
            )
            assert moved < s["tolerance_rel"], (scheme, cap, moved)


def test_bad_parameters_are_refused_before_any_instrument_is_touched(tmp_path: Path):
    with characterization_bench(tmp_path, rows=4, cols=4) as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(ConfigError) as err:
            run_sweep("disturb", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"read_v_start": 0.6, "sample": 4})  # fmt: skip
        assert err.value.field == "read_v_start"
        with pytest.raises(ConfigError) as err:
            run_sweep("disturb", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"ref_read_v": 0.7, "sample": 4})  # fmt: skip
        assert err.value.field == "ref_read_v"
        with pytest.raises(ConfigError) as err:
            run_sweep("disturb", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"sample": 17})  # fmt: skip
        assert err.value.field == "sample"
        assert cb.bench.instrument_time_s() == before
