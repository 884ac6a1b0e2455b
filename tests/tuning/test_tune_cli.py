"""``nvmlab tune`` end to end: ``nvmlab emulate`` serves an 8 x 8 chip (16 x 16 took 8 minutes over TCP) over loopback TCP
in a subprocess, the CLI runs in-process (``main([...])``) with the station file it wrote,
and the chip's truth (the emulator's state file) judges the result."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "characterization"))
from benches import served_emulator  # noqa: E402

from nvmlab.cli import main
from nvmlab.mocks import read_ground_truth

N = 8


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``nvmlab emulate`` in the background: (station file, state file)."""
    with served_emulator(tmp_path, rows=N, cols=N) as files:
        yield files


@pytest.mark.tcp
@pytest.mark.timeout(900)
def test_nvmlab_tune_cli_end_to_end(served: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    station, state = served
    url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    assert main(["chip", "add", "chip8", "--kind", "memristor", "--rows", str(N),
                 "--cols", str(N), "--db", url]) == 0  # fmt: skip
    # the documented workflow: the thresholds first (the tuner's order and caps), then tune
    assert main(["characterize", "thresholds", "--station", str(station), "--chip", "chip8",
                 "--db", url, "--sample", str(N * N), "--no-progress"]) == 0  # fmt: skip
    time.sleep(1.0)  # the emulator saves the chip after its last write
    before = np.asarray(read_ground_truth(state)["pulse_count"]).copy()
    targets = np.random.default_rng(21).uniform(10e-6, 100e-6, (N, N))
    csv = tmp_path / "targets.csv"
    np.savetxt(csv, targets, delimiter=",")
    # a bad table is refused before any pulse, naming the file
    bad = tmp_path / "bad.csv"
    bad.write_text("1e-5,2e-5\n")
    assert main(["tune", "--station", str(station), "--chip", "chip8", "--db", url,
                 "--targets", str(bad), "--no-progress"]) == 1  # fmt: skip
    assert "bad.csv" in capsys.readouterr().err
    out = tmp_path / "out.json"
    code = main(["tune", "--station", str(station), "--chip", "chip8", "--db", url,
                 "--targets", str(csv), "--json", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    time.sleep(1.0)  # the emulator saves the chip after its last write
    truth = read_ground_truth(state)
    g = np.asarray(truth["conductance_s"])
    functional = np.asarray(truth["defect"]) == 0
    ok = np.abs(g / targets - 1) <= 0.01
    pulses = np.asarray(truth["pulse_count"]) - before
    assert isinstance(report["run_id"], int) and report["status"] == "completed"
    per = report["per_device"]
    assert len(per) == N * N
    for d in per:
        assert d["outcome"] in ("tuned", "failed", "stuck", "skipped")
        assert d["round_trips"] >= d["reads"] > 0
    # every pulse the tuner reports is one the chip counted (all of them named on failure)
    differ = [
        (d["row"], d["col"], d["outcome"], d["pulses"], int(pulses[d["row"], d["col"]]))
        for d in per
        if d["pulses"] != pulses[d["row"], d["col"]]
    ]
    assert not differ, f"(row, col, outcome, reported, counted by the chip): {differ}"
    print(
        f"CLI over TCP: within 1 % by truth {ok[functional].mean():.4f}, by own reads "
        f"{report['pass_rate_own']:.4f}, pulses mean {pulses[functional].mean():.1f}, round "
        f"trips per device {np.mean([d['round_trips'] for d in per]):.0f}"
    )
    # the level the array tuner reaches (tests/tuning/test_array.py: FLOOR), not the
    # issue's 97 %, which stays open
    assert ok[functional].mean() >= 0.93
