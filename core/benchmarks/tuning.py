"""``nvmlab bench --only tuning``: array tuning on the emulated crossbar, judged on its truth.

For each physics setting (the defaults; the harsher chip of the characterization
benchmark: threshold CV 35 %, twice the read noise, more defects):

1. the chip is characterized first (``map`` and ``thresholds`` of every device), which
   gives the profile the tuner reads and leaves the chip in the state it starts from;
   the characterization's pulses and instrument time are printed on their own line;
2. from a copy of that state (the chip state file and the results database), each
   algorithm (adaptive, conventional) tunes the whole array to targets uniform in
   10-100 uS, and again to a weight pattern mapped to differential pairs in 10-100 uS;
3. one more adaptive run on uniform targets without the profile (the tuner learns).

Before them (with the conventional algorithm at default physics), the conventional
baseline per device on a fresh chip: its median pulses to 2 %, which the devices docs'
calibration puts at 45-55.

Each line gives, over the functional devices with a target (functional by the truth, so
calling a hard device stuck cannot improve the score): the share within +-1 % of target
by the ground truth read at the end of the run at 25 C, the share by the tuner's own
final reads, pulses per device counted by the chip (every pulse it received in the run:
probing, parking and repairs included; mean / median / p95), and per device the
instrument time, the physical floor (the sum of pulse widths and integration times) and
the bus round trips. Then the eFlash tuner over three decades of cell current. Nothing is
asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nvmlab.benchmarks.characterization import HARSH_PHYSICS
from nvmlab.characterization.sweep import run_sweep
from nvmlab.clock import VirtualClock
from nvmlab.instruments.arrays import ArrayOperations
from nvmlab.instruments.station import Station
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.storage import open_database
from nvmlab.storage.inventory import register_chip

CHIP = "bench-chip"
#: Targets of the uniform runs and the pair window (S).
WINDOW_S = (10e-6, 100e-6)


def _build(folder: Path, rows: int, cols: int, seed: int, physics: dict[str, Any]) -> EmulatedBench:
    config = BenchConfig(physics=dict(physics)).with_overrides(
        rows=rows, cols=cols, seed=seed, state_file=str(folder / "chip.npz")
    )
    return build_emulated_bench(config, clock=VirtualClock())


def _station(bench: EmulatedBench) -> Station:
    return Station(bench.station_dict(), visa_library=bench.visa_library(), clock=bench.clock)


def characterize(folder: Path, rows: int, cols: int, seed: int, physics: dict[str, Any]) -> str:
    """Map and thresholds of every device; leaves ``chip.npz`` and ``results.sqlite`` in
    ``folder``; returns the printed line."""
    bench = _build(folder, rows, cols, seed, physics)
    db = open_database(f"sqlite:///{folder / 'results.sqlite'}", create=True)
    register_chip(db, CHIP, array_kind="memristor", n_rows=rows, n_cols=cols)
    wall = instrument = 0.0
    try:
        with _station(bench) as station:
            for kind, params in (("map", {}), ("thresholds", {"sample": rows * cols})):
                result = run_sweep(kind, station=station, db=db, chip=CHIP, params=params)
                wall += result.wall_s
                instrument += result.instrument_s
        pulses = bench.ground_truth()["pulse_count"]
    finally:
        db.close()
        bench.close()
    return (
        f"  characterization (map, thresholds of all {rows * cols}): pulses per device mean "
        f"{pulses.mean():.1f}, instrument {instrument:.0f} s ({instrument / pulses.size:.2f} s "
        f"per device), wall {wall:.0f} s"
    )


def _targets(folder: Path, rows: int, cols: int, seed: int, kind: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed + 100)
    if kind == "uniform":
        np.save(folder / "targets.npy", rng.uniform(WINDOW_S[0], WINDOW_S[1], (rows, cols)))
        return {"targets": str(folder / "targets.npy")}
    np.savetxt(folder / "weights.csv", rng.normal(0.0, 1.0, (rows, cols // 2)), delimiter=",")
    return {"weights": str(folder / "weights.csv"), "window": list(WINDOW_S)}


def tune_run(
    base: Path, work: Path, rows: int, cols: int, seed: int, physics: dict[str, Any], *,
    kind: str, algorithm: str, profile: bool,
) -> str:  # fmt: skip
    """One tune from a copy of the characterized state; returns the printed line."""
    work.mkdir(parents=True)
    shutil.copy(base / "chip.npz", work / "chip.npz")
    if profile:
        shutil.copy(base / "results.sqlite", work / "results.sqlite")
    bench = _build(work, rows, cols, seed, physics)
    db = open_database(f"sqlite:///{work / 'results.sqlite'}", create=True)
    if not profile:
        register_chip(db, CHIP, array_kind="memristor", n_rows=rows, n_cols=cols)
    import nvmlab.tuning.array  # noqa: F401 - registers the tune sweep

    params = {**_targets(work, rows, cols, seed, kind), "algorithm": algorithm}
    try:
        before = bench.ground_truth()["pulse_count"].copy()
        with _station(bench) as station:
            result = run_sweep(
                "tune", station=station, db=db, chip=CHIP, params=params, show_progress=False
            )
        truth = bench.ground_truth()
    finally:
        db.close()
        bench.close(save_state=False)
    summary = result.summary
    target = np.full((rows, cols), np.nan)
    for d in summary["per_device"]:
        target[d["row"], d["col"]] = d["target_s"]
    functional = (np.asarray(truth["defect"]) == 0) & np.isfinite(target)
    ok = np.abs(np.asarray(truth["conductance_s"]) / target - 1.0) <= 0.01
    pulses = (np.asarray(truth["pulse_count"]) - before)[functional]
    own = [d for d in summary["per_device"] if functional[d["row"], d["col"]]]
    own_share = np.mean([d["outcome"] == "tuned" for d in own]) if own else float("nan")
    n = max(len(summary["per_device"]), 1)
    label = f"{algorithm:12s} {kind:8s}{'' if profile else ' no profile'}"
    return (
        f"  {label:32s} truth {ok[functional].mean() * 100:6.2f} %  own {own_share * 100:6.2f} %"
        f"  pulses {pulses.mean():6.1f} / {np.median(pulses):4.0f} / "
        f"{np.percentile(pulses, 95):4.0f}  instr. {result.instrument_s / n:6.2f} s  floor "
        f"{summary['floor_s_mean']:5.2f} s  trips {summary['round_trips_mean']:6.0f}"
        f"  wall {result.wall_s:5.0f} s"
    )


def bench_memristor(
    rows: int, cols: int, seed: int, *, harsh: bool, algorithms: tuple[str, ...],
    no_profile: bool, kinds: tuple[str, ...] = ("uniform", "weights"),
    characterized: Path | None = None, keep: Path | None = None,
) -> None:  # fmt: skip
    physics = HARSH_PHYSICS if harsh else {}
    setting = "harsh physics (threshold CV 35 %, 2 x noise)" if harsh else "default physics"
    print(f"{rows} x {cols} memristor crossbar, {setting}, seed {seed}, V/3 writes", flush=True)
    with tempfile.TemporaryDirectory(prefix="nvmlab-bench-tune-") as tmp:
        base = Path(tmp) / "characterized"
        if characterized is not None:
            shutil.copytree(characterized, base)
            print(f"  characterization: the state saved in {characterized}", flush=True)
        else:
            base.mkdir()
            print(characterize(base, rows, cols, seed, physics), flush=True)
            if keep is not None:
                shutil.copytree(base, keep, dirs_exist_ok=True)  # checked empty at the start
        print(
            f"  {'algorithm    targets':32s} within 1 % (functional)   pulses mean / median "
            "/ p95, per device: instrument time, floor, bus round trips",
            flush=True,
        )
        runs = [(k, a, True) for k in kinds for a in algorithms]
        if no_profile:
            runs.append(("uniform", "adaptive", False))
        for i, (kind, algorithm, profile) in enumerate(runs):
            line = tune_run(
                base, Path(tmp) / f"run-{i}", rows, cols, seed, physics,
                kind=kind, algorithm=algorithm, profile=profile,
            )  # fmt: skip
            print(line, flush=True)


def conventional_calibration(seed: int, n_devices: int = 60) -> str:
    """The conventional baseline per device, exactly the devices docs' calibration
    protocol, on a fresh 64 x 64 chip at default physics: ``n_devices`` functional
    devices, targets log-uniform in 10-100 uS; returns the printed line with the median
    pulses to 2 % (the issue's bar: 45-55, so the baseline cannot be weakened)."""
    from nvmlab.tuning.writeverify import conventional

    with tempfile.TemporaryDirectory(prefix="nvmlab-bench-conventional-") as tmp:
        bench = _build(Path(tmp), 64, 64, seed, {})
        try:
            truth = bench.ground_truth()
            rng = np.random.default_rng(seed + 7)
            functional = np.argwhere(np.asarray(truth["defect"]) == 0)
            devices = functional[rng.choice(len(functional), n_devices, replace=False)]
            targets = np.exp(rng.uniform(np.log(WINDOW_S[0]), np.log(WINDOW_S[1]), n_devices))
            with _station(bench) as station:
                ops = ArrayOperations(station.smu, station.board, station.limits)
                results = [
                    conventional(ops, int(r), int(c), float(t))
                    for (r, c), t in zip(devices, targets, strict=True)
                ]
        finally:
            bench.close(save_state=False)
    tuned = [x.pulses for x in results if x.outcome == "tuned"]
    median = float(np.median(tuned)) if tuned else float("nan")
    return (
        f"conventional protocol per device (devices docs' calibration, {n_devices} devices of "
        f"a fresh 64 x 64 chip, targets log-uniform 10-100 uS): median {median:.1f} pulses to "
        f"2 % ({len(tuned)}/{n_devices} converged; bar 45-55)"
    )


def bench_eflash(rows: int, cols: int, seed: int) -> None:
    """The eFlash tuner over 10 nA - 10 uA (three decades), judged on the truth."""
    from nvmlab.tuning.eflash import tune_eflash

    config = BenchConfig().with_overrides(rows=rows, cols=cols, seed=seed, array="eflash")
    bench = build_emulated_bench(config, clock=VirtualClock())
    rng = np.random.default_rng(500 + seed)
    targets = np.geomspace(1e-8, 1e-5, rows * cols)
    rng.shuffle(targets)
    targets = targets.reshape(rows, cols)
    try:
        with _station(bench) as station:
            ops = ArrayOperations(station.smu, station.board, station.limits)
            before = bench.ground_truth()["pulse_count"].copy()
            start = time.perf_counter()
            t0 = bench.clock.now()
            tune_eflash(ops, targets, clock=station.clock)
            wall = time.perf_counter() - start
            instrument = bench.clock.now() - t0
            truth = bench.ground_truth()
    finally:
        bench.close(save_state=False)
    functional = np.asarray(truth.get("defect", np.zeros((rows, cols)))) == 0
    err = np.abs(np.asarray(truth["cell_current_a"]) / targets - 1.0)
    pulses = (np.asarray(truth["pulse_count"]) - before)[functional]
    parts = []
    for lo, hi in ((1e-8, 1e-7), (1e-7, 1e-6), (1e-6, 1e-5 * 1.001)):
        band = functional & (targets >= lo) & (targets < hi)
        parts.append(f"{lo:.0e}-{hi:.0e} A {np.mean(err[band] <= 0.01) * 100:.1f} %")
    print(
        f"{rows} x {cols} eFlash array, default physics, seed {seed}: within 1 % by truth "
        f"{np.mean(err[functional] <= 0.01) * 100:.2f} % ({', '.join(parts)}); pulses per cell "
        f"mean {pulses.mean():.1f}, median {np.median(pulses):.0f}, p95 "
        f"{np.percentile(pulses, 95):.0f}; instrument {instrument / targets.size:.2f} s per cell,"
        f" wall {wall:.0f} s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nvmlab bench --only tuning",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--physics", choices=("default", "harsh", "both"), default="both",
        help="the defaults, the harsher chip, or both in turn (default: both)",
    )  # fmt: skip
    parser.add_argument(
        "--algorithms", default="adaptive,conventional",
        help="comma-separated: adaptive, conventional (default: both)",
    )  # fmt: skip
    parser.add_argument(
        "--targets", default="uniform,weights",
        help="comma-separated target patterns: uniform, weights (default: both)",
    )  # fmt: skip
    parser.add_argument(
        "--no-profile-run", choices=("yes", "no"), default="yes",
        help="add the adaptive run without a profile at default physics (default: yes)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-characterized", type=Path, metavar="DIR",
        help="save the characterized chip (state file and database) to DIR for later runs",
    )  # fmt: skip
    parser.add_argument(
        "--characterized", type=Path, metavar="DIR",
        help="start from a chip saved by --keep-characterized (same size, seed, physics)",
    )  # fmt: skip
    parser.add_argument("--eflash-size", type=int, default=32, help="eFlash array side")
    parser.add_argument("--no-eflash", action="store_true", help="skip the eFlash part")
    args = parser.parse_args(argv)
    saved = [
        f"--{o}"
        for o in ("keep-characterized", "characterized")
        if getattr(args, o.replace("-", "_"))
    ]
    if saved and args.physics == "both":
        parser.error(
            f"{' and '.join(saved)}: a saved chip is one physics; give one --physics setting"
        )
    keep: Path | None = args.keep_characterized
    if keep is not None and keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        parser.error(
            f"--keep-characterized: {keep} is not empty (allowed: a new or empty directory)"
        )
    algorithms = tuple(a.strip() for a in args.algorithms.split(",") if a.strip())
    kinds = tuple(k.strip() for k in args.targets.split(",") if k.strip())
    if "conventional" in algorithms and args.physics != "harsh":
        print(conventional_calibration(args.seed), flush=True)
        print(flush=True)
    for harsh in {"default": (False,), "harsh": (True,), "both": (False, True)}[args.physics]:
        bench_memristor(
            args.rows, args.cols, args.seed, harsh=harsh, algorithms=algorithms,
            no_profile=not harsh and args.no_profile_run == "yes", kinds=kinds,
            characterized=args.characterized, keep=args.keep_characterized,
        )  # fmt: skip
        print(flush=True)
    if not args.no_eflash:
        bench_eflash(args.eflash_size, args.eflash_size, args.seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
