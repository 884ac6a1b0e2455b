"""Acceptance walkthrough of ``nvmlab emulate``: files and ports it cannot use are refused
with one line before anything is served, a bench file's device parameters are named as
the technician wrote them, and a station file written for an accelerated bench makes the
station's chamber waits run on the emulated time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nvmlab.cli import main
from nvmlab.clock import ScaledClock
from nvmlab.errors import ConfigError
from nvmlab.instruments.station import Station, load_station_file

SMALL = ["emulate", "--rows", "4", "--cols", "4"]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_state_file_in_a_missing_folder_is_refused_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "no-such-folder" / "chip.npz"
    assert main([*SMALL, "--state-file", str(state)]) == 1
    line = one_line_error(capsys)
    assert "--state-file" in line and str(state) in line and "writable folder" in line


def test_a_port_already_in_use_names_the_port_and_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        if port > 65533:
            pytest.fail(f"the OS gave port {port}; --port-base allows up to 65533")
        assert main([*SMALL, "--port-base", str(port)]) == 1
    line = one_line_error(capsys)
    assert f"127.0.0.1:{port}" in line and "--port-base" in line and "in use" in line


def test_an_unwritable_station_out_is_one_line_and_the_bench_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "station.toml"
    assert main([*SMALL, "--station-out", str(target)]) == 1
    line = one_line_error(capsys)
    assert "--station-out" in line and str(target) in line


def test_a_typo_in_the_physics_table_is_named_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = tmp_path / "bench.toml"
    bench.write_text("[physics]\ntreshold_cv = 0.25\n")
    assert main([*SMALL, "--bench", str(bench)]) == 1
    line = one_line_error(capsys)
    assert f"{bench}: physics.treshold_cv: unknown parameter 'treshold_cv'" in line
    assert "threshold_cv" in line.split("allowed parameters:")[1]


def test_station_time_scale_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nname = "x"\ntime_scale = 0\n[instruments.smu]\ndriver = "keithley2400"\n'
        'resource = "TCPIP::127.0.0.1::5025::SOCKET"\n'
    )
    with pytest.raises(ConfigError, match=r"station\.time_scale: must be > 0"):
        load_station_file(path)


@pytest.mark.tcp
def test_an_accelerated_bench_soaks_in_emulated_time_through_its_station_file(
    tmp_path: Path,
) -> None:
    """The README's station snippet against `nvmlab emulate --time-scale 60`: a chamber
    step and a 120 s soak take seconds, not minutes."""
    station_file = tmp_path / "station.toml"
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "nvmlab.cli", *SMALL, "--time-scale", "60",
         "--station-out", str(station_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for _ in range(3):  # smu, chamber, board lines: the station file is written
            assert proc.stdout.readline().split()[0] in ("smu", "chamber", "board")
        assert load_station_file(station_file).time_scale == 60.0
        with Station.from_file(station_file) as station:
            assert isinstance(station.clock, ScaledClock) and station.clock.time_scale == 60.0
            wall = time.monotonic()
            start = station.clock.now()
            station.chamber.set_setpoint(30.0)
            reached = station.chamber.wait_until_stable(
                tolerance_c=0.3, consecutive=3, soak_time_s=120
            )
            emulated_s = station.clock.now() - start
            wall_s = time.monotonic() - wall
        # 5 C at 3 C/min plus the air's lag, then the soak: minutes of emulated time ...
        assert abs(reached - 30.0) < 0.5
        assert emulated_s > 120 + 100
        # ... in seconds of wall time (60 x faster).
        assert wall_s < emulated_s / 30
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
