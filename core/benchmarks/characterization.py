"""``nvmlab bench --only characterization``: a full 64 x 64 characterization, timed.

In-process on the emulated bench (virtual clock: instrument time is the instruments' own,
wall time is what this machine spends): the map with the defect classification, the
thresholds of 256 devices, six temperatures on 64 devices at 4 states and the read noise
at 4 states; then the map read over loopback TCP through pyvisa-py beside it. Each sweep's
result is compared with the chip's ground truth, so the figures say what the time bought.
Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nvmlab.characterization.sweep import SweepResult, run_sweep
from nvmlab.clock import VirtualClock
from nvmlab.instruments.station import Station
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.storage import open_database
from nvmlab.storage.database import Database
from nvmlab.storage.inventory import register_chip
from nvmlab.storage.profile import load_profile

#: The full characterization: (kind, parameters).
FULL_PLAN: tuple[tuple[str, dict[str, Any]], ...] = (
    ("map", {}),
    ("thresholds", {"sample": 256}),
    ("temperature", {"sample": 64}),
    ("noise", {"sample": 64}),
)


@contextlib.contextmanager
def _bench(
    folder: Path, rows: int, cols: int, seed: int, *, tcp: bool, name: str
) -> Iterator[tuple[EmulatedBench, Station, Database]]:
    config = BenchConfig().with_overrides(rows=rows, cols=cols, seed=seed)
    bench = build_emulated_bench(config, clock=VirtualClock())
    db = open_database(f"sqlite:///{folder / (name + '.sqlite')}", create=True)
    register_chip(db, name, array_kind="memristor", n_rows=rows, n_cols=cols)
    try:
        if tcp:
            with bench.serve_tcp() as served:
                station = Station(
                    bench.station_dict(served.resources), visa_library="@py", clock=bench.clock
                )
                with station:
                    yield bench, station, db
        else:
            station = Station(
                bench.station_dict(), visa_library=bench.visa_library(), clock=bench.clock
            )
            with station:
                yield bench, station, db
    finally:
        db.close()
        bench.close()


def _median_rel(measured: np.ndarray, true: np.ndarray) -> float:
    both = np.isfinite(measured) & np.isfinite(true) & (true != 0)
    if not both.any():
        return float("nan")
    return float(np.median(np.abs(measured[both] - true[both]) / np.abs(true[both])))


def _figures(kind: str, result: SweepResult, truth: dict[str, Any], profile: Any) -> str:
    """One line comparing a sweep's result with the ground truth."""
    if kind == "map" and profile.defect_class is not None:
        defect = profile.defect_class
        true = np.asarray(truth["defect"])
        correct = float(np.mean(defect == true))
        return f"defect map {correct * 100:.2f} % correct ({int((true > 0).sum())} true defects)"
    if kind == "thresholds" and profile.set_threshold_v is not None:
        parts = []
        for name in ("set_threshold_v", "reset_threshold_v"):
            got = getattr(profile, name)
            mask = np.isfinite(got)
            err = np.abs(got[mask] - np.asarray(truth[name])[mask])
            parts.append(f"{name.split('_')[0]} median |error| {np.median(err) * 1e3:.1f} mV")
        return ", ".join(parts) + f" on {int(mask.sum())} devices"
    if kind == "temperature" and profile.temp_coeff_s_per_k is not None:
        rel = _median_rel(
            profile.temp_coeff_s_per_k, np.asarray(truth["conductance_temp_coeff_s_per_k"])
        )
        return f"temperature coefficient median relative error {rel * 100:.1f} %"
    if kind == "noise" and profile.read_noise_sigma_s is not None:
        rel = _median_rel(profile.read_noise_sigma_s, np.asarray(truth["read_noise_sigma_s"]))
        return (
            f"read-noise sigma median relative error {rel * 100:.1f} % (vs the truth at its state)"
        )
    return ""


def bench_full(rows: int = 64, cols: int = 64, seed: int = 0) -> None:
    """The full in-process characterization, then the map over TCP."""
    with tempfile.TemporaryDirectory(prefix="nvmlab-bench-char-") as folder:
        total_wall = total_instrument = 0.0
        print(f"{rows} x {cols} memristor crossbar, seed {seed}, in-process (virtual clock)")
        print(f"  {'sweep':12s} {'wall s':>8s} {'instr. s':>10s}  against the ground truth")
        with _bench(Path(folder), rows, cols, seed, tcp=False, name="bench-chip") as (
            bench, station, db,
        ):  # fmt: skip
            for kind, params in FULL_PLAN:
                result = run_sweep(kind, station=station, db=db, chip="bench-chip", params=params)
                profile = load_profile(db, "bench-chip")
                figures = _figures(kind, result, bench.ground_truth(), profile)
                total_wall += result.wall_s
                total_instrument += result.instrument_s
                print(
                    f"  {kind:12s} {result.wall_s:8.1f} {result.instrument_s:10.1f}  {figures}",
                    flush=True,
                )
        print(f"  {'total':12s} {total_wall:8.1f} {total_instrument:10.1f}")
        print(f"\nthe map over loopback TCP (pyvisa-py), {rows} x {cols}, seed {seed}")
        with _bench(Path(folder), rows, cols, seed, tcp=True, name="tcp-chip") as (
            bench, station, db,
        ):  # fmt: skip
            start = time.perf_counter()
            result = run_sweep("map", station=station, db=db, chip="tcp-chip")
            wall = time.perf_counter() - start
            profile = load_profile(db, "tcp-chip")
            figures = _figures("map", result, bench.ground_truth(), profile)
        print(f"  {'map (TCP)':12s} {wall:8.1f} {result.instrument_s:10.1f}  {figures}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nvmlab bench --only characterization")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv or [])
    bench_full(args.rows, args.cols, args.seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
