"""Espec chamber driver: the exact bytes on the wire and the replies parsed."""

from __future__ import annotations

import pytest

from nvmlab.drivers.chamber_alarms import ChamberSensorFault
from nvmlab.drivers.espec import (
    ALARM_NAMES,
    SENSOR_FAULT_CODES,
    EspecChamber,
    EspecMonitor,
    EspecTemperature,
)
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


def test_pv_comes_with_the_alarm_count_and_sp_from_temp() -> None:
    with expected_protocol(
        EspecChamber, [("MON?", "-10.3,,CONSTANT,0"), ("TEMP?", "-10.2,-10.0,140.0,-45.0")]
    ) as chamber:
        assert chamber.read_pv_sp() == (-10.3, -10.0)


def test_a_sensor_burnout_makes_the_reading_an_error_naming_it() -> None:
    with (
        expected_protocol(
            EspecChamber, [("MON?", "999.9,,CONSTANT,1"), ("ALARM?", "1,31")]
        ) as chamber,
        pytest.raises(
            ChamberSensorFault,
            match="sensor fault, the temperature reading is invalid: code 31: dry-bulb "
            "temperature sensor burnout",
        ),
    ):
        chamber.read_temperature()


def test_an_alarm_that_spares_the_sensor_leaves_the_reading_valid() -> None:
    with expected_protocol(
        EspecChamber, [("MON?", "24.1,,CONSTANT,1"), ("ALARM?", "1,2")]
    ) as chamber:
        assert chamber.read_temperature() == 24.1


def test_every_alarm_code_the_emulator_raises_has_a_name() -> None:
    from nvmlab.mocks.firmware import espec as firmware

    codes = {firmware.ALARM_INJECTED, firmware.ALARM_LIMIT, firmware.ALARM_SENSOR}
    assert codes <= set(ALARM_NAMES)
    assert firmware.ALARM_SENSOR in SENSOR_FAULT_CODES


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
            chamber.read_setpoint()
        with pytest.raises(InstrumentProtocolError, match="is not 'PV,SP,upper,lower'"):
            chamber.read_setpoint()
        with pytest.raises(InstrumentProtocolError, match="expected 'OK:...'"):
            chamber.standby()


def test_a_silent_chamber_times_out_after_one_retry_of_the_read() -> None:
    with expected_protocol(
        EspecChamber, [("MON?", InstrumentTimeout), ("MON?", "25.0,,CONSTANT,0")]
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
            ChamberSensorFault,
            match=r"chamber alarm: 2 active \(code 1: alarm stop .*; code 31: dry-bulb "
            r"temperature sensor burnout\)",
        ):
            chamber.check_alarms()
