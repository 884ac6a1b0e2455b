"""SourceMeter roles: safety limits checked before any byte, bulk sweeps, safe state."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.drivers.keithley2400 import Keithley2400
from nvmlab.drivers.keithley2636b import Keithley2636B
from nvmlab.drivers.keysight_b2902a import KeysightB2902A
from nvmlab.drivers.testing import Exchange, ScriptedTransport
from nvmlab.errors import ConfigError, InstrumentIOError, SafetyLimitError
from nvmlab.instruments.roles import SourceMeter
from nvmlab.instruments.safety import SafetyLimits
from nvmlab.instruments.sourcemeters import make_source_meter

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
