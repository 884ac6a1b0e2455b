"""SourceMeter roles: safety limits checked before any byte, bulk sweeps, safe state."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.drivers.keithley2400 import Keithley2400
from nvmlab.drivers.keithley2636b import Keithley2636B
from nvmlab.drivers.keysight_b2902a import KeysightB2902A
from nvmlab.drivers.testing import Exchange, ScriptedTransport
from nvmlab.errors import ConfigError, InstrumentIOError, SafetyLimitError
from nvmlab.instruments.arrays import ArrayOperations
from nvmlab.instruments.roles import SourceMeter
from nvmlab.instruments.safety import SafetyLimits
from nvmlab.instruments.scripts import ScriptStopped, ScriptTemplate
from nvmlab.instruments.sourcemeters import make_source_meter
from nvmlab.instruments.station import Station
from nvmlab.mocks.emulated import build_emulated_bench

LIMITS = SafetyLimits(max_read_v=0.5, max_write_v=2.5, max_current_a=1e-3, max_pulse_width_s=0.1)
DRIVERS = {
    "keithley2400": Keithley2400,
    "keithley2636b": Keithley2636B,
    "keysight_b2902a": KeysightB2902A,
}


def role(name: str, script: list[Exchange]) -> tuple[SourceMeter, ScriptedTransport]:
    transport = ScriptedTransport(script)
    return make_source_meter(name, DRIVERS[name](transport), LIMITS), transport


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_every_model_is_a_source_meter(name: str) -> None:
    smu, _ = role(name, [])
    assert isinstance(smu, SourceMeter)


@pytest.mark.parametrize("name", sorted(DRIVERS))
@pytest.mark.parametrize(
    ("action", "match"),
    [
        (lambda s: s.set_voltage(0.6), "read limit"),
        (lambda s: s.set_voltage(3.0, purpose="write"), "write limit"),
        (lambda s: s.set_voltage(float("nan")), "not a finite"),
        (lambda s: s.configure(current_limit_a=5e-3), "compliance current"),
        (lambda s: s.list_sweep(np.array([0.1, 0.2, -0.7])), "list sweep voltage"),
        (lambda s: s.pulse(2.6, 1e-3), "pulse amplitude"),
        (lambda s: s.pulse(1.0, 0.5), "pulse width"),
        (lambda s: s.pulse(4.0, 1e-3, purpose="forming"), "forming limit"),
    ],
)
def test_an_over_limit_request_sends_nothing(name: str, action, match: str) -> None:  # type: ignore[no-untyped-def]
    smu, transport = role(name, [])
    with pytest.raises(SafetyLimitError, match=match):
        action(smu)
    assert transport.sent == []


def test_b2902a_refuses_a_pulse_shorter_than_50_us_before_sending() -> None:
    smu, transport = role("keysight_b2902a", [])
    with pytest.raises(SafetyLimitError, match="50 us"):
        smu.pulse(1.0, 20e-6)
    assert transport.sent == []


def test_an_unknown_channel_is_refused() -> None:
    smu, transport = role("keithley2400", [])
    with pytest.raises(ValueError, match="allowed"):
        smu.set_voltage(0.1, channel="b")
    assert transport.sent == []


def test_2400_read_procedure() -> None:
    """Configure, set 0.2 V, output on, one reading, safe state."""
    script: list[Exchange] = [
        (":SOUR:FUNC VOLT", None),
        (":SOUR:VOLT:MODE FIX", None),
        (":SENS:FUNC 'CURR'", None),
        (":SENS:CURR:PROT 0.0001", None),
        (":SENS:CURR:NPLC 0.1", None),
        (":FORM:ELEM VOLT,CURR", None),
        (":SOUR:VOLT 0.2", None),
        (":OUTP ON", None),
        (":READ?", "+2.0E-01,+1.0E-05"),
        (":SOUR:VOLT 0", None),
        (":OUTP OFF", None),
    ]
    smu, transport = role("keithley2400", script)
    smu.configure(current_limit_a=1e-4, nplc=0.1)
    smu.set_voltage(0.2)
    smu.output(True)
    assert smu.measure_current() == pytest.approx(1e-5)
    smu.safe_state()
    transport.assert_done()


def test_first_sourcing_without_configure_programs_the_station_compliance() -> None:
    script: list[Exchange] = [
        ("smub.source.limiti = 0.001", None),
        ("smub.source.levelv = 0.1", None),
    ]
    smu, transport = role("keithley2636b", script)
    smu.set_voltage(0.1, channel="b")
    transport.assert_done()


def test_switching_on_an_output_at_an_unknown_level_zeroes_it_first() -> None:
    script: list[Exchange] = [
        (":SENS1:CURR:PROT 0.001", None),
        (":SOUR1:VOLT 0", None),
        (":OUTP1 ON", None),
    ]
    smu, transport = role("keysight_b2902a", script)
    smu.output(True)
    transport.assert_done()


def test_2636b_list_sweep_switches_the_output_on_only_for_the_sweep() -> None:
    levels = np.array([0.1, 0.2])
    script: list[Exchange] = [
        ("smua.source.func = smua.OUTPUT_DCVOLTS", None),
        ("smua.source.limiti = 0.0001", None),
        ("smua.measure.nplc = 0.01", None),
        ("smua.source.levelv = 0", None),
        ("smua.source.output = smua.OUTPUT_ON", None),
        ("smua.nvbuffer1.clear()", None),
        ("smua.trigger.source.listv({0.1, 0.2})", None),
        ("smua.trigger.source.action = smua.ENABLE", None),
        ("smua.trigger.measure.action = smua.ENABLE", None),
        ("smua.trigger.measure.i(smua.nvbuffer1)", None),
        ("smua.trigger.endsweep.action = smua.SOURCE_IDLE", None),
        ("smua.trigger.count = 2", None),
        ("smua.trigger.arm.count = 1", None),
        ("smua.trigger.initiate()", None),
        ("waitcomplete()", None),
        ("printbuffer(1, 2, smua.nvbuffer1.readings)", "5.0e-06, 1.0e-05"),
        ("smua.source.output = smua.OUTPUT_OFF", None),
    ]
    smu, transport = role("keithley2636b", script)
    smu.configure(current_limit_a=1e-4, nplc=0.01)
    amps = smu.list_sweep(levels)
    np.testing.assert_allclose(amps, [5e-6, 1e-5])
    transport.assert_done()


def test_2400_pulse_on_an_output_that_was_on_restores_it() -> None:
    script: list[Exchange] = [
        (":SENS:CURR:PROT 0.001", None),
        (":SOUR:VOLT 0", None),
        (":OUTP ON", None),
        (":OUTP OFF", None),
        (":SOUR:VOLT:MODE FIX", None),
        (":SOUR:CLE:AUTO ON", None),
        (":SOUR:DEL 0.001", None),
        (":SOUR:VOLT 1.5", None),
        (":READ?", "+1.5E+00,+7.5E-05,+9.91E+37,+1.0E+00,+0"),
        (":SOUR:CLE:AUTO OFF", None),
        (":SOUR:DEL 0", None),
        (":SOUR:VOLT 0", None),
        (":OUTP ON", None),
    ]
    smu, transport = role("keithley2400", script)
    smu.output(True)
    smu.pulse(1.5, 1e-3)
    transport.assert_done()


def test_b2902a_pulse_from_an_output_that_was_off() -> None:
    script: list[Exchange] = [
        (":SENS2:CURR:PROT 0.001", None),
        (":SOUR2:VOLT 0", None),
        (":OUTP2 ON", None),
        (":SOUR2:FUNC:SHAP PULS", None),
        (":SOUR2:VOLT 0", None),
        (":SOUR2:VOLT:TRIG -1.2", None),
        (":SOUR2:PULS:DEL 0", None),
        (":SOUR2:PULS:WIDT 0.0001", None),
        (":TRIG2:COUN 1", None),
        (":INIT (@2)", None),
        ("*OPC?", "1"),
        (":SOUR2:FUNC:SHAP DC", None),
        (":OUTP2 OFF", None),
    ]
    smu, transport = role("keysight_b2902a", script)
    smu.pulse(-1.2, 100e-6, channel="b")
    transport.assert_done()


def test_2636b_pulse_is_timed_on_the_instrument() -> None:
    script: list[Exchange] = [
        ("smua.source.limiti = 0.001", None),
        ("smua.source.levelv = 0", None),
        ("smua.source.output = smua.OUTPUT_ON", None),
        ("smua.source.levelv = 2 delay(0.0005) smua.source.levelv = 0", None),
        ("smua.source.output = smua.OUTPUT_OFF", None),
    ]
    smu, transport = role("keithley2636b", script)
    smu.pulse(2.0, 5e-4)
    transport.assert_done()


def test_safe_state_covers_every_channel_even_after_an_error() -> None:
    script: list[Exchange] = [
        ("smua.source.levelv = 0", None),
        ("smua.source.output = smua.OUTPUT_OFF", None),
        ("smub.source.levelv = 0", None),
        ("smub.source.output = smub.OUTPUT_OFF", None),
    ]
    transport = ScriptedTransport(script)
    smu = make_source_meter("keithley2636b", Keithley2636B(transport), LIMITS)
    sent_before_failure = []
    original = transport.write

    def flaky(message: str) -> None:
        sent_before_failure.append(message)
        if message == "smua.source.output = smua.OUTPUT_OFF":
            original(message)
            raise InstrumentIOError("link dropped", instrument="smu", resource="scripted://")
        original(message)

    transport.write = flaky  # type: ignore[method-assign]
    with pytest.raises(InstrumentIOError, match="link dropped"):
        smu.safe_state()
    assert sent_before_failure[-2:] == [
        "smub.source.levelv = 0",
        "smub.source.output = smub.OUTPUT_OFF",
    ]
    transport.assert_done()


def test_make_source_meter_rejects_unknown_or_mismatched_drivers() -> None:
    with pytest.raises(ConfigError, match="allowed"):
        make_source_meter("keithley6430", Keithley2400(ScriptedTransport([])), LIMITS)
    with pytest.raises(ConfigError, match="Keithley2636B"):
        make_source_meter("keithley2636b", Keithley2400(ScriptedTransport([])), LIMITS)


# -- scripts on the 2636B: parameters checked by kind, run time bounded on the instrument ----


#: Pulses of v_write on A with B at v_half (the tracking routing's write), each followed by
#: one reading on A with A and B at v_read (its read).
WRITE_AND_READ = ScriptTemplate(
    "nvmlab_write_read",
    """\
smua.source.levelv = 0
smub.source.levelv = 0
smua.source.output = smua.OUTPUT_ON
smub.source.output = smub.OUTPUT_ON
for k = 1, $count do
  smub.source.levelv = $v_half
  smua.source.levelv = $v_write
  delay($width)
  smub.source.levelv = $v_read
  smua.source.levelv = $v_read
  print(smua.measure.i())
  smua.source.levelv = 0
  smub.source.levelv = 0
  nvmlab_watchdog()
end""",
    {
        "count": "count",
        "v_half": "write_v",
        "v_write": "write_v",
        "width": "width_s",
        "v_read": "read_v",
    },
)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"v_write": 2.6}, "parameter v_write 2.6 V exceeds the station's write limit"),
        ({"v_read": 0.6}, "parameter v_read 0.6 V exceeds the station's read limit"),
        ({"width": 0.5}, "parameter width"),
        ({"v_half": float("nan")}, "not a finite number"),
    ],
)
def test_an_over_limit_script_parameter_sends_nothing(values: dict, match: str) -> None:
    smu, transport = role("keithley2636b", [])
    good = {"count": 1, "v_half": 0.5, "v_write": 1.0, "width": 1e-3, "v_read": 0.2}
    with pytest.raises(SafetyLimitError, match=match):
        smu.run_script(WRITE_AND_READ, {**good, **values}, max_run_s=1.0)  # type: ignore[attr-defined]
    assert transport.sent == []


def test_a_template_must_declare_every_placeholder() -> None:
    with pytest.raises(ValueError, match=r"placeholders \['v'\] are not declared"):
        ScriptTemplate("t", "smua.source.levelv = $v", {})
    with pytest.raises(ValueError, match=r"declared parameters \['w'\] are not used"):
        ScriptTemplate("t", "smua.source.levelv = $v", {"v": "read_v", "w": "write_v"})


def open_2636b(**options):  # type: ignore[no-untyped-def]
    bench = build_emulated_bench(rows=8, cols=8, smu_model="keithley2636b", **options)
    station = Station(bench.station_dict(), visa_library=bench.visa_library(), clock=bench.clock)
    return bench, station


def test_an_over_limit_script_parameter_applies_nothing_on_the_bench() -> None:
    bench, station = open_2636b()
    with station:
        with pytest.raises(SafetyLimitError):
            station.smu.run_script(  # type: ignore[attr-defined]
                WRITE_AND_READ,
                {"count": 1, "v_half": 0.5, "v_write": 3.0, "width": 1e-3, "v_read": 0.2},
                max_run_s=1.0,
            )
        assert bench.bench.max_applied_v["A"] == bench.bench.max_applied_v["B"] == 0.0
    bench.close()


def test_a_tracking_write_and_read_script_reads_the_device_and_spares_the_half_selected() -> None:
    """The tracking routing (every unselected line following B): the script pulses A at V
    with B at V/2, then reads with A and B at the read voltage, with no board command in
    between. The last read equals the device's true conductance within the read noise;
    half-selected devices whose V/2 is below the switching floor of their own threshold
    are not disturbed."""
    floor = 0.5  # the device model's switching_floor_fraction (devices.md)
    bench, station = open_2636b(seed=4)
    with station:
        before = bench.ground_truth()
        candidates = (before["defect"] == 0) & (before["set_threshold_v"] < 1.2)
        row, col = (int(i[0]) for i in np.nonzero(candidates))
        station.board.select(row, col, unselected="track-b")
        v, v_read, count = 1.6, 0.2, 3
        result = station.smu.run_script(  # type: ignore[attr-defined]
            WRITE_AND_READ,
            {"count": count, "v_half": v / 2, "v_write": v, "width": 1e-3, "v_read": v_read},
            max_run_s=5.0,
        )
        after = bench.ground_truth()
        assert bench.bench.max_applied_v["A"] == pytest.approx(v)
        assert bench.bench.max_applied_v["B"] == pytest.approx(v / 2)
    bench.close()
    amps = np.array(result.numbers())
    assert amps.size == count
    g_true = after["conductance_s"][row, col]
    assert g_true > before["conductance_s"][row, col] * 1.02  # the pulses set it
    sigma = 0.002 * g_true + 0.02e-6
    assert (
        abs(amps[-1] / v_read - g_true) <= 5 * sigma + after["rtn_amplitude_rel"][row, col] * g_true
    )
    # Half-selected devices see +V/2 for count x 1 ms. The device model (devices.md) moves
    # ln G at most at ln(1.02) per ms at the threshold, changing by e per switching slope
    # (50 mV) of overdrive, and not at all below the switching floor; a cycle-to-cycle
    # factor (CV 30 %) rarely exceeds 3. Relaxation adds < 0.1 %.
    half = np.zeros((8, 8), dtype=bool)
    half[row, :] = half[:, col] = True
    half[row, col] = False
    vth = before["set_threshold_v"][half]
    rate = np.log(1.02) * np.exp((v / 2 - vth) / 0.05)
    rate[v / 2 < floor * vth] = 0.0
    bound = 3 * count * rate + 1e-3
    change = np.abs(np.log(after["conductance_s"][half] / before["conductance_s"][half]))
    assert np.all(change <= bound), (change, bound)
    untouched = ~half
    untouched[row, col] = False
    assert np.allclose(
        after["conductance_s"][untouched], before["conductance_s"][untouched], rtol=1e-3
    )


def test_the_run_time_bound_stops_a_long_script_on_the_bench_clock() -> None:
    """1000 pulses of 10 ms would take 10 s; bounded at 0.5 s the script stops itself at
    0.5 s of bench time, outputs off, and the role says so."""
    bench, station = open_2636b()
    with station:
        station.board.select(1, 1, unselected="track-b")
        start = bench.clock.now()
        with pytest.raises(ScriptStopped, match="run-time bound of 0.5 s") as stopped:
            station.smu.run_script(  # type: ignore[attr-defined]
                WRITE_AND_READ,
                {"count": 1000, "v_half": 0.1, "v_write": 0.2, "width": 0.01, "v_read": 0.1},
                max_run_s=0.5,
            )
        elapsed = bench.clock.now() - start
        driver = station.drivers["smu"]
        assert not driver.smua.output_enabled and not driver.smub.output_enabled
        assert driver.smua.source_voltage == driver.smub.source_voltage == 0.0
    bench.close()
    assert 0.5 <= elapsed < 0.6
    assert 10 < len(stopped.value.lines) < 60  # the reads made before it stopped


def test_a_script_without_delays_is_bounded_by_its_watchdog_calls() -> None:
    """Reads only (time passes in the measurements): nvmlab_watchdog() in the loop stops it."""
    template = ScriptTemplate(
        "nvmlab_reads",
        """\
smua.source.output = smua.OUTPUT_ON
smua.source.levelv = $v
for k = 1, $count do
  smua.measure.i()
  nvmlab_watchdog()
end""",
        {"v": "read_v", "count": "count"},
    )
    bench, station = open_2636b()
    with station:
        station.smu.configure(current_limit_a=1e-4, nplc=1.0)
        start = bench.clock.now()
        with pytest.raises(ScriptStopped, match="run-time bound"):
            station.smu.run_script(template, {"v": 0.1, "count": 100_000}, max_run_s=0.2)  # type: ignore[attr-defined]
        elapsed = bench.clock.now() - start
        assert not station.drivers["smu"].smua.output_enabled
    bench.close()
    assert 0.2 <= elapsed < 0.25


def test_array_operations_read_on_the_2636b_after_a_script() -> None:
    """The role's bookkeeping survives a script: a read afterwards still works."""
    bench, station = open_2636b(seed=1)
    with station:
        ops = ArrayOperations(station.smu, station.board, station.limits)
        station.smu.run_script(  # type: ignore[attr-defined]
            WRITE_AND_READ,
            {"count": 1, "v_half": 0.1, "v_write": 0.2, "width": 1e-3, "v_read": 0.1},
            max_run_s=1.0,
        )
        read = ops.read_device(2, 3)
        truth = bench.ground_truth()["conductance_s"][2, 3]
    bench.close()
    assert read.conductance_s == pytest.approx(truth, rel=0.03)


# -- sweeps read back from the instrument's buffer ------------------------------------------


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_an_over_limit_trace_sweep_sends_nothing(name: str) -> None:
    smu, transport = role(name, [])
    with pytest.raises(SafetyLimitError, match="list sweep voltage"):
        smu.sweep_trace(np.array([0.1, 0.7]))
    assert transport.sent == []


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_a_trace_sweep_reads_the_device_and_times_each_reading(name: str) -> None:
    """A sweep at read voltages on one routed device, read back from the buffer: each
    current is the device's I(V) = G V (1 + b V^2) from the ground truth within 5 sigma of
    the read noise, and the times rise from 0 within the bench time the sweep took."""
    levels = np.array([0.05, 0.1, 0.15, 0.2, -0.1, -0.2])
    bench = build_emulated_bench(rows=6, cols=6, seed=9, smu_model=name)
    with Station(bench.station_dict(), visa_library=bench.visa_library(), clock=bench.clock) as st:
        st.smu.configure(current_limit_a=1e-4, nplc=1.0)
        st.board.select(2, 4, unselected="track")
        start = bench.clock.now()
        trace = st.smu.sweep_trace(levels)
        elapsed = bench.clock.now() - start
        truth = bench.ground_truth()
    bench.close()
    g = truth["linear_conductance_s"][2, 4]
    b = truth["iv_cubic_b_per_v2"][2, 4]
    expected = g * levels * (1 + b * levels**2)
    sigma = (0.002 * g + 0.02e-6) * np.abs(levels)
    telegraph = truth["rtn_amplitude_rel"][2, 4] * g * np.abs(levels)
    assert np.all(np.abs(trace.current_a - expected) <= 5 * sigma + telegraph)
    assert trace.source_v == pytest.approx(levels, abs=1e-6)
    assert trace.time_s[0] == 0.0
    assert np.all(np.diff(trace.time_s) > 0)
    assert trace.time_s[-1] < elapsed
