"""Current ranges, resolution and noise floor of every emulated SMU, read through its firmware.

A known small current (a 100 MOhm resistor at 0.1 V: 1 nA; ohmic, noiseless) is read many
times on a fixed range at a given NPLC. The readings' mean is the current, their spread the
modelled floor (sampling error sets the tolerance: the standard error of a mean is
sigma / sqrt(n), of a standard deviation about sigma / sqrt(2 (n - 1))), and every reading
is a whole number of counts of the range's resolution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.keithley2400 import Keithley2400Emulator
from nvmlab.mocks.firmware.keithley2636b import OVERFLOW, Keithley2636BEmulator
from nvmlab.mocks.firmware.keysight_b2902a import KeysightB2902AEmulator
from nvmlab.mocks.firmware.scpi import OVERFLOW_READING
from nvmlab.mocks.firmware.smu_ranges import (
    KEITHLEY_2400,
    KEITHLEY_2636B,
    KEYSIGHT_B2902A,
    CurrentRange,
)
from nvmlab.mocks.physics.base import LineBias, LineSolution
from nvmlab.mocks.physics.resistor import ResistorArray
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import Bench

#: Device (0, 0): 100 MOhm (1 nA at 0.1 V); device (0, 1): 10 kOhm (10 uA at 0.1 V).
G_SMALL_S, G_LARGE_S = 1e-8, 1e-4
V_READ = 0.1
N = 400


def make_bench(col: int = 0) -> Bench:
    """Row 0 on terminal A, column ``col`` grounded, the other column floating."""
    clock = VirtualClock()
    bench = Bench(ResistorArray(np.array([[G_SMALL_S, G_LARGE_S]])), clock, ThermalModel(clock))
    bench.ground_all()
    bench.rows_state[0].mode, bench.rows_state[0].terminal = "smu", "A"
    bench.cols_state[1 - col].mode = "float"
    return bench


def expected_sigma(rng: CurrentRange, nplc: float) -> float:
    """Spread (A) of quantised readings: the floor plus the rounding's res^2 / 12."""
    return math.sqrt(rng.noise_floor_a(nplc) ** 2 + rng.resolution_a**2 / 12)


def check_statistics(readings: np.ndarray, amps: float, rng: CurrentRange, nplc: float) -> None:
    n = readings.size
    sigma = expected_sigma(rng, nplc)
    assert abs(readings.mean() - amps) < 4 * sigma / math.sqrt(n)
    assert readings.std(ddof=1) == pytest.approx(sigma, abs=4 * sigma / math.sqrt(2 * (n - 1)))
    counts = readings / rng.resolution_a
    np.testing.assert_allclose(counts, np.round(counts), rtol=0, atol=1e-6)


# --- Keithley 2400 ----------------------------------------------------------------------


def ask_2400(smu: Keithley2400Emulator, line: str) -> str:
    smu.write(line.encode() + b"\n")
    return smu.read().decode().strip()


@pytest.mark.parametrize("nplc", [0.01, 0.1, 1.0])
def test_2400_reading_spread_on_the_lowest_range_is_the_modelled_floor(nplc: float) -> None:
    smu = Keithley2400Emulator(make_bench())
    ask_2400(smu, f":SENS:CURR:RANG 1e-6;:SENS:CURR:NPLC {nplc};:FORM:ELEM CURR")
    ask_2400(smu, f":SOUR:VOLT {V_READ};:OUTP ON;:TRIG:COUN {N}")
    readings = np.array([float(v) for v in ask_2400(smu, ":READ?").split(",")])
    check_statistics(readings, V_READ * G_SMALL_S, KEITHLEY_2400.lowest, nplc)


def test_2400_resolves_one_nanoamp_to_about_one_percent_at_one_plc() -> None:
    rng = KEITHLEY_2400.auto(1e-9)
    assert rng.nominal_a == 1e-6
    assert rng.noise_floor_a(1.0) / 1e-9 == pytest.approx(0.01)


def test_2400_auto_range_settles_on_the_lowest_range_that_holds_the_reading() -> None:
    smu = Keithley2400Emulator(make_bench(col=1))  # 10 uA
    ask_2400(smu, f":SOUR:VOLT {V_READ};:OUTP ON;:FORM:ELEM CURR")
    reading = float(ask_2400(smu, ":READ?"))
    assert ask_2400(smu, ":SENS:CURR:RANG?") == "1.050000E-05"
    assert reading == pytest.approx(V_READ * G_LARGE_S, abs=5 * 100e-12)
    assert round(reading / 100e-12) == pytest.approx(reading / 100e-12, abs=1e-6)


def test_2400_fixed_range_below_the_current_is_range_compliance() -> None:
    """The manual's range compliance: the reading stops at the range's full scale and
    status bit 16 says so."""
    smu = Keithley2400Emulator(make_bench(col=1))  # 10 uA on the 1 uA range
    ask_2400(smu, ":SENS:CURR:PROT 1e-3;:SENS:CURR:RANG 1e-6;:FORM:ELEM CURR,STAT")
    ask_2400(smu, f":SOUR:VOLT {V_READ};:OUTP ON")
    amps, status = (float(v) for v in ask_2400(smu, ":READ?").split(","))
    assert amps == pytest.approx(1.05e-6, abs=5 * 10e-12)
    assert int(status) & (1 << 16)


# --- Keithley 2636B ---------------------------------------------------------------------


def run_2636b(smu: Keithley2636BEmulator, chunk: str) -> str:
    smu.write(chunk.encode("latin-1") + b"\n")
    reply = smu.read().decode("latin-1").strip()
    assert not smu.errors()
    return reply


@pytest.mark.parametrize(("range_a", "nplc"), [(1e-9, 0.01), (10e-9, 0.1), (1e-6, 1.0)])
def test_2636b_reading_spread_on_a_fixed_range_is_the_modelled_floor(
    range_a: float, nplc: float
) -> None:
    smu = Keithley2636BEmulator(make_bench())
    run_2636b(
        smu,
        f"smua.source.levelv = {V_READ} smua.source.limiti = 1e-3 "
        f"smua.measure.autorangei = 0 smua.measure.rangei = {range_a} "
        f"smua.measure.nplc = {nplc} smua.measure.count = {N} "
        "smua.source.output = 1 smua.nvbuffer1.clear() smua.measure.i(smua.nvbuffer1) "
        "print(smua.measure.rangei)",
    )
    reply = run_2636b(smu, f"format.asciiprecision = 12 printbuffer(1, {N}, smua.nvbuffer1)")
    readings = np.array([float(v) for v in reply.split(",")])
    check_statistics(readings, V_READ * G_SMALL_S, KEITHLEY_2636B.fixed(range_a), nplc)


def test_2636b_auto_range_reports_the_range_it_settled_on() -> None:
    smu = Keithley2636BEmulator(make_bench())
    reply = run_2636b(
        smu,
        f"smua.source.levelv = {V_READ} smua.measure.lowrangei = 100e-12 "
        "smua.source.output = 1 i = smua.measure.i() print(smua.measure.rangei)",
    )
    assert float(reply) == pytest.approx(1e-9)


def test_2636b_over_range_reads_as_overflow() -> None:
    smu = Keithley2636BEmulator(make_bench(col=1))  # 10 uA on the 1 uA range
    reply = run_2636b(
        smu,
        f"smua.source.levelv = {V_READ} smua.source.limiti = 1e-3 smua.measure.autorangei = 0 "
        "smua.measure.rangei = 1e-6 smua.source.output = 1 print(smua.measure.i())",
    )
    assert float(reply) == OVERFLOW


# --- Keysight B2902A --------------------------------------------------------------------


def ask_b2902a(smu: KeysightB2902AEmulator, line: str) -> str:
    smu.write(line.encode() + b"\n")
    return smu.read().decode().strip()


@pytest.mark.parametrize("nplc", [0.01, 0.1, 1.0])
def test_b2902a_reading_spread_on_the_lowest_range_is_the_modelled_floor(nplc: float) -> None:
    smu = KeysightB2902AEmulator(make_bench())
    smu.write(f":SENS:CURR:RANG 100e-9;:SENS:CURR:NPLC {nplc};:TRIG:COUN {N}\n".encode())
    smu.write(f":SOUR:VOLT {V_READ};:OUTP ON;:INIT\n".encode())
    readings = np.array([float(v) for v in ask_b2902a(smu, ":FETC:ARR:CURR?").split(",")])
    check_statistics(readings, V_READ * G_SMALL_S, KEYSIGHT_B2902A.lowest, nplc)


def test_b2902a_has_no_10_nA_range_and_over_range_reads_as_overflow() -> None:
    assert KEYSIGHT_B2902A.lowest.nominal_a == 100e-9
    smu = KeysightB2902AEmulator(make_bench(col=1))  # 10 uA on the 1 uA range
    smu.write(f":SENS:CURR:RANG 1e-6;:SOUR:VOLT {V_READ};:OUTP ON\n".encode())
    assert float(ask_b2902a(smu, ":MEAS:CURR?")) == OVERFLOW_READING
    assert ask_b2902a(smu, ":SYST:ERR?") == '+0,"No error"'


def test_range_tables_are_ordered_and_fixed_ranges_round_up() -> None:
    for table in (KEITHLEY_2400, KEITHLEY_2636B, KEYSIGHT_B2902A):
        nominal = [r.nominal_a for r in table.ranges]
        assert nominal == sorted(nominal)
        assert all(r.max_reading_a > r.nominal_a > r.resolution_a for r in table.ranges)
    assert KEITHLEY_2636B.fixed(2e-9).nominal_a == 10e-9
    # The 2600B autoranges at 100 % of a range, reads to 102 %; the 2400 uses its 105 %.
    assert KEITHLEY_2636B.auto(1.01e-9).nominal_a == 10e-9
    assert KEITHLEY_2636B.fixed(1e-9).max_reading_a == pytest.approx(1.02e-9)
    assert KEITHLEY_2400.auto(1.04e-6).nominal_a == 1e-6
    assert KEYSIGHT_B2902A.auto(1.05e-6).nominal_a == 1e-6
    assert KEYSIGHT_B2902A.fixed(3.0).max_reading_a == pytest.approx(3.06)
    with pytest.raises(ValueError, match="above the highest range"):
        KEITHLEY_2400.fixed(2.0)


# --- the configured NPLC reaches the array (its read noise's instrument part) -------------


class NplcRecorder(ResistorArray):
    """Records the ``nplc`` of every noisy solve (a measurement)."""

    def __init__(self, g: np.ndarray) -> None:
        super().__init__(g)
        self.nplc: list[float] = []

    def solve(
        self, bias: LineBias, temperature_c: float, *, noise: bool = True, nplc: float = 1.0
    ) -> LineSolution:
        if noise:
            self.nplc.append(nplc)
        return super().solve(bias, temperature_c, noise=noise, nplc=nplc)


def recording_bench() -> tuple[Bench, NplcRecorder]:
    clock = VirtualClock()
    array = NplcRecorder(np.array([[G_SMALL_S, G_LARGE_S]]))
    bench = Bench(array, clock, ThermalModel(clock))
    bench.ground_all()
    bench.rows_state[0].mode, bench.rows_state[0].terminal = "smu", "A"
    return bench, array


def test_every_smu_passes_its_nplc_to_the_array() -> None:
    bench, array = recording_bench()
    smu_2400 = Keithley2400Emulator(bench)
    ask_2400(smu_2400, ":SENS:CURR:NPLC 0.05;:SOUR:VOLT 0.1;:OUTP ON;:FORM:ELEM CURR")
    ask_2400(smu_2400, ":READ?")
    assert array.nplc[-1] == 0.05
    ask_2400(smu_2400, ":SENS:AVER:COUN 4;:SENS:AVER ON;:READ?")  # repeat filter: 4 x 0.05
    assert array.nplc[-1] == pytest.approx(0.2)
    ask_2400(smu_2400, ":OUTP OFF")

    bench, array = recording_bench()
    smu_2636b = Keithley2636BEmulator(bench)
    run_2636b(smu_2636b, "smua.measure.nplc = 2.5 smua.source.output = 1 x = smua.measure.i()")
    assert array.nplc[-1] == 2.5

    bench, array = recording_bench()
    smu_b2902a = KeysightB2902AEmulator(bench)
    ask_b2902a(smu_b2902a, ":SENS:CURR:NPLC 7;:SOUR:VOLT 0.1;:MEAS:CURR?")
    assert array.nplc[-1] == 7.0
