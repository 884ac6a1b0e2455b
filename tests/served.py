"""``nvmlab emulate`` in a subprocess, for the tests that go through the real TCP stacks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def served_emulator(
    folder: Path, *, rows: int, cols: int, seed: int = 11, time_scale: float = 50.0
) -> Iterator[tuple[Path, Path]]:
    """``nvmlab emulate`` in a subprocess with a state file, serving over loopback TCP:
    yields (station file it wrote, chip state file); stopped with SIGTERM afterwards."""
    station = folder / "station.toml"
    state = folder / "chip.npz"
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "nvmlab.cli", "emulate", "--rows", str(rows),
         "--cols", str(cols), "--seed", str(seed), "--time-scale", str(time_scale),
         "--state-file", str(state), "--station-out", str(station)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for _ in range(3):  # smu, chamber, board: the station file is written
            assert proc.stdout.readline().split()[0] in ("smu", "chamber", "board")
        yield station, state
    finally:
        proc.terminate()
        proc.wait(timeout=30)
