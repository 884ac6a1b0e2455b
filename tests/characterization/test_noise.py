"""The noise sweep, judged against the emulator's ground truth.

Truth at a state of conductance G and integration time n (docs/devices.md, *Read noise and
integration time*): ``read_noise_device_sigma_s / conductance_s * G`` (the device part is
relative to G) ``+ read_noise_instrument_sigma_s / sqrt(n)``. Compared: the per-device
relative error of sigma at each (state, NPLC), median over devices; the profile's
``read_noise_sigma_s`` against the truth's at the conductance the device was left in;
telegraph flags against ``rtn_amplitude_rel > 0`` (recall and precision).

The chips here carry more telegraph devices than the default 5 % (``rtn_fraction``) so a
few devices give a recall figure; every telegraph device measured counts in the recall
(stuck devices too, which never reach the states), and the hardest corner (0.5 % steps,
1 ms dwell, twice the read noise) has its own test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benches import HARSH, characterization_bench

from nvmlab.characterization.noise import (
    NoiseSweep,
    _name,
    fit_noise_law,
    telegraph_statistics,
    two_level_fit,
)
from nvmlab.characterization.sweep import run_sweep
from nvmlab.errors import ConfigError
from nvmlab.storage.profile import load_profile
from nvmlab.storage.query import fetch_arrays

STATES = (10e-6, 30e-6, 60e-6, 90e-6)
NPLCS = (0.1, 1.0, 10.0)


def _parameters(cb: Any, run_id: int) -> dict[str, np.ndarray]:
    rec = fetch_arrays(cb.db, "device_parameters", columns=["row", "col", "name", "value"],
                       run_id=run_id)  # fmt: skip
    out: dict[str, np.ndarray] = {}
    shape = cb.truth()["conductance_s"].shape
    for r, c, name, value in zip(rec["row"], rec["col"], rec["name"], rec["value"], strict=True):
        if name not in out:
            out[name] = np.full(shape, np.nan)
        out[name][int(r), int(c)] = np.nan if value is None else float(value)
    return out


def _judge(cb: Any, result: Any) -> dict[str, Any]:
    """Measured figures against the truth (see the module doc)."""
    truth = cb.truth()
    params = _parameters(cb, result.run_id)
    flag = result.arrays["telegraph"]
    measured = np.isfinite(flag)
    rel_dev = truth["read_noise_device_sigma_s"] / truth["conductance_s"]
    instrument = truth["read_noise_instrument_sigma_s"]
    has_rtn = truth["rtn_amplitude_rel"] > 0
    errors: dict[tuple[float, float], np.ndarray] = {}
    for s in STATES:
        for n in NPLCS:
            g = params[_name("noise_conductance_s", s, n)]
            sigma = params[_name("noise_sigma_s", s, n)]
            expected = rel_dev * g + instrument / math.sqrt(n)
            errors[(s, n)] = ((sigma - expected) / expected)[measured]
    # the profile's sigma (1 PLC) is at the conductance the sweep left the device in
    # (its last series); neighbours programmed later may have disturbed it since, so the
    # truth is taken at that conductance too
    final = result.arrays["read_noise_sigma_s"]
    g_final = params["final_conductance_s"]
    expected_final = rel_dev * g_final + instrument
    final_err = ((final - expected_final) / expected_final)[measured]
    tp = int((measured & has_rtn & (flag == 1)).sum())
    fn = int((measured & has_rtn & (flag == 0)).sum())
    fp = int((measured & ~has_rtn & (flag == 1)).sum())
    flagged_err = np.concatenate(
        [e[(has_rtn & (flag == 1))[measured]] for e in errors.values()]
    )  # fmt: skip
    return {
        "errors": errors,
        "final_err": final_err,
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "flagged_err": flagged_err,
        "measured": int(measured.sum()),
        "truth": truth,
    }


def _check_acceptance(judged: dict[str, Any]) -> None:
    for (s, n), e in judged["errors"].items():
        med = float(np.median(np.abs(e)))
        assert med < 0.20, f"sigma at {s * 1e6:g} uS, {n:g} PLC: median |error| {med:.3f}"
    assert float(np.median(np.abs(judged["final_err"]))) < 0.20
    tp, fn, fp = judged["tp"], judged["fn"], judged["fp"]
    assert tp + fn > 0, "the chip drew no telegraph device among those measured"
    assert tp / (tp + fn) >= 0.9, f"telegraph recall {tp}/{tp + fn}"
    assert tp / max(tp + fp, 1) >= 0.9, f"telegraph precision {tp}/{tp + fp}"
    # telegraph steps do not inflate the sigma of the flagged devices
    if judged["flagged_err"].size:
        assert float(np.median(np.abs(judged["flagged_err"]))) < 0.20


def test_noise_default_physics_against_truth(tmp_path: Path) -> None:
    physics = {"rtn_fraction": 0.3}
    with characterization_bench(tmp_path, rows=16, cols=16, seed=1, physics=physics) as cb:
        result = run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                           params={"sample": 16})  # fmt: skip
        assert result.status == "completed"
        judged = _judge(cb, result)
        _check_acceptance(judged)
        assert judged["measured"] == 16
        plot = result.summary["plot"]
        assert len(plot["conductance_s"]) == len(plot["sigma_s"]) == len(plot["nplc"]) == 16 * 12
        # the chip-wide law recovers the truth's two parts
        truth = judged["truth"]
        law = result.summary["law"]
        rel_true = float(np.median(truth["read_noise_device_sigma_s"] / truth["conductance_s"]))
        assert law["rel_median"] == pytest.approx(rel_true, rel=0.2)
        abs_true = float(np.median(truth["read_noise_instrument_sigma_s"]))
        assert law["abs_s_at_1plc_median"] == pytest.approx(abs_true, rel=0.2)
        profile = load_profile(cb.db, cb.chip)
        assert profile.read_noise_sigma_s is not None and profile.telegraph is not None
        assert int(np.isfinite(profile.telegraph).sum()) == 16


def test_noise_harsh_physics_over_tcp(tmp_path: Path) -> None:
    physics = {**HARSH, "rtn_fraction": 0.3}
    with characterization_bench(
        tmp_path, rows=16, cols=16, seed=2, physics=physics, tcp=True
    ) as cb:
        result = run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                           params={"sample": 10})  # fmt: skip
        judged = _judge(cb, result)
        _check_acceptance(judged)


def test_telegraph_hardest_corner_is_flagged(tmp_path: Path) -> None:
    """Every device telegraph with the smallest step (0.5 %) and the shortest dwell (1 ms)
    at twice the read noise: the fast-read bursts still resolve it."""
    physics = {
        **HARSH,
        "rtn_fraction": 1.0,
        "rtn_amplitude_min_rel": 0.005,
        "rtn_amplitude_max_rel": 0.0051,
        "rtn_dwell_min_s": 0.001,
        "rtn_dwell_max_s": 0.00101,
    }
    with characterization_bench(tmp_path, rows=8, cols=8, seed=3, physics=physics) as cb:
        result = run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                           params={"sample": 4, "nplc": [1.0], "reads": 60})  # fmt: skip
        flags = result.arrays["telegraph"]
        assert int(np.nansum(flags)) == 4


def test_relaxation_drift_is_neither_noise_nor_telegraph(tmp_path: Path) -> None:
    """Twenty times the default relaxation (1 % per decade after each programming) and no
    telegraph device: nothing is flagged and sigma stays the truth's."""
    physics = {"relax_per_decade_rel": 0.01, "rtn_fraction": 0.0}
    with characterization_bench(tmp_path, rows=8, cols=8, seed=6, physics=physics) as cb:
        result = run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                           params={"sample": 4})  # fmt: skip
        judged = _judge(cb, result)
        assert judged["fp"] == 0
        for (s, n), e in judged["errors"].items():
            assert float(np.median(np.abs(e))) < 0.20, (s, n)


def test_bad_input_is_refused_before_any_instrument_is_touched(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=4, cols=4) as cb:
        before = cb.bench.instrument_time_s()
        with pytest.raises(ConfigError, match=r"0\.8 V is not allowed.*0\.5 V") as err:
            run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"read_v": 0.8, "sample": 4})  # fmt: skip
        assert err.value.field == "read_v"
        with pytest.raises(ConfigError, match="each state once") as err:
            run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"states_s": [1e-5, 1e-5], "sample": 4})  # fmt: skip
        assert err.value.field == "states_s"
        with pytest.raises(ConfigError, match=r"value 17 is not allowed") as err:
            run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"sample": 17})  # fmt: skip
        with pytest.raises(ConfigError, match=r"nplc\[0\]"):
            run_sweep("noise", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"nplc": [0.0]})  # fmt: skip
        assert cb.bench.instrument_time_s() == before


# ------------------------------------------------------------ the analysis, on known series
def _telegraph(rng: np.random.Generator, n: int, flip: float, start: int = 0) -> np.ndarray:
    flips = rng.random(n) < flip
    flips[0] = bool(start)
    return np.cumsum(flips) % 2


def test_white_noise_with_log_time_drift_is_not_flagged() -> None:
    """400 devices of white Gaussian read noise with a log-time relaxation drift 10 times
    the default: no telegraph test crosses the flag threshold (4.5)."""
    rng = np.random.default_rng(11)
    g, sigma = 90e-6, 0.84e-2 * 90e-6
    worst = 0.0
    for _ in range(400):
        mids = 5.0 + 2.0 * np.arange(30)
        bursts = []
        for m in mids:
            t = m + np.arange(400) / 6000.0
            drift = -0.005 * g * np.log10(1 + t)
            bursts.append(g + drift + sigma * rng.standard_normal(400))
        z_slow, z_fast, _ = telegraph_statistics(bursts, mids)
        worst = max(worst, z_slow, z_fast)
    assert worst < 4.5


def test_two_level_fit_recovers_sigma_step_and_dwell() -> None:
    """Telegraph bursts as the sweep reads them (30 bursts of 200 reads 1/6000 s apart, 2 s
    between bursts): the fitted step and dwell match the simulated ones, and the
    fixed-step fit of a slower series gives the within-level sigma."""
    rng = np.random.default_rng(5)
    g, sigma, step_rel = 90e-6, 0.5e-6, 0.008
    spacing = 1 / 6000
    for dwell in (0.001, 0.02, 5.0):
        flip = (1 - math.exp(-2 * spacing / dwell)) / 2
        bursts, times = [], []
        for k in range(30):
            levels = _telegraph(rng, 200, flip, start=int(rng.random() < 0.5))
            times.append(5 + 2 * k + spacing * np.arange(200))
            bursts.append(g * (1 + (levels - 0.5) * step_rel) + sigma * rng.standard_normal(200))
        step, fitted_dwell = NoiseSweep._telegraph_levels(times, bursts)
        assert step == pytest.approx(step_rel, rel=0.15)
        if dwell < 0.1:
            assert fitted_dwell == pytest.approx(dwell, rel=0.5)
        else:  # hardly a flip within a 33 ms burst: only "longer than a burst" is known
            assert fitted_dwell > 0.5
    # sigma series (150 reads at 1 PLC) with the step fixed: in one level, and switching
    u = np.log10(1 + 5 + np.arange(150) / 60)[None]
    flat = g + sigma * rng.standard_normal(150)
    fixed = two_level_fit(flat[None], u, step=np.array([g * step_rel]))
    assert fixed["sigma"][0] == pytest.approx(flat.std(), rel=0.05)
    levels = _telegraph(rng, 150, 0.1)
    noise = sigma * rng.standard_normal(150)
    switching = g * (1 + (levels - 0.5) * 0.02) + noise
    fixed = two_level_fit(switching[None], u, step=np.array([g * 0.02]))
    assert switching.std() > 1.5 * noise.std()
    assert fixed["sigma"][0] == pytest.approx(noise.std(), rel=0.1)


def test_noise_law_fit() -> None:
    g = np.repeat([10e-6, 30e-6, 60e-6, 90e-6], 3)
    n = np.tile([0.1, 1.0, 10.0], 4)
    sigma = 0.002 * g + 2e-8 / np.sqrt(n)
    a, b = fit_noise_law(g, n, sigma)
    assert a == pytest.approx(0.002, rel=1e-6)
    assert b == pytest.approx(2e-8, rel=1e-6)
