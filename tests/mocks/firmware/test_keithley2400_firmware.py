"""Keithley 2400 emulator: the SCPI a 2400 user (or PyMeasure / QCoDeS) sends, on a real bench.

Device (r, c) of the conftest array has a known conductance; routing row r to SMU
terminal A, column c to ground and the other columns to a buffer tracking terminal A
leaves device (r, c) alone in the measured current: I = G * V.
"""

from __future__ import annotations

import pytest

from nvmlab.mocks.firmware.keithley2400 import NAN_READING, Keithley2400Emulator
from nvmlab.mocks.firmware.smu_ranges import KEITHLEY_2400
from nvmlab.mocks.world import Bench

IDN = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4107712,C30   Mar 17 2006 09:29:29/A02  /K/J"

TABLE = KEITHLEY_2400


def floor_abs(expected_a: list[float] | float, nplc: float = 0.01) -> float:
    """Tolerance (A) for readings of ``expected_a``: six rms noise floors of the auto range
    at ``nplc`` plus one count of its resolution (:mod:`nvmlab.mocks.firmware.smu_ranges`;
    the default 0.01 PLC is the shortest integration these tests use)."""
    values = expected_a if isinstance(expected_a, list) else [expected_a]
    ranges = [TABLE.auto(a) for a in values]
    return max(6 * r.noise_floor_a(nplc) + r.resolution_a for r in ranges)


def select(bench: Bench, row: int, col: int) -> None:
    """Route device (row, col) alone to terminal A (tracking scheme)."""
    bench.ground_all()
    bench.rows_state[row].mode, bench.rows_state[row].terminal = "smu", "A"
    for c, line in enumerate(bench.cols_state):
        if c != col:
            line.mode, line.terminal = "track", "A"


@pytest.fixture
def smu(bench: Bench) -> Keithley2400Emulator:
    assert bench.ground_truth()["conductance_s"][2, 3] == pytest.approx(G23)
    select(bench, 2, 3)
    return Keithley2400Emulator(bench)


def ask(smu: Keithley2400Emulator, line: str) -> str:
    smu.write(line.encode() + b"\n")
    return smu.read().decode()


def values(smu: Keithley2400Emulator, line: str) -> list[float]:
    reply = ask(smu, line)
    assert reply.endswith("\n"), f"no reply to {line!r}"
    return [float(v) for v in reply.strip().split(",")]


def errors(smu: Keithley2400Emulator) -> list[int]:
    codes = []
    while (code := int(ask(smu, ":SYST:ERR?").split(",")[0])) != 0:
        codes.append(code)
    return codes


#: Conductance (S) of device (2, 3) in the conftest array: (10 + 2 * 8 + 3) uS.
G23 = 29e-6


def test_identity_and_reset_defaults(smu: Keithley2400Emulator) -> None:
    assert ask(smu, "*IDN?") == IDN + "\n"
    ask(smu, ":SENS:CURR:PROT 1e-3;:SOUR:VOLT 1;:OUTP ON;:FORM:ELEM CURR")
    ask(smu, "*RST")
    assert ask(smu, ":SENS:CURR:PROT?") == "1.050000E-04\n"
    assert ask(smu, ":SENS:VOLT:PROT?") == "2.100000E+01\n"
    assert ask(smu, ":SOUR:FUNC?;:SOUR:VOLT?;:OUTP?") == "VOLT;0.000000E+00;0\n"
    assert ask(smu, ":FORM:ELEM?") == "VOLT,CURR,RES,TIME,STAT\n"
    assert ask(smu, ":SENS:FUNC?") == '"CURR:DC"\n'
    assert ask(smu, ":SENS:CURR:NPLC?;:TRIG:COUN?") == "1.000000E+00;1\n"
    assert smu.bench.terminal_v["A"] is None  # *RST turns the output off


def test_read_with_output_off_is_error_803_and_no_reply(smu: Keithley2400Emulator) -> None:
    assert ask(smu, ":READ?") == ""
    assert (
        ask(smu, ":SYST:ERR?")
        == '803,"Not permitted with OUTPUT off; turn the output on (:OUTP ON) before :READ? or :INIT"\n'
    )
    assert ask(smu, ":INIT") == ""
    assert errors(smu) == [803]
    assert smu.bench.terminal_v["A"] is None


def test_source_voltage_and_measure_current_of_a_selected_device(smu: Keithley2400Emulator) -> None:
    ask(smu, ":SOUR:FUNC VOLT;:SOUR:VOLT 0.2;:SENS:FUNC 'CURR';:SENS:CURR:PROT 1e-3;:OUTP ON")
    assert smu.bench.terminal_v["A"] == pytest.approx(0.2)  # output on applies the level at once
    volts, amps, res, t, status = values(smu, ":READ?")
    assert volts == pytest.approx(0.2)
    assert amps == pytest.approx(G23 * 0.2, rel=1e-6)
    assert res == NAN_READING  # resistance is not measured
    assert t > 0
    word = int(status)
    assert word & (1 << 14) and word & (1 << 12)  # V source, I measured
    assert not word & (1 << 3)  # not in compliance
    # Changing the level with the output on re-applies it.
    ask(smu, ":SOUR:VOLT -0.1")
    assert smu.bench.terminal_v["A"] == pytest.approx(-0.1)
    assert values(smu, ":READ?")[1] == pytest.approx(-0.1 * G23, rel=1e-6)
    ask(smu, ":OUTP OFF")
    assert smu.bench.terminal_v["A"] is None
    assert errors(smu) == []


def test_compliance_clamps_the_source_and_sets_the_status_bit(smu: Keithley2400Emulator) -> None:
    limit = 5e-6
    ask(smu, f":SOUR:VOLT 1.0;:SENS:CURR:PROT {limit};:OUTP ON")
    volts, amps, _res, _t, status = values(smu, ":READ?")
    assert amps == pytest.approx(limit, rel=1e-6)
    assert volts == pytest.approx(limit / G23, rel=1e-4)  # the clamped voltage really applied
    assert int(status) & (1 << 3)
    assert ask(smu, ":SENS:CURR:PROT:TRIP?") == "1\n"
    assert smu.bench.max_applied_a["A"] <= limit * (1 + 1e-9)
    ask(smu, ":SENS:CURR:PROT 1e-3")
    assert int(values(smu, ":READ?")[4]) & (1 << 3) == 0
    assert ask(smu, ":SENS:CURR:PROT:TRIP?") == "0\n"


def test_sourcing_current_solves_for_the_voltage(smu: Keithley2400Emulator) -> None:
    ask(smu, ":SOUR:FUNC CURR;:SOUR:CURR 2e-6;:SENS:FUNC 'VOLT';:SENS:VOLT:PROT 5;:OUTP ON")
    volts, amps, *_ = values(smu, ":READ?")
    assert amps == pytest.approx(2e-6, rel=1e-6)
    assert volts == pytest.approx(2e-6 / G23, rel=1e-6)
    # An open circuit drives the source into voltage compliance.
    smu.bench.ground_all()
    volts, _amps, _res, _t, status = values(smu, ":READ?")
    assert volts == pytest.approx(5.0)
    assert int(status) & (1 << 3) and int(status) & (1 << 15)


def test_format_elements_choose_the_fields_in_manual_order(smu: Keithley2400Emulator) -> None:
    ask(smu, ":SOUR:VOLT 0.3;:SENS:CURR:PROT 1e-3;:OUTP ON")
    ask(smu, ":FORM:ELEM STAT, CURR")  # order given does not matter
    assert ask(smu, ":FORM:ELEM?") == "CURR,STAT\n"
    assert len(values(smu, ":READ?")) == 2
    ask(smu, ":FORMAT:ELEMENTS RESISTANCE")
    assert values(smu, ":READ?") == [NAN_READING]
    ask(smu, ":SENS:FUNC:CONC ON;:SENS:FUNC 'RES'")
    assert values(smu, ":READ?")[0] == pytest.approx(1 / G23, rel=1e-6)
    ask(smu, ":SENS:FUNC:OFF:ALL;:SOUR:FUNC CURR;:FORM:ELEM VOLT,CURR")
    # Nothing measured and V not sourced: VOLT reads NaN, the sourced current reads back.
    assert values(smu, ":READ?")[0] == NAN_READING
    ask(smu, ":FORM:ELEM BOGUS")
    ask(smu, ":FORM:DATA REAL,32")
    assert errors(smu) == [-224, -224]


def test_integration_time_and_delays_are_spent_on_the_shared_clock(
    smu: Keithley2400Emulator,
) -> None:
    clock = smu.bench.clock
    ask(smu, ":SOUR:DEL 0;:TRIG:DEL 0;:SENS:CURR:NPLC 0.1;:SOUR:VOLT 0.1;:OUTP ON")
    t0 = clock.now()
    ask(smu, ":TRIG:COUN 10;:READ?")
    assert clock.now() - t0 == pytest.approx(10 * 0.1 / 60.0)
    ask(smu, ":SYST:LFR 50;:SENS:CURR:NPLC 1;:SOUR:DEL 0.002;:TRIG:COUN 1")
    t0 = clock.now()
    ask(smu, ":READ?")
    assert clock.now() - t0 == pytest.approx(1 / 50.0 + 0.002)
    ask(smu, ":SOUR:DEL:AUTO ON")  # auto delay: 1 ms
    t0 = clock.now()
    ask(smu, ":READ?")
    assert clock.now() - t0 == pytest.approx(1 / 50.0 + 1e-3)
    ask(smu, ":SYST:TIME:RES")
    t_stamp = values(smu, ":FORM:ELEM TIME;:READ?")[0]
    assert t_stamp == pytest.approx(1 / 50.0 + 1e-3)


def test_staircase_sweep_returns_count_times_elements_with_ohmic_currents(
    smu: Keithley2400Emulator,
) -> None:
    ask(smu, ":SENS:CURR:PROT 1e-3;:SENS:CURR:NPLC 0.01;:FORM:ELEM VOLT,CURR;:OUTP ON")
    ask(smu, ":SOUR:VOLT:MODE SWE;:SOUR:VOLT:STAR -0.2;STOP 0.3;STEP 0.1")
    assert ask(smu, ":SOUR:SWE:POIN?") == "6\n"
    data = values(smu, ":TRIG:COUN 6;:READ?")
    assert len(data) == 12
    volts, amps = data[0::2], data[1::2]
    assert volts == pytest.approx([-0.2, -0.1, 0.0, 0.1, 0.2, 0.3], abs=1e-12)
    assert amps == pytest.approx([G23 * v for v in volts], abs=floor_abs([G23 * 0.3]))
    # After the sweep the source returns to its bias level (0 V here).
    assert smu.bench.terminal_v["A"] == pytest.approx(0.0)
    # Log spacing, down direction.
    ask(smu, ":SOUR:SWE:SPAC LOG;:SOUR:VOLT:STAR 0.01;STOP 1;:SOUR:SWE:POIN 3;:SOUR:SWE:DIR DOWN")
    assert values(smu, ":TRIG:COUN 3;:READ?")[0::2] == pytest.approx([1.0, 0.1, 0.01])
    ask(smu, ":SOUR:SWE:POIN 2501")
    assert errors(smu) == [-222]


def test_list_sweep(smu: Keithley2400Emulator) -> None:
    ask(smu, ":SENS:CURR:PROT 1e-3;:FORM:ELEM CURR;:OUTP ON")
    ask(smu, ":SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT 0.1,-0.2,0.3,0.05")
    assert ask(smu, ":SOUR:LIST:VOLT:POIN?") == "4\n"
    amps = values(smu, ":TRIG:COUN 4;:READ?")
    assert amps == pytest.approx(
        [G23 * v for v in (0.1, -0.2, 0.3, 0.05)], abs=floor_abs(G23 * 0.3)
    )
    assert values(smu, ":FETC?") == amps  # :FETC? returns the same readings again
    ask(smu, ":TRIG:COUN 2500;:ARM:COUN 2")
    assert errors(smu) == [-221]


def test_trace_buffer_as_pymeasure_configures_it(smu: Keithley2400Emulator) -> None:
    ask(smu, ":SENS:CURR:PROT 1e-3;:SOUR:VOLT 0.25;:OUTP ON;:FORM:ELEM CURR")
    for line in (":STAT:PRES;*CLS;*SRE 1;:STAT:MEAS:ENAB 512;", ":TRAC:CLEAR;", ":TRAC:POIN 5",
                 ":TRIGGER:COUNT 5", ":TRIGGER:DELAY 0", ":TRAC:FEED SENSE;:TRAC:FEED:CONT NEXT;"):  # fmt: skip
        ask(smu, line)
    assert int(ask(smu, "*STB?")) & 65 != 65  # buffer not full yet
    ask(smu, ":TRAC:POIN 7")  # may not resize while storing
    assert errors(smu) == [800]
    ask(smu, ":INIT")
    assert int(ask(smu, "*STB?")) & 65 == 65  # pymeasure's is_buffer_full()
    assert ask(smu, ":TRAC:POIN:ACT?") == "5\n"
    assert ask(smu, ":TRAC:FEED:CONT?") == "NEV\n"
    ask(smu, ":FORM:DATA ASCII")
    data = values(smu, ":TRAC:DATA?")
    assert data == pytest.approx([0.25 * G23] * 5, abs=floor_abs(0.25 * G23))
    mean = values(smu, ":CALCULATE3:FORMAT MEAN;:CALCULATE3:DATA?;")
    assert mean == pytest.approx([0.25 * G23], rel=1e-6)
    ask(smu, ":TRAC:CLE")
    assert ask(smu, ":TRAC:POIN:ACT?") == "0\n"
    assert ask(smu, ":TRAC:DATA?") == ""
    assert errors(smu) == [-230]


def test_measure_turns_the_output_on_and_restores_protection(smu: Keithley2400Emulator) -> None:
    """:MEAS:CURR? = :CONF:CURR + :READ?; :CONF defaults the current function's controls."""
    ask(smu, ":SOUR:VOLT 0.1;:SENS:CURR:PROT 1e-6")
    volts, amps, *_ = values(smu, ":MEAS:CURR?")
    assert ask(smu, ":OUTP?") == "1\n"
    assert ask(smu, ":SENS:CURR:PROT?") == "1.050000E-04\n"
    assert amps == pytest.approx(0.1 * G23, rel=1e-6)
    assert volts == pytest.approx(0.1)


def test_auto_output_off_pulses_the_source_for_each_reading(smu: Keithley2400Emulator) -> None:
    ask(smu, ":SOUR:CLE:AUTO ON;:SOUR:VOLT 0.2;:SENS:CURR:PROT 1e-3;:FORM:ELEM CURR")
    assert values(smu, ":READ?") == pytest.approx([0.2 * G23], rel=1e-6)
    assert smu.bench.terminal_v["A"] is None
    assert smu.bench.max_applied_v["A"] == pytest.approx(0.2)


def test_bus_armed_acquisition_waits_for_trigger(smu: Keithley2400Emulator) -> None:
    ask(
        smu,
        ":SENS:CURR:PROT 1e-3;:SOUR:VOLT 0.1;:OUTP ON;:FORM:ELEM CURR;:ARM:SOUR BUS;:TRIG:COUN 3",
    )
    t0 = smu.bench.clock.now()
    ask(smu, ":INIT")
    assert smu.bench.clock.now() == t0  # nothing measured yet
    ask(smu, "*TRG")
    assert len(values(smu, ":FETC?")) == 3


PYMEASURE_SESSION = [
    # Keithley2400.__init__ / reset / apply_voltage / measure_current / enable_source / check_errors
    ("*RST", None),
    (":FORMAT:ELEMENTS VOLTAGE, CURRENT, RESISTANCE, TIME, STATUS", None),
    ("*IDN?", IDN),
    ("*CLS", None),
    (":SOURCE:FUNCTION VOLT", None),
    (":SOURCE:FUNCTION?", "VOLT"),
    (":SOUR:VOLT:RANG:AUTO 1", None),
    (":SOURCE:VOLTAGE:RANGE:AUTO?", "1"),
    (":SENSE:CURRENT:PROTECTION 0.001", None),
    (":SENSE:CURRENT:PROTECTION?", "1.000000E-03"),
    (":SENS:FUNC 'CURR';:SENS:CURR:NPLC 0.100000;", None),
    (":SENS:CURR:RANG:AUTO 1;", None),
    (":SENSE:CURRENT:NPLCYCLES 0.1", None),
    (":SENSE:CURRENT:NPLCYCLES?", "1.000000E-01"),
    (":SENSE:CURRENT:RANGE:AUTO?", "1"),
    (":SOURCE:DELAY:AUTO 1", None),
    (":SOURCE:DELAY 0.001", None),
    (":SOURCE:DELAY?", "1.000000E-03"),
    (":SOURCE:VOLTAGE 0.2", None),
    (":SOURCE:VOLTAGE?", "2.000000E-01"),
    ("OUTPUT 1", None),
    ("OUTPUT?", "1"),
    (":TRIGGER:COUNT 1", None),
    (":ARM:COUNT?", "1"),
    (":TRIGGER:COUNT?", "1"),
    (":SYSTEM:AZERO:STATE ONCE", None),
    (":SENSE:AVERAGE 0", None),
    (":DISPLAY:ENABLE 1", None),
    (":SYSTEM:RSENSE 0", None),
    (":SYSTEM:LFREQUENCY 60", None),
    (":ROUTE:TERMINALS FRON", None),
    (":OUTPUT:SMODE HIMP", None),
    (":SOURCE:CLEAR:AUTO 0", None),
    (":ARM:SOURCE IMM", None),
    (":TRIGGER:SOURCE IMM", None),
    (":TRIGGER:OUTPUT NONE", None),
    (":ARM:OUTPUT NONE", None),
    (":TRAC:FEED:CONT NEV", None),
    (":ABOR", None),
    ("SYST:ERR?", '0,"No error"'),
]


def test_pymeasure_keithley2400_command_strings(smu: Keithley2400Emulator) -> None:
    for line, reply in PYMEASURE_SESSION:
        got = ask(smu, line)
        assert got == ("" if reply is None else reply + "\n"), line
    current = values(smu, ":MEASURE:CURRENT?")[1]  # Keithley2400.current
    assert current == pytest.approx(0.2 * G23, rel=1e-6)
    smu.bench.clock.sleep(0)
    measured = values(smu, ":SENSE:FUNCTION:ALL;:SENSE:RESISTANCE:MODE MAN;:READ?")  # measure_all
    assert len(measured) == 5 and measured[2] == pytest.approx(1 / G23, rel=1e-6)
    ask(smu, "OUTPUT 0")
    assert errors(smu) == []


QCODES_SESSION = [
    # Keithley2400.__init__, its parameters' get/set commands, reset
    (":TRIG:COUN 1;:FORM:ELEM VOLT,CURR", None),
    ("*IDN?", IDN),
    (":SOUR:FUNC?", "VOLT"),
    (':SENS:FUNC "CURR"', None),
    (":SOUR:FUNC VOLT", None),
    (":SENS:FUNC?", '"CURR:DC"'),
    ("SOUR:VOLT:RANG 2.000000", None),
    ("SENS:VOLT:RANG?", "2.100000E+01"),
    ("SENS:CURR:PROT 0.001000", None),
    ("SENS:CURR:PROT?", "1.000000E-03"),
    ("SENS:VOLT:PROT 10.000000", None),
    ("SENS:VOLT:PROT?", "1.000000E+01"),
    ("SENS:CURR:NPLC 0.010000", None),
    ("SENS:CURR:NPLC?", "1.000000E-02"),
    ("SENS:VOLT:NPLC?", "1.000000E-02"),
    (":SOUR:VOLT:LEV 0.20000000", None),
    (":OUTP:STAT 1", None),
    (":OUTP:STAT?", "1"),
]


def test_qcodes_keithley2400_command_strings(smu: Keithley2400Emulator) -> None:
    for line, reply in QCODES_SESSION:
        assert ask(smu, line) == ("" if reply is None else reply + "\n"), line
    volt, curr = values(smu, ":READ?")  # volt / curr / resistance parameters parse these
    assert volt == pytest.approx(0.2) and curr == pytest.approx(0.2 * G23, abs=floor_abs(0.2 * G23))
    ask(smu, ":OUTP:STAT 0")
    ask(smu, ":*RST")
    assert ask(smu, ":OUTP:STAT?") == "0\n"
    assert errors(smu) == []


def test_garbage_never_crashes_the_2400(smu: Keithley2400Emulator) -> None:
    for junk in (b"\xff\xfe\x00", b":READ?" * 100, b":SOUR:VOLT 1e400", b":SENS:FUNC 'CURR",
                 b":SOUR:LIST:VOLT " + b"0.1," * 200 + b"0.1", b"::::", b";;;", b":TRAC:DATA? 1,2"):  # fmt: skip
        smu.write(junk + b"\n")
        smu.read()
    assert ask(smu, "*CLS;*IDN?") == IDN + "\n"
