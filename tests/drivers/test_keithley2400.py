"""Keithley 2400 protocol: the exact commands sent and the replies parsed."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.drivers.keithley2400 import Keithley2400
from nvmlab.drivers.testing import expected_protocol
from nvmlab.errors import InstrumentProtocolError, InstrumentTimeout

IDN = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,4107712,C32   Oct  4 2010 14:20:11/A02  /K/J"


def test_identity_is_the_idn_reply() -> None:
    with expected_protocol(Keithley2400, [("*IDN?", IDN)]) as smu:
        assert smu.identity == IDN


def test_reset_and_clear() -> None:
    with expected_protocol(Keithley2400, [("*RST", None), ("*CLS", None)]) as smu:
        smu.reset()
        smu.clear()
        assert smu.elements == ("VOLT", "CURR", "RES", "TIME", "STAT")


@pytest.mark.parametrize(
    ("attr", "value", "sent", "query", "reply", "parsed"),
    [
        ("source_function", "voltage", ":SOUR:FUNC VOLT", ":SOUR:FUNC?", "VOLT", "voltage"),
        ("source_mode", "list", ":SOUR:VOLT:MODE LIST", ":SOUR:VOLT:MODE?", "LIST", "list"),
        ("source_voltage", 0.2, ":SOUR:VOLT 0.2", ":SOUR:VOLT?", "+2.000000E-01", 0.2),
        ("source_voltage_range", 2, ":SOUR:VOLT:RANG 2", ":SOUR:VOLT:RANG?", "+2.1E+00", 2.1),
        ("source_delay", 0.001, ":SOUR:DEL 0.001", ":SOUR:DEL?", "+1.000000E-03", 0.001),
        ("source_auto_clear", True, ":SOUR:CLE:AUTO ON", ":SOUR:CLE:AUTO?", "1", True),
        ("output_enabled", False, ":OUTP OFF", ":OUTP?", "0", False),
        ("compliance_current", 1e-4, ":SENS:CURR:PROT 0.0001", ":SENS:CURR:PROT?", "1E-04", 1e-4),
        ("current_range", 1e-5, ":SENS:CURR:RANG 1e-05", ":SENS:CURR:RANG?", "1.05E-05", 1.05e-5),
        ("nplc", 0.01, ":SENS:CURR:NPLC 0.01", ":SENS:CURR:NPLC?", "+1.000000E-02", 0.01),
        ("trigger_count", 10, ":TRIG:COUN 10", ":TRIG:COUN?", "+10", 10),
    ],
)
def test_each_setting_is_written_and_read_back(
    attr: str, value: object, sent: str, query: str, reply: str, parsed: object
) -> None:
    with expected_protocol(Keithley2400, [(sent, None), (query, reply)]) as smu:
        setattr(smu, attr, value)
        assert getattr(smu, attr) == parsed


def test_sense_function_is_quoted() -> None:
    with expected_protocol(Keithley2400, [(":SENS:FUNC 'CURR'", None)]) as smu:
        smu.sense_function = "current"


def test_out_of_range_level_raises_before_anything_is_sent() -> None:
    with expected_protocol(Keithley2400, []) as smu:
        with pytest.raises(ValueError, match=r"-210..210"):
            smu.source_voltage = 250
        with pytest.raises(ValueError, match=r"0.01..10"):
            smu.nplc = 20
        with pytest.raises(ValueError, match="VOLT, CURR|VOLT', 'CURR"):
            smu.set_data_elements("VOLT", "POWER")


def test_configure_voltage_source_sends_the_whole_setup() -> None:
    script = [
        (":SOUR:FUNC VOLT", None),
        (":SOUR:VOLT:MODE FIX", None),
        (":SOUR:VOLT:RANG 2", None),
        (":SENS:FUNC 'CURR'", None),
        (":SENS:CURR:PROT 0.0001", None),
        (":SENS:CURR:NPLC 0.1", None),
        (":FORM:ELEM VOLT,CURR", None),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        smu.configure_voltage_source(compliance_a=1e-4, nplc=0.1, voltage_range_v=2)
        assert smu.elements == ("VOLT", "CURR")


def test_bad_compliance_in_configure_sends_nothing() -> None:
    with expected_protocol(Keithley2400, []) as smu, pytest.raises(ValueError):
        smu.configure_voltage_source(compliance_a=5.0)


def test_single_measurement_parses_the_selected_fields() -> None:
    script = [(":FORM:ELEM VOLT,CURR", None), (":READ?", "+2.000000E-01,+1.000000E-05")]
    with expected_protocol(Keithley2400, script) as smu:
        smu.set_data_elements("curr", "volt")
        assert smu.measure_current() == pytest.approx(1e-5)


def test_reading_with_all_five_fields_after_reset() -> None:
    reply = "+2.000000E-01,+1.000000E-05,+9.910000E+37,+1.234000E+00,+2.150800E+04"
    with expected_protocol(Keithley2400, [(":READ?", reply)]) as smu:
        table = smu.read_readings()
        assert table.shape == (1, 5)
        assert table[0, 2] == pytest.approx(9.91e37)


def test_list_sweep_is_one_read_for_every_point() -> None:
    volts = np.linspace(-0.2, 0.2, 150)
    first = ",".join(f"{v:g}" for v in volts[:100])
    rest = ",".join(f"{v:g}" for v in volts[100:])
    amps = volts * 50e-6
    reply = ",".join(f"{v:+.6E},{i:+.6E}" for v, i in zip(volts, amps, strict=True))
    script = [
        (":FORM:ELEM VOLT,CURR", None),
        (":SOUR:FUNC VOLT", None),
        (":SOUR:VOLT:MODE LIST", None),
        (":SOUR:LIST:VOLT " + first, None),
        (":SOUR:LIST:VOLT:APP " + rest, None),
        (":SOUR:DEL 0", None),
        (":TRIG:COUN 150", None),
        (":READ?", reply),
        (":SOUR:VOLT:MODE FIX", None),
        (":TRIG:COUN 1", None),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        smu.set_data_elements("VOLT", "CURR")
        v, i = smu.list_sweep(volts)
    np.testing.assert_allclose(v, volts, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(i, amps, rtol=1e-6, atol=1e-15)


def test_list_sweep_with_wrong_point_count_is_a_protocol_error() -> None:
    script = [
        (":FORM:ELEM CURR", None),
        (":SOUR:FUNC VOLT", None),
        (":SOUR:VOLT:MODE LIST", None),
        (":SOUR:LIST:VOLT 0.1,0.2", None),
        (":SOUR:DEL 0", None),
        (":TRIG:COUN 2", None),
        (":READ?", "+1.0E-05"),
        (":SOUR:VOLT:MODE FIX", None),
        (":TRIG:COUN 1", None),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        smu.set_data_elements("CURR")
        with pytest.raises(InstrumentProtocolError, match="got 1 values"):
            smu.list_sweep([0.1, 0.2])


def test_list_sweep_rejects_a_bad_level_before_sending() -> None:
    with expected_protocol(Keithley2400, []) as smu:
        with pytest.raises(ValueError, match="list_sweep voltage"):
            smu.list_sweep([0.1, 300.0])
        with pytest.raises(ValueError, match="1..2500"):
            smu.list_sweep(np.zeros(2501))


def test_staircase_sweep() -> None:
    script = [
        (":SOUR:FUNC VOLT", None),
        (":SOUR:VOLT:STAR 0", None),
        (":SOUR:VOLT:STOP 0.3", None),
        (":SOUR:SWE:SPAC LIN", None),
        (":SOUR:SWE:POIN 4", None),
        (":SOUR:VOLT:MODE SWE", None),
        (":SOUR:DEL 0.001", None),
        (":TRIG:COUN 4", None),
        (":READ?", "0,0,0.1,1e-6,0.2,2e-6,0.3,3e-6"),
        (":SOUR:VOLT:MODE FIX", None),
        (":TRIG:COUN 1", None),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        smu.elements = ("VOLT", "CURR")
        v, i = smu.staircase_sweep(0.0, 0.3, 4, source_delay_s=1e-3)
    np.testing.assert_allclose(v, [0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(i, [0, 1e-6, 2e-6, 3e-6])


def test_trace_buffer_setup_and_read() -> None:
    script = [
        (":TRAC:CLE", None),
        (":TRAC:POIN 3", None),
        (":TRAC:FEED SENS", None),
        (":TRAC:FEED:CONT NEXT", None),
        (":TRAC:DATA?", "0.1,1e-6,0.2,2e-6,0.3,3e-6"),
        (":TRAC:CLE", None),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        smu.elements = ("VOLT", "CURR")
        smu.buffer_setup(3)
        data = smu.buffer_data()
        smu.buffer_clear()
    assert data.shape == (3, 2)
    np.testing.assert_allclose(data[:, 1], [1e-6, 2e-6, 3e-6])


def test_pulse_uses_source_auto_clear_and_restores() -> None:
    script = [
        (":SOUR:VOLT:MODE FIX", None),
        (":SOUR:CLE:AUTO ON", None),
        (":SOUR:DEL 0.001", None),
        (":SOUR:VOLT 1.5", None),
        (":READ?", "+1.5E+00,+7.5E-05"),
        (":SOUR:CLE:AUTO OFF", None),
        (":SOUR:DEL 0", None),
        (":SOUR:VOLT 0", None),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        smu.elements = ("VOLT", "CURR")
        assert smu.pulse(1.5, 1e-3) == pytest.approx(7.5e-5)


def test_error_queue_is_read_until_no_error() -> None:
    script = [
        (":SYST:ERR?", '-113,"Undefined header"'),
        (":SYST:ERR?", '-222,"Data out of range"'),
        (":SYST:ERR?", '0,"No error"'),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        assert smu.errors() == [(-113, "Undefined header"), (-222, "Data out of range")]


def test_check_errors_raises_with_the_instrument_text() -> None:
    script = [(":SYST:ERR?", '-222,"Data out of range"'), (":SYST:ERR?", '0,"No error"')]
    with (
        expected_protocol(Keithley2400, script) as smu,
        pytest.raises(InstrumentProtocolError, match="Data out of range"),
    ):
        smu.check_errors()


def test_check_errors_is_quiet_on_an_empty_queue() -> None:
    with expected_protocol(Keithley2400, [(":SYST:ERR?", '0,"No error"')]) as smu:
        smu.check_errors()


def test_a_timed_out_setting_query_is_retried_once() -> None:
    script = [(":SENS:CURR:NPLC?", InstrumentTimeout), (":SENS:CURR:NPLC?", "1")]
    with expected_protocol(Keithley2400, script) as smu:
        assert smu.nplc == 1.0


def test_a_timed_out_measurement_is_not_repeated() -> None:
    script = [(":FORM:ELEM CURR", None), (":READ?", InstrumentTimeout)]
    with expected_protocol(Keithley2400, script) as smu:
        smu.set_data_elements("CURR")
        with pytest.raises(InstrumentTimeout):
            smu.measure_current()


def test_an_unparsable_reply_names_the_property() -> None:
    with (
        expected_protocol(Keithley2400, [(":SOUR:VOLT?", "garbage")]) as smu,
        pytest.raises(InstrumentProtocolError, match="source_voltage"),
    ):
        _ = smu.source_voltage


def test_list_sweep_trace_reads_the_trace_buffer_with_times() -> None:
    stored = "+1.000000E-01,+5.000000E-06,+2.000000E+00,+2.000000E-01,+1.000000E-05,+2.030000E+00"
    script = [
        (":FORM:ELEM VOLT,CURR,TIME", None),
        (":TRAC:CLE", None),
        (":TRAC:POIN 2", None),
        (":TRAC:FEED SENS", None),
        (":TRAC:FEED:CONT NEXT", None),
        (":SOUR:FUNC VOLT", None),
        (":SOUR:VOLT:MODE LIST", None),
        (":SOUR:LIST:VOLT 0.1,0.2", None),
        (":SOUR:DEL 0", None),
        (":TRIG:COUN 2", None),
        (":READ?", stored),
        (":SOUR:VOLT:MODE FIX", None),
        (":TRIG:COUN 1", None),
        (":TRAC:DATA?", stored),
        (":TRAC:FEED:CONT NEV", None),
        (":FORM:ELEM VOLT,CURR", None),
    ]
    with expected_protocol(Keithley2400, script) as smu:
        smu.elements = ("VOLT", "CURR")
        v, i, t = smu.list_sweep_trace([0.1, 0.2])
    np.testing.assert_allclose(v, [0.1, 0.2])
    np.testing.assert_allclose(i, [5e-6, 1e-5])
    np.testing.assert_allclose(t, [0.0, 0.03], atol=1e-12)
    assert smu.elements == ("VOLT", "CURR")
