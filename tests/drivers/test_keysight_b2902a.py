"""Keysight B2902A protocol: the exact SCPI sent per channel and the replies parsed."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.drivers.keysight_b2902a import KeysightB2902A
from nvmlab.drivers.testing import expected_protocol
from nvmlab.errors import InstrumentProtocolError, InstrumentTimeout

IDN = "Keysight Technologies,B2902A,MY51140123,3.4.2011.5100"


def test_identity() -> None:
    with expected_protocol(KeysightB2902A, [("*IDN?", IDN)]) as smu:
        assert smu.identity == IDN


@pytest.mark.parametrize("ch", ["1", "2"])
@pytest.mark.parametrize(
    ("attr", "value", "sent", "query", "reply", "parsed"),
    [
        ("source_mode", "voltage", ":SOUR{ch}:FUNC:MODE VOLT", ":SOUR{ch}:FUNC:MODE?", "VOLT", "voltage"),
        ("source_shape", "pulse", ":SOUR{ch}:FUNC:SHAP PULS", ":SOUR{ch}:FUNC:SHAP?", "PULS", "pulse"),
        ("voltage_mode", "list", ":SOUR{ch}:VOLT:MODE LIST", ":SOUR{ch}:VOLT:MODE?", "LIST", "list"),
        ("source_voltage", -0.3, ":SOUR{ch}:VOLT -0.3", ":SOUR{ch}:VOLT?", "-3.000000E-01", -0.3),
        ("triggered_voltage", 1.5, ":SOUR{ch}:VOLT:TRIG 1.5", ":SOUR{ch}:VOLT:TRIG?", "+1.5E+00", 1.5),
        ("source_voltage_range", 2, ":SOUR{ch}:VOLT:RANG 2", ":SOUR{ch}:VOLT:RANG?", "+2.0E+00", 2.0),
        ("pulse_width", 1e-4, ":SOUR{ch}:PULS:WIDT 0.0001", ":SOUR{ch}:PULS:WIDT?", "+1.0E-04", 1e-4),
        ("pulse_delay", 0, ":SOUR{ch}:PULS:DEL 0", ":SOUR{ch}:PULS:DEL?", "+0.0E+00", 0.0),
        ("compliance_current", 1e-4, ":SENS{ch}:CURR:PROT 0.0001", ":SENS{ch}:CURR:PROT?", "+1.0E-04", 1e-4),
        ("current_range", 1e-6, ":SENS{ch}:CURR:RANG 1e-06", ":SENS{ch}:CURR:RANG?", "+1.0E-06", 1e-6),
        ("nplc", 0.01, ":SENS{ch}:CURR:NPLC 0.01", ":SENS{ch}:CURR:NPLC?", "+1.0E-02", 0.01),
        ("trigger_count", 5, ":TRIG{ch}:COUN 5", ":TRIG{ch}:COUN?", "+5", 5),
        ("output_enabled", True, ":OUTP{ch} ON", ":OUTP{ch}?", "1", True),
    ],
)  # fmt: skip
def test_each_channel_setting_is_written_and_read_back(
    ch: str, attr: str, value: object, sent: str, query: str, reply: str, parsed: object
) -> None:
    script = [(sent.format(ch=ch), None), (query.format(ch=ch), reply)]
    with expected_protocol(KeysightB2902A, script) as smu:
        channel = smu.channel(ch)
        setattr(channel, attr, value)
        assert getattr(channel, attr) == parsed


def test_pulse_width_below_50_us_is_refused_before_sending() -> None:
    with expected_protocol(KeysightB2902A, []) as smu:
        with pytest.raises(ValueError, match=r"5e-05..2"):
            smu.ch1.pulse_width = 20e-6
        with pytest.raises(ValueError, match=r"5e-05..2"):
            smu.ch1.pulse(1.0, 10e-6)


def test_pulse_width_is_rounded_to_one_microsecond() -> None:
    with expected_protocol(KeysightB2902A, [(":SOUR1:PULS:WIDT 0.000123", None)]) as smu:
        smu.ch1.pulse_width = 123.4e-6


def test_configure_voltage_source_on_channel_2() -> None:
    script = [
        (":SOUR2:FUNC:MODE VOLT", None),
        (":SOUR2:FUNC:SHAP DC", None),
        (":SOUR2:VOLT:MODE FIX", None),
        (':SENS2:FUNC "CURR"', None),
        (":SENS2:CURR:PROT 1e-05", None),
        (":SENS2:CURR:NPLC 0.1", None),
    ]
    with expected_protocol(KeysightB2902A, script) as smu:
        smu.channel("b").configure_voltage_source(compliance_a=1e-5, nplc=0.1)


def test_spot_measurements_use_channel_lists() -> None:
    script = [
        (":MEAS:CURR? (@1)", "+1.234000E-05"),
        (":MEAS:CURR? (@1,2)", "+1.000000E-06,-2.000000E-06"),
    ]
    with expected_protocol(KeysightB2902A, script) as smu:
        assert smu.ch1.measure_current() == pytest.approx(1.234e-5)
        assert smu.measure_currents() == pytest.approx((1e-6, -2e-6))


def test_list_sweep_is_one_init_and_one_fetch() -> None:
    volts = np.array([0.0, 0.05, 0.1, 0.15])
    script = [
        (":SOUR2:FUNC:MODE VOLT", None),
        (":SOUR2:VOLT:MODE LIST", None),
        (":SOUR2:LIST:VOLT 0,0.05,0.1,0.15", None),
        (":TRIG2:COUN 4", None),
        (":INIT (@2)", None),
        (":FETC:ARR:CURR? (@2)", "+0.0E+00,+2.5E-06,+5.0E-06,+7.5E-06"),
        (":SOUR2:VOLT:MODE FIX", None),
        (":TRIG2:COUN 1", None),
    ]
    with expected_protocol(KeysightB2902A, script) as smu:
        v, i = smu.ch2.list_sweep(volts)
    np.testing.assert_array_equal(v, volts)
    np.testing.assert_allclose(i, volts * 50e-6)


def test_list_sweep_short_reply_is_a_protocol_error_and_mode_is_restored() -> None:
    script = [
        (":SOUR1:FUNC:MODE VOLT", None),
        (":SOUR1:VOLT:MODE LIST", None),
        (":SOUR1:LIST:VOLT 0.1,0.2", None),
        (":TRIG1:COUN 2", None),
        (":INIT (@1)", None),
        (":FETC:ARR:CURR? (@1)", "+1.0E-06"),
        (":SOUR1:VOLT:MODE FIX", None),
        (":TRIG1:COUN 1", None),
    ]
    with (
        expected_protocol(KeysightB2902A, script) as smu,
        pytest.raises(InstrumentProtocolError, match="expected 2 values"),
    ):
        smu.ch1.list_sweep([0.1, 0.2])


def test_list_sweep_limits() -> None:
    with expected_protocol(KeysightB2902A, []) as smu:
        with pytest.raises(ValueError, match="1..2500"):
            smu.ch1.list_sweep(np.zeros(2501))
        with pytest.raises(ValueError, match="-210..210"):
            smu.ch1.list_sweep([0.0, 250.0])


def test_pulse_mode_sequence() -> None:
    script = [
        (":SOUR1:FUNC:SHAP PULS", None),
        (":SOUR1:VOLT 0", None),
        (":SOUR1:VOLT:TRIG 2", None),
        (":SOUR1:PULS:DEL 0", None),
        (":SOUR1:PULS:WIDT 0.0001", None),
        (":TRIG1:COUN 1", None),
        (":INIT (@1)", None),
        ("*OPC?", "1"),
        (":SOUR1:FUNC:SHAP DC", None),
    ]
    with expected_protocol(KeysightB2902A, script) as smu:
        smu.ch1.pulse(2.0, 100e-6)


def test_error_queue_and_check() -> None:
    script = [
        (":SYST:ERR?", '-222,"Data out of range"'),
        (":SYST:ERR?", '+0,"No error"'),
        (":SYST:ERR?", '+0,"No error"'),
    ]
    with expected_protocol(KeysightB2902A, script) as smu:
        with pytest.raises(InstrumentProtocolError, match="Data out of range"):
            smu.check_errors()
        assert smu.errors() == []


def test_reset_and_clear() -> None:
    with expected_protocol(KeysightB2902A, [("*RST", None), ("*CLS", None)]) as smu:
        smu.reset()
        smu.clear()


def test_timed_out_spot_measurement_is_not_repeated_but_a_setting_query_is() -> None:
    script = [
        (":SENS1:CURR:NPLC?", InstrumentTimeout),
        (":SENS1:CURR:NPLC?", "+1.0E+00"),
        (":MEAS:CURR? (@1)", InstrumentTimeout),
    ]
    with expected_protocol(KeysightB2902A, script) as smu:
        assert smu.ch1.nplc == 1.0
        with pytest.raises(InstrumentTimeout):
            smu.ch1.measure_current()


def test_list_sweep_trace_adds_the_readings_times_from_the_buffer() -> None:
    script = [
        (":SOUR1:FUNC:MODE VOLT", None),
        (":SOUR1:VOLT:MODE LIST", None),
        (":SOUR1:LIST:VOLT 0.1,0.2", None),
        (":TRIG1:COUN 2", None),
        (":INIT (@1)", None),
        (":FETC:ARR:CURR? (@1)", "+1.0E-06,+2.0E-06"),
        (":SOUR1:VOLT:MODE FIX", None),
        (":TRIG1:COUN 1", None),
        (":FETC:ARR:TIME? (@1)", "+1.250E+01,+1.252E+01"),
    ]
    with expected_protocol(KeysightB2902A, script) as smu:
        v, i, t = smu.ch1.list_sweep_trace([0.1, 0.2])
    np.testing.assert_allclose(i, [1e-6, 2e-6])
    np.testing.assert_allclose(t, [0.0, 0.02], atol=1e-12)
