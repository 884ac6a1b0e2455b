"""Write-verify on the instrument (tuning/onboard.py), judged on the chip's ground truth.

The tuned devices of one chip sit on distinct rows and columns (a permutation), so a V/2
pulse of one never half-selects another tuned device. Scores count functional devices by
the truth (``defect == 0``), pulses by the truth's ``pulse_count``, limits by what the
emulated instruments actually applied (``Bench.max_applied_v`` per SMU terminal and for
board pulses).

The station's current limit: during an on-instrument pulse SMU A feeds the selected
device at V and the other devices of its row at V/2 (the board's ``PULSE`` has no
compliance; the SMU has). On a 32-wide row that is several mA, above the 1 mA default
limit, so the benches here open their station with ``max_current_a`` 20 mA; one test
keeps the default and checks the compliance is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "characterization"))
from benches import DEFAULT, HARSH, CharacterizationBench  # noqa: E402

from nvmlab.clock import VirtualClock  # noqa: E402
from nvmlab.errors import ConfigError, SafetyLimitError  # noqa: E402
from nvmlab.instruments.arrays import ArrayOperations  # noqa: E402
from nvmlab.instruments.scripts import ScriptStopped, ScriptTemplate  # noqa: E402
from nvmlab.instruments.station import Station  # noqa: E402
from nvmlab.mocks.benchfile import BenchConfig  # noqa: E402
from nvmlab.mocks.emulated import build_emulated_bench  # noqa: E402
from nvmlab.storage import open_database  # noqa: E402
from nvmlab.storage.inventory import register_chip  # noqa: E402
from nvmlab.tuning import onboard  # noqa: E402
from nvmlab.tuning.onboard import OnboardSettings, tune_on_instrument  # noqa: E402
from nvmlab.tuning.writeverify import (  # noqa: E402
    BusCounter,
    ThresholdPrior,
    TuneResult,
    adaptive,
    conventional,
)

#: The station limit the benches here open with (A): covers a 32-wide row at V/2.
ROW_CURRENT_A = 0.02


@contextlib.contextmanager
def onboard_bench(
    tmp_path: Path,
    *,
    rows: int = 16,
    cols: int = 16,
    seed: int = 0,
    physics: dict[str, Any] | None = None,
    tcp: bool = False,
    limits: dict[str, float] | None = None,
) -> Iterator[CharacterizationBench]:
    """``characterization_bench(smu="keithley2636b")`` whose station file has the
    ``[limits]`` given (default: ``max_current_a`` = :data:`ROW_CURRENT_A`)."""
    limits = {"max_current_a": ROW_CURRENT_A} if limits is None else limits
    config = BenchConfig(physics=dict(physics or {})).with_overrides(
        rows=rows, cols=cols, seed=seed, smu_model="keithley2636b"
    )
    bench = build_emulated_bench(config, clock=VirtualClock())
    db = open_database(f"sqlite:///{tmp_path / 'results.sqlite'}", create=True)
    register_chip(db, "chip", array_kind="memristor", n_rows=rows, n_cols=cols)
    try:
        if tcp:
            with bench.serve_tcp() as served:
                data = {**bench.station_dict(served.resources), "limits": dict(limits)}
                with Station(data, visa_library="@py", clock=bench.clock) as station:
                    yield CharacterizationBench(bench, station, db, "chip", tmp_path)
        else:
            data = {**bench.station_dict(), "limits": dict(limits)}
            with Station(data, visa_library=bench.visa_library(), clock=bench.clock) as station:
                yield CharacterizationBench(bench, station, db, "chip", tmp_path)
    finally:
        db.close()
        bench.close()


def _ops(cb: Any) -> ArrayOperations:
    return ArrayOperations(cb.station.smu, cb.station.board, cb.station.limits)


def _permutation(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + seed)
    return np.arange(n), rng.permutation(n), rng.uniform(10e-6, 100e-6, n)


@dataclasses.dataclass
class Run:
    results: list[TuneResult]
    functional: np.ndarray
    error_truth: np.ndarray
    pulses: np.ndarray
    trips: np.ndarray
    time_s: float  # instrument time per device (s)


def _run(cb: Any, n: int, seed: int, how: str, algorithm: str) -> Run:
    """Tune a permutation of ``n`` devices ``how`` = "onboard" or "host"."""
    rows, cols, targets = _permutation(n, seed)
    ops = _ops(cb)
    before = cb.truth()["pulse_count"].copy()
    t0 = cb.bench.instrument_time_s()
    prior = ThresholdPrior()
    results = []
    with BusCounter.on(cb.station.transports.values()) as bus:
        for r, c, t in zip(rows, cols, targets, strict=True):
            if how == "onboard":
                x = tune_on_instrument(
                    ops, int(r), int(c), float(t), algorithm=algorithm, bus=bus, prior=prior
                )
            elif algorithm == "conventional":
                x = conventional(ops, int(r), int(c), float(t), bus=bus)
            else:
                x = adaptive(ops, int(r), int(c), float(t), bus=bus, prior=prior)
            results.append(x)
    spent = (cb.bench.instrument_time_s() - t0) / n
    truth = cb.truth()
    return Run(
        results,
        truth["defect"][rows, cols] == 0,
        truth["conductance_s"][rows, cols] / targets - 1,
        (truth["pulse_count"] - before)[rows, cols],
        np.array([x.round_trips for x in results]),
        spent,
    )


def _summary(label: str, run: Run, tol: float) -> str:
    f = run.functional
    ok = np.abs(run.error_truth) <= tol
    own = np.array([abs(x.error_rel) <= tol for x in run.results])
    return (
        f"{label}: within {tol:.0%} by truth {ok[f].mean():.3f}, by own reads {own[f].mean():.3f}; "
        f"pulses mean {run.pulses[f].mean():.1f} median {np.median(run.pulses[f]):.0f} "
        f"p95 {np.percentile(run.pulses[f], 95):.0f}; round trips per device "
        f"{run.trips.mean():.1f}; instrument time per device {run.time_s:.3f} s "
        f"(floor {np.mean([x.floor_s for x in run.results]):.3f} s)"
    )


def _assert_within_limits(cb: Any, write_v: float) -> None:
    """What the emulated SMU and board actually applied: A within the write limit, B (the
    half-select buffer) within half of it, no board pulse, the current within the
    station's limit."""
    applied = cb.bench.bench.max_applied_v
    assert applied["A"] <= write_v + 1e-12, applied
    assert applied["B"] <= write_v / 2 + 1e-12, applied
    assert applied["board"] == 0.0, applied
    assert cb.bench.bench.max_applied_a["A"] <= cb.station.limits.max_current_a * (1 + 1e-9)


@pytest.mark.parametrize("name,physics", [("default", DEFAULT), ("harsh", HARSH)])
def test_adaptive_lite_on_the_instrument_reaches_one_percent_by_truth(
    tmp_path: Path, name: str, physics: dict[str, Any]
) -> None:
    """32 x 32, two seeds, 32 devices each on distinct lines; the same devices of the same
    chip tuned by the host loop (writeverify.adaptive) for the round trips."""
    ok_all, pulses_all, trips = [], [], {"onboard": [], "host": []}
    for seed in (1, 2):
        for how in ("onboard", "host"):
            where = tmp_path / f"{how}{seed}"
            where.mkdir()
            with onboard_bench(where, rows=32, cols=32, seed=seed, physics=physics) as cb:
                run = _run(cb, 32, seed, how, "adaptive-lite")
                print(_summary(f"{name} seed {seed} {how}", run, 0.01))
                trips[how].append(run.trips)
                if how == "host":
                    continue
                _assert_within_limits(cb, cb.station.limits.max_write_v)
                # the script's pulse count is the bench's, and every level stayed within
                # what the loop was given (nothing clamped by the guard)
                assert [x.pulses for x in run.results] == list(run.pulses)
                assert all(x.clamped_pulses == 0 for x in run.results)  # type: ignore[attr-defined]
                ok_all.append(np.abs(run.error_truth[run.functional]) <= 0.01)
                pulses_all.append(run.pulses[run.functional])
                # the non-functional devices are abandoned, not tuned
                for x, f in zip(run.results, run.functional, strict=True):
                    if not f:
                        assert x.outcome in ("stuck", "failed") and x.pulses <= 40, x
    ok = np.concatenate(ok_all)
    pulses = np.concatenate(pulses_all)
    on, host = np.concatenate(trips["onboard"]), np.concatenate(trips["host"])
    print(
        f"{name}: on-instrument within 1 % by truth {ok.mean():.3f} of {ok.size}, pulses "
        f"mean {pulses.mean():.1f}; round trips per device on-instrument {on.mean():.1f}, "
        f"host loop {host.mean():.1f}"
    )
    assert ok.mean() >= 0.97, f"{name}: only {ok.mean():.3f} within 1 % by truth"
    assert pulses.mean() <= 20
    # one routing (SEL, and READ:SCHEME once), the reply line, the end line
    assert on.max() <= 4
    assert host.mean() >= 8 * on.mean()
