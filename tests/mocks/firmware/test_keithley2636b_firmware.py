"""The emulated Keithley 2636B: TSP commands on both channels against the bench physics.

The bench is wired the way a technician would for a two-channel read: one row of a
crossbar of known, distinct resistors on smua (terminal A), one column on smub (terminal
B), every other line grounded. Bytes go in and come out exactly as over the wire.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.keithley2636b import Keithley2636BEmulator
from nvmlab.mocks.firmware.smu_ranges import KEITHLEY_2636B
from nvmlab.mocks.physics import create_array
from nvmlab.mocks.physics.base import ArrayPhysics
from nvmlab.mocks.physics.resistor import ResistorArray
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import Bench

ROWS, COLS = 8, 8
ROW, COL = 2, 5
V_READ = 0.2


def floor_abs(expected_a: float, nplc: float = 0.01) -> float:
    """Tolerance (A) for a reading of ``expected_a``: six rms noise floors of the auto range
    at ``nplc`` plus one count of its resolution (:mod:`nvmlab.mocks.firmware.smu_ranges`;
    the default 0.01 PLC is the shortest integration these tests use)."""
    r = KEITHLEY_2636B.auto(expected_a)
    return 6 * r.noise_floor_a(nplc) + r.resolution_a


class Wire:
    """Host side of the instrument's byte stream (what a VISA session would see)."""

    def __init__(self, smu: Keithley2636BEmulator) -> None:
        self.smu = smu
        self.messages_sent = 0

    def write(self, text: str) -> None:
        self.messages_sent += 1
        self.smu.write(text.encode("latin-1") + b"\n")

    def read_raw(self) -> bytes:
        return self.smu.read()

    def query(self, text: str) -> str:
        self.write(text)
        data = self.read_raw()
        assert data.endswith(b"\n"), data
        return data[:-1].decode("latin-1")

    def errors(self) -> list[tuple[int, str]]:
        return self.smu.errors()


def make_bench(array: ArrayPhysics) -> Bench:
    clock = VirtualClock()
    return Bench(array, clock, ThermalModel(clock))


def route_row_col(bench: Bench, row: int = ROW, col: int = COL) -> None:
    """Row ``row`` to smua, column ``col`` to smub, every other line grounded."""
    bench.ground_all()
    bench.rows_state[row].mode, bench.rows_state[row].terminal = "smu", "A"
    bench.cols_state[col].mode, bench.cols_state[col].terminal = "smu", "B"


@pytest.fixture
def conductances() -> np.ndarray:
    return np.random.default_rng(7).uniform(10e-6, 100e-6, size=(ROWS, COLS))


@pytest.fixture
def bench(conductances: np.ndarray) -> Bench:
    b = make_bench(ResistorArray(conductances))
    route_row_col(b)
    return b


@pytest.fixture
def smu(bench: Bench) -> Keithley2636BEmulator:
    return Keithley2636BEmulator(bench)


@pytest.fixture
def wire(smu: Keithley2636BEmulator) -> Wire:
    return Wire(smu)


def both_outputs_on(wire: Wire, va: float = V_READ, vb: float = 0.0) -> None:
    wire.write(
        f"smua.source.func = smua.OUTPUT_DCVOLTS smua.source.levelv = {va} "
        "smua.source.limiti = 1e-3 smua.source.output = smua.OUTPUT_ON"
    )
    wire.write(f"smub.source.levelv = {vb} smub.source.limiti = 1e-3 smub.source.output = 1")


# --- identification and common commands ----------------------------------------------------
def test_identification_and_common_commands(wire: Wire) -> None:
    assert wire.query("*IDN?") == "Keithley Instruments Inc., Model 2636B, 4428182, 4.0.0"
    assert wire.query("*OPC?") == "1"
    assert wire.query("print(localnode.model, localnode.serialno, localnode.revision)") == (
        "2636B\t4428182\t4.0.0"
    )
    assert wire.query("print(localnode.linefreq)") == "6.00000e+01"
    for cmd in ("*RST", "*CLS", "*WAI", "*TRG", "*OPC", "abort", "", "   "):
        wire.write(cmd)
    assert wire.read_raw() == b""
    assert wire.errors() == []


def test_only_print_produces_replies_one_message_each(wire: Wire) -> None:
    wire.write("x = 1 y = x + 1")
    assert wire.read_raw() == b""
    wire.write("print(x) print(y)")
    assert wire.read_raw() == b"1.00000e+00\n2.00000e+00\n"


# --- attributes ------------------------------------------------------------------------------
def test_attributes_set_get_and_reset_defaults(wire: Wire) -> None:
    assert wire.query("print(smua.source.func, smua.source.output, smua.measure.nplc)") == (
        "1.00000e+00\t0.00000e+00\t1.00000e+00"
    )
    wire.write(
        "smua.source.levelv = 1.5 smua.source.limiti = 1e-5 smua.measure.nplc = 0.01 "
        "smua.source.rangev = 2 smua.source.autorangev = smua.AUTORANGE_OFF smub.source.leveli = 2e-6 "
        "smua.measure.autorangei = 0 smua.measure.rangei = 1e-6 smua.sense = smua.SENSE_REMOTE"
    )
    assert wire.query(
        "print(smua.source.levelv, smua.source.limiti, smua.measure.nplc, smua.source.rangev, "
        "smua.source.autorangev, smub.source.leveli, smua.measure.rangei, smua.sense)"
    ) == (
        "1.50000e+00\t1.00000e-05\t1.00000e-02\t2.00000e+00\t0.00000e+00\t2.00000e-06\t"
        "1.00000e-06\t1.00000e+00"
    )
    wire.write("smua.reset()")
    assert wire.query("print(smua.source.levelv, smua.measure.nplc, smub.source.leveli)") == (
        "0.00000e+00\t1.00000e+00\t2.00000e-06"
    )
    wire.write("reset()")
    assert wire.query("print(smub.source.leveli)") == "0.00000e+00"
    assert wire.errors() == []


def test_bad_attribute_values_are_runtime_errors_naming_what_is_allowed(wire: Wire) -> None:
    wire.write("smua.measure.nplc = 100")
    wire.write("smua.source.output = 7")
    wire.write("smua.source.bogus = 1")
    wire.write("smua.source.compliance = true")
    errors = wire.errors()
    assert [code for code, _ in errors] == [-286] * 4
    assert "smua.measure.nplc = 100 out of range (allowed 0.001 to 25)" in errors[0][1]
    assert "smua.source.output = 7 not allowed (allowed: 0, 1, 2)" in errors[1][1]
    assert "cannot set unknown attribute `bogus' of smua.source" in errors[2][1]
    assert "read-only attribute `compliance'" in errors[3][1]


# --- measurement physics ----------------------------------------------------------------------
def test_two_channels_read_row_and_column_currents_with_opposite_signs(
    wire: Wire, conductances: np.ndarray
) -> None:
    both_outputs_on(wire)
    i_a, i_b = (
        float(x) for x in wire.query("print(smua.measure.i(), smub.measure.i())").split("\t")
    )
    # smua drives the whole row (all columns grounded or at 0 V): G_row_total * V.
    assert i_a == pytest.approx(conductances[ROW].sum() * V_READ, rel=1e-5)
    # smub holds column COL at 0 V and sinks the selected device's current only.
    assert i_b == pytest.approx(-conductances[ROW, COL] * V_READ, rel=1e-5)
    assert wire.query("print(smua.measure.v(), smub.measure.v())") == "2.00000e-01\t0.00000e+00"
    r = float(wire.query("print(smua.measure.r())"))
    assert r == pytest.approx(1 / conductances[ROW].sum(), rel=1e-5)
    i, v = (float(x) for x in wire.query("print(smua.measure.iv())").split("\t"))
    assert (i, v) == (pytest.approx(i_a, rel=1e-5), pytest.approx(V_READ))


def test_compliance_clamps_the_source_and_sets_the_status_bit(wire: Wire, bench: Bench) -> None:
    both_outputs_on(wire)
    wire.write("smua.source.limiti = 10e-6")
    i, v = (float(x) for x in wire.query("print(smua.measure.iv())").split("\t"))
    assert i == pytest.approx(10e-6, rel=1e-6)
    assert 0 < v < V_READ
    assert bench.terminal_v["A"] == pytest.approx(v)
    assert wire.query("print(smua.source.compliance)") == "true"
    # QCoDeS reads the status in the same message: bit 1 (2) = current limit.
    reply = wire.query("print(smua.measure.i(), status.measurement.instrument.smua.condition)")
    assert reply.split("\t")[1] == "2.00000e+00"
    wire.write("smua.source.limiti = 1e-3")
    assert wire.query(
        "print(smua.measure.i(), status.measurement.instrument.smua.condition)"
    ).endswith("\t0.00000e+00")
    assert wire.query("print(smua.source.compliance)") == "false"


def test_current_source_mode_drives_the_requested_current(
    wire: Wire, conductances: np.ndarray
) -> None:
    wire.write(
        "smua.source.func = smua.OUTPUT_DCAMPS smua.source.leveli = 5e-6 smua.source.limitv = 2 "
        "smua.source.output = smua.OUTPUT_ON"
    )
    i, v = (float(x) for x in wire.query("print(smua.measure.iv())").split("\t"))
    assert i == pytest.approx(5e-6, rel=1e-6)
    assert v == pytest.approx(5e-6 / conductances[ROW].sum(), rel=1e-6)
    wire.write("smua.source.leveli = 1e-3")  # needs more than 2 V: voltage compliance
    assert float(wire.query("print(smua.measure.v())")) == pytest.approx(2.0)
    assert wire.query(
        "print(smua.source.compliance, status.measurement.instrument.smua.condition)"
    ) == ("true\t1.00000e+00")


def test_output_off_modes(wire: Wire, bench: Bench) -> None:
    both_outputs_on(wire)
    assert bench.terminal_v["A"] == pytest.approx(V_READ)
    wire.write("smua.source.output = smua.OUTPUT_OFF")
    assert bench.terminal_v["A"] == 0.0  # normal output-off: 0 V source, current limited
    wire.write("smua.source.offmode = smua.OUTPUT_HIGH_Z")
    assert bench.terminal_v["A"] is None  # output relay open
    assert float(wire.query("print(smua.measure.i())")) == 0.0


def test_fixed_measure_range_overflows(wire: Wire) -> None:
    both_outputs_on(wire)
    wire.write("smua.measure.autorangei = smua.AUTORANGE_OFF smua.measure.rangei = 1e-6")
    assert wire.query("print(smua.measure.i())") == "9.91000e+37"


def test_each_reading_costs_integration_time(wire: Wire, bench: Bench) -> None:
    both_outputs_on(wire)
    wire.write("smua.measure.nplc = 1")
    t0 = bench.clock.now()
    wire.query("print(smua.measure.i())")
    assert bench.clock.now() - t0 == pytest.approx(1 / 60 + 120e-6)
    wire.write("localnode.linefreq = 50 smua.measure.nplc = 0.5 smua.measure.delay = 1e-3")
    t0 = bench.clock.now()
    wire.query("print(smua.measure.i())")
    assert bench.clock.now() - t0 == pytest.approx(0.5 / 50 + 1e-3 + 120e-6)


# --- buffers and printbuffer -----------------------------------------------------------------------
def test_nvbuffer_collects_readings_sources_and_timestamps(
    wire: Wire, conductances: np.ndarray
) -> None:
    both_outputs_on(wire)
    wire.write(
        "smua.measure.nplc = 0.1 smua.nvbuffer1.clear() smua.nvbuffer1.appendmode = 1 "
        "smua.nvbuffer1.collectsourcevalues = 1 smua.nvbuffer1.collecttimestamps = 1"
    )
    wire.write("for k = 1, 4 do smua.source.levelv = 0.05 * k smua.measure.i(smua.nvbuffer1) end")
    assert wire.query("print(smua.nvbuffer1.n)") == "4.00000e+00"
    expected = [conductances[ROW].sum() * 0.05 * k for k in range(1, 5)]
    readings = [
        float(x)
        for x in wire.query("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)").split(", ")
    ]
    assert readings == pytest.approx(expected, rel=1e-5, abs=floor_abs(expected[-1]))
    sources = wire.query("printbuffer(1, 4, smua.nvbuffer1.sourcevalues)").split(", ")
    assert [float(s) for s in sources] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    stamps = [
        float(s) for s in wire.query("printbuffer(1, 4, smua.nvbuffer1.timestamps)").split(", ")
    ]
    assert stamps[0] == 0.0 and np.allclose(np.diff(stamps), 0.1 / 60 + 120e-6)
    # Interleaved buffers, indexing and length as scripts use them.
    pair = wire.query(
        "printbuffer(1, 2, smua.nvbuffer1.readings, smua.nvbuffer1.sourcevalues)"
    ).split(", ")
    assert [float(x) for x in pair[1::2]] == pytest.approx([0.05, 0.1])
    assert float(wire.query("print(smua.nvbuffer1[2])")) == pytest.approx(
        expected[1], rel=1e-5, abs=floor_abs(expected[1])
    )
    assert (
        wire.query("print(#smua.nvbuffer1.readings, smua.nvbuffer1.readings[9])")
        == "4.00000e+00\tnil"
    )
    # appendmode 0: each measurement call starts the buffer afresh.
    wire.write("smua.nvbuffer1.appendmode = 0 smua.measure.i(smua.nvbuffer1)")
    assert wire.query("print(smua.nvbuffer1.n)") == "1.00000e+00"
    wire.write("smua.nvbuffer1.clear()")
    assert wire.query("print(smua.nvbuffer1.n)") == "0.00000e+00"


def test_printbuffer_binary_formats_decode(wire: Wire) -> None:
    both_outputs_on(wire)
    wire.write("buf = smua.makebuffer(10) buf.appendmode = 1")
    wire.write("for k = 1, 5 do smua.source.levelv = 0.04 * k smua.measure.i(buf) end")
    ascii_values = [
        float(x)
        for x in wire.query("format.asciiprecision = 16 printbuffer(1, 5, buf)").split(", ")
    ]
    wire.write(
        "format.data = format.REAL32 format.byteorder = format.LITTLEENDIAN printbuffer(1, 5, buf)"
    )
    raw = wire.read_raw()
    assert raw[:2] == b"#0" and raw[-1:] == b"\n" and len(raw) == 2 + 4 * 5 + 1
    assert np.array(struct.unpack("<5f", raw[2:-1])) == pytest.approx(ascii_values, rel=1e-6)
    wire.write(
        "format.data = format.REAL64 format.byteorder = format.BIGENDIAN printbuffer(1, 5, buf)"
    )
    raw = wire.read_raw()
    assert len(raw) == 2 + 8 * 5 + 1
    assert list(struct.unpack(">5d", raw[2:-1])) == pytest.approx(ascii_values, rel=1e-15)
    wire.write("reset()")  # back to ASCII
    assert wire.query("printnumber(1)") == "1.00000e+00"


# --- sweeps ---------------------------------------------------------------------------------------------
def test_list_sweep_returns_one_reading_per_point(
    wire: Wire, bench: Bench, conductances: np.ndarray
) -> None:
    both_outputs_on(wire)
    levels = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35]
    wire.write(
        "smua.measure.nplc = 0.01 smua.nvbuffer1.clear() smua.nvbuffer2.clear() "
        f"smua.trigger.source.listv({{{', '.join(map(str, levels))}}}) "
        "smua.trigger.source.action = smua.ENABLE smua.trigger.measure.action = smua.ENABLE "
        "smua.trigger.measure.iv(smua.nvbuffer1, smua.nvbuffer2) "
        f"smua.trigger.count = {len(levels)}"
    )
    t0 = bench.clock.now()
    wire.write("smua.trigger.initiate() waitcomplete()")
    elapsed = bench.clock.now() - t0
    currents = [
        float(x) for x in wire.query("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1)").split(", ")
    ]
    volts = [
        float(x) for x in wire.query("printbuffer(1, smua.nvbuffer2.n, smua.nvbuffer2)").split(", ")
    ]
    assert len(currents) == len(volts) == len(levels)
    assert volts == pytest.approx(levels)
    expected_a = [conductances[ROW].sum() * v for v in levels]
    assert currents == pytest.approx(expected_a, rel=1e-5, abs=floor_abs(max(expected_a)))
    # Sweep engine: ~4200 readings/s at 0.01 NPLC (2602B spec sheet figure).
    assert len(levels) / elapsed == pytest.approx(4200, rel=0.1)
    # After the sweep the source returns to its idle level (endsweep SOURCE_IDLE).
    assert bench.terminal_v["A"] == pytest.approx(V_READ)


def test_linear_sweep_with_count_and_arm_count(wire: Wire) -> None:
    both_outputs_on(wire)
    wire.write(
        "smua.measure.nplc = 0.01 smua.nvbuffer1.clear() smua.nvbuffer1.collectsourcevalues = 1 "
        "smua.trigger.source.linearv(0, 0.4, 5) smua.trigger.source.action = 1 "
        "smua.trigger.measure.action = 1 smua.trigger.measure.i(smua.nvbuffer1) "
        "smua.trigger.count = 5 smua.trigger.arm.count = 2 smua.nvbuffer1.appendmode = 1 "
        "smua.trigger.initiate()"
    )
    assert wire.query("print(smua.nvbuffer1.n)") == "1.00000e+01"
    sources = [
        float(x) for x in wire.query("printbuffer(1, 10, smua.nvbuffer1.sourcevalues)").split(", ")
    ]
    assert sources == pytest.approx([0, 0.1, 0.2, 0.3, 0.4] * 2)


def test_sweep_errors_are_reported(wire: Wire) -> None:
    wire.write(
        "smua.trigger.source.listv({0.1}) smua.trigger.source.action = 1 smua.trigger.initiate()"
    )
    wire.write("smua.trigger.source.listv({})")
    wire.write("smua.trigger.source.listv(5)")
    errors = wire.errors()
    assert len(errors) == 3 and all(code == -286 for code, _ in errors)
    assert "output is off" in errors[0][1]
    assert "non-empty table of numbers expected" in errors[1][1]
    assert "table expected, got number" in errors[2][1]


# --- scripts ------------------------------------------------------------------------------------------
WRITE_VERIFY = """\
-- write-verify on the instrument: pulse, read, compare, until within tolerance
function read_g(v)
  smua.source.levelv = v
  local i = smua.measure.i()
  return i / v
end
function write_verify(target, tol, max_pulses)
  local pulses = 0
  local g = read_g(0.2)
  while math.abs(g - target) > tol * target and pulses < max_pulses do
    if g < target then smua.source.levelv = 0.5 else smua.source.levelv = -0.5 end
    delay(1e-3)
    pulses = pulses + 1
    g = read_g(0.2)
  end
  smua.source.levelv = 0
  print(pulses, g)
end"""


def test_loadscript_collects_lines_then_runs_on_call(
    wire: Wire, bench: Bench, conductances: np.ndarray
) -> None:
    both_outputs_on(wire)
    wire.write("smua.measure.nplc = 0.1")
    wire.write("loadscript wv")
    for line in WRITE_VERIFY.splitlines():
        wire.write(line)
    wire.write("endscript")
    assert wire.read_raw() == b""  # loading runs nothing
    assert wire.query("print(type(write_verify))") == "nil"
    wire.write("wv()")  # defines the functions
    assert wire.read_raw() == b""
    sent = wire.messages_sent
    t0 = bench.clock.now()
    # A resistor never reaches the target: the loop runs all 200 pulses on the instrument.
    reply = wire.query("write_verify(1, 0.02, 200)")
    elapsed = bench.clock.now() - t0
    pulses, g = (float(x) for x in reply.split("\t"))
    assert pulses == 200
    g_row = conductances[ROW].sum()
    assert g == pytest.approx(g_row, rel=1e-5, abs=floor_abs(0.2 * g_row) / 0.2)
    assert wire.messages_sent - sent == 1  # one bus message for 200 pulses and 201 reads
    per_read = 0.1 / 60 + 120e-6
    assert elapsed == pytest.approx(200 * 1e-3 + 201 * per_read, rel=1e-6)
    assert wire.query("print(string.sub(wv.source, 1, 12))") == "-- write-ver"
    wire.write("wv.run()")
    assert wire.errors() == []


def test_loadandrunscript_and_script_new(wire: Wire) -> None:
    wire.write("loadandrunscript hello\r")
    wire.write("for i = 1, 3 do\r")
    wire.write("  print('hi', i)\r")
    wire.write("end\r")
    wire.write("endscript\r")
    assert wire.read_raw() == b"hi\t1.00000e+00\nhi\t2.00000e+00\nhi\t3.00000e+00\n"
    assert wire.query("hello()") == "hi\t1.00000e+00\nhi\t2.00000e+00\nhi\t3.00000e+00"
    wire.write("s = script.new('print(42)', 'answer')")
    assert wire.query("answer()") == "4.20000e+01"
    assert wire.query("s.run()") == "4.20000e+01"
    wire.write("script.delete('answer')")
    wire.write("answer()")
    assert wire.errors() == [
        (-286, "TSP Runtime error at line 1: attempt to call global `answer' (a nil value)")
    ]
    # Anonymous: run at once, kept as script.anonymous.
    wire.write("loadandrunscript\nx = 7\nendscript")
    assert wire.query("print(x) script.anonymous()") == "7.00000e+00"


def test_script_syntax_and_runtime_errors_carry_script_line_numbers(wire: Wire) -> None:
    wire.write("loadscript broken\nx = 1\ny = = 2\nendscript")
    wire.write("loadscript failing\nlocal a = 1\nlocal b = a + nothing\nendscript")
    wire.write("failing()")
    wire.write("endscript")
    assert wire.errors() == [
        (-285, "TSP Syntax error at line 2: unexpected symbol near `='"),
        (
            -286,
            "TSP Runtime error at line 2: attempt to perform arithmetic on global `nothing' (a nil value)",
        ),
        (-285, "TSP Syntax error at line 1: `endscript' without `loadscript'"),
    ]
    assert wire.query("print(type(broken))") == "nil"


def test_error_queue_content_and_show_errors(wire: Wire) -> None:
    wire.write("smua.source.levelv = ")
    wire.write("smub.nonexistent.x = 1")
    assert wire.query("print(errorqueue.count)") == "2.00000e+00"
    assert wire.query("print(errorqueue.next())") == (
        "-2.85000e+02\tTSP Syntax error at line 1: unexpected symbol near `<eof>'\t2.00000e+01\t1.00000e+00"
    )
    code, msg = wire.query("code, msg = errorqueue.next() print(code, msg)").split("\t")
    assert (code, msg) == (
        "-2.86000e+02",
        "TSP Runtime error at line 1: attempt to index field `nonexistent' (a nil value)",
    )
    wire.write("bad bad")
    wire.write("*CLS")
    assert wire.query("print(errorqueue.count)") == "0.00000e+00"
    wire.write("localnode.showerrors = 1")
    assert wire.query("x = nil + 1") == (
        "TSP Runtime error at line 1: attempt to perform arithmetic on a nil value"
    )
    wire.write("localnode.showerrors = 0 localnode.prompts = 1")
    assert wire.read_raw() == b"TSP>\n"
    assert wire.query("y = 2") == "TSP>"
    assert wire.query("print(y)") == "2.00000e+00\nTSP>"


def test_garbage_never_crashes(wire: Wire, smu: Keithley2636BEmulator) -> None:
    rng = random.Random(1)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 .,;:()[]{}=~<>+-*/%^#'\"\\\t\x00\xff\xfe*?"
    for _ in range(300):
        n = rng.randint(1, 60)
        smu.write(bytes(rng.choice(alphabet) for _ in range(n)) + b"\n")
        smu.read()
    smu.write(b"\x80\x81\xc3(\n*IDN\n*IDN?x\nloadscript 9bad\nendscript\nprint(\n")
    smu.read()
    wire.write("*CLS")
    # Still a working instrument afterwards.
    assert wire.query("*IDN?").startswith("Keithley Instruments Inc., Model 2636B")
    assert wire.query("print(1 + 1)") == "2.00000e+00"


def test_script_loop_throughput_matches_spec_sheet(wire: Wire, bench: Bench) -> None:
    """2602B spec sheet: ~3400 readings/s from a script to memory at 0.01 NPLC."""
    both_outputs_on(wire)
    wire.write("smua.measure.nplc = 0.01 smua.nvbuffer1.clear() smua.nvbuffer1.appendmode = 1")
    t0 = bench.clock.now()
    wire.write("for k = 1, 1000 do smua.measure.i(smua.nvbuffer1) end")
    rate = 1000 / (bench.clock.now() - t0)
    assert rate == pytest.approx(3400, rel=0.1)


# --- exact QCoDeS Keithley2600 strings ---------------------------------------------------------------------
def test_qcodes_driver_strings(wire: Wire, conductances: np.ndarray) -> None:
    assert wire.query("print(localnode.model)") == "2636B"
    idn = wire.query("*IDN?")
    vendor, model, serial, firmware = map(str.strip, idn.split(","))
    assert (vendor, model[6:], serial, firmware) == (
        "Keithley Instruments Inc.",
        "2636B",
        "4428182",
        "4.0.0",
    )
    for cmd in (
        "smua.measure.nplc=0.01",
        "smua.source.func=1",
        "smua.source.limiti=0.001",
        "smua.source.autorangev=0",
        "smua.source.rangev=2",
        "smua.measure.autorangei=1",
        "smua.source.levelv=0.200000000000",
        "smua.source.output=1",
        "smub.source.output=1",
        'display.settext("hello")',
        "display.clear()",
        "display.screen = display.SMUA_SMUB",
        "display.sendkey(75)",
    ):
        wire.write(cmd)
    assert wire.errors() == []
    assert float(wire.query("print(smua.source.func)")) == 1.0
    assert float(wire.query("print(smua.source.output)")) == 1.0
    assert float(wire.query("print(localnode.linefreq)")) == 60.0
    value, status = wire.query(
        "print(smua.measure.i(), status.measurement.instrument.smua.condition)"
    ).split("\t")
    i_row = conductances[ROW].sum() * 0.2
    assert float(value) == pytest.approx(i_row, rel=1e-5, abs=floor_abs(i_row))
    assert int(float(status)) == 0
    # The fast sweep script exactly as LuaSweepParameter._build_1d_script / _scriptwrapper send it.
    npts = 11
    script = [
        "smua.measure.nplc = 0.010000000000",
        "smua.sense = 0",
        "smua.measure.count = 1",
        "smua.source.func = 1",
        "smua.source.output = 1",
        "startX = 0.000000000000",
        "dX = 0.050000000000",
        "smua.nvbuffer1.clear()",
        "smua.nvbuffer1.appendmode = 1",
        f"for index = 1, {npts} do",
        "  target = startX + (index-1)*dX",
        "  smua.source.levelv = target",
        "  smua.measure.i(smua.nvbuffer1)",
        "end",
        "format.data = format.REAL32",
        "format.byteorder = format.LITTLEENDIAN",
        f"printbuffer(1, {npts}, smua.nvbuffer1.readings)",
    ]
    wire.write("loadandrunscript\r\n" + "\r\n".join(script) + "\r\nendscript")
    data = wire.read_raw()
    assert len(data) == 4 * npts + 3
    values = np.array(struct.unpack(f"<{npts}f", data[2:-1]))
    assert values == pytest.approx(
        conductances[ROW].sum() * 0.05 * np.arange(npts),
        rel=1e-5,
        abs=floor_abs(conductances[ROW].sum() * 0.05 * (npts - 1)),
    )
    # The time trace script.
    trace = [
        "smua.measure.count=20",
        "oldint=smua.measure.interval",
        "smua.measure.interval=0.001",
        "smua.nvbuffer1.clear()",
        "smua.measure.i(smua.nvbuffer1)",
        "smua.measure.interval=oldint",
        "smua.measure.count=1",
        "format.data = format.REAL32",
        "format.byteorder = format.LITTLEENDIAN",
        "printbuffer(1, 20, smua.nvbuffer1.readings)",
    ]
    wire.write("loadandrunscript\r\n" + "\r\n".join(trace) + "\r\nendscript")
    assert len(wire.read_raw()) == 4 * 20 + 3
    assert wire.errors() == []


# --- a real device: a script-driven pulse train moves a memristor ---------------------------------------------
def test_script_pulse_train_raises_a_memristor_conductance() -> None:
    bench = make_bench(create_array("memristor", ROWS, COLS, seed=11))
    truth = bench.ground_truth()
    functional = np.argwhere((truth["defect"] == 0) & truth["formed"])
    row, col = (int(x) for x in functional[0])
    bench.ground_all()
    bench.rows_state[row].mode, bench.rows_state[row].terminal = "smu", "A"
    g_before = truth["conductance_s"][row, col]
    v_set = 1.6 * float(truth["set_threshold_v"][row, col])
    wire = Wire(Keithley2636BEmulator(bench))
    wire.write("smua.source.limiti = 1e-3 smua.measure.nplc = 0.01 smua.source.output = 1")
    wire.write(
        "loadscript train\n"
        "function pulses(n, v, width)\n"
        "  for k = 1, n do\n"
        "    smua.source.levelv = v\n"
        "    delay(width)\n"
        "    smua.source.levelv = 0\n"
        "  end\n"
        "end\n"
        "endscript"
    )
    t0 = bench.clock.now()
    wire.write(f"train() pulses(20, {v_set}, 1e-3)")
    assert bench.clock.now() - t0 == pytest.approx(20e-3)
    assert wire.errors() == []
    g_after = bench.ground_truth()["conductance_s"][row, col]
    assert g_after > 1.05 * g_before


class StressRecorder(ResistorArray):
    """A resistor crossbar that records each interval of held bias (row voltage, duration)."""

    def __init__(self, conductance_s: np.ndarray) -> None:
        super().__init__(conductance_s)
        self.held: list[tuple[float, float]] = []

    def stress(
        self, bias, duration_s: float, temperature_c: float, *, count_pulse: bool = True
    ) -> bool:  # type: ignore[no-untyped-def]
        self.held.append((float(bias.row_v[ROW]), duration_s))
        return False


def test_pulsed_sweep_returns_to_idle_between_pulses() -> None:
    array = StressRecorder(np.full((ROWS, COLS), 50e-6))
    bench = make_bench(array)
    route_row_col(bench)
    wire = Wire(Keithley2636BEmulator(bench))
    wire.write("smua.source.levelv = 0 smua.source.limiti = 1e-3 smua.source.output = 1")
    wire.write(
        "smua.trigger.source.listv({1.0, 1.2, 1.4}) smua.trigger.source.action = smua.ENABLE "
        "smua.trigger.measure.action = smua.DISABLE smua.trigger.count = 3 "
        "trigger.timer[1].delay = 500e-6 "
        "smua.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID "
        "smua.trigger.endpulse.action = smua.SOURCE_IDLE"
    )
    array.held.clear()
    t0 = bench.clock.now()
    wire.write("smua.trigger.initiate() waitcomplete()")
    assert wire.errors() == []
    assert bench.clock.now() - t0 == pytest.approx(3 * 500e-6)
    assert array.held == [
        (1.0, pytest.approx(500e-6)),
        (1.2, pytest.approx(500e-6)),
        (1.4, pytest.approx(500e-6)),
    ]
    assert bench.terminal_v["A"] == 0.0  # back at the idle level after the last pulse
    assert bench.max_applied_v["A"] == pytest.approx(1.4)
