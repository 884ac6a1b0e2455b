"""The array-board role: routing seen on the emulated bench, limits checked before sending."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.drivers.probe_board import ProbeBoard
from nvmlab.drivers.testing import expected_protocol
from nvmlab.errors import SafetyLimitError
from nvmlab.instruments.boards import make_array_board
from nvmlab.instruments.roles import ArrayBoard
from nvmlab.instruments.safety import SafetyLimits

LIMITS = SafetyLimits(max_read_v=0.3, max_write_v=2.0, max_pulse_width_s=1e-2, max_eflash_v=10.0)


def modes(lines) -> list[str]:  # type: ignore[no-untyped-def]
    return [line.mode for line in lines]


def test_select_with_tracking_lines_routes_the_device_alone(
    emulated_station, emulated_bench
) -> None:  # type: ignore[no-untyped-def]
    board = emulated_station.board
    assert isinstance(board, ArrayBoard)
    assert (board.rows, board.cols) == (8, 8)
    board.select(3, 4, unselected="track")
    bench = emulated_bench.bench
    assert bench.rows_state[3].mode == "smu" and bench.cols_state[4].mode == "gnd"
    assert modes(bench.cols_state[:4]) == ["track"] * 4
    assert modes(bench.rows_state[:3]) == ["gnd"] * 3


def test_row_voltages_drive_every_row_dac(emulated_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    volts = np.linspace(-0.2, 0.2, 8)
    emulated_station.board.set_row_voltages(volts)
    rows = emulated_bench.bench.rows_state
    assert modes(rows) == ["dac"] * 8
    assert [r.volts for r in rows] == pytest.approx(volts)


def test_a_write_pulse_reaches_the_chip_and_lines_return(emulated_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    bench = emulated_bench.bench
    start = emulated_bench.clock.now()
    emulated_station.board.write_pulse(2, 5, 1.5, 1e-3, scheme="v/3")
    assert bench.max_applied_v["board"] == pytest.approx(1.5)
    assert emulated_bench.clock.now() - start >= 1e-3
    assert modes(bench.rows_state) == ["gnd"] * 8


def test_ground_all_after_any_routing(emulated_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    board = emulated_station.board
    board.set_line("row", 1, "dac", 0.25)
    board.set_line("col", 6, "smu-b")
    board.set_line("col", 7, "float")
    board.ground_all()
    bench = emulated_bench.bench
    assert modes(bench.rows_state) + modes(bench.cols_state) == ["gnd"] * 16


@pytest.mark.nvmlab_bench(array="eflash", rows=8, cols=8)
def test_eflash_biases_are_applied_on_an_eflash_board(emulated_station, emulated_bench) -> None:  # type: ignore[no-untyped-def]
    emulated_station.board.set_eflash_biases(control_gate_v=2.5, erase_gate_v=0.0, source_v=0.5)
    bench = emulated_bench.bench
    assert (bench.control_gate_v, bench.erase_gate_v, bench.source_v) == (2.5, 0.0, 0.5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda b: b.write_pulse(0, 0, 2.5, 1e-3),
            r"write pulse amplitude 2.5 V exceeds .* write limit of \+-2 V",
        ),
        (lambda b: b.write_pulse(0, 0, -2.01, 1e-3), "exceeds the station's write limit"),
        (lambda b: b.write_pulse(0, 0, 1.0, 0.5), r"pulse width 0.5 s is outside \(0, 0.01\] s"),
        (
            lambda b: b.set_line("row", 2, "dac", 0.4),
            "DAC voltage of row 2 0.4 V exceeds the station's read limit",
        ),
        (lambda b: b.set_row_voltages([0.1] * 7 + [0.5]), "row 7 voltage 0.5 V exceeds"),
        (
            lambda b: b.set_eflash_biases(control_gate_v=11.0, erase_gate_v=0, source_v=0),
            "control-gate bias 11 V",
        ),
        (lambda b: b.write_pulse(0, 0, float("nan"), 1e-3), "not a finite number"),
    ],
)
def test_over_limit_requests_raise_and_send_nothing(call, message: str) -> None:  # type: ignore[no-untyped-def]
    # The only exchange allowed is the one-time CONF? that tells the array size and kind.
    with expected_protocol(ProbeBoard, [("CONF?", "MEMRISTOR,8,8")]) as driver:
        board = make_array_board(driver, LIMITS)
        _ = board.rows
        with pytest.raises(SafetyLimitError, match=message):
            call(board)
        assert driver.transport.sent == [b"CONF?\n"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.select(8, 0), r"row 8 is outside 0..7 of this 8x8 array"),
        (lambda b: b.write_pulse(0, 9, 1.0, 1e-3), r"column 9 is outside 0..7"),
        (
            lambda b: b.select(0, 0, unselected="v/2"),
            "read scheme for unselected lines 'v/2' is not one of ground, float, track",
        ),
        (
            lambda b: b.write_pulse(0, 0, 1.0, 1e-3, scheme="track"),
            "write scheme 'track' is not one of v/2, v/3, ground, float",
        ),
        (lambda b: b.set_row_voltages([0.1] * 4), "expected 8 row voltages"),
    ],
)
def test_malformed_requests_raise_and_send_nothing(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with expected_protocol(ProbeBoard, [("CONF?", "MEMRISTOR,8,8")]) as driver:
        board = make_array_board(driver, LIMITS)
        _ = board.kind
        with pytest.raises(ValueError, match=message):
            call(board)
        assert driver.transport.sent == [b"CONF?\n"]


def test_eflash_pulses_use_the_eflash_limit_not_the_memristor_write_limit() -> None:
    with expected_protocol(
        ProbeBoard, [("CONF?", "EFLASH,8,8"), ("PULSE 1,1,8,0.001,V2", "OK")]
    ) as driver:
        board = make_array_board(driver, LIMITS)
        board.write_pulse(1, 1, 8.0, 1e-3)
        with pytest.raises(SafetyLimitError, match="eFlash pulse amplitude 10.5 V"):
            board.write_pulse(1, 1, 10.5, 1e-3)


def test_the_read_scheme_is_sent_only_when_it_changes() -> None:
    with expected_protocol(
        ProbeBoard,
        [
            ("CONF?", "MEMRISTOR,8,8"),
            ("READ:SCHEME TRACK", "OK"),
            ("SEL 0,0", "OK"),
            ("SEL 0,1", "OK"),
            ("READ:SCHEME GND", "OK"),
            ("SEL 0,2", "OK"),
        ],
    ) as driver:
        board = make_array_board(driver, LIMITS)
        board.select(0, 0, unselected="track")
        board.select(0, 1, unselected="track")
        board.select(0, 2)
