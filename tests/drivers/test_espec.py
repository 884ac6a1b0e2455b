"""Espec chamber driver: the exact bytes on the wire and the replies parsed."""

from __future__ import annotations

import pytest

from nvmlab.drivers.espec import EspecChamber, EspecMonitor, EspecTemperature
from nvmlab.drivers.testing import expected_protocol
from nvmlab.errors import InstrumentProtocolError, InstrumentTimeout


def test_messages_end_in_cr_lf_on_the_wire() -> None:
    with expected_protocol(EspecChamber, [(b"TEMP?\r\n", "23.5,25.0,140.0,-40.0")]) as chamber:
        assert chamber.read_temperature_status() == EspecTemperature(23.5, 25.0, 140.0, -40.0)


def test_identify_reads_type_then_rom() -> None:
    with expected_protocol(
        EspecChamber, [("TYPE?", "SCP-220,TEMP"), ("ROM?", "P-300 Ver 1.10")]
    ) as chamber:
        assert chamber.identify() == "ESPEC SCP-220,TEMP ROM P-300 Ver 1.10"


def test_pv_and_sp_come_from_one_temp_query() -> None:
    with expected_protocol(EspecChamber, [("TEMP?", "-10.3,-10.0,140.0,-45.0")]) as chamber:
        assert chamber.read_pv_sp() == (-10.3, -10.0)


@pytest.mark.parametrize(
    ("celsius", "sent"), [(85.0, "TEMP, S85.0"), (-10.04, "TEMP, S-10.0"), (25.25, "TEMP, S25.2")]
)
def test_setpoint_is_sent_with_one_decimal(celsius: float, sent: str) -> None:
    with expected_protocol(EspecChamber, [(sent, "OK:" + sent)]) as chamber:
        chamber.set_setpoint(celsius)


def test_modes_constant_standby_off() -> None:
    with expected_protocol(
        EspecChamber,
        [
            ("MODE, CONSTANT", "OK:MODE, CONSTANT"),
            ("MODE, STANDBY", "OK:MODE, STANDBY"),
            ("MODE, OFF", "OK:MODE, OFF"),
            ("MODE?", "OFF"),
            ("POWER, ON", "OK:POWER, ON"),
        ],
    ) as chamber:
        chamber.regulate()
        chamber.standby()
        chamber.set_mode("off")
        assert chamber.mode() == "off"
        chamber.set_power(True)


def test_monitor_parses_temperature_humidity_mode_and_alarms() -> None:
    with expected_protocol(
        EspecChamber, [("MON?", "24.9,,CONSTANT,0"), ("MON?", "30.1,45.0,STANDBY,2")]
    ) as chamber:
        assert chamber.monitor() == EspecMonitor(24.9, None, "constant", 0)
        assert chamber.monitor() == EspecMonitor(30.1, 45.0, "standby", 2)


@pytest.mark.parametrize("reason", ["DATA OUT OF RANGE", "PROTECT ON", "CMD ERR", "PARA ERR"])
def test_na_replies_raise_with_the_reason(reason: str) -> None:
    with (
        expected_protocol(EspecChamber, [("TEMP, S200.0", f"NA:{reason}")]) as chamber,
        pytest.raises(InstrumentProtocolError, match=f"refused 'TEMP, S200.0': {reason}"),
    ):
        chamber.set_setpoint(200.0)


def test_garbled_replies_are_protocol_errors_naming_the_field() -> None:
    with expected_protocol(
        EspecChamber,
        [("TEMP?", "23.5,2#.0,140.0,-40.0"), ("TEMP?", "23.5"), ("MODE, STANDBY", "MODE")],
    ) as chamber:
        with pytest.raises(InstrumentProtocolError, match="SP '2#.0'"):
            chamber.read_temperature()
        with pytest.raises(InstrumentProtocolError, match="is not 'PV,SP,upper,lower'"):
            chamber.read_temperature()
        with pytest.raises(InstrumentProtocolError, match="expected 'OK:...'"):
            chamber.standby()


def test_a_silent_chamber_times_out_after_one_retry_of_the_read() -> None:
    with expected_protocol(
        EspecChamber, [("TEMP?", InstrumentTimeout), ("TEMP?", "25.0,25.0,140.0,-40.0")]
    ) as chamber:
        assert chamber.read_temperature() == 25.0
    with (
        expected_protocol(EspecChamber, [("TEMP, S30.0", InstrumentTimeout)]) as chamber,
        pytest.raises(InstrumentTimeout),
    ):
        chamber.set_setpoint(30.0)


def test_invalid_arguments_send_nothing() -> None:
    with expected_protocol(EspecChamber, []) as chamber:
        with pytest.raises(ValueError, match="constant, standby, off"):
            chamber.set_mode("run")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="finite"):
            chamber.set_setpoint(float("nan"))


def test_alarms_are_listed_and_raise_when_active() -> None:
    with expected_protocol(EspecChamber, [("ALARM?", "0"), ("ALARM?", "2,1,31")]) as chamber:
        chamber.check_alarms()
        with pytest.raises(
            InstrumentProtocolError, match=r"chamber alarm: 2 active \(codes 1, 31\)"
        ):
            chamber.check_alarms()
