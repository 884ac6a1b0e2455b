"""Every SMU driver, unchanged, against the emulated bench: in-process and over TCP.

The chip is an ideal resistor crossbar with a known conductance per device, the board
routes SMU channel A to one device alone, so a list sweep must return I = G * V.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from nvmlab.drivers.keithley2400 import Keithley2400
from nvmlab.drivers.keithley2636b import Keithley2636B
from nvmlab.drivers.keysight_b2902a import KeysightB2902A
from nvmlab.drivers.recording import RecordingTransport, ReplayTransport
from nvmlab.drivers.transport import Transport, VisaTransport, open_transport
from nvmlab.errors import SafetyLimitError
from nvmlab.instruments.safety import SafetyLimits
from nvmlab.instruments.sourcemeters import make_source_meter
from nvmlab.mocks.emulated import EmulatedBench, build_emulated_bench
from nvmlab.mocks.physics.resistor import ResistorArray

MODELS = {
    "keithley2400": ("keithley2400", Keithley2400),
    "keithley2636b": ("keithley2636b", Keithley2636B),
    "keysight_b2902a": ("keysight_b2902a", KeysightB2902A),
}
ROWS = COLS = 8
ROW, COL = 2, 5


def conductances() -> np.ndarray:
    g = np.full((ROWS, COLS), 20e-6)
    g[ROW, COL] = 50e-6  # the selected device
    return g


@contextmanager
def emulated(model: str) -> Iterator[EmulatedBench]:
    bench = build_emulated_bench(
        smu_model=model, rows=ROWS, cols=COLS, array=ResistorArray(conductances())
    )
    try:
        bench.preselect(ROW, COL)
        yield bench
    finally:
        bench.close()


@contextmanager
def smu_transport(bench: EmulatedBench, how: str, driver_cls: type) -> Iterator[Transport]:
    defaults = driver_cls.transport_defaults
    terms = {k: defaults[k] for k in ("read_termination", "write_termination")}
    if how == "in-process":
        transport: Transport = VisaTransport(
            bench.resources()["smu"],
            visa_library=bench.visa_library(),
            name="smu",
            timeout_s=5.0,
            **terms,
        )
        try:
            yield transport
        finally:
            transport.close()
    else:
        with bench.serve_tcp() as tcp:
            transport = open_transport(tcp.resources["smu"], name="smu", timeout_s=5.0, **terms)
            try:
                yield transport
            finally:
                transport.close()


@pytest.mark.parametrize("how", ["in-process", pytest.param("tcp", marks=pytest.mark.tcp)])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_a_100_point_list_sweep_returns_g_times_v(model: str, how: str) -> None:
    driver_name, driver_cls = MODELS[model]
    volts = np.linspace(-0.2, 0.2, 100)
    with emulated(model) as bench, smu_transport(bench, how, driver_cls) as transport:
        driver = driver_cls(transport)
        smu = make_source_meter(driver_name, driver, SafetyLimits())
        assert smu.identify()
        smu.configure(current_limit_a=1e-3, nplc=0.01)
        amps = smu.list_sweep(volts)
        driver.check_errors()
        smu.safe_state()
    np.testing.assert_allclose(amps, 50e-6 * volts, rtol=2e-3, atol=2e-9)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_single_readings_pulses_and_safe_state(model: str) -> None:
    driver_name, driver_cls = MODELS[model]
    with emulated(model) as bench, smu_transport(bench, "in-process", driver_cls) as transport:
        driver = driver_cls(transport)
        smu = make_source_meter(driver_name, driver, SafetyLimits())
        smu.configure(current_limit_a=1e-3, nplc=0.1)
        smu.set_voltage(0.2)
        smu.output(True)
        assert smu.measure_current() == pytest.approx(10e-6, rel=2e-3)
        smu.pulse(1.0, 1e-3)
        smu.safe_state()
        driver.check_errors()
        assert bench.bench.terminal_currents().get("A", 0.0) == 0.0


def test_2636b_both_channels_binary_buffers_and_pulse_train_script() -> None:
    with emulated("keithley2636b") as bench, smu_transport(bench, "in-process", Keithley2636B) as t:
        smu = Keithley2636B(t)
        smu.reset()
        for ch in (smu.smua, smu.smub):
            ch.configure_voltage_source(current_limit_a=1e-3, nplc=0.01)
            ch.source_voltage = 0.0
            ch.output_enabled = True
        volts = np.linspace(0.0, 0.3, 16)
        smu.set_data_format("real64")
        _, amps64 = smu.smua.list_sweep(volts)
        smu.set_data_format("real32")
        _, amps32 = smu.smua.list_sweep(volts)
        smu.set_data_format("ascii")
        np.testing.assert_allclose(amps64, 50e-6 * volts, rtol=2e-3, atol=2e-9)
        # each sweep reads afresh, with its own instrument noise
        np.testing.assert_allclose(amps32, 50e-6 * volts, rtol=2e-3, atol=2e-9)
        reads = smu.pulse_train("a", 0.4, 1e-4, 5, v_read=0.1)
        np.testing.assert_allclose(reads, 5e-6, rtol=2e-3)
        smu.load_script("twice", "print(2 * x)")
        assert float(smu.run_script("twice", {"x": 0.25}, reply_lines=1)[0]) == 0.5
        assert smu.smub.output_enabled is True
        smu.check_errors()


def test_2400_staircase_and_buffer_against_the_emulator() -> None:
    with emulated("keithley2400") as bench, smu_transport(bench, "in-process", Keithley2400) as t:
        smu = Keithley2400(t)
        smu.reset()
        smu.configure_voltage_source(compliance_a=1e-3, nplc=0.01)
        smu.output_enabled = True
        v, i = smu.staircase_sweep(0.0, 0.2, 11)
        np.testing.assert_allclose(i, 50e-6 * v, rtol=2e-3, atol=2e-9)
        smu.buffer_setup(5)
        smu.list_sweep(np.full(5, 0.1))
        stored = smu.buffer_data()
        np.testing.assert_allclose(stored[:, 1], 5e-6, rtol=2e-3)
        smu.output_enabled = False
        smu.check_errors()


def test_b2902a_reads_both_channels_from_one_query() -> None:
    with (
        emulated("keysight_b2902a") as bench,
        smu_transport(bench, "in-process", KeysightB2902A) as t,
    ):
        smu = KeysightB2902A(t)
        smu.reset()
        smu.ch1.configure_voltage_source(compliance_a=1e-3, nplc=0.1)
        smu.ch1.source_voltage = 0.1
        smu.ch1.output_enabled = True
        i1, _ = smu.measure_currents()
        assert i1 == pytest.approx(5e-6, rel=2e-3)
        smu.check_errors()


def test_an_over_limit_sweep_on_the_emulator_sends_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with emulated("keithley2400") as bench, smu_transport(bench, "in-process", Keithley2400) as t:
        path = tmp_path / "smu.jsonl"
        recorder = RecordingTransport(t, path)
        smu = make_source_meter("keithley2400", Keithley2400(recorder), SafetyLimits())
        with pytest.raises(SafetyLimitError):
            smu.list_sweep(np.array([0.1, 0.9]))
        assert path.read_text() == ""


def test_a_recorded_emulator_session_replays_identically(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "iv.jsonl"
    volts = np.linspace(0.0, 0.2, 20)

    def procedure(transport: Transport) -> np.ndarray:
        smu = make_source_meter("keithley2636b", Keithley2636B(transport), SafetyLimits())
        smu.configure(current_limit_a=1e-3, nplc=0.01)
        amps = smu.list_sweep(volts)
        smu.safe_state()
        return amps

    with emulated("keithley2636b") as bench, smu_transport(bench, "in-process", Keithley2636B) as t:
        live = procedure(RecordingTransport(t, path))
    replay = ReplayTransport(path)
    np.testing.assert_array_equal(procedure(replay), live)
    replay.assert_finished()


@pytest.mark.tcp
def test_the_driver_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    from nvmlab.benchmarks.drivers import main

    assert main(["--queries", "5", "--points", "20", "--models", "keithley2636b"]) == 0
    out = capsys.readouterr().out
    assert "overhead" in out and "ratio" in out
    # bulk and per-point reads carry independent read noise (0.2 % of 50 uS x 0.2 V)
    diffs = [float(m) for m in re.findall(r"max \|diff\| ([0-9.e+-]+)", out)]
    assert diffs and all(0 <= d < 1e-3 for d in diffs), out
