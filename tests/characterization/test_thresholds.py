"""Sweep ``thresholds``: set and reset thresholds against the chip's ground truth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from benches import DEFAULT, HARSH, characterization_bench

from nvmlab.characterization.profile import update_profile
from nvmlab.characterization.sweep import ProfileUpdate, run_sweep
from nvmlab.characterization.thresholds import estimate_threshold
from nvmlab.errors import ConfigError
from nvmlab.storage.profile import load_profile


def check_against_truth(result, truth, *, min_devices: int) -> dict[str, float]:
    """The issue's acceptance: over the devices measured that the truth calls functional,
    mean and CV of |threshold| within 10 % (relative) of the truth's over the same devices,
    median |error| within 30 mV, set and reset; no threshold on a truly stuck device."""
    functional = truth["defect"] == 0
    figures = {}
    for name in ("set", "reset"):
        measured = result.arrays[f"{name}_threshold_v"]
        true = truth[f"{name}_threshold_v"]
        assert np.all(np.isfinite(measured[~functional]) == False)  # noqa: E712
        ok = np.isfinite(measured) & functional
        assert np.count_nonzero(ok) >= min_devices
        m, t = np.abs(measured[ok]), np.abs(true[ok])
        assert np.all(np.sign(measured[ok]) == (1 if name == "set" else -1))
        mean_rel = m.mean() / t.mean() - 1
        cv_m, cv_t = m.std(ddof=1) / m.mean(), t.std(ddof=1) / t.mean()
        median_err = float(np.median(np.abs(measured[ok] - true[ok])))
        assert abs(mean_rel) < 0.10, (name, mean_rel)
        assert abs(cv_m / cv_t - 1) < 0.10, (name, cv_m, cv_t)
        assert median_err < 0.030, (name, median_err)
        summary = result.summary[name]
        assert summary["count"] == np.count_nonzero(np.isfinite(measured))
        assert summary["mean"] == pytest.approx(np.nanmean(np.abs(measured)))
        assert sum(summary["histogram"]["counts"]) == summary["count"]
        assert summary["percentiles"]["5"] <= summary["percentiles"]["50"]
        figures[name] = median_err
    return figures


@pytest.mark.parametrize(
    ("physics", "seed"),
    [(DEFAULT, 1), (DEFAULT, 2), (HARSH, 1), (HARSH, 2)],
    ids=["default-1", "default-2", "harsh-1", "harsh-2"],
)
def test_thresholds_match_the_truth(tmp_path: Path, physics, seed: int):
    with characterization_bench(tmp_path, rows=16, cols=16, seed=seed, physics=physics) as cb:
        truth = cb.truth()
        result = run_sweep(
            "thresholds", station=cb.station, db=cb.db, chip=cb.chip, params={"sample": 24}
        )
        assert result.status == "completed"
        assert result.summary["devices_measured"] == 24
        check_against_truth(result, truth, min_devices=20)
        profile = load_profile(cb.db, cb.chip)
        assert profile.set_threshold_v is not None
        assert np.count_nonzero(np.isfinite(profile.set_threshold_v)) >= 20
        # every pulse stayed within the station's write limit
        from nvmlab.storage.query import fetch_arrays

        pulses = fetch_arrays(cb.db, "pulses", run_id=result.run_id)
        assert np.abs(pulses["amplitude_v"]).max() <= cb.station.limits.max_write_v


def test_thresholds_over_tcp(tmp_path: Path):
    with characterization_bench(tmp_path, rows=16, cols=16, seed=5, tcp=True) as cb:
        truth = cb.truth()
        result = run_sweep(
            "thresholds", station=cb.station, db=cb.db, chip=cb.chip, params={"sample": 12}
        )
        check_against_truth(result, truth, min_devices=11)


def test_devices_classified_stuck_are_skipped(tmp_path: Path):
    with characterization_bench(tmp_path, rows=4, cols=4, seed=3) as cb:
        defect = np.zeros((4, 4), dtype=np.int8)
        defect[0, 1], defect[2, 3] = 1, 2
        update_profile(cb.db, cb.chip, ProfileUpdate(arrays={"defect_class": defect}), run_id=None,
                       kind="defects")  # fmt: skip
        result = run_sweep(
            "thresholds", station=cb.station, db=cb.db, chip=cb.chip, params={"sample": 0}
        )
        assert result.units_total == 14
        assert result.summary["devices_skipped_stuck"] == 2
        assert math.isnan(result.arrays["set_threshold_v"][0, 1])
        assert math.isnan(result.arrays["reset_threshold_v"][2, 3])
        assert np.count_nonzero(np.isfinite(result.arrays["set_threshold_v"])) >= 12


def test_bad_parameters_are_refused_before_any_instrument_is_touched(tmp_path: Path):
    with characterization_bench(tmp_path, rows=4, cols=4) as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(ConfigError, match="must start below") as err:
            run_sweep("thresholds", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"start_v": 2.6, "sample": 0})  # fmt: skip
        assert err.value.field == "start_v"
        with pytest.raises(ConfigError, match="read limit") as err:
            run_sweep("thresholds", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"read_v": 0.8, "sample": 0})  # fmt: skip
        assert err.value.field == "read_v"
        with pytest.raises(ConfigError, match="sample"):
            run_sweep("thresholds", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"sample": 17})  # fmt: skip
        assert cb.bench.instrument_time_s() == before


def test_the_fit_recovers_the_median_threshold_of_a_noisy_exponential_ramp():
    """The estimator alone, on ramps drawn from the devices docs' law (v0 50 mV, 30 %
    lognormal cycle-to-cycle factor): the fit beats the single-pulse crossing."""
    rng = np.random.default_rng(7)
    target = math.log(1.02)
    sigma = math.sqrt(math.log(1 + 0.3**2))
    fit_err, single_err = [], []
    for _ in range(300):
        vth = rng.uniform(0.6, 1.6)
        amps = np.arange(vth - 0.12, vth + 0.2, 0.01)
        change = target * np.exp((amps - vth) / 0.05 + sigma * rng.standard_normal(amps.size))
        change += rng.normal(0, 0.002, amps.size)  # read noise of the change
        # the ramp as the sweep would stop it: three consecutive crossings
        above = np.convolve(change >= target, np.ones(3), "valid") >= 3
        stop = int(np.flatnonzero(above)[0]) + 3 if np.any(above) else amps.size
        est, slope, crossing = estimate_threshold(amps[:stop], change[:stop], target)
        fit_err.append(est - vth)
        single_err.append(crossing - vth)
    fit_err, single_err = np.array(fit_err), np.array(single_err)
    assert np.median(np.abs(fit_err)) < 0.008
    assert np.median(np.abs(fit_err)) < np.median(np.abs(single_err))
    assert abs(np.median(fit_err)) < 0.004
