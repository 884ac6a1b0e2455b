"""Ground truth from a state file: what a bench served in another process really holds."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import serial

import nvmlab.mocks
from nvmlab.errors import ConfigError
from nvmlab.mocks import read_ground_truth
from nvmlab.mocks.emulated import build_emulated_bench
from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.state import load_state_file, save_state_file
from nvmlab.mocks.truth import register

READ_V = 0.2
READS = 200


def pulse(port: serial.Serial, row: int, col: int, amplitude_v: float, width_s: float) -> None:
    port.write(f"PULSE {row},{col},{amplitude_v},{width_s}\n".encode())
    assert port.readline() == b"OK\n"


def assert_same_truth(live: dict, saved: dict) -> None:
    for key, value in live.items():
        np.testing.assert_array_equal(saved[key], value, err_msg=key)


@pytest.mark.parametrize("array", ["memristor", "eflash"])
def test_the_state_file_alone_gives_the_live_benchs_truth(tmp_path: Path, array: str) -> None:
    state = tmp_path / "chip.npz"
    emulated = build_emulated_bench(rows=6, cols=5, seed=3, array=array, state_file=state)
    port = serial.serial_for_url(emulated.serial_urls()["board"], timeout=1.0)
    # write pulses through the probe board's firmware, as a client would
    if array == "memristor":
        pulses = [(1, 2, 1.2, 1.1e-3), (1, 2, 1.3, 1.1e-3), (4, 0, -1.4, 1.1e-3)]
    else:
        pulses = [(1, 2, 4.5, 1e-6), (1, 2, 4.6, 1e-6), (4, 0, -10.0, 1e-3)]
    for row, col, amplitude, width in pulses:
        pulse(port, row, col, amplitude, width)
    port.close()
    live = emulated.ground_truth()
    saved = read_ground_truth(state)
    assert_same_truth(live, saved)
    assert saved["pulse_count"][1, 2] == 2 and saved["pulse_count"][4, 0] == 1
    assert saved["pulse_count"].sum() == 3
    assert isinstance(saved["clock_s"], float)
    emulated.close()


def test_a_read_at_0_2_v_through_the_bench_gives_the_truths_conductance(tmp_path: Path) -> None:
    state = tmp_path / "chip.npz"
    emulated = build_emulated_bench(rows=8, cols=8, seed=4, state_file=state)
    emulated.bench.save_state()
    truth = read_ground_truth(state)
    quiet = (truth["defect"] == 0) & (truth["rtn_amplitude_rel"] == 0)
    row, col = (int(x) for x in np.argwhere(quiet)[0])
    emulated.preselect(row, col)
    rm = emulated.resource_manager()
    smu = rm.open_resource(
        emulated.resources()["smu"], read_termination="\n", write_termination="\n"
    )
    smu.write(":SOUR:FUNC VOLT;:SOUR:VOLT 0.2;:SENS:CURR:PROT 1e-3;:SENS:CURR:NPLC 1")
    smu.write(":FORM:ELEM CURR;:OUTP ON")
    reads = np.array([float(smu.query(":READ?")) / READ_V for _ in range(READS)])
    smu.write(":OUTP OFF")
    rm.close()
    emulated.close()
    assert reads.size == READS
    g = truth["conductance_s"][row, col]
    sigma = truth["read_noise_sigma_s"][row, col]
    # single reads scatter with the truth's 1 PLC sigma (sampling error of a standard
    # deviation 1 / sqrt(2 (N - 1)), 5 % for N = 200; 4 of them) ...
    assert abs(reads.std(ddof=1) / sigma - 1) < 4 / np.sqrt(2 * (READS - 1))
    # ... and their mean is the truth's conductance within 4 standard errors of the mean
    assert abs(reads.mean() - g) < 4 * sigma / np.sqrt(READS)


def test_clock_s_is_kept_and_an_older_state_file_still_reads(tmp_path: Path) -> None:
    array = create_array("memristor", 4, 4, seed=2)
    array.save_state(tmp_path / "new.npz", clock_s=1234.5)
    assert read_ground_truth(tmp_path / "new.npz")["clock_s"] == 1234.5
    # a file as the previous version wrote it: no pulse_count, no clock_s
    arrays, meta = load_state_file(tmp_path / "new.npz", kind="memristor", rows=4, cols=4)
    del arrays["pulse_count"]
    del meta["clock_s"]
    save_state_file(tmp_path / "old.npz", arrays, meta)
    old = read_ground_truth(tmp_path / "old.npz")
    assert math.isnan(old["clock_s"])  # type: ignore[arg-type]
    np.testing.assert_array_equal(old["pulse_count"], np.zeros((4, 4)))
    np.testing.assert_array_equal(old["conductance_s"], array.ground_truth()["conductance_s"])


def test_a_missing_or_foreign_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.npz.*no chip state file"):
        read_ground_truth(tmp_path / "nothere.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a state file")
    with pytest.raises(ConfigError, match=r"junk\.npz.*cannot read chip state file"):
        read_ground_truth(tmp_path / "junk.npz")


def test_the_truth_command_writes_every_value_to_an_npz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, out = tmp_path / "chip.npz", tmp_path / "truth.npz"
    create_array("eflash", 3, 4, seed=1).save_state(state, clock_s=60.0)
    parser = argparse.ArgumentParser(prog="nvmlab")
    register(parser.add_subparsers())
    args = parser.parse_args(["truth", str(state), "--out", str(out)])
    assert args.handler(args) == 0
    expected = read_ground_truth(state)
    with np.load(out) as data:
        assert set(data.files) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(data[key], value, err_msg=key)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # without --out: a summary, one line per value
    args = parser.parse_args(["truth", str(state)])
    assert args.handler(args) == 0
    summary = capsys.readouterr().out
    assert "clock_s = 60" in summary and "vth_v: 3 x 4" in summary
    args = parser.parse_args(["truth", str(state), "--out", str(tmp_path / "no" / "t.npz")])
    with pytest.raises(ConfigError, match="--out"):
        args.handler(args)


def test_read_ground_truth_is_public_on_nvmlab_mocks() -> None:
    assert "read_ground_truth" in nvmlab.mocks.__all__
    assert nvmlab.mocks.read_ground_truth is read_ground_truth


def test_nvmlab_truth_through_the_main_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nvmlab.cli import main

    state, out = tmp_path / "chip.npz", tmp_path / "truth.npz"
    create_array("memristor", 4, 4, seed=5).save_state(state, clock_s=3.0)
    assert main(["truth", str(state), "--out", str(out)]) == 0
    with np.load(out) as data:
        assert float(data["clock_s"]) == 3.0 and data["conductance_s"].shape == (4, 4)
    capsys.readouterr()
    assert main(["truth", str(tmp_path / "missing.npz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.npz" in err[0] and "no chip state file" in err[0]
