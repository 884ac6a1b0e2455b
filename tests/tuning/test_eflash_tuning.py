"""eFlash write-verify (tuning/eflash.py), judged on the chip's ground truth.

Targets are cell currents at the read bias (truth ``cell_current_a``: 25 C, noiseless),
log-spaced over 10 nA - 10 uA (three decades) and shuffled over the array. Pulses are
counted by the truth's ``pulse_count`` (every program or erase pulse a cell received at
full drive). ``EFLASH_HARSH`` is a harsher eFlash chip: wider per-cell efficiency spread,
wider cycle-to-cycle spread, twice the low-current read noise.
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
from benches import DEFAULT, characterization_bench  # noqa: E402

from nvmlab.errors import ConfigError  # noqa: E402
from nvmlab.instruments.arrays import ArrayOperations  # noqa: E402
from nvmlab.instruments.safety import SafetyLimits  # noqa: E402
from nvmlab.tuning.eflash import (  # noqa: E402
    EflashTuneResult,
    EflashTuneSettings,
    StepModel,
    tune_eflash,
)

TOL = 0.01
EFLASH_HARSH: dict[str, Any] = {
    "efficiency_cv": 0.35,
    "cycle_spread_cv": 0.25,
    "noise_rel_at_1na": 0.04,
}
PHYSICS = {"default": DEFAULT, "harsh": EFLASH_HARSH}


def _ops(cb: Any, limits: SafetyLimits | None = None) -> ArrayOperations:
    return ArrayOperations(cb.station.smu, cb.station.board, limits or cb.station.limits)


def _targets(rows: int, cols: int, seed: int, low_a: float = 1e-8, high_a: float = 1e-5) -> Any:
    rng = np.random.default_rng(500 + seed)
    t = np.geomspace(low_a, high_a, rows * cols)
    rng.shuffle(t)
    return t.reshape(rows, cols)


def _run(
    cb: Any, targets: np.ndarray, settings: EflashTuneSettings | None = None, *, clock: bool = True
) -> tuple[EflashTuneResult, dict[str, Any], np.ndarray, dict[str, Any]]:
    """Tune (with the station's clock: the retention drift modelled, unless ``clock`` is
    False); return the result, the truth after, the truth's pulse counts of the run and
    the truth before."""
    before = cb.truth()
    t0 = cb.bench.instrument_time_s()
    result = tune_eflash(_ops(cb), targets, settings, clock=cb.station.clock if clock else None)
    spent = cb.bench.instrument_time_s() - t0
    truth = cb.truth()
    pulses = truth["pulse_count"] - before["pulse_count"]
    done = [c for c in result.cells if c.outcome != "skipped"]
    floor = sum(c.floor_s for c in done)
    print(
        f"instrument time per cell {spent / len(done):.3f} s, physical floor "
        f"{floor / len(done):.3f} s, readings per cell "
        f"{np.mean([c.readings for c in done]):.0f}, reads per cell "
        f"{np.mean([c.reads for c in done]):.1f}"
    )
    assert floor <= spent * 1.001
    return result, truth, pulses, before


def _check_limits(cb: Any, settings: EflashTuneSettings) -> None:
    applied = cb.bench.bench.max_applied_v["board"]
    assert applied <= cb.station.limits.max_eflash_v
    assert applied <= max(settings.erase_max_v, settings.program_max_v) + 1e-9


@pytest.mark.parametrize(
    ("physics", "seed", "clock"),
    [("default", 0, True), ("default", 1, False), ("harsh", 2, True), ("harsh", 3, False)],
)
def test_three_decades_within_one_percent_by_truth(
    tmp_path: Path, physics: str, seed: int, clock: bool
) -> None:
    n = 8
    with characterization_bench(
        tmp_path, rows=n, cols=n, seed=seed, array="eflash", physics=PHYSICS[physics]
    ) as cb:
        targets = _targets(n, n, seed)
        assert math.log10(targets.max() / targets.min()) >= 3.0 - 1e-9
        settings = EflashTuneSettings()
        result, truth, pulses, before = _run(cb, targets, settings, clock=clock)
        err = truth["cell_current_a"] / targets - 1.0
        share = float(np.mean(np.abs(err) <= TOL))
        own = result.array("current_a") / targets - 1.0
        own_share = float(np.mean(np.abs(own) <= TOL))
        print(
            f"{physics} seed {seed}: within 1 % by truth {share:.3f} (own reads {own_share:.3f}),"
            f" |err| p95 {np.percentile(np.abs(err), 95):.4f}, signed mean {err.mean():+.4f}; "
            f"pulses mean {pulses.mean():.1f} median {np.median(pulses):.0f} "
            f"p95 {np.percentile(pulses, 95):.0f} max {pulses.max()}; {result.summary()}"
        )
        assert share >= 0.97
        # every decade of the span is reached, not only the easy middle
        for low in (1e-8, 1e-7, 1e-6):
            band = (targets >= low) & (targets < low * 10 * (1 + 1e-9))
            assert np.mean(np.abs(err[band]) <= TOL) >= 0.9
        # the cells were really moved: they started far from their targets
        start = before["cell_current_a"] / targets - 1.0
        assert np.mean(np.abs(start) > 0.2) > 0.8
        # the tuner's own count of pulses is the bench's (inhibited cells count none)
        assert np.array_equal(result.array("pulses").astype(int), pulses)
        assert pulses.mean() <= 20
        # own final reads agree with the truth within their noise
        assert np.std(own - err) < 0.005
        assert sum(c.outcome == "tuned" for c in result.cells) >= 0.97 * n * n
        # cells tuned first (program phase is row-major) are not disturbed out of the
        # band by the later cells' erases and repairs
        early = err.ravel()[: n * n // 4]
        assert np.mean(np.abs(early) <= TOL) >= 0.97
        _check_limits(cb, settings)


@pytest.mark.parametrize(("physics", "seed"), [("default", 4), ("harsh", 5)])
def test_three_tenths_of_a_percent_with_the_retention_drift_compensated(
    tmp_path: Path, physics: str, seed: int
) -> None:
    """The published bar (Merrikh Bayat 2016: 0.3 % after about 35 pulses): at a 0.3 %
    tolerance the retention drift over the run (the current rises ~0.1 % per decade of
    time since a cell's last pulse) is of the tolerance's size; the tuner learns it from
    reads of tuned cells and aims each cell where the drift brings it at the end."""
    n = 6
    with characterization_bench(
        tmp_path, rows=n, cols=n, seed=seed, array="eflash", physics=PHYSICS[physics]
    ) as cb:
        targets = _targets(n, n, seed)
        assert math.log10(targets.max() / targets.min()) >= 3.0 - 1e-9
        settings = EflashTuneSettings(tolerance_rel=0.003)
        result, truth, pulses, _ = _run(cb, targets, settings)
        err = truth["cell_current_a"] / targets - 1.0
        share = float(np.mean(np.abs(err) <= 0.003))
        print(
            f"0.3 % {physics} seed {seed}: within 0.3 % by truth {share:.3f}, signed mean "
            f"{err.mean():+.5f}; pulses mean {pulses.mean():.1f} median "
            f"{np.median(pulses):.0f} p95 {np.percentile(pulses, 95):.0f}; drift learned "
            f"{result.drift_per_decade_ln:.5f} ln I per decade"
        )
        assert share >= 0.9
        assert pulses.mean() <= 35
        # the drift learned is the retention's order (5e-5 V per decade, docs/devices.md:
        # 0.0013 in ln I in weak inversion, less in strong inversion)
        assert 0.0003 < result.drift_per_decade_ln < 0.003
        _check_limits(cb, settings)


def test_half_array_over_tcp_leaves_the_other_cells_alone(tmp_path: Path) -> None:
    n = 16
    with characterization_bench(
        tmp_path, rows=n, cols=n, seed=5, array="eflash", physics=EFLASH_HARSH, tcp=True
    ) as cb:
        targets = _targets(n, n, 5)
        # every other word line: the other rows' cells keep their state
        targets[1::2, :] = np.nan
        settings = EflashTuneSettings()
        result, truth, pulses, before = _run(cb, targets, settings)
        mask = np.isfinite(targets)
        err = truth["cell_current_a"][mask] / targets[mask] - 1.0
        share = float(np.mean(np.abs(err) <= TOL))
        print(
            f"TCP 16x16 harsh, {mask.sum()} cells: within 1 % by truth {share:.3f}, pulses mean "
            f"{pulses[mask].mean():.1f} median {np.median(pulses[mask]):.0f} p95 "
            f"{np.percentile(pulses[mask], 95):.0f}"
        )
        assert share >= 0.97
        assert math.log10(targets[mask].max() / targets[mask].min()) >= 3.0 - 1e-9
        assert (pulses[~mask] == 0).all()
        assert all(c.outcome == "skipped" for c in result.cells if not np.isfinite(c.target_a))
        # untargeted word lines are never selected: program is inhibited by their word
        # line, erase reaches only the selected word line
        drift = truth["cell_current_a"][~mask] / before["cell_current_a"][~mask] - 1.0
        print(f"untargeted cells: largest current change {np.abs(drift).max():.5f}")
        assert np.abs(drift).max() < 0.005
        _check_limits(cb, settings)


def test_erase_disturb_on_untargeted_cells_of_a_tuned_word_line_is_reported(
    tmp_path: Path,
) -> None:
    """Erase reaches the selected word line's other cells too (their bit lines inhibit it,
    not fully): untargeted cells of a tuned word line drift up in current. Measured here
    so the figure is known; the tuner cannot avoid it (docs/devices.md, *Erase*)."""
    n = 8
    with characterization_bench(tmp_path, rows=n, cols=n, seed=7, array="eflash") as cb:
        targets = _targets(n, n, 7)
        targets[:, 1::2] = np.nan
        result, truth, pulses, before = _run(cb, targets)
        mask = np.isfinite(targets)
        err = truth["cell_current_a"][mask] / targets[mask] - 1.0
        assert np.mean(np.abs(err) <= TOL) >= 0.97
        drift = truth["cell_current_a"][~mask] / before["cell_current_a"][~mask] - 1.0
        dvth = truth["vth_v"][~mask] - before["vth_v"][~mask]
        print(
            f"untargeted cells on tuned word lines: current change median {np.median(drift):+.3f}"
            f" max {drift.max():+.3f}; Vth change median {np.median(dvth) * 1e3:+.2f} mV"
        )
        assert (pulses[~mask] == 0).all()
        assert (dvth <= 1e-9).all()  # erase disturb only lowers Vth; program never reaches them


def test_overshoot_is_repaired_by_a_small_erase(tmp_path: Path) -> None:
    """With a wide cycle-to-cycle spread and an aggressive aim, program pulses overshoot;
    each overshoot is repaired (erase just above the band, program again) and the cells
    still end inside the band by truth."""
    n = 4
    physics = {"cycle_spread_cv": 0.4}
    with characterization_bench(
        tmp_path, rows=n, cols=n, seed=11, array="eflash", physics=physics
    ) as cb:
        targets = _targets(n, n, 11)
        settings = EflashTuneSettings(z=0.3, guard=0.05, cycle_sigma_ln=0.05, aim_below=0.8)
        result, truth, pulses, _ = _run(cb, targets, settings)
        rounds = result.array("erase_rounds")
        err = truth["cell_current_a"] / targets - 1.0
        print(
            f"erase rounds {rounds.sum():.0f}, pulses mean {pulses.mean():.1f}, max {pulses.max()}"
        )
        assert rounds.sum() >= 4
        assert np.mean(np.abs(err) <= TOL) >= 0.9
        assert (result.array("erase_pulses") >= rounds).all()
        assert (rounds <= settings.max_erase_rounds * (settings.verify_passes + 3)).all()
        _check_limits(cb, settings)


def test_cells_that_cannot_move_are_abandoned_within_a_bound(tmp_path: Path) -> None:
    """An erase range too weak to tunnel (5.0-5.5 V on the erase gate, at the docs' 5 V
    floor) leaves the cells that need erase immobile: they are reported stuck after
    ``stuck_pulses`` pulses at the top of the range, never pulsed on; the cells that only
    need programming are tuned."""
    n = 4
    with characterization_bench(tmp_path, rows=n, cols=n, seed=13, array="eflash") as cb:
        start = cb.truth()["cell_current_a"]
        # half the cells need erase (target 3x above their current), half only program
        targets = np.where(np.arange(n * n).reshape(n, n) % 2 == 0, start * 3.0, start / 3.0)
        targets[(targets < 2e-9) | (targets > 1e-5)] = np.nan
        assert (targets > start).sum() >= 4 and (targets < start).sum() >= 4
        settings = EflashTuneSettings(erase_min_v=5.0, erase_max_v=5.5, stuck_pulses=3)
        result, truth, pulses, _ = _run(cb, targets, settings)
        need_erase = targets > start
        need_program = targets < start
        outcomes = np.array([c.outcome for c in result.cells]).reshape(n, n)
        print(f"outcomes {dict(zip(*np.unique(outcomes, return_counts=True), strict=True))}")
        assert (outcomes[need_erase] == "stuck").all()
        assert (pulses[need_erase] <= settings.stuck_pulses).all()
        err = truth["cell_current_a"] / targets - 1.0
        assert (outcomes[need_program] == "tuned").all()
        assert np.mean(np.abs(err[need_program]) <= TOL) >= 0.97
        _check_limits(cb, settings)


def test_a_lower_station_limit_is_refused_before_any_pulse_and_never_exceeded(
    tmp_path: Path,
) -> None:
    n = 4
    with characterization_bench(tmp_path, rows=n, cols=n, seed=17, array="eflash") as cb:
        limits = dataclasses.replace(cb.station.limits, max_eflash_v=10.0)
        ops = _ops(cb, limits)
        targets = _targets(n, n, 17, 1e-7, 1e-6)
        before = cb.truth()["pulse_count"].copy()
        with pytest.raises(ConfigError, match="eFlash limit") as info:
            tune_eflash(ops, targets)  # erase_max_v 11 V > 10 V
        assert info.value.field == "erase_max_v"
        assert (cb.truth()["pulse_count"] == before).all()
        settings = EflashTuneSettings(erase_max_v=10.0)
        result = tune_eflash(ops, targets, settings)
        assert cb.bench.bench.max_applied_v["board"] <= 10.0
        err = cb.truth()["cell_current_a"] / targets - 1.0
        assert np.mean(np.abs(err) <= TOL) >= 0.9
        assert result.summary()["tuned"] >= 14


def test_bad_targets_and_settings_are_refused_before_any_pulse(tmp_path: Path) -> None:
    n = 4
    with characterization_bench(tmp_path, rows=n, cols=n, seed=19, array="eflash") as cb:
        ops = _ops(cb)
        before = cb.truth()["pulse_count"].copy()
        good = np.full((n, n), 1e-7)
        cases: list[tuple[Any, EflashTuneSettings | None, str, str]] = [
            (np.full((n, n + 1), 1e-7), None, "targets_a", r"\(4, 4\)"),
            (np.where(np.eye(n) > 0, -1e-7, 1e-7), None, "targets_a", "within"),
            (np.where(np.eye(n) > 0, 1e-3, 1e-7), None, "targets_a", "within"),
            (np.where(np.eye(n) > 0, np.inf, 1e-7), None, "targets_a", "within"),
            (good, EflashTuneSettings(program_max_v=7.0), "program_max_v", "source-line"),
            (
                good,
                EflashTuneSettings(erase_width_s=0.5, erase_max_width_s=0.5),
                "erase_width_s",
                "longest pulse",
            ),
            (good, EflashTuneSettings(tolerance_rel=0.0), "tolerance_rel", "> 0"),
            (good, EflashTuneSettings(max_pulses=0), "max_pulses", ">= 1"),
        ]
        for targets, settings, field, message in cases:
            with pytest.raises(ConfigError, match=message) as info:
                tune_eflash(ops, targets, settings)
            assert info.value.field == field
        assert (cb.truth()["pulse_count"] == before).all()
        # NaN leaves a cell alone
        only = np.full((n, n), np.nan)
        only[2, 3] = 2e-7
        result = tune_eflash(ops, only)
        pulses = cb.truth()["pulse_count"] - before
        assert pulses[2, 3] > 0 and pulses.sum() == pulses[2, 3]
        assert [c.outcome for c in result.cells].count("skipped") == n * n - 1
        assert abs(cb.truth()["cell_current_a"][2, 3] / 2e-7 - 1) <= TOL


def test_memristor_board_is_refused(tmp_path: Path) -> None:
    with (
        characterization_bench(tmp_path, rows=4, cols=4, seed=0) as cb,
        pytest.raises(ConfigError, match="EFLASH board"),
    ):
        tune_eflash(_ops(cb), np.full((4, 4), 1e-7))


def test_step_model_learns_a_cells_response() -> None:
    """The fitted response converges to a cell's true law from noisy steps, from a prior
    that is off by a factor 5 in rate."""
    rng = np.random.default_rng(0)
    true_a, true_b = math.log(0.3), 4.0
    m = StepModel(true_a + math.log(5.0), 4.0, 4.5, 1e-6, forget=1.0)
    for v in rng.uniform(3.8, 4.6, 12):
        step = math.exp(true_a + true_b * (v - 4.5)) * rng.lognormal(0.0, 0.15)
        m.observe(float(v), 1e-6, step, 1.0)
    assert m.a == pytest.approx(true_a, abs=0.15)
    assert m.b == pytest.approx(true_b, rel=0.2)
    assert m.amplitude_for(0.3, 1e-6) == pytest.approx(4.5, abs=0.05)
    assert m.sigma_ln(0.2) < 0.35


def test_inside_a_sweep_every_pulse_and_read_is_stored(tmp_path: Path) -> None:
    """With a sweep's context as the io, each pulse and read goes to the database (the
    context's ``pulse`` / ``read``) and the context's clock times the drift model."""
    from nvmlab.characterization.sweep import (
        _SWEEPS,
        ProfileUpdate,
        Sweep,
        SweepUnit,
        register_sweep,
        run_sweep,
    )
    from nvmlab.steps import unregister_step
    from nvmlab.storage.query import load_pulses, load_reads

    n = 4
    targets = _targets(n, n, 23, 1e-8, 1e-5)
    seen: list[EflashTuneResult] = []

    class TuneAll(Sweep):
        kind = "test-eflash-tune"
        summary = "test: tune the whole eFlash array in one unit"
        array_kinds = ("eflash",)
        params = ()

        def plan(self, params: Any, chip: Any, rng: Any, profile: Any) -> list[SweepUnit]:
            return [SweepUnit("all", ((0, 0),))]

        def run_unit(self, ctx: Any, unit: SweepUnit) -> None:
            seen.append(tune_eflash(ctx, targets))

        def finish(self, ctx: Any) -> ProfileUpdate:
            return ProfileUpdate(summary=seen[0].summary())

    register_sweep(TuneAll)
    try:
        with characterization_bench(tmp_path, rows=n, cols=n, seed=23, array="eflash") as cb:
            before = cb.truth()["pulse_count"].copy()
            run = run_sweep("test-eflash-tune", station=cb.station, db=cb.db, chip=cb.chip)
            assert run.status == "completed"
            truth = cb.truth()
            pulses = load_pulses(cb.db, run.run_id)
            reads = load_reads(cb.db, run.run_id)
            result = seen[0]
            stored = np.zeros((n, n), dtype=int)
            for (r, c), k in pulses.groupby(["row", "col"]).size().items():
                stored[int(r), int(c)] = int(k)
            assert np.array_equal(stored, truth["pulse_count"] - before)
            assert len(reads) == sum(c.reads for c in result.cells)
            assert np.mean(np.abs(truth["cell_current_a"] / targets - 1) <= TOL) >= 0.97
            assert result.drift_per_decade_ln > 0  # the context's clock was used
    finally:
        _SWEEPS.pop("test-eflash-tune", None)
        unregister_step("test-eflash-tune")
