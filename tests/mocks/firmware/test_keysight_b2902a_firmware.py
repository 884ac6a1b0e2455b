"""Keysight B2902A emulator: both channels, channel lists, sweeps, pulses, the trace buffer.

Channel 1 (terminal A) drives row 1 and channel 2 (terminal B) row 5; every column is
grounded and the other rows too, so each channel's current is its row's total
conductance times its voltage.
"""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.keysight_b2902a import KeysightB2902AEmulator
from nvmlab.mocks.firmware.scpi import NAN_READING
from nvmlab.mocks.firmware.smu_ranges import KEYSIGHT_B2902A
from nvmlab.mocks.physics import create_array
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import Bench

#: Row sums (S) of the conftest array: row r holds (10 + 8 r + c) uS, c = 0..7.
G_ROW1 = sum(10 + 8 + c for c in range(8)) * 1e-6
G_ROW5 = sum(10 + 40 + c for c in range(8)) * 1e-6

TABLE = KEYSIGHT_B2902A


def floor_abs(expected_a: list[float] | float, nplc: float = 0.01) -> float:
    """Tolerance (A) for readings of ``expected_a``: six rms noise floors of the auto range
    at ``nplc`` plus one count of its resolution (:mod:`nvmlab.mocks.firmware.smu_ranges`;
    the default 0.01 PLC is the shortest integration these tests use)."""
    values = expected_a if isinstance(expected_a, list) else [expected_a]
    ranges = [TABLE.auto(a) for a in values]
    return max(6 * r.noise_floor_a(nplc) + r.resolution_a for r in ranges)


@pytest.fixture
def smu(bench: Bench) -> KeysightB2902AEmulator:
    truth = bench.ground_truth()["conductance_s"]
    assert truth[1].sum() == pytest.approx(G_ROW1) and truth[5].sum() == pytest.approx(G_ROW5)
    bench.ground_all()
    bench.rows_state[1].mode, bench.rows_state[1].terminal = "smu", "A"
    bench.rows_state[5].mode, bench.rows_state[5].terminal = "smu", "B"
    return KeysightB2902AEmulator(bench)


def ask(smu: KeysightB2902AEmulator, line: str) -> str:
    smu.write(line.encode() + b"\n")
    return smu.read().decode()


def values(smu: KeysightB2902AEmulator, line: str) -> list[float]:
    reply = ask(smu, line)
    assert reply.endswith("\n"), f"no reply to {line!r}"
    return [float(v) for v in reply.strip().split(",")]


def errors(smu: KeysightB2902AEmulator) -> list[int]:
    codes = []
    while (code := int(ask(smu, ":SYST:ERR?").split(",")[0])) != 0:
        codes.append(code)
    return codes


def test_identity_and_keysight_error_format(smu: KeysightB2902AEmulator) -> None:
    assert ask(smu, "*IDN?") == "Keysight Technologies,B2902A,MY51141234,3.4.2011.5100\n"
    assert ask(smu, ":SYST:ERR?") == '+0,"No error"\n'
    ask(smu, ":SOUR3:VOLT 1")
    ask(smu, ":MEAS:CURR? (@3)")
    assert errors(smu) == [-114, -224]


def test_spot_measurement_on_both_channels(smu: KeysightB2902AEmulator) -> None:
    ask(smu, ":SOUR1:FUNC:MODE VOLT;:SOUR1:VOLT 0.2;:SOUR2:FUNC:MODE VOLT;:SOUR2:VOLT 100mV")
    ask(smu, ":SENS1:CURR:PROT 10mA;:SENS2:CURR:PROT 0.01")
    i1, i2 = values(smu, ":MEAS:CURR? (@1,2)")
    assert i1 == pytest.approx(0.2 * G_ROW1, rel=1e-6)
    assert i2 == pytest.approx(0.1 * G_ROW5, rel=1e-6)
    assert ask(smu, ":OUTP? (@1,2)") == "1,1\n"  # the measurement turned both outputs on
    assert values(smu, ":MEAS:CURR?") == pytest.approx(
        [i1], abs=floor_abs(i1)
    )  # no list: channel 1
    # :MEAS? returns every :FORM:ELEM:SENS field; RES is not measured.
    v, i, r, t, stat, src = values(smu, ":MEAS? (@2)")
    assert (v, r, src) == (pytest.approx(0.1), NAN_READING, pytest.approx(0.1))
    assert i == pytest.approx(0.1 * G_ROW5, rel=1e-6)
    ask(smu, ":FORM:ELEM:SENS SOUR,CURR")
    assert ask(smu, ":FORM:ELEM:SENS?") == "CURR,SOUR\n"
    assert len(values(smu, ":MEAS? (@1,2)")) == 4
    assert errors(smu) == []


def test_output_forms_with_suffix_and_channel_list(smu: KeysightB2902AEmulator) -> None:
    ask(smu, ":SENS2:CURR:PROT 1mA;:SOUR2:VOLT 0.3;:OUTP2 ON")
    assert smu.bench.terminal_v == {"A": None, "B": pytest.approx(0.3)}
    ask(smu, ":OUTP ON,(@1,2)")
    assert ask(smu, ":OUTP1?;:OUTP2?") == "1;1\n"
    ask(smu, ":OUTP OFF,(@1:2)")
    assert smu.bench.terminal_v == {"A": None, "B": None}
    ask(smu, ":OUTP ON,2")
    assert errors(smu) == [-104]


def test_compliance_on_one_channel(smu: KeysightB2902AEmulator) -> None:
    ask(smu, ":SOUR2:VOLT 1;:SENS2:CURR:PROT 50uA;:SOUR1:VOLT 0.1;:SENS1:CURR:PROT 1e-3")
    ask(smu, ":FORM:ELEM:SENS VOLT,CURR,STAT")
    data = values(smu, ":MEAS? (@1,2)")
    (_v1, i1, s1), (v2, i2, s2) = data[:3], data[3:]
    assert i1 == pytest.approx(0.1 * G_ROW1, rel=1e-6) and int(s1) & 8 == 0
    assert i2 == pytest.approx(50e-6, rel=1e-6) and int(s2) & 8
    assert v2 == pytest.approx(50e-6 / G_ROW5, rel=1e-4)
    assert ask(smu, ":SENS2:CURR:PROT:TRIP?;:SENS1:CURR:PROT:TRIP?") == "1;0\n"


def test_list_and_staircase_sweeps_with_fetch_array(smu: KeysightB2902AEmulator) -> None:
    ask(
        smu,
        ":SENS:CURR:PROT 0.01;:SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT 0.1,0.2,-0.15,0.05;:TRIG:COUN 4",
    )
    assert ask(smu, ":SOUR:LIST:VOLT:POIN?") == "4\n"
    ask(smu, ":INIT (@1)")
    amps = values(smu, ":FETC:ARR:CURR? (@1)")
    assert amps == pytest.approx(
        [G_ROW1 * v for v in (0.1, 0.2, -0.15, 0.05)], abs=floor_abs(G_ROW1 * 0.2)
    )
    assert values(smu, ":FETC:ARR:SOUR? (@1)") == pytest.approx([0.1, 0.2, -0.15, 0.05])
    assert smu.bench.terminal_v["A"] == pytest.approx(0.0)  # back to the immediate level
    ask(smu, ":SENS2:CURR:PROT 0.01;:SOUR2:VOLT:MODE SWE;:SOUR2:VOLT:STAR 0;:SOUR2:VOLT:STOP 0.4")
    ask(smu, ":SOUR2:SWE:POIN 5;:TRIG2:COUN 5")
    assert ask(smu, ":SOUR2:VOLT:STEP?") == "+1.000000E-01\n"
    data = values(smu, ":READ:ARR:CURR? (@2)")
    assert data == pytest.approx(
        [G_ROW5 * v for v in (0, 0.1, 0.2, 0.3, 0.4)], abs=floor_abs(G_ROW5 * 0.4)
    )
    # Both channels at once: point by point, channel 1 then channel 2.
    ask(smu, ":TRIG1:COUN 4;:TRIG2:COUN 4;:INIT (@1,2)")
    both = values(smu, ":FETC:ARR:CURR? (@1,2)")
    assert len(both) == 8
    assert both[0::2] == pytest.approx(
        [G_ROW1 * v for v in (0.1, 0.2, -0.15, 0.05)], abs=floor_abs(G_ROW1 * 0.2)
    )
    assert both[1::2] == pytest.approx(
        [G_ROW5 * v for v in (0, 0.1, 0.2, 0.3)], abs=floor_abs(G_ROW5 * 0.3)
    )
    assert errors(smu) == []


def test_fetch_before_init_is_an_error(smu: KeysightB2902AEmulator) -> None:
    assert ask(smu, ":FETC:ARR:CURR? (@2)") == ""
    assert errors(smu) == [-230]


def test_aperture_time_and_timer_trigger_spend_instrument_time(smu: KeysightB2902AEmulator) -> None:
    clock = smu.bench.clock
    ask(smu, ":SENS:CURR:NPLC 1;:SOUR:VOLT 0.1;:SENS:CURR:PROT 0.01")
    assert ask(smu, ":SENS:CURR:APER?") == "+2.000000E-02\n"  # 1 PLC at 50 Hz
    t0 = clock.now()
    ask(smu, ":TRIG:COUN 10;:INIT")
    assert clock.now() - t0 == pytest.approx(10 * 0.02)
    ask(smu, ":SENS:CURR:APER 1ms;:TRIG:SOUR TIM;:TRIG:TIM 0.01;:TRIG:COUN 4")
    assert float(ask(smu, ":SENS:CURR:NPLC?")) == pytest.approx(0.05)
    t0 = clock.now()
    ask(smu, ":INIT")
    assert clock.now() - t0 == pytest.approx(3 * 0.01 + 1e-3)  # 4 points one period apart
    times = values(smu, ":FETC:ARR:TIME?")
    assert np.diff(times) == pytest.approx([0.01] * 3)


def test_bus_trigger_steps_armed_channels(smu: KeysightB2902AEmulator) -> None:
    ask(smu, ":SENS:CURR:PROT 0.01;:SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT 0.1,0.2,0.3")
    ask(smu, ":TRIG:SOUR BUS;:TRIG:COUN 3;:INIT (@1)")
    assert smu.results[1] == []
    ask(smu, "*TRG")
    assert values(smu, ":FETC:ARR:SOUR?") == pytest.approx([0.1])
    ask(smu, "*TRG;*TRG")
    assert values(smu, ":FETC:ARR:SOUR?") == pytest.approx([0.1, 0.2, 0.3])
    ask(smu, "*TRG")  # nothing armed any more
    assert len(values(smu, ":FETC:ARR:SOUR?")) == 3


def test_trace_buffer(smu: KeysightB2902AEmulator) -> None:
    ask(smu, ":SENS:CURR:PROT 0.01;:SOUR:VOLT 0.25;:FORM:ELEM:SENS CURR")
    ask(smu, ":TRAC:CLE;:TRAC:POIN 6;:TRAC:FEED SENS;:TRAC:FEED:CONT NEXT")
    ask(smu, ":TRAC:POIN 10")  # not while storing
    ask(smu, ":TRIG:COUN 4;:INIT;:INIT")
    assert ask(smu, ":TRAC:POIN:ACT?") == "6\n"  # full after 6 of 8 readings
    assert ask(smu, ":TRAC:FEED:CONT?") == "NEV\n"
    assert values(smu, ":TRAC:DATA?") == pytest.approx(
        [0.25 * G_ROW1] * 6, abs=floor_abs(0.25 * G_ROW1)
    )
    assert len(values(smu, ":TRAC:DATA? 2,3")) == 3
    assert ask(smu, ":TRAC2:POIN:ACT?") == "0\n"
    ask(smu, ":TRAC:POIN 100001")
    assert errors(smu) == [-221, -222]


def test_pulse_settings_and_timing(smu: KeysightB2902AEmulator) -> None:
    clock = smu.bench.clock
    ask(smu, ":SOUR:FUNC:SHAP PULS;:SOUR:PULS:WIDT 100.4e-6;:SOUR:PULS:DEL 20us")
    assert (
        ask(smu, ":SOUR:PULS:WIDT?;:SOUR:PULS:DEL?") == "+1.000000E-04;+2.000000E-05\n"
    )  # 1 us steps
    ask(smu, ":SOUR:PULS:WIDT 49e-6")
    assert errors(smu) == [-222]
    ask(smu, ":SENS:CURR:PROT 0.01;:SOUR:VOLT 0.05;:SOUR:VOLT:TRIG 0.4;:FORM:ELEM:SENS CURR,SOUR")
    t0 = clock.now()
    data = values(smu, ":TRIG:COUN 3;:INIT;:FETC:ARR?")
    assert clock.now() - t0 == pytest.approx(3 * (20e-6 + 100e-6))
    assert data[1::2] == pytest.approx([0.4] * 3)  # peak = triggered level
    assert data[0::2] == pytest.approx([0.4 * G_ROW1] * 3, abs=floor_abs(0.4 * G_ROW1))
    assert smu.bench.terminal_v["A"] == pytest.approx(0.05)  # back at the base level
    assert smu.bench.max_applied_v["A"] == pytest.approx(0.4)


def test_a_write_pulse_switches_a_memristor_and_read_pulses_do_not() -> None:
    clock = VirtualClock()
    bench = Bench(create_array("memristor", 8, 8, seed=3), clock, ThermalModel(clock))
    truth = bench.ground_truth()
    ok = (truth["set_threshold_v"] < 1.2) & (truth["defect"] == 0) & truth["formed"].astype(bool)
    ok &= truth["conductance_s"] < 0.5 * truth["conductance_s"].max()
    r, c = map(int, np.argwhere(ok)[0])
    bench.ground_all()
    bench.rows_state[r].mode, bench.rows_state[r].terminal = "smu", "A"
    for k, line in enumerate(bench.cols_state):
        if k != c:
            line.mode, line.terminal = "track", "A"
    smu = KeysightB2902AEmulator(bench)
    g0 = bench.ground_truth()["conductance_s"][r, c]
    ask(smu, ":SENS:CURR:PROT 1e-3;:SOUR:FUNC:SHAP PULS;:SOUR:PULS:WIDT 1e-3;:SOUR:VOLT 0")
    ask(smu, ":SOUR:VOLT:TRIG 0.2;:TRIG:COUN 5;:INIT")  # five 0.2 V, 1 ms read pulses
    assert bench.ground_truth()["conductance_s"][r, c] == pytest.approx(g0, rel=1e-3)
    ask(smu, ":SOUR:VOLT:TRIG 1.5;:TRIG:COUN 1;:INIT")  # one 1.5 V, 1 ms write pulse
    g1 = bench.ground_truth()["conductance_s"][r, c]
    assert g1 > g0 * 1.01, f"device ({r},{c}) threshold {truth['set_threshold_v'][r, c]:.2f} V"
    assert errors(smu) == []


def test_sourcing_current(smu: KeysightB2902AEmulator) -> None:
    ask(smu, ":SOUR:FUNC:MODE CURR;:SOUR:CURR 20uA;:SENS:VOLT:PROT 2")
    v, i = values(smu, ":FORM:ELEM:SENS VOLT,CURR;:MEAS? (@1)")
    assert i == pytest.approx(20e-6, rel=1e-6) and v == pytest.approx(20e-6 / G_ROW1, rel=1e-6)


def test_garbage_never_crashes_the_b2902a(smu: KeysightB2902AEmulator) -> None:
    for junk in (b"\x00\xff", b":MEAS:CURR? (@1,", b":OUTP ON,(@", b":SOUR:LIST:VOLT " + b"1," * 50,
                 b":TRAC:DATA? -1,99999999", b":INIT (@2:1)", b":SOUR:VOLT 1e308", b"*TRG;" * 20):  # fmt: skip
        smu.write(junk + b"\n")
        smu.read()
    assert ask(smu, "*CLS;*IDN?").startswith("Keysight Technologies,B2902A")
