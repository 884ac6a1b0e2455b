"""Every driver, unchanged, on every way of reaching the emulated bench.

Six drivers x {in-process, loopback TCP}, through the real I/O stacks: pyvisa with the
in-process library or pyvisa-py (``TCPIP::...::SOCKET``, ``ASRLsocket://...::INSTR``) and
pyserial (``nvmlab://`` and ``socket://``). Each case opens a station holding that one
instrument, identifies it and does real work through its role; the effect is checked on
the emulated world itself (currents from the chip, the chamber's air, the board's lines).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from nvmlab.instruments.roles import ArrayBoard, Chamber, SourceMeter
from nvmlab.instruments.station import Station
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.physics.resistor import ResistorArray

ROW, COL = 2, 5
G_SELECTED_S = 50e-6

#: driver -> (role, emulator model, identity prefix)
DRIVERS = {
    "keithley2400": ("smu", "keithley2400", "KEITHLEY INSTRUMENTS INC.,MODEL 2400"),
    "keithley2636b": ("smu", "keithley2636b", "Keithley Instruments Inc., Model 2636B"),
    "keysight_b2902a": ("smu", "keysight_b2902a", "Keysight Technologies,B2902A"),
    "espec": ("chamber", "espec", "ESPEC"),
    "watlow_f4": ("chamber", "watlow_f4", "Watlow F4 model"),
    "probe_board": ("board", "probe_board", "NVMLAB,PROBE-BOARD"),
}
#: How the instrument is reached: (where, I/O stack).
WAYS = {
    "smu": [("in-process", "visa"), ("tcp", "visa")],
    "chamber": [
        ("in-process", "visa"),
        ("in-process", "serial"),
        ("tcp", "visa"),
        ("tcp", "serial"),
    ],
    "board": [("in-process", "visa"), ("in-process", "serial"), ("tcp", "visa"), ("tcp", "serial")],
}
CASES = [
    pytest.param(driver, where, stack, id=f"{driver}-{where}-{stack}")
    for driver, (role, _, _) in DRIVERS.items()
    for where, stack in WAYS[role]
]


def emulated(driver: str) -> EmulatedBench:
    role, model, _ = DRIVERS[driver]
    g = np.full((8, 8), 20e-6)
    g[ROW, COL] = G_SELECTED_S
    options = {"smu": "smu_model", "chamber": "chamber_model"}
    extra = {options[role]: model} if role in options else {}
    bench = build_emulated_bench(rows=8, cols=8, array=ResistorArray(g), **extra)
    bench.preselect(ROW, COL)
    return bench


@contextmanager
def one_instrument_station(
    bench: EmulatedBench, role: str, where: str, stack: str
) -> Iterator[Station]:
    def station(resources: dict[str, str], visa_library: object) -> Station:
        data = bench.station_dict({role: resources[role]})
        return Station(data, visa_library=visa_library, clock=bench.clock)

    if where == "in-process":
        resources = bench.resources() if stack == "visa" else bench.serial_urls()
        with station(resources, bench.visa_library()) as opened:
            yield opened
        return
    with bench.serve_tcp() as tcp:
        resources = tcp.resources if stack == "visa" else tcp.serial_urls
        assert resources[role].startswith(
            {"visa": ("TCPIP::", "ASRLsocket://"), "serial": ("socket://",)}[stack]
        )
        with station(resources, "@py") as opened:
            yield opened


def exercise_smu(smu: SourceMeter, bench: EmulatedBench) -> None:
    volts = np.linspace(-0.2, 0.2, 9)
    smu.configure(current_limit_a=1e-3, nplc=0.01)
    np.testing.assert_allclose(smu.list_sweep(volts), G_SELECTED_S * volts, rtol=3e-3, atol=2e-9)
    smu.set_voltage(0.1)
    smu.output(True)
    assert smu.measure_current() == pytest.approx(G_SELECTED_S * 0.1, rel=3e-3)
    assert bench.bench.terminal_v["A"] == pytest.approx(0.1)
    reads = smu.pulse_train(0.4, 1e-3, 2, v_read=0.1)
    np.testing.assert_allclose(reads, G_SELECTED_S * 0.1, rtol=3e-3)


def exercise_chamber(chamber: Chamber, bench: EmulatedBench) -> None:
    chamber.set_setpoint(35.0)
    assert chamber.setpoint() == pytest.approx(35.0)
    settled = chamber.wait_until_stable(
        tolerance_c=0.5, consecutive=3, poll_interval_s=30.0, soak_time_s=60.0
    )
    assert settled == pytest.approx(35.0, abs=0.5)
    assert bench.bench.thermal.air_c == pytest.approx(35.0, abs=0.5)


def exercise_board(board: ArrayBoard, bench: EmulatedBench) -> None:
    assert (board.rows, board.cols) == (8, 8)
    board.select(3, 4, unselected="ground")
    board.set_row_voltages(np.linspace(0.0, 0.21, 8))
    assert [line.volts for line in bench.bench.rows_state] == pytest.approx(np.linspace(0, 0.21, 8))
    board.write_pulse(3, 4, 1.2, 1e-3)
    assert bench.bench.max_applied_v["board"] == pytest.approx(1.2)
    board.ground_all()
    assert {line.mode for line in (*bench.bench.rows_state, *bench.bench.cols_state)} == {"gnd"}


@pytest.mark.parametrize(("driver", "where", "stack"), CASES)
def test_each_driver_works_through_its_role_on_each_way_to_the_bench(
    driver: str, where: str, stack: str
) -> None:
    role, _, identity = DRIVERS[driver]
    bench = emulated(driver)
    try:
        with one_instrument_station(bench, role, where, stack) as station:
            assert station.identities[role].startswith(identity)
            protocol = {"smu": SourceMeter, "chamber": Chamber, "board": ArrayBoard}[role]
            assert isinstance(station.roles[role], protocol)
            exercise = {"smu": exercise_smu, "chamber": exercise_chamber, "board": exercise_board}
            exercise[role](station.roles[role], bench)
    finally:
        bench.close()
