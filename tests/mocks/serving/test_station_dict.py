"""The station file an emulated bench writes reaches every instrument as configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvmlab.errors import SafetyLimitError
from nvmlab.instruments.station import Station, StationConfig, load_station_file
from nvmlab.mocks.benchfile import BenchConfig
from nvmlab.mocks.cli import toml_dumps
from nvmlab.mocks.emulated import build_emulated_bench


def test_a_watlow_at_a_non_default_modbus_address_is_reachable_from_the_station_file() -> None:
    config = BenchConfig.from_dict(
        {"bench": {"rows": 4, "cols": 4}, "chamber": {"model": "watlow_f4", "address": 7}}
    )
    emulated = build_emulated_bench(config)
    try:
        station_dict = emulated.station_dict()
        assert station_dict["instruments"]["chamber"]["options"] == {"address": 7}
        StationConfig.from_dict(station_dict)  # validates
        with Station(
            station_dict, visa_library=emulated.visa_library(), clock=emulated.clock
        ) as station:
            station.chamber.set_setpoint(30.0)
            assert station.chamber.setpoint() == 30.0
    finally:
        emulated.close()


def _documented_eflash_session(station: Station, row: int, col: int) -> list[float]:
    """Read, program, read, erase, read cell (row, col) with the biases of
    docs/probe-board.md and devices.md: bit line 1 V on SMU A (word line 1.5 V, control gate
    2.5 V, source 0 V); program 4.5 V on the source line for 10 us; erase 10 V on the
    erase gate for 1 ms. Returns the three cell currents (A)."""
    board, smu = station.board, station.smu
    board.select(row, col)
    board.set_eflash_biases(control_gate_v=2.5, erase_gate_v=0.0, source_v=0.0)
    smu.configure(current_limit_a=1e-5, nplc=1.0)
    smu.set_voltage(1.0)
    smu.output(True)
    currents = [smu.measure_current()]
    smu.output(False)
    board.write_pulse(row, col, 4.5, 1e-5)
    smu.output(True)
    currents.append(smu.measure_current())
    smu.output(False)
    board.write_pulse(row, col, -10.0, 1e-3)
    smu.output(True)
    currents.append(smu.measure_current())
    smu.output(False)
    return currents


def test_an_eflash_bench_station_works_at_the_documented_biases_out_of_the_box(
    tmp_path: Path,
) -> None:
    """The station an eFlash bench writes (dict and TOML file) admits the documented read,
    program and erase biases: no SafetyLimitError, and the cell reads what it is."""
    emulated = build_emulated_bench(rows=4, cols=4, seed=2, array="eflash")
    try:
        station_dict = emulated.station_dict()
        path = tmp_path / "station.toml"
        path.write_text(toml_dumps(station_dict))
        for source in (station_dict, load_station_file(path)):
            with Station(
                source, visa_library=emulated.visa_library(), clock=emulated.clock
            ) as station:
                expected = float(emulated.ground_truth()["cell_current_a"][1, 2])
                fresh, programmed, erased = _documented_eflash_session(station, 1, 2)
                assert fresh == pytest.approx(expected, rel=0.05)
                assert programmed < 0.5 * fresh  # program raises Vth: less current
                assert erased > 2 * programmed  # erase lowers it again
    finally:
        emulated.close()


def test_an_eflash_station_still_refuses_what_the_board_cannot_take() -> None:
    emulated = build_emulated_bench(rows=2, cols=2, array="eflash")
    try:
        with Station(
            emulated.station_dict(), visa_library=emulated.visa_library(), clock=emulated.clock
        ) as station:
            limits = station.limits
            with pytest.raises(SafetyLimitError):
                station.smu.set_voltage(limits.max_read_v + 0.5)
            with pytest.raises(SafetyLimitError):
                station.board.write_pulse(0, 0, -(limits.max_eflash_v + 1.0), 1e-3)
    finally:
        emulated.close()


def test_a_memristor_bench_station_keeps_the_default_limits() -> None:
    emulated = build_emulated_bench(rows=2, cols=2)
    try:
        assert "limits" not in emulated.station_dict()
    finally:
        emulated.close()
