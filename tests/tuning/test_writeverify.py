"""Per-device memristor write-verify (tuning/writeverify.py), judged on the chip's ground truth.

The tuned devices of one chip sit on distinct rows and columns (a permutation): a V/2
pulse disturbs only its own row and column, so the figures are the per-device algorithm's,
not those of an array programming order (which the array-level tuner decides). Scores
count functional devices by the truth (``defect == 0``), pulses by the truth's
``pulse_count``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "characterization"))
from benches import DEFAULT, HARSH, characterization_bench  # noqa: E402

from nvmlab.errors import ConfigError  # noqa: E402
from nvmlab.instruments.arrays import ArrayOperations  # noqa: E402
from nvmlab.instruments.safety import SafetyLimits  # noqa: E402
from nvmlab.tuning.writeverify import (  # noqa: E402
    AdaptiveSettings,
    BusCounter,
    ThresholdPrior,
    TuneResult,
    adaptive,
    conventional,
)

TOL = 0.01


def _ops(cb: Any, limits: SafetyLimits | None = None) -> ArrayOperations:
    return ArrayOperations(cb.station.smu, cb.station.board, limits or cb.station.limits)


def _tune_permutation(
    cb: Any, n: int, seed: int, *, bus: bool = False
) -> tuple[list[TuneResult], dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """Tune one device per row on a random permutation of the columns, targets uniform in
    10-100 uS. Returns the results, the truth after, rows, cols and the pulse counts."""
    rng = np.random.default_rng(1000 + seed)
    cols = rng.permutation(n)
    rows = np.arange(n)
    targets = rng.uniform(10e-6, 100e-6, n)
    ops = _ops(cb)
    before = cb.truth()["pulse_count"].copy()
    t0 = cb.bench.instrument_time_s()
    prior = ThresholdPrior()
    results = []
    if bus:
        with BusCounter.on(cb.station.transports.values()) as counter:
            for r in rows:
                results.append(
                    adaptive(ops, int(r), int(cols[r]), float(targets[r]), prior=prior, bus=counter)
                )
    else:
        for r in rows:
            results.append(adaptive(ops, int(r), int(cols[r]), float(targets[r]), prior=prior))
    spent = cb.bench.instrument_time_s() - t0
    floor = sum(x.floor_s for x in results)
    print(
        f"instrument time per device {spent / n:.3f} s, physical floor {floor / n:.3f} s, "
        f"readings per device {np.mean([x.readings for x in results]):.0f}"
    )
    assert floor <= spent * 1.001
    truth = cb.truth()
    pulses = (truth["pulse_count"] - before)[rows, cols]
    return results, truth, rows, cols, pulses


def _score(results: list[TuneResult], truth: dict[str, Any], rows: Any, cols: Any) -> Any:
    targets = np.array([x.target_s for x in results])
    functional = truth["defect"][rows, cols] == 0
    by_truth = np.abs(truth["conductance_s"][rows, cols] / targets - 1) <= TOL
    by_own = np.array([abs(x.error_rel) <= TOL for x in results])
    return functional, by_truth, by_own


@pytest.mark.parametrize("name,physics", [("default", DEFAULT), ("harsh", HARSH)])
def test_adaptive_reaches_one_percent_by_truth_in_few_pulses(
    tmp_path: Path, name: str, physics: dict[str, Any]
) -> None:
    ok_all, pulses_all = [], []
    for seed in (1, 2):
        where = tmp_path / f"s{seed}"
        where.mkdir()
        with characterization_bench(where, rows=32, cols=32, seed=seed, physics=physics) as cb:
            results, truth, rows, cols, pulses = _tune_permutation(cb, 32, seed)
            functional, by_truth, by_own = _score(results, truth, rows, cols)
            ok_all.append(by_truth[functional])
            pulses_all.append(pulses[functional])
            print(
                f"{name} seed {seed}: within 1 % by truth {by_truth[functional].mean():.3f}, "
                f"by own reads {by_own[functional].mean():.3f}; pulses mean "
                f"{pulses[functional].mean():.1f} median {np.median(pulses[functional]):.0f} "
                f"p95 {np.percentile(pulses[functional], 95):.0f}"
            )
            # the tuner's own pulse count is the bench's
            assert [x.pulses for x in results] == list(pulses)
            # no amplitude beyond the station's write limit reached the board
            assert cb.bench.bench.max_applied_v["board"] <= cb.station.limits.max_write_v
    ok = np.concatenate(ok_all)
    p = np.concatenate(pulses_all)
    assert ok.mean() >= 0.97, f"{name}: only {ok.mean():.3f} within 1 % by truth"
    assert p.mean() <= 15, f"{name}: mean {p.mean():.1f} pulses"


@pytest.mark.tcp
def test_adaptive_over_tcp_counts_round_trips(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=16, cols=16, seed=5, tcp=True) as cb:
        results, truth, rows, cols, pulses = _tune_permutation(cb, 16, 5, bus=True)
        functional, by_truth, _ = _score(results, truth, rows, cols)
        assert by_truth[functional].mean() >= 0.97
        assert pulses[functional].mean() <= 15
        trips = np.array([x.round_trips for x in results])
        # every read is at least one reply; a pulse and a read need a few
        assert (trips >= np.array([x.reads for x in results])).all()
        print(f"TCP: round trips per device mean {trips.mean():.1f}, pulses {pulses.mean():.1f}")


def _distinct_lines(candidates: np.ndarray, limit: int) -> list[tuple[int, int]]:
    rows: set[int] = set()
    cols: set[int] = set()
    chosen = []
    for r, c in candidates:
        if r not in rows and c not in cols:
            chosen.append((int(r), int(c)))
            rows.add(int(r))
            cols.add(int(c))
        if len(chosen) == limit:
            break
    return chosen


def test_devices_with_extreme_thresholds_converge(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=32, cols=32, seed=4, physics=HARSH) as cb:
        truth = cb.truth()
        functional = truth["defect"] == 0
        # the test (not the tuner) picks by truth the devices whose set or reset threshold
        # is furthest from the chip's median
        lt = np.log(np.stack([truth["set_threshold_v"], -truth["reset_threshold_v"]]))
        dev = np.abs(lt - np.median(lt, axis=(1, 2), keepdims=True)).max(axis=0)
        dev[~functional] = -1
        order = np.dstack(np.unravel_index(np.argsort(-dev, axis=None), dev.shape))[0]
        chosen = _distinct_lines(order, 12)
        set_v = [truth["set_threshold_v"][d] for d in chosen]
        reset_v = [-truth["reset_threshold_v"][d] for d in chosen]
        assert min(set_v) < 0.65 or min(reset_v) < 0.7  # really extreme ones
        assert max(set_v) > 1.6 or max(reset_v) > 1.8
        rng = np.random.default_rng(9)
        targets = rng.uniform(10e-6, 100e-6, len(chosen))
        ops = _ops(cb)
        before = truth["pulse_count"].copy()
        results = [adaptive(ops, r, c, float(t)) for (r, c), t in zip(chosen, targets, strict=True)]
        after = cb.truth()
        reachable = [
            i for i, d in enumerate(chosen) if reset_v[i] < cb.station.limits.max_write_v - 0.05
        ]
        counts = []
        for i in reachable:
            r, c = chosen[i]
            err = after["conductance_s"][r, c] / targets[i] - 1
            assert abs(err) <= TOL, (chosen[i], set_v[i], reset_v[i], err, results[i])
            counts.append(after["pulse_count"][r, c] - before[r, c])
        # a threshold close to the write limit switches slowly even at the limit
        assert max(counts) <= 60 and np.mean(counts) <= 30, counts


def test_overshoot_is_undone_with_the_other_polarity(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=16, cols=16, seed=2) as cb:
        truth = cb.truth()
        g0 = truth["conductance_s"]
        # a functional device well below a 60 uS target
        cands = np.argwhere(
            (truth["defect"] == 0) & (g0 < 20e-6) & (truth["rtn_amplitude_rel"] == 0)
        )
        r, c = map(int, cands[0])
        real = float(truth["set_threshold_v"][r, c])
        # a profile threshold 0.25 V too high: the first model-based pulse overshoots
        result = adaptive(_ops(cb), r, c, 60e-6, set_threshold_v=real + 0.25)
        amplitudes = [a for a, _ in result.history if a != 0]
        reads = [g for a, g in result.history if a == 0]
        assert max(reads) > 60e-6 * (1 + TOL)  # it did overshoot
        assert any(a < 0 for a in amplitudes)  # and came back with reset pulses
        after = cb.truth()["conductance_s"][r, c]
        assert abs(after / 60e-6 - 1) <= TOL
        assert result.outcome == "tuned" and result.pulses <= 30
        # after the overshoot the set amplitude backed off
        first_set = amplitudes[0]
        later_sets = [a for a in amplitudes[1:] if a > 0]
        assert all(a < first_set for a in later_sets)


def test_one_sided_approach_never_pulses_the_other_polarity(tmp_path: Path) -> None:
    """``approach=+1`` (set only): a device below its target is brought up to it with set
    pulses alone; one above its target is left unpulsed and reported ``wrong_side``."""
    with characterization_bench(tmp_path, rows=16, cols=16, seed=4) as cb:
        truth = cb.truth()
        g0 = truth["conductance_s"]
        ok = (truth["defect"] == 0) & (truth["rtn_amplitude_rel"] == 0)
        r, c = map(int, np.argwhere(ok & (g0 < 30e-6))[0])
        settings = AdaptiveSettings(approach=1, overshoot_z=2.0)
        result = adaptive(_ops(cb), r, c, 1.6 * float(g0[r, c]), settings)
        assert result.outcome == "tuned" and not result.wrong_side
        assert all(a > 0 for a, _ in result.history if a != 0)
        after = cb.truth()["conductance_s"][r, c]
        assert abs(after / (1.6 * g0[r, c]) - 1) <= TOL
        r2, c2 = map(int, np.argwhere(ok & (g0 > 40e-6))[0])
        before = cb.truth()["pulse_count"][r2, c2]
        result = adaptive(_ops(cb), r2, c2, 0.7 * float(g0[r2, c2]), settings)
        assert result.wrong_side and result.outcome == "failed" and result.pulses == 0
        assert cb.truth()["pulse_count"][r2, c2] == before
        with pytest.raises(ConfigError, match="approach"):
            adaptive(_ops(cb), r2, c2, 50e-6, AdaptiveSettings(approach=2))


@pytest.mark.parametrize("name,physics", [("default", DEFAULT), ("harsh", HARSH)])
def test_stuck_devices_are_abandoned_within_a_bound(
    tmp_path: Path, name: str, physics: dict[str, Any]
) -> None:
    with characterization_bench(tmp_path, rows=32, cols=32, seed=6, physics=physics) as cb:
        truth = cb.truth()
        stuck = np.argwhere(truth["defect"] != 0)
        assert len(stuck) >= 3
        ops = _ops(cb)
        for r, c in stuck[:8]:
            g = truth["conductance_s"][r, c]
            target = 0.4 * g if truth["defect"][r, c] == 2 else min(2.5 * g, 100e-6)
            target = max(target, 10e-6) if truth["defect"][r, c] == 1 else target
            res = adaptive(ops, int(r), int(c), float(target))
            assert res.outcome == "stuck", (name, r, c, res)
            assert res.pulses <= 30
        assert cb.bench.bench.max_applied_v["board"] <= cb.station.limits.max_write_v


def test_a_lower_station_limit_is_never_exceeded(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=16, cols=16, seed=3) as cb:
        truth = cb.truth()
        limits = dataclasses.replace(cb.station.limits, max_write_v=1.2)
        ops = _ops(cb, limits)
        high = np.argwhere((truth["defect"] == 0) & (truth["set_threshold_v"] > 1.4))
        r, c = map(int, high[0])
        g = float(truth["conductance_s"][r, c])
        res = adaptive(ops, r, c, min(3 * g, 100e-6))
        assert res.outcome in ("stuck", "failed")
        assert res.max_amplitude_v <= 1.2
        assert cb.bench.bench.max_applied_v["board"] <= 1.2


def test_targets_are_checked_and_nan_is_skipped(tmp_path: Path) -> None:
    with characterization_bench(tmp_path, rows=4, cols=4, seed=0) as cb:
        ops = _ops(cb)
        before = cb.truth()["pulse_count"].sum()
        for bad in (-1e-6, 0.0, math.inf):
            with pytest.raises(ConfigError, match="target"):
                adaptive(ops, 0, 0, bad)
        with pytest.raises(ConfigError, match="tolerance_rel"):
            adaptive(ops, 0, 0, 10e-6, AdaptiveSettings(tolerance_rel=0))
        assert adaptive(ops, 0, 0, math.nan).outcome == "skipped"
        assert conventional(ops, 0, 0, math.nan).outcome == "skipped"
        assert cb.truth()["pulse_count"].sum() == before


def test_conventional_baseline_needs_about_fifty_pulses_to_two_percent(tmp_path: Path) -> None:
    """The devices docs' calibration protocol through the real station stack, on the
    default chip, 60 functional devices, targets log-uniform in 10-100 uS (as the
    physics calibration test)."""
    with characterization_bench(tmp_path, rows=64, cols=64, seed=0) as cb:
        truth = cb.truth()
        rng = np.random.default_rng(7)
        functional = np.argwhere(truth["defect"] == 0)
        devices = functional[rng.choice(len(functional), 60, replace=False)]
        targets = np.exp(rng.uniform(np.log(10e-6), np.log(100e-6), 60))
        ops = _ops(cb)
        before = truth["pulse_count"].copy()
        results = [
            conventional(ops, int(r), int(c), float(t))
            for (r, c), t in zip(devices, targets, strict=True)
        ]
        after = cb.truth()["pulse_count"]
        pulses = np.array([x.pulses for x in results])
        assert list(pulses) == list((after - before)[devices[:, 0], devices[:, 1]])
        tuned = np.array([x.outcome == "tuned" for x in results])
        median = float(np.median(pulses[tuned]))
        print(f"conventional: median {median} pulses to 2 %, {tuned.sum()}/60 converged")
        assert tuned.sum() >= 58
        assert 45 <= median <= 55
        assert max(x.max_amplitude_v for x in results) <= 2.2


def test_profile_thresholds_seed_the_model_and_save_pulses(tmp_path: Path) -> None:
    """A chip profile's per-device thresholds (here the truth blurred by 30 mV, standing in
    for a thresholds sweep) seed the model: fewer pulses, the same precision."""
    means = {}
    within = []
    for seeded in (False, True):
        where = tmp_path / str(seeded)
        where.mkdir()
        with characterization_bench(where, rows=32, cols=32, seed=3, physics=HARSH) as cb:
            truth = cb.truth()
            rng = np.random.default_rng(11)
            cols = rng.permutation(32)
            targets = rng.uniform(10e-6, 100e-6, 32)
            blur = rng.normal(0, 0.03, (2, 32))
            ops = _ops(cb)
            before = truth["pulse_count"].copy()
            results = []
            for r in range(32):
                c = int(cols[r])
                seeds: dict[str, float] = {}
                if seeded:
                    seeds = {
                        "set_threshold_v": float(truth["set_threshold_v"][r, c] + blur[0, r]),
                        "reset_threshold_v": float(truth["reset_threshold_v"][r, c] - blur[1, r]),
                    }
                results.append(adaptive(ops, r, c, float(targets[r]), **seeds))  # type: ignore[arg-type]
            after = cb.truth()
            rows = np.arange(32)
            functional, by_truth, _ = _score(results, after, rows, cols)
            within.append(by_truth[functional])
            means[seeded] = float((after["pulse_count"] - before)[rows, cols][functional].mean())
    print(f"pulses per device without a profile {means[False]:.1f}, seeded {means[True]:.1f}")
    # the same chip twice: a device that misses (a slow telegraph device read in one level)
    # misses in both runs, so the bar is the main test's 97 % less that one device
    assert np.concatenate(within).mean() >= 0.95
    assert means[True] < 0.8 * means[False]


def test_telegraph_devices_end_within_tolerance_by_truth(tmp_path: Path) -> None:
    """Devices with a telegraph step of 1-2 % and dwell times up to 0.1 s (shorter than the
    confirming reads' window): the reads see both levels, within an averaged read or
    across the confirming reads, and the tuner ends at the level mean, which is what the
    truth calls the conductance. (A dwell much longer than the window shows one level
    only: the stop rule's band leaves room for steps up to about 1 %.)"""
    physics = {"rtn_fraction": 0.4}
    with characterization_bench(tmp_path, rows=32, cols=32, seed=8, physics=physics) as cb:
        truth = cb.truth()
        wanted = (
            (truth["defect"] == 0)
            & (truth["rtn_amplitude_rel"] >= 0.01)
            & (truth["rtn_dwell_s"] <= 0.1)
        )
        chosen = _distinct_lines(np.argwhere(wanted), 16)
        assert len(chosen) >= 10
        targets = np.random.default_rng(4).uniform(10e-6, 100e-6, len(chosen))
        ops = _ops(cb)
        results = [adaptive(ops, r, c, float(t)) for (r, c), t in zip(chosen, targets, strict=True)]
        after = cb.truth()["conductance_s"]
        errors = np.array([after[r, c] / t - 1 for (r, c), t in zip(chosen, targets, strict=True)])
        recognised = sum(x.telegraph_rel > 0 for x in results)
        print(
            f"telegraph: {recognised}/{len(chosen)} recognised, max |error| {abs(errors).max():.4f}"
        )
        assert (np.abs(errors) <= TOL).mean() >= 0.97
        assert all(x.outcome == "tuned" for x in results)
        # a recognised step is a telegraph step (at most the model's 2 %, with read noise)
        assert all(x.telegraph_rel <= 0.03 for x in results)


def test_with_known_thresholds_no_pulse_goes_below_the_switching_floor(tmp_path: Path) -> None:
    """Below half its threshold a device does not move at all (docs/devices.md), so a
    tuner that knows the thresholds never pulses there, whatever it learned: every pulse
    it sends is one the chip counts (an end-to-end run over TCP once sent a device twelve
    pulses under its floor after learning its threshold too low)."""
    with characterization_bench(tmp_path, rows=16, cols=16, seed=5, physics=HARSH) as cb:
        truth = cb.truth()
        before = truth["pulse_count"].copy()
        rng = np.random.default_rng(5)
        cols = rng.permutation(16)
        targets = rng.uniform(10e-6, 100e-6, 16)
        ops = _ops(cb)
        results = []
        for r in range(16):
            c = int(cols[r])
            s, x = float(truth["set_threshold_v"][r, c]), float(truth["reset_threshold_v"][r, c])
            res = adaptive(ops, r, c, float(targets[r]), set_threshold_v=s, reset_threshold_v=x)
            results.append(res)
            for a, _ in res.history:
                if a > 0:
                    assert a >= 0.5 * s, (r, c, a, s)
                elif a < 0:
                    assert -a >= 0.5 * abs(x), (r, c, a, x)
        counted = (cb.truth()["pulse_count"] - before)[np.arange(16), cols]
        assert [r.pulses for r in results] == counted.tolist()


def test_one_sided_approach_of_telegraph_devices_ends_at_the_level_mean(tmp_path: Path) -> None:
    """The array tuner's fine approach of a telegraph device whose step (1.4-2 %) is as
    large as the tolerance, from one side only (a step back may not fit under its cap),
    with the step known (``telegraph_rel``, from an earlier call or the array's
    re-verification): each read after a pulse is one level, so the tuner aims at the
    nearer end of what the read allows and judges the level mean; for dwell times up to a
    second every device ends within the tolerance by the truth, none past it."""
    physics = {"rtn_fraction": 0.5, "rtn_amplitude_min_rel": 0.014}
    with characterization_bench(tmp_path, rows=32, cols=32, seed=9, physics=physics) as cb:
        truth = cb.truth()
        g0 = truth["conductance_s"]
        wanted = (
            (truth["defect"] == 0)
            & (truth["rtn_amplitude_rel"] > 0)
            & (truth["rtn_dwell_s"] <= 1.0)
            & (g0 < 60e-6)
            & (truth["set_threshold_v"] < -truth["reset_threshold_v"])
        )
        chosen = _distinct_lines(np.argwhere(wanted), 16)
        assert len(chosen) >= 12
        rng = np.random.default_rng(12)
        # the array tuner's fine approach: parked a few per cent short of the target
        targets = [g0[d] * rng.uniform(1.01, 1.06) for d in chosen]
        blur = rng.normal(0, 0.02, (2, 32))
        ops = _ops(cb)
        results = []
        for (r, c), t in zip(chosen, targets, strict=True):
            step = float(truth["rtn_amplitude_rel"][r, c])
            settings = AdaptiveSettings(approach=1, overshoot_z=2.5, telegraph_rel=step)
            # the array tuner's case: thresholds from a profile, measured to about 20 mV
            seeds = {
                "set_threshold_v": float(truth["set_threshold_v"][r, c] + blur[0, r]),
                "reset_threshold_v": float(truth["reset_threshold_v"][r, c] - blur[1, r]),
            }
            results.append(adaptive(ops, r, c, float(t), settings, **seeds))  # type: ignore[arg-type]
        after = cb.truth()["conductance_s"]
        errors = np.array([after[d] / t - 1 for d, t in zip(chosen, targets, strict=True)])
        print(f"one-sided telegraph: errors by truth {np.round(errors * 100, 2)} %")
        assert (np.abs(errors) <= TOL).mean() >= 0.97
