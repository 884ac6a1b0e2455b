"""Benches for the characterization tests: a chip on the emulated bench, a station opened
on it (in-process or over loopback TCP through pyvisa-py), a results database with the chip
registered, and the chip's ground truth.

Settings:

- ``DEFAULT``: the devices docs' default physics;
- ``HARSH``: the issue's harsher chip: threshold CV 35 %, twice the read noise, 3 %
  defects with stuck devices *inside* the working window (stuck-off at 2-16 uS, stuck-on
  at 60-150 uS) and functional devices parked near the bottom of it (1.5-6 uS).

Use::

    with characterization_bench(rows=16, cols=16, seed=3, physics=HARSH, tcp=True) as cb:
        result = run_sweep("map", station=cb.station, db=cb.db, chip=cb.chip)
        truth = cb.truth()          # the chip now (bench clock), every ground-truth array
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from served import served_emulator  # noqa: F401 - the characterization tests import it here

from nvmlab.benchmarks.characterization import HARSH_PHYSICS
from nvmlab.clock import VirtualClock
from nvmlab.instruments.station import Station
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.storage import open_database
from nvmlab.storage.database import Database
from nvmlab.storage.inventory import register_chip

DEFAULT: dict[str, Any] = {}
HARSH: dict[str, Any] = HARSH_PHYSICS


@dataclass
class CharacterizationBench:
    bench: EmulatedBench
    station: Station
    db: Database
    chip: str
    tmp: Path

    def truth(self) -> dict[str, Any]:
        """The chip's ground truth now (``EmulatedBench.ground_truth``)."""
        return self.bench.ground_truth()


@contextlib.contextmanager
def characterization_bench(
    tmp_path: Path,
    *,
    rows: int = 16,
    cols: int = 16,
    seed: int = 0,
    physics: dict[str, Any] | None = None,
    array: str = "memristor",
    smu: str = "keithley2400",
    chamber: str = "espec",
    tcp: bool = False,
    db_url: str | None = None,
    chip: str = "chip-under-test",
    limits: dict[str, float] | None = None,
) -> Iterator[CharacterizationBench]:
    """A registered chip on an emulated bench and an open station (see the module doc);
    ``limits``: the station file's ``[limits]`` (default: the station defaults)."""
    extra = {"limits": dict(limits)} if limits else {}
    config = BenchConfig(physics=dict(physics or {})).with_overrides(
        rows=rows, cols=cols, seed=seed, array=array, smu_model=smu, chamber_model=chamber
    )
    bench = build_emulated_bench(config, clock=VirtualClock())
    db = open_database(db_url or f"sqlite:///{tmp_path / 'results.sqlite'}", create=True)
    register_chip(db, chip, array_kind=array, n_rows=rows, n_cols=cols)
    try:
        if tcp:
            with bench.serve_tcp() as served:
                station = Station(
                    {**bench.station_dict(served.resources), **extra},
                    visa_library="@py",
                    clock=bench.clock,
                )
                with station:
                    yield CharacterizationBench(bench, station, db, chip, tmp_path)
        else:
            station = Station(
                {**bench.station_dict(), **extra},
                visa_library=bench.visa_library(),
                clock=bench.clock,
            )
            with station:
                yield CharacterizationBench(bench, station, db, chip, tmp_path)
    finally:
        db.close()
        bench.close()
