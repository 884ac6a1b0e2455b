"""``nvmlab station check``: the table a technician reads, and the exit status scripts rely on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nvmlab.cli import main
from nvmlab.mocks.emulated import build_emulated_bench

NVMLAB = [sys.executable, "-P", "-c", "import sys; from nvmlab.cli import main; sys.exit(main())"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_station(path: Path, instruments: dict[str, dict[str, object]]) -> Path:
    lines = ['[station]\nname = "cli-test"\n']
    for role, entry in instruments.items():
        lines.append(f"[instruments.{role}]")
        lines += [f"{key} = {value!r}".replace("'", '"') for key, value in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_help_teaches_what_is_checked_and_the_exit_codes(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as info:
        main(["station", "check", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "STATION.toml",
        "--backend",
        "exit status",
        "2  the station file is invalid",
        "nvmlab emulate",
    ):
        assert text in out


def test_a_file_with_a_syntax_error_exits_2_with_line_and_column(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "broken.toml"
    path.write_text('[instruments.smu]\ndriver = "keithley2400\nresource = "GPIB0::24::INSTR"\n')
    assert main(["station", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "broken.toml" in err and "line 2" in err


def test_an_unknown_driver_and_absurd_limits_exit_2_listing_both(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.toml"
    path.write_text(
        '[limits]\nmax_write_v = 50\n[instruments.smu]\ndriver = "keithley2401"\nresource = "GPIB0::24::INSTR"\n'
    )
    assert main(["station", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "limits.max_write_v: 50 V is outside the sane range (0, 20] V" in err
    assert (
        "instruments.smu.driver: unknown driver 'keithley2401'; allowed: espec, keithley2400" in err
    )


def test_an_unreachable_instrument_is_a_failed_row_and_exit_1(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    emulated = build_emulated_bench(rows=8, cols=8)
    try:
        port = closed_port()
        path = write_station(
            tmp_path / "station.toml",
            {
                "chamber": {"driver": "espec", "resource": emulated.serial_urls()["chamber"]},
                "board": {
                    "driver": "probe_board",
                    "resource": f"socket://127.0.0.1:{port}",
                    "timeout_s": 1.0,
                },
            },
        )
        assert main(["station", "check", str(path)]) == 1
    finally:
        emulated.close()
    captured = capsys.readouterr()
    rows = {
        line.split()[0]: line
        for line in captured.out.splitlines()
        if line.split()[:1] in (["chamber"], ["board"])
    }
    assert "ESPEC" in rows["chamber"] and rows["chamber"].rstrip().endswith("OK")
    assert "FAILED" in rows["board"] and f"127.0.0.1:{port}" in rows["board"]
    assert f"1 of 2 instruments failed: board (socket://127.0.0.1:{port})" in captured.err


def test_every_instrument_served_over_tcp_answers(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    emulated = build_emulated_bench(rows=8, cols=8, chamber_model="watlow_f4")
    try:
        with emulated.serve_tcp() as tcp:
            data = emulated.station_dict(tcp.resources)
            path = write_station(tmp_path / "tcp.toml", data["instruments"])
            assert main(["station", "check", str(path), "--backend", "@py"]) == 0
    finally:
        emulated.close()
    out = capsys.readouterr().out
    assert "role" in out and "identity" in out and "status" in out
    assert "MODEL 2400" in out and "Watlow F4 model 5270" in out and "PROBE-BOARD" in out
    assert "all 3 instruments answered" in out


@pytest.mark.tcp
def test_station_check_against_nvmlab_emulate_in_other_processes(tmp_path: Path) -> None:
    station_file = tmp_path / "served.toml"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    emulator = subprocess.Popen(
        [*NVMLAB, "emulate", "--rows", "8", "--cols", "8", "--station-out", str(station_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not station_file.exists() or "board" not in station_file.read_text():
            assert emulator.poll() is None, emulator.stderr.read() if emulator.stderr else ""
            assert time.monotonic() < deadline, "nvmlab emulate did not write its station file"
            time.sleep(0.05)
        check = subprocess.run(
            [*NVMLAB, "station", "check", str(station_file)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert (
            "MODEL 2400" in check.stdout
            and "ESPEC" in check.stdout
            and "PROBE-BOARD" in check.stdout
        )
        bad = tmp_path / "bad.toml"
        bad.write_text(station_file.read_text().replace('driver = "espec"', 'driver = "espek"'))
        failed = subprocess.run(
            [*NVMLAB, "station", "check", str(bad)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert failed.returncode == 2
        assert "unknown driver 'espek'" in failed.stderr
    finally:
        emulator.send_signal(signal.SIGINT)
        try:
            emulator.wait(timeout=15)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[limits]\nmax_current_a = -1e-3\n[instruments.smu]\ndriver = "keithley2400"\n'
            'resource = "GPIB0::24::INSTR"\n',
            "limits.max_current_a: -0.001 A is outside the sane range (0, 1] A",
        ),
        (
            '[limits]\nmax_pulse_width_s = 3600\n[instruments.smu]\ndriver = "keithley2400"\n'
            'resource = "GPIB0::24::INSTR"\n',
            "limits.max_pulse_width_s: 3600 s is outside the sane range (0, 10] s",
        ),
        (
            '[instruments.board]\ndriver = "probe_board"\nresource = "socket://bench-pc"\n',
            "instruments.board.resource: 'socket://bench-pc' needs 'socket://HOST:PORT'",
        ),
        (
            '[instruments.chamber]\ndriver = "espec"\nresource = "COM3"\nsafe_setpoint_c = 400\n',
            "instruments.chamber.safe_setpoint_c: 400 C is outside",
        ),
    ],
)
def test_bad_limits_and_resources_exit_2_naming_file_field_and_allowed(
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
    body: str,
    expected: str,
) -> None:
    path = tmp_path / "bench.toml"
    path.write_text(body)
    assert main(["station", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bench.toml" in err and expected in err, err


def test_a_missing_station_file_exits_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["station", "check", str(tmp_path / "nowhere.toml")]) == 2
    assert "nowhere.toml" in capsys.readouterr().err
