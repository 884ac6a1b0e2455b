"""The probe board firmware: byte-exact protocol (docs/probe-board.md) and its physical effects.

The routing is checked the way a technician would: source 0.2 V on SMU terminal A and see
which currents reach it on a crossbar of known, distinct resistors.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.probe_board import ProbeBoardEmulator
from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.base import LineBias, LineSolution
from nvmlab.mocks.physics.resistor import ResistorArray, solve_linear_crossbar
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import Bench

ROWS, COLS = 8, 8
V_READ = 0.2


class RecordingArray(ResistorArray):
    """A resistor crossbar that records every stress (the bias the board applied)."""

    def __init__(self, conductance_s: np.ndarray, kind: str = "resistor") -> None:
        super().__init__(conductance_s)
        self.kind = kind
        self.stresses: list[tuple[LineBias, float]] = []
        self.pulse_bias_calls: list[tuple[int, int, float, str]] = []

    def stress(self, bias: LineBias, duration_s: float, temperature_c: float) -> bool:
        self.stresses.append((bias.copy(), duration_s))
        return False


class RecordingEflash(RecordingArray):
    """An eFlash stand-in: the array decides the pulse bias, as the real model does."""

    def __init__(self, conductance_s: np.ndarray) -> None:
        super().__init__(conductance_s, kind="eflash")

    def pulse_bias(self, row: int, col: int, amplitude_v: float, scheme: str) -> LineBias:
        self.pulse_bias_calls.append((row, col, amplitude_v, scheme))
        bias = LineBias.grounded(self.rows, self.cols)
        bias.erase_gate_v = abs(amplitude_v)
        return bias

    def solve(self, bias: LineBias, temperature_c: float, *, noise: bool = True) -> LineSolution:
        return solve_linear_crossbar(self.g, bias)


@pytest.fixture
def conductances() -> np.ndarray:
    """Distinct conductances (S): every device identifiable from its current."""
    rng = np.random.default_rng(11)
    return rng.permutation(np.linspace(10e-6, 100e-6, ROWS * COLS)).reshape(ROWS, COLS)


@pytest.fixture
def bench(conductances: np.ndarray) -> Bench:
    clock = VirtualClock()
    return Bench(RecordingArray(conductances), clock, ThermalModel(clock))


@pytest.fixture
def board(bench: Bench) -> ProbeBoardEmulator:
    return ProbeBoardEmulator(bench)


@pytest.fixture
def eflash_board() -> ProbeBoardEmulator:
    clock = VirtualClock()
    bench = Bench(RecordingEflash(np.full((4, 6), 1e-6)), clock, ThermalModel(clock))
    return ProbeBoardEmulator(bench)


def ask(board: ProbeBoardEmulator, command: str | bytes) -> bytes:
    data = command if isinstance(command, bytes) else command.encode("ascii") + b"\n"
    board.write(data)
    return board.read()


def routing(bench: Bench) -> list[tuple[str, float, str]]:
    return [(s.mode, s.volts, s.terminal) for s in (*bench.rows_state, *bench.cols_state)]


# -- identification and configuration ------------------------------------------------------
def test_identification_configuration_and_limits(board: ProbeBoardEmulator) -> None:
    assert ask(board, "*IDN?") == b"NVMLAB,PROBE-BOARD,PB-000001,1.0\n"
    assert ask(board, "CONF?") == b"RESISTOR,8,8\n"
    assert ask(board, "LIMITS?") == (
        b"DAC=-5.0000,5.0000;PULSE=5.0000;WIDTH=1.0000e-07,1.0000e+00;CG=0.0000,0.0000;"
        b"EG=0.0000,0.0000;SL=0.0000,0.0000;WL=0.0000,0.0000\n"
    )


def test_eflash_board_reports_its_kind_and_limits(eflash_board: ProbeBoardEmulator) -> None:
    assert ask(eflash_board, "CONF?") == b"EFLASH,4,6\n"
    assert ask(eflash_board, "LIMITS?") == (
        b"DAC=-5.0000,5.0000;PULSE=12.0000;WIDTH=1.0000e-07,1.0000e+00;CG=0.0000,12.0000;"
        b"EG=0.0000,14.0000;SL=0.0000,6.0000;WL=0.0000,5.0000\n"
    )


def test_keywords_are_case_insensitive_and_crlf_is_accepted(board: ProbeBoardEmulator) -> None:
    assert ask(board, b"read:scheme track\r\n") == b"OK\n"
    assert ask(board, b"Sel 2 , 5\r\n") == b"OK\n"
    assert ask(board, b"sel?\n") == b"2,5\n"
    assert ask(board, b"line? r2\n") == b"SMUA\n"


def test_empty_lines_get_no_reply_and_split_writes_are_reassembled(
    board: ProbeBoardEmulator,
) -> None:
    assert ask(board, b"\n\r\n   \n") == b""
    board.write(b"*ID")
    assert board.read() == b""
    board.write(b"N?\nCONF")
    assert board.read() == b"NVMLAB,PROBE-BOARD,PB-000001,1.0\n"
    board.write(b"?\n")
    assert board.read() == b"RESISTOR,8,8\n"


# -- read routing: state and physics --------------------------------------------------------
def test_track_scheme_routes_like_the_documented_example(board: ProbeBoardEmulator) -> None:
    assert ask(board, "READ:SCHEME TRACK") == b"OK\n"
    assert ask(board, "READ:SCHEME?") == b"TRACK\n"
    assert ask(board, "SEL 3,4") == b"OK\n"
    assert ask(board, "SEL?") == b"3,4\n"
    assert ask(board, "LINE? R3") == b"SMUA\n"
    assert ask(board, "LINE? C4") == b"GND\n"
    assert ask(board, "LINE? C0") == b"TRACK\n"
    assert ask(board, "LINE? R0") == b"GND\n"
    assert ask(board, "STAT?") == b"SEL=3,4;READ=TRACK;COL=GND;WRITE=V2;TEMP=25.0\n"


def test_track_scheme_reads_the_selected_device_alone(
    board: ProbeBoardEmulator, bench: Bench, conductances: np.ndarray
) -> None:
    ask(board, "READ:SCHEME TRACK")
    for row, col in [(0, 0), (3, 4), (7, 2)]:
        assert ask(board, f"SEL {row},{col}") == b"OK\n"
        reading = bench.source("A", V_READ, 1e-3)
        assert reading.amps == pytest.approx(V_READ * conductances[row, col], rel=1e-9)


def test_ground_scheme_with_one_channel_reads_the_whole_row(
    board: ProbeBoardEmulator, bench: Bench, conductances: np.ndarray
) -> None:
    assert ask(board, "SEL 5,1") == b"OK\n"
    reading = bench.source("A", V_READ, 1e-3)
    assert reading.amps == pytest.approx(V_READ * conductances[5].sum(), rel=1e-9)
    assert reading.amps > 3 * V_READ * conductances[5, 1]


def test_two_channel_read_puts_the_selected_device_alone_on_terminal_b(
    board: ProbeBoardEmulator, bench: Bench, conductances: np.ndarray
) -> None:
    assert ask(board, "READ:COL SMUB") == b"OK\n"
    assert ask(board, "READ:COL?") == b"SMUB\n"
    assert ask(board, "SEL 2,6") == b"OK\n"
    assert ask(board, "LINE? C6") == b"SMUB\n"
    bench.set_terminal("B", 0.0)
    bench.source("A", V_READ, 1e-3)
    currents = bench.terminal_currents()
    # The device current flows out of the column into terminal B.
    assert -currents["B"] == pytest.approx(V_READ * conductances[2, 6], rel=1e-9)
    assert currents["A"] == pytest.approx(V_READ * conductances[2].sum(), rel=1e-9)


def test_floating_scheme_adds_sneak_currents_matching_a_nodal_solve(
    board: ProbeBoardEmulator, bench: Bench, conductances: np.ndarray
) -> None:
    assert ask(board, "READ:SCHEME FLOAT") == b"OK\n"
    assert ask(board, "SEL 4,4") == b"OK\n"
    assert ask(board, "LINE? R0") == b"FLOAT\n"
    assert ask(board, "LINE? C0") == b"FLOAT\n"
    reading = bench.source("A", V_READ, 1e-3)
    # Independent check: every line floating except row 4 (0.2 V) and column 4 (0 V).
    row_v, col_v = np.full(ROWS, np.nan), np.full(COLS, np.nan)
    row_v[4], col_v[4] = V_READ, 0.0
    expected = solve_linear_crossbar(conductances, LineBias(row_v, col_v)).row_i[4]
    assert reading.amps == pytest.approx(expected, rel=1e-9)
    assert reading.amps > 1.2 * V_READ * conductances[4, 4]


def test_changing_the_scheme_reapplies_the_selection(
    board: ProbeBoardEmulator, bench: Bench, conductances: np.ndarray
) -> None:
    ask(board, "SEL 1,3")
    whole_row = bench.source("A", V_READ, 1e-3).amps
    assert ask(board, "READ:SCHEME TRACK") == b"OK\n"
    alone = bench.source("A", V_READ, 1e-3).amps
    assert whole_row == pytest.approx(V_READ * conductances[1].sum(), rel=1e-9)
    assert alone == pytest.approx(V_READ * conductances[1, 3], rel=1e-9)


def test_preselect_is_the_python_form_of_a_track_selection(
    board: ProbeBoardEmulator, bench: Bench, conductances: np.ndarray
) -> None:
    board.preselect(6, 0)
    assert ask(board, "SEL?") == b"6,0\n"
    assert ask(board, "READ:SCHEME?") == b"TRACK\n"
    assert bench.source("A", V_READ, 1e-3).amps == pytest.approx(
        V_READ * conductances[6, 0], rel=1e-9
    )
    with pytest.raises(ValueError, match="outside the 8x8 array"):
        board.preselect(8, 0)
    with pytest.raises(ValueError, match="allowed track, track-b, gnd, float"):
        board.preselect(0, 0, scheme="v/2")


# -- single lines and the vector-matrix input --------------------------------------------
def test_line_command_sets_every_mode(board: ProbeBoardEmulator, bench: Bench) -> None:
    ask(board, "SEL 0,0")
    for mode in ["GND", "FLOAT", "SMUA", "SMUB", "TRACK"]:
        assert ask(board, f"LINE C2,{mode}") == b"OK\n"
        assert ask(board, "LINE? C2") == mode.encode() + b"\n"
    assert ask(board, "LINE C2,DAC,0.25") == b"OK\n"
    assert ask(board, "LINE? C2") == b"DAC,0.2500\n"
    assert ask(board, "LINE r7,dac,-1.5e0") == b"OK\n"
    assert ask(board, "LINE? R7") == b"DAC,-1.5000\n"
    assert (bench.rows_state[7].mode, bench.rows_state[7].volts) == ("dac", -1.5)
    assert (bench.cols_state[2].mode, bench.cols_state[2].volts) == ("dac", 0.25)
    assert ask(board, "SEL?") == b"NONE\n"


def test_rows_dac_computes_a_vector_matrix_product(
    board: ProbeBoardEmulator, bench: Bench, conductances: np.ndarray
) -> None:
    volts = np.array([0.1, 0.2, 0.0, -0.05, 0.15, 0.0, 0.05, -0.1])
    command = "ROWS:DAC " + ",".join(f"{v:g}" for v in volts)
    assert ask(board, command) == b"OK\n"
    assert ask(board, "LINE? R1") == b"DAC,0.2000\n"
    # Column 3 read by SMU B at 0 V; the others grounded.
    assert ask(board, "LINE C3,SMUB") == b"OK\n"
    bench.set_terminal("B", 0.0)
    column_current = -bench.terminal_currents()["B"]
    assert column_current == pytest.approx(volts @ conductances[:, 3], rel=1e-9)


# -- write pulses ------------------------------------------------------------------------------
def pulse_lines(bench: Bench) -> tuple[np.ndarray, np.ndarray, float]:
    array = bench.array
    assert isinstance(array, RecordingArray)
    bias, width = array.stresses[-1]
    return bias.row_v, bias.col_v, width


def test_v2_and_v3_pulses_put_different_voltages_on_the_other_lines(
    board: ProbeBoardEmulator, bench: Bench
) -> None:
    assert ask(board, "PULSE 3,4,1.5,1e-3") == b"OK\n"  # default scheme V2
    row_v, col_v, width = pulse_lines(bench)
    assert width == pytest.approx(1e-3)
    assert row_v[3] == pytest.approx(1.5) and col_v[4] == 0.0
    assert np.allclose(np.delete(row_v, 3), 0.75) and np.allclose(np.delete(col_v, 4), 0.75)

    assert ask(board, "PULSE 3,4,1.5,1e-3,V3") == b"OK\n"
    row_v, col_v, _ = pulse_lines(bench)
    assert np.allclose(np.delete(row_v, 3), 0.5) and np.allclose(np.delete(col_v, 4), 1.0)
    # Half-selected devices see V/3, all others -V/3.
    device_v = row_v[:, None] - col_v[None, :]
    assert device_v[3, 0] == pytest.approx(0.5) and device_v[0, 4] == pytest.approx(0.5)
    assert device_v[0, 0] == pytest.approx(-0.5)


def test_negative_pulse_raises_the_column_and_write_scheme_sets_the_default(
    board: ProbeBoardEmulator, bench: Bench
) -> None:
    assert ask(board, "WRITE:SCHEME gnd") == b"OK\n"
    assert ask(board, "WRITE:SCHEME?") == b"GND\n"
    assert ask(board, "PULSE 1,2,-1.2,1.1e-3") == b"OK\n"
    row_v, col_v, width = pulse_lines(bench)
    assert width == pytest.approx(1.1e-3)
    assert col_v[2] == pytest.approx(1.2) and row_v[1] == 0.0
    assert np.count_nonzero(row_v) == 0 and np.count_nonzero(col_v) == 1
    assert ask(board, "PULSE 1,2,1,1e-6,FLOAT") == b"OK\n"
    row_v, col_v, _ = pulse_lines(bench)
    assert np.isnan(np.delete(row_v, 1)).all() and np.isnan(np.delete(col_v, 2)).all()


def test_a_pulse_takes_its_width_and_leaves_the_routing_as_it_was(
    board: ProbeBoardEmulator, bench: Bench
) -> None:
    ask(board, "READ:SCHEME TRACK")
    ask(board, "SEL 2,2")
    before = copy.deepcopy(routing(bench))
    t0 = bench.clock.now()
    assert ask(board, "PULSE 2,2,2.0,0.5,V2") == b"OK\n"
    assert bench.clock.now() - t0 == pytest.approx(0.5)
    assert routing(bench) == before
    assert ask(board, "SEL?") == b"2,2\n"
    assert bench.max_applied_v["board"] == pytest.approx(2.0)


def test_query_latency_is_charged_per_command(bench: Bench) -> None:
    board = ProbeBoardEmulator(bench, query_latency_s=2e-3)
    t0 = bench.clock.now()
    ask(board, "SEL 0,0")
    ask(board, "SEL?")
    assert bench.clock.now() - t0 == pytest.approx(4e-3)


# -- eFlash -----------------------------------------------------------------------------------
def test_eflash_biases_and_read_routing(eflash_board: ProbeBoardEmulator) -> None:
    bench = eflash_board.bench
    assert ask(eflash_board, "EFLASH:CG 2.5") == b"OK\n"
    assert ask(eflash_board, "EFLASH:SL 0.5") == b"OK\n"
    assert ask(eflash_board, "EFLASH:EG 0") == b"OK\n"
    assert ask(eflash_board, "EFLASH?") == b"2.5000,0.0000,0.5000,1.5000\n"
    assert (bench.control_gate_v, bench.erase_gate_v, bench.source_v) == (2.5, 0.0, 0.5)
    assert ask(eflash_board, "SEL 0,5") == b"OK\n"
    assert ask(eflash_board, "LINE? R0") == b"DAC,1.5000\n"
    assert ask(eflash_board, "LINE? R1") == b"GND\n"
    assert ask(eflash_board, "LINE? C5") == b"SMUA\n"
    assert ask(eflash_board, "EFLASH:WL 1.2") == b"OK\n"
    assert ask(eflash_board, "LINE? R0") == b"DAC,1.2000\n"
    assert ask(eflash_board, "READ:COL SMUB") == b"OK\n"
    assert ask(eflash_board, "LINE? R0") == b"SMUA\n"
    assert ask(eflash_board, "LINE? C5") == b"SMUB\n"
    assert ask(eflash_board, "EFLASH:EG 15") == b'ERR 4,"EFLASH:EG: 15 V out of range 0..14 V"\n'
    assert ask(eflash_board, "GND:ALL") == b"OK\n"
    assert ask(eflash_board, "EFLASH?") == b"0.0000,0.0000,0.0000,1.2000\n"


def test_eflash_pulse_lets_the_array_choose_the_bias(eflash_board: ProbeBoardEmulator) -> None:
    array = eflash_board.bench.array
    assert isinstance(array, RecordingEflash)
    assert ask(eflash_board, "PULSE 1,3,-10,1e-3,V3") == b"OK\n"
    assert array.pulse_bias_calls == [(1, 3, -10.0, "v/3")]
    assert array.stresses[-1][0].erase_gate_v == 10.0
    assert ask(eflash_board, "PULSE 1,3,-12.5,1e-3") == (
        b'ERR 4,"PULSE amplitude_v: -12.5 V out of range -12..6 V"\n'
    )
    # A program pulse drives the source line: no more than its 6 V range.
    assert ask(eflash_board, "PULSE 1,3,6.5,1e-6") == (
        b'ERR 4,"PULSE amplitude_v: 6.5 V out of range -12..6 V"\n'
    )
    assert len(array.pulse_bias_calls) == 1


# -- errors: every one replies ERR and changes nothing ------------------------------------
ERROR_CASES = [
    ("FOO", b"ERR 1,\"unknown command 'FOO'\"\n"),
    ("SEL", b'ERR 2,"SEL: expected 2 parameters (row,col), got 0"\n'),
    ("SEL 1", b'ERR 2,"SEL: expected 2 parameters (row,col), got 1"\n'),
    ("SEL 1,2,3", b'ERR 2,"SEL: expected 2 parameters (row,col), got 3"\n'),
    ("SEL 8,0", b'ERR 4,"SEL row: 8 out of range 0..7"\n'),
    ("SEL 0,9", b'ERR 4,"SEL col: 9 out of range 0..7"\n'),
    ("SEL -1,0", b"ERR 3,\"SEL row: '-1' is not a non-negative integer\"\n"),
    ("SEL 1.5,0", b"ERR 3,\"SEL row: '1.5' is not a non-negative integer\"\n"),
    ("SEL 1,", b"ERR 3,\"SEL col: '' is not a non-negative integer\"\n"),
    ("SEL? 1", b'ERR 2,"SEL?: expected no parameters, got 1"\n'),
    ("*IDN? x", b'ERR 2,"*IDN?: expected no parameters, got 1"\n'),
    ("READ:SCHEME V2", b"ERR 3,\"READ:SCHEME: 'V2' is not one of GND, FLOAT, TRACK, TRACKB\"\n"),
    (
        "READ:SCHEME",
        b'ERR 2,"READ:SCHEME: expected 1 parameters (GND|FLOAT|TRACK|TRACKB), got 0"\n',
    ),
    ("READ:COL SMUA", b"ERR 3,\"READ:COL: 'SMUA' is not one of GND, SMUB\"\n"),
    ("WRITE:SCHEME V4", b"ERR 3,\"WRITE:SCHEME: 'V4' is not one of V2, V3, GND, FLOAT\"\n"),
    ("LINE X3,GND", b"ERR 3,\"LINE line: 'X3' is not R<row> or C<col>\"\n"),
    ("LINE R8,GND", b'ERR 4,"LINE row: 8 out of range 0..7"\n'),
    (
        "LINE C1,ON",
        b"ERR 3,\"LINE: 'ON' is not one of GND, FLOAT, SMUA, SMUB, TRACK, TRACKB, DAC\"\n",
    ),
    ("LINE C1,DAC", b'ERR 2,"LINE: mode DAC needs a voltage (line,DAC,volts)"\n'),
    ("LINE C1,GND,0.1", b'ERR 2,"LINE: mode GND takes no voltage (line,GND)"\n'),
    ("LINE C1,DAC,5.5", b'ERR 4,"LINE volts: 5.5 V out of range -5..5 V"\n'),
    ("LINE C1,DAC,nan", b"ERR 3,\"LINE volts: 'nan' is not a number\"\n"),
    ("LINE C1,DAC,0x10", b"ERR 3,\"LINE volts: '0x10' is not a number\"\n"),
    ("LINE? R1,R2", b'ERR 2,"LINE?: expected 1 parameters (line), got 2"\n'),
    ("ROWS:DAC 0.1,0.2", b'ERR 2,"ROWS:DAC: expected 8 voltages (one per row), got 2"\n'),
    ("ROWS:DAC 0,0,0,0,0,0,0,9", b'ERR 4,"ROWS:DAC row 7: 9 V out of range -5..5 V"\n'),
    ("ROWS:DAC 0,0,0,a,0,0,0,0", b"ERR 3,\"ROWS:DAC row 3: 'a' is not a number\"\n"),
    (
        "PULSE 0,0,1",
        b'ERR 2,"PULSE: expected 4 or 5 parameters (row,col,amplitude_v,width_s[,scheme]), got 3"\n',
    ),
    ("PULSE 0,0,6,1e-3", b'ERR 4,"PULSE amplitude_v: 6 V out of range -5..5 V"\n'),
    ("PULSE 0,0,-5.01,1e-3", b'ERR 4,"PULSE amplitude_v: -5.01 V out of range -5..5 V"\n'),
    ("PULSE 0,0,1,1e-9", b'ERR 4,"PULSE width_s: 1e-9 s out of range 1e-07..1 s"\n'),
    ("PULSE 0,0,1,2", b'ERR 4,"PULSE width_s: 2 s out of range 1e-07..1 s"\n'),
    ("PULSE 0,0,1,1e-3,V5", b"ERR 3,\"PULSE scheme: 'V5' is not one of V2, V3, GND, FLOAT\"\n"),
    ("PULSE 9,0,1,1e-3", b'ERR 4,"PULSE row: 9 out of range 0..7"\n'),
    ("EFLASH:CG 2.5", b'ERR 5,"EFLASH:CG: not available on a RESISTOR board"\n'),
    ("EFLASH:WL 1.5", b'ERR 5,"EFLASH:WL: not available on a RESISTOR board"\n'),
    ("EFLASH?", b'ERR 5,"EFLASH?: not available on a RESISTOR board"\n'),
    ('SEL "1",2', b"ERR 3,\"SEL row: ''1'' is not a non-negative integer\"\n"),
    ("GND:ALL now", b'ERR 2,"GND:ALL: expected no parameters, got 1"\n'),
    ("\u00e9", b'ERR 6,"input line contains non-ASCII or control characters"\n'),
    ("A" * 9000, b'ERR 6,"input line too long: 9000 characters, at most 8192"\n'),
]


@pytest.mark.parametrize(("command", "reply"), ERROR_CASES, ids=[c[:24] for c, _ in ERROR_CASES])
def test_every_bad_command_answers_err_and_changes_nothing(
    board: ProbeBoardEmulator, bench: Bench, command: str, reply: bytes
) -> None:
    ask(board, "READ:SCHEME TRACK")
    ask(board, "SEL 2,3")
    ask(board, "LINE C1,DAC,0.3")
    before = (routing(bench), board.selected, board.read_scheme, board.read_col, board.write_scheme)
    t0 = bench.clock.now()
    assert ask(board, command.encode("utf-8") + b"\n") == reply
    after = (routing(bench), board.selected, board.read_scheme, board.read_col, board.write_scheme)
    assert after == before
    assert bench.clock.now() == t0  # no pulse was fired
    assert ask(board, "ERR?") == reply[4:]
    assert ask(board, "ERR?") == b'0,"No error"\n'


def test_reset_returns_every_setting_to_its_default(
    board: ProbeBoardEmulator, bench: Bench
) -> None:
    for command in ["READ:SCHEME FLOAT", "READ:COL SMUB", "WRITE:SCHEME V3", "SEL 1,1", "FOO"]:
        ask(board, command)
    assert ask(board, "*RST") == b"OK\n"
    assert ask(board, "STAT?") == b"SEL=NONE;READ=GND;COL=GND;WRITE=V2;TEMP=25.0\n"
    assert ask(board, "ERR?") == b'0,"No error"\n'
    assert all(mode == "gnd" for mode, _, _ in routing(bench))


def test_gnd_all_grounds_every_line_and_keeps_the_schemes(
    board: ProbeBoardEmulator, bench: Bench
) -> None:
    ask(board, "READ:SCHEME FLOAT")
    ask(board, "SEL 1,1")
    assert ask(board, "GND:ALL") == b"OK\n"
    assert all(mode == "gnd" for mode, _, _ in routing(bench))
    assert ask(board, "SEL?") == b"NONE\n"
    assert ask(board, "READ:SCHEME?") == b"FLOAT\n"


def test_random_bytes_never_crash_the_board_and_every_line_gets_one_reply(
    board: ProbeBoardEmulator,
) -> None:
    rng = np.random.default_rng(1)
    words = [b"SEL", b"LINE", b"PULSE", b"ROWS:DAC", b"EFLASH:CG", b"R3", b"C9", b",", b" ", b"-"]
    for _ in range(400):
        if rng.random() < 0.5:
            payload = bytes(rng.integers(0, 256, size=int(rng.integers(1, 40)), dtype=np.uint8))
        else:
            picks = rng.integers(0, len(words), size=int(rng.integers(1, 8)))
            payload = b"".join(words[i] for i in picks) + str(rng.normal()).encode()
        payload = payload.replace(b"\n", b"")
        board.write(payload + b"\n")
        reply = board.read()
        if payload.strip(b" \t\r"):
            assert reply.count(b"\n") == 1 and reply.endswith(b"\n"), payload
            assert not reply.startswith(b"ERR 9"), (payload, reply)
        else:
            assert reply == b""
    assert ask(board, "*IDN?").startswith(b"NVMLAB,PROBE-BOARD")


def replay(board: ProbeBoardEmulator, block: str) -> int:
    """Send every ``>`` line of a documented transcript; check the ``<`` reply byte for byte."""
    sent: str | None = None
    exchanges = 0
    for line in block.splitlines():
        if line.startswith("> "):
            sent = line[2:].removesuffix("\\n")
        elif line.startswith("< ") and sent is not None:
            expected = line[2:].removesuffix("\\n").encode() + b"\n"
            assert ask(board, sent) == expected, sent
            exchanges += 1
    return exchanges


def test_the_documented_examples_are_what_the_board_answers(conductances: np.ndarray) -> None:
    """Replay the memristor and eFlash transcripts of docs/probe-board.md byte for byte."""
    doc = Path(__file__).resolve().parents[3] / "docs" / "probe-board.md"
    blocks = doc.read_text().split("## Byte-exact examples")[1].split("```")
    memristor_block, eflash_block = blocks[1], blocks[3]
    clock = VirtualClock()
    bench = Bench(RecordingArray(conductances, kind="memristor"), clock, ThermalModel(clock))
    assert replay(ProbeBoardEmulator(bench), memristor_block) >= 25
    eflash = Bench(create_array("eflash", 8, 8, seed=0), clock, ThermalModel(clock))
    assert replay(ProbeBoardEmulator(eflash), eflash_block) >= 7


def test_the_documented_tracking_read_is_what_the_board_answers(conductances: np.ndarray) -> None:
    """The TRACKB transcript of docs/probe-board.md, byte for byte."""
    doc = Path(__file__).resolve().parents[3] / "docs" / "probe-board.md"
    block = doc.read_text().split("### The tracking read")[1].split("```")[1]
    clock = VirtualClock()
    bench = Bench(RecordingArray(conductances, kind="memristor"), clock, ThermalModel(clock))
    assert replay(ProbeBoardEmulator(bench), block) == 7


def test_the_tracking_read_routes_every_other_line_to_the_buffer_following_b(
    conductances: np.ndarray,
) -> None:
    """READ:SCHEME TRACKB + SEL: selected row on A, selected column grounded, every other
    line on the buffer following terminal B; READ:COL SMUB is refused and changes nothing."""
    clock = VirtualClock()
    bench = Bench(RecordingArray(conductances, kind="memristor"), clock, ThermalModel(clock))
    board = ProbeBoardEmulator(bench)
    assert ask(board, "READ:SCHEME TRACKB") == b"OK\n"
    assert ask(board, "SEL 2,5") == b"OK\n"
    rows, cols = bench.rows_state, bench.cols_state
    assert (rows[2].mode, rows[2].terminal) == ("smu", "A")
    assert cols[5].mode == "gnd"
    others = [s for i, s in enumerate(rows) if i != 2] + [s for j, s in enumerate(cols) if j != 5]
    assert {(s.mode, s.terminal) for s in others} == {("track", "B")}
    assert ask(board, "READ:COL SMUB").startswith(b"ERR 3,")
    assert ask(board, "READ:COL?") == b"GND\n" and cols[5].mode == "gnd"
    assert ask(board, "LINE C1,TRACK") == b"OK\n"
    assert ask(board, "LINE? C1") == b"TRACK\n"
    assert ask(board, "LINE C1,TRACKB") == b"OK\n"
    assert ask(board, "LINE? C1") == b"TRACKB\n"
    assert ask(board, "READ:SCHEME GND") == b"OK\n"
    assert ask(board, "READ:COL SMUB") == b"OK\n"
    assert ask(board, "READ:SCHEME TRACKB").startswith(b"ERR 3,")
    assert ask(board, "READ:SCHEME?") == b"GND\n"


def test_preselect_applies_the_tracking_read_too(conductances: np.ndarray) -> None:
    clock = VirtualClock()
    bench = Bench(RecordingArray(conductances, kind="memristor"), clock, ThermalModel(clock))
    board = ProbeBoardEmulator(bench)
    assert ask(board, "READ:COL SMUB") == b"OK\n"
    board.preselect(1, 6, "track-b")
    assert ask(board, "STAT?").startswith(b"SEL=1,6;READ=TRACKB;COL=GND;")
    assert ask(board, "LINE? R0") == b"TRACKB\n" and ask(board, "LINE? C6") == b"GND\n"
