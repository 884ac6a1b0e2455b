"""A station accepts only the instruments it names: each identity is checked against its
driver when the station opens (``Station`` and ``nvmlab station check`` alike).

Two mistakes a technician makes: the SMU entry pointing at the probe board's port, and a
driver of the wrong model (``keithley2636b`` on a 2400). Both used to report OK. The
failure names the file and field, the expected model, what answered and where.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nvmlab.cli import main
from nvmlab.clock import VirtualClock
from nvmlab.instruments.identity import identity_problem
from nvmlab.instruments.station import Station, StationError, StationFileError
from nvmlab.instruments.stationfile import StationConfig
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench


@pytest.fixture
def bench() -> Iterator[EmulatedBench]:
    emulated = build_emulated_bench(rows=8, cols=8, seed=1, clock=VirtualClock())
    try:
        yield emulated
    finally:
        emulated.close()


def write_station(path: Path, data: dict[str, Any]) -> Path:
    """``data`` (a station dict) as a TOML station file."""
    lines = [f'[station]\nname = "{data["station"]["name"]}"\n']
    for role, entry in data["instruments"].items():
        lines.append(f"[instruments.{role}]")
        for key, value in entry.items():
            if isinstance(value, dict):
                continue
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def open_fails(data: dict[str, Any], bench: EmulatedBench, *, source: str = "<dict>") -> str:
    config = StationConfig.from_dict(data, source=source)
    station = Station(config, visa_library=bench.visa_library(), clock=bench.clock)
    with pytest.raises(StationError) as info:
        station.open()
    assert not station.is_open
    return str(info.value)


# -- in-process ---------------------------------------------------------------------------
def test_the_smu_entry_on_the_probe_boards_port_is_refused(bench: EmulatedBench) -> None:
    data = bench.station_dict()
    board = data["instruments"]["board"]["resource"]
    data["instruments"]["smu"]["resource"] = board
    message = open_fails(data, bench)
    assert re.search(
        r"<dict>: instruments\.smu: expected a Keithley 2400, but "
        r"'NVMLAB,PROBE-BOARD,[^']*' answered at " + re.escape(board),
        message,
    ), message


def test_a_2636b_driver_on_a_2400_is_refused(bench: EmulatedBench) -> None:
    data = bench.station_dict()
    data["instruments"]["smu"]["driver"] = "keithley2636b"
    message = open_fails(data, bench)
    assert re.search(
        r"instruments\.smu: expected a Keithley 2636B, but "
        r"'KEITHLEY INSTRUMENTS INC\.,MODEL 2400,[^']*' answered at TCPIP0::",
        message,
    ), message


def test_the_board_entry_on_the_smus_port_is_refused(bench: EmulatedBench) -> None:
    data = bench.station_dict()
    data["instruments"]["board"]["resource"] = data["instruments"]["smu"]["resource"]
    message = open_fails(data, bench)
    assert re.search(
        r"instruments\.board: expected a probe board, but 'KEITHLEY INSTRUMENTS INC\.,MODEL 2400",
        message,
    ), message


def test_an_espec_driver_on_the_boards_port_is_refused(bench: EmulatedBench) -> None:
    # The board answers TYPE? and ROM? with its own error line, not with a chamber model.
    data = bench.station_dict()
    data["instruments"]["chamber"]["resource"] = data["instruments"]["board"]["resource"]
    data["instruments"]["chamber"]["timeout_s"] = 0.5
    message = open_fails(data, bench)
    assert re.search(r"instruments\.chamber: expected an Espec chamber, but .*ERR", message), (
        message
    )


def test_a_watlow_driver_on_an_espec_is_refused() -> None:
    # Modbus RTU frames to an ASCII controller: what comes back is no Modbus reply.
    emulated = build_emulated_bench(rows=8, cols=8, seed=1, clock=VirtualClock())
    try:
        data = emulated.station_dict()
        data["instruments"]["chamber"]["driver"] = "watlow_f4"
        data["instruments"]["chamber"]["timeout_s"] = 0.5
        message = open_fails(data, emulated)
    finally:
        emulated.close()
    assert "instruments.chamber: expected a Watlow F4 chamber, but " in message, message


def test_check_reports_the_wrong_instrument_and_keeps_the_right_ones(bench: EmulatedBench) -> None:
    data = bench.station_dict()
    data["instruments"]["smu"]["driver"] = "keysight_b2902a"
    station = Station(data, visa_library=bench.visa_library(), clock=bench.clock)
    try:
        statuses = {s.role: s for s in station.check()}
    finally:
        station.close(safe=False)
    assert not statuses["smu"].ok
    assert "expected a Keysight B2902A" in statuses["smu"].status
    assert statuses["smu"].identity.startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2400")
    assert statuses["chamber"].ok and statuses["board"].ok


def test_the_wrong_instrument_is_sent_nothing_but_the_identity_query(
    bench: EmulatedBench, tmp_path: Path
) -> None:
    # No reset, no safe state: a wrong instrument must not be driven at all.
    data = bench.station_dict()
    data["instruments"]["smu"]["driver"] = "keithley2636b"
    station = Station(
        data, visa_library=bench.visa_library(), clock=bench.clock, record_to=tmp_path
    )
    with pytest.raises(StationError):
        station.open()
    sent = [line for line in (tmp_path / "smu.jsonl").read_text().splitlines() if '"write"' in line]
    assert len(sent) == 1 and "*IDN?" in sent[0]


@pytest.mark.parametrize(
    ("model", "identity", "ok"),
    [
        ("keithley2400", "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4107712,C30", True),
        ("keithley2400", "KEITHLEY INSTRUMENTS INC.,MODEL 2401,4107712,C30", False),
        ("keithley2636b", "Keithley Instruments Inc., Model 2636B, 4480001, 4.0.4", True),
        ("keysight_b2902a", "Keysight Technologies,B2902A,MY51140001,3.4.2011.5100", True),
        ("espec", "ESPEC T,P300,180.0 ROM P300 Ver.1.20", True),
        ("espec", 'ESPEC ERR 1,"TYPE?: unknown command" ROM ERR 1,"ROM?"', False),
        ("espec", "ESPEC NA:CMD ERR ROM NA:CMD ERR", False),
        ("watlow_f4", "Watlow F4 model 5270 software 1.02, Modbus address 1", True),
        ("watlow_f4", "Watlow F4 model 1234 software 1.02, Modbus address 1", False),
        ("probe_board", "NVMLAB,PROBE-BOARD,PB-000001,1.0", True),
        ("probe_board", "", False),
    ],
)
def test_identity_rules(model: str, identity: str, ok: bool) -> None:
    assert (identity_problem(model, identity) is None) is ok


# -- over TCP, through Station and through nvmlab station check ---------------------------
def test_over_tcp_a_wrong_model_fails_the_station_and_the_check(
    bench: EmulatedBench, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with bench.serve_tcp() as tcp:
        data = bench.station_dict(tcp.resources)
        data["instruments"]["smu"]["driver"] = "keithley2636b"
        smu = tcp.resources["smu"]
        path = write_station(tmp_path / "station.toml", data)

        station = Station.from_file(path)
        with pytest.raises(StationError) as info:
            station.open()
        assert (
            f"{path}: instruments.smu: expected a Keithley 2636B, but "
            "'KEITHLEY INSTRUMENTS INC.,MODEL 2400," in str(info.value)
        )
        assert f"answered at {smu}" in str(info.value)

        capsys.readouterr()
        assert main(["station", "check", str(path)]) == 1
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("smu"))
    assert "FAILED: " in row and "expected a Keithley 2636B" in row and "MODEL 2400" in row
    assert "1 of 3 instruments failed: smu" in captured.err


def test_over_tcp_the_smu_entry_on_the_boards_port_fails_the_check(
    bench: EmulatedBench, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with bench.serve_tcp() as tcp:
        data = bench.station_dict(tcp.resources)
        board_port = tcp.ports["board"]
        data["instruments"]["smu"]["resource"] = f"TCPIP::127.0.0.1::{board_port}::SOCKET"
        path = write_station(tmp_path / "station.toml", data)
        assert main(["station", "check", str(path)]) == 1
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("smu"))
    assert "FAILED: " in row and "expected a Keithley 2400, but 'NVMLAB,PROBE-BOARD" in row
    assert "board" in captured.out and "all 3 instruments answered" not in captured.out


def test_a_station_file_problem_is_still_reported_before_anything_opens(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[instruments.smu]\ndriver = "keithley2401"\nresource = "COM3"\n')
    with pytest.raises(StationFileError):
        Station.from_file(path)
