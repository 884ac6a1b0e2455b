"""Array programming (tuning/array.py, the ``tune`` sweep), judged on the chip's truth.

Every score counts functional devices by the truth (``defect == 0``) at the end of the
run, read with ``bench.ground_truth()``; pulses are the truth's ``pulse_count``.
The "profile" runs store a chip profile like a thresholds characterization would (the
truth's thresholds with 20 mV measurement error and the defect map); the others learn.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "characterization"))
from benches import DEFAULT, HARSH, characterization_bench  # noqa: E402

import nvmlab.tuning.array  # noqa: E402,F401
from nvmlab.characterization.sweep import run_sweep  # noqa: E402
from nvmlab.errors import ConfigError  # noqa: E402
from nvmlab.storage.profile import ChipProfile, save_profile  # noqa: E402
from nvmlab.storage.query import fetch_arrays  # noqa: E402

TOL = 0.01
N = 16
#: The issue's floor for the tests: at least 97 % of functional devices within 1 % by
#: truth on 16 x 16 with a profile, at default physics (measured: seed 1 98.8 %, the weight
#: pairs of seed 3 99.6 %), on the harsher chip (seed 4: 98.4 %) and on a chip with half its
#: devices telegraph (seed 2: 98.8 %).
FLOOR = 0.97
FLOOR_HARSH = 0.97
#: Without a profile the order and the caps come from thresholds learned on the way:
#: weaker (measured 89.8 % on seed 3), below the issue's goal; held so that a regression
#: shows.
FLOOR_NO_PROFILE = 0.85
#: Relaxation allowance over a night (8 h at 25 C), docs/devices.md: a device drifts back
#: by a log10(1 + t / 1 s) relative, a lognormal over devices of mean 0.05 % per decade, CV
#: 25 % (so below 0.11 %/decade, +3.5 sigma). A device tuned at least 1 s before the end of
#: the run gains at most log10(1 + 28800 s) = 4.5 decades over the night: 0.5 %.
NIGHT_DRIFT_REL = 0.005
#: A chip where half the devices have a telegraph step of 1-2 % (dwell 1 ms-10 s): a
#: re-verification read in one level must not start a repair that chases it.
TELEGRAPH: dict[str, Any] = {"rtn_fraction": 0.5, "rtn_amplitude_min_rel": 0.01}


def _profile(cb: Any, seed: int) -> None:
    truth = cb.truth()
    rng = np.random.default_rng(seed + 7)
    d = truth["defect"].astype(np.int8)
    err = rng.normal(0, 0.02, (2, N, N))
    sv = np.where(d == 0, truth["set_threshold_v"] + err[0], np.nan)
    rv = np.where(d == 0, truth["reset_threshold_v"] + err[1], np.nan)
    save_profile(
        cb.db, ChipProfile(cb.chip, "memristor", N, N, defect_class=d, set_threshold_v=sv,
                           reset_threshold_v=rv),
    )  # fmt: skip


def _targets(tmp: Path, seed: int, kind: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed + 100)
    if kind == "uniform":
        np.save(tmp / "t.npy", rng.uniform(10e-6, 100e-6, (N, N)))
        return {"targets": str(tmp / "t.npy")}
    w = rng.normal(0, 1, (N, N // 2))
    np.savetxt(tmp / "w.csv", w, delimiter=",")
    return {"weights": str(tmp / "w.csv"), "window": [10e-6, 100e-6]}


def _score(cb: Any, result: Any, before: np.ndarray) -> tuple[Any, ...]:
    truth = cb.truth()
    per = result.summary["per_device"]
    target = np.full((N, N), np.nan)
    outcome = np.full((N, N), "", dtype=object)
    for d in per:
        target[d["row"], d["col"]] = d["target_s"]
        outcome[d["row"], d["col"]] = d["outcome"]
    has = np.isfinite(target)
    functional = (truth["defect"] == 0) & has
    ok = np.abs(truth["conductance_s"] / target - 1) <= TOL
    pulses = truth["pulse_count"] - before
    return truth, target, outcome, functional, ok, pulses


@pytest.mark.parametrize(
    "physics,kind,profile,seed",
    [
        (DEFAULT, "uniform", True, 1),
        (DEFAULT, "weights", True, 3),
        (DEFAULT, "uniform", False, 3),
        (HARSH, "uniform", True, 4),
        (TELEGRAPH, "uniform", True, 2),
    ],
    ids=[
        "default-uniform-profile", "default-weights-profile", "default-uniform-learn",
        "harsh-uniform-profile", "telegraph-uniform-profile",
    ],
)  # fmt: skip
def test_whole_array_within_one_percent_by_truth(
    tmp_path: Path, physics: dict[str, Any], kind: str, profile: bool, seed: int
) -> None:
    with characterization_bench(tmp_path, rows=N, cols=N, seed=seed, physics=physics) as cb:
        if profile:
            _profile(cb, seed)
        params = _targets(tmp_path, seed, kind)
        before = cb.truth()["pulse_count"].copy()
        result = run_sweep("tune", station=cb.station, db=cb.db, chip=cb.chip, params=params)
        assert result.status == "completed"
        truth, target, outcome, functional, ok, pulses = _score(cb, result, before)
        share = ok[functional].mean()
        p = pulses[functional]
        print(
            f"{kind} profile={profile} seed {seed}: within 1 % by truth {share:.4f}, by own "
            f"reads {result.summary['pass_rate_own']:.4f}; pulses mean {p.mean():.1f} median "
            f"{np.median(p):.0f} p95 {np.percentile(p, 95):.0f}; outcomes "
            f"{result.summary['outcomes']}"
        )
        floor = FLOOR_HARSH if physics is HARSH else FLOOR if profile else FLOOR_NO_PROFILE
        assert share >= floor
        # limits: what the emulated board actually applied
        assert cb.bench.bench.max_applied_v["board"] <= cb.station.limits.max_write_v
        # stuck devices: reported, within a bounded number of pulses
        stuck = (truth["defect"] != 0) & np.isfinite(target)
        for r, c in np.argwhere(stuck):
            assert outcome[r, c] in ("stuck", "skipped", "failed"), (r, c, outcome[r, c])
            assert pulses[r, c] <= 2 * 80, (r, c, pulses[r, c])
        # every pulse is in the database, as many as the chip received
        stored = fetch_arrays(cb.db, "pulses", columns=["row"], run_id=result.run_id)
        assert len(stored["row"]) == int((truth["pulse_count"] - before).sum())
        # the reported outcomes are the final reads' verdict
        by_own = np.array([d["outcome"] == "tuned" for d in result.summary["per_device"]])
        assert by_own.sum() == result.summary["outcomes"]["tuned"]
        # a night at room temperature: drift within what the relaxation model allows
        g_end = truth["conductance_s"].copy()
        cb.bench.clock.sleep(8 * 3600)
        night = cb.truth()["conductance_s"]
        tuned = functional & ok
        drift = np.abs(night / g_end - 1)[tuned]
        print(
            f"night: drift max {drift.max() * 100:.3f} %, p95 {np.percentile(drift, 95) * 100:.3f} %"
        )
        assert drift.max() <= NIGHT_DRIFT_REL
        # the tolerance the relaxation model allows after the night: 1 % + 0.5 %
        assert (np.abs(night / target - 1) <= TOL + NIGHT_DRIFT_REL)[functional].mean() >= floor


def test_resume_after_an_interruption(tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from nvmlab.storage.models import Run

    with characterization_bench(tmp_path, rows=N, cols=N, seed=5) as cb:
        _profile(cb, 5)
        params = _targets(tmp_path, 5, "uniform")
        before = cb.truth()["pulse_count"].copy()

        def stop(done: int, total: int) -> None:
            if done == 12:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_sweep("tune", station=cb.station, db=cb.db, chip=cb.chip, params=params,
                      progress=stop)  # fmt: skip
        with cb.db.read_connection() as conn:
            first = int(conn.execute(select(func.max(Run.id))).scalar_one())
        stored = fetch_arrays(cb.db, "pulses", columns=["row"], run_id=first)
        assert len(stored["row"]) > 0
        result = run_sweep("tune", station=cb.station, db=cb.db, chip=cb.chip, resume=first)
        assert result.status == "completed" and result.units_skipped == 12
        truth, target, outcome, functional, ok, pulses = _score(cb, result, before)
        print(f"resumed: within 1 % by truth {ok[functional].mean():.4f}")
        assert ok[functional].mean() >= FLOOR
        # the per-device pulse counts of the summary span both runs: the chip's own count
        reported = np.zeros((N, N))
        for d in result.summary["per_device"]:
            reported[d["row"], d["col"]] = d["pulses"]
        np.testing.assert_array_equal(reported[functional], pulses[functional])


def test_bad_targets_refused_before_any_pulse(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=N, cols=N, seed=6) as cb:
        bad = tmp_path / "bad.npy"
        t = np.full((N, N), 50e-6)
        t[3, 4] = -1e-5
        np.save(bad, t)
        with pytest.raises(ConfigError, match=r"bad.npy: target .*-1e-05.* S at row 3, column 4"):
            run_sweep("tune", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"targets": str(bad)})  # fmt: skip
        np.save(bad, np.full((N, N - 1), 50e-6))
        with pytest.raises(ConfigError, match="allowed: the chip's 16 x 16"):
            run_sweep("tune", station=cb.station, db=cb.db, chip=cb.chip,
                      params={"targets": str(bad)})  # fmt: skip
        assert cb.truth()["pulse_count"].sum() == 0


def test_conventional_baseline_runs_the_protocol_once_per_device(tmp_path: Path) -> None:
    n = 8
    with characterization_bench(tmp_path, rows=n, cols=n, seed=7) as cb:
        np.save(tmp_path / "t.npy", np.random.default_rng(7).uniform(10e-6, 100e-6, (n, n)))
        before = cb.truth()["pulse_count"].copy()
        result = run_sweep(
            "tune", station=cb.station, db=cb.db, chip=cb.chip,
            params={"targets": str(tmp_path / "t.npy"), "algorithm": "conventional"},
        )  # fmt: skip
        truth = cb.truth()
        pulses = truth["pulse_count"] - before
        assert result.summary["algorithm"] == "conventional"
        # one pass (no repair units), each device at most the protocol's 200 pulses
        assert result.units_total == 1 + (n * n + 7) // 8 + 1
        assert pulses.max() <= 200
        reported = {(d["row"], d["col"]): d["pulses"] for d in result.summary["per_device"]}
        assert all(reported[(r, c)] == pulses[r, c] for r in range(n) for c in range(n))
        assert cb.bench.bench.max_applied_v["board"] <= cb.station.limits.max_write_v
        print(f"conventional 8 x 8: pulses mean {pulses.mean():.1f}, outcomes "
              f"{result.summary['outcomes']}")  # fmt: skip
