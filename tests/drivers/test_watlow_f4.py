"""Watlow F4 driver: exact Modbus RTU frames (CRC included) and the replies parsed."""

from __future__ import annotations

import struct

import pytest

from nvmlab.drivers.chamber_alarms import ChamberAlarm, ChamberSensorFault
from nvmlab.drivers.testing import expected_protocol
from nvmlab.drivers.watlow_f4 import WatlowF4
from nvmlab.errors import InstrumentProtocolError, InstrumentTimeout


def crc16_modbus(frame: bytes) -> bytes:
    """CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF), low byte first on the wire."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def rtu(*fields: int, fmt: str = ">BBHH") -> bytes:
    body = struct.pack(fmt, *fields)
    return body + crc16_modbus(body)


def read_request(register: int, address: int = 1) -> bytes:
    return rtu(address, 3, register, 1)


def read_reply(value: int, address: int = 1) -> bytes:
    return rtu(address, 3, 2, value & 0xFFFF, fmt=">BBBH")


def read_block_request(register: int, count: int, address: int = 1) -> bytes:
    return rtu(address, 3, register, count)


def read_block_reply(*values: int, address: int = 1) -> bytes:
    words = [v & 0xFFFF for v in values]
    return rtu(address, 3, 2 * len(words), *words, fmt=">BBB" + "H" * len(words))


def write_frame(register: int, value: int, address: int = 1) -> bytes:
    """Function 06 request; the controller echoes it as the reply."""
    return rtu(address, 6, register, value & 0xFFFF)


SETUP = [(read_request(606), read_reply(1)), (read_request(901), read_reply(1))]


def test_the_crc_helper_matches_published_frames() -> None:
    # Two frames quoted in Modbus tutorials: read 10 registers from 0, and an exception.
    assert rtu(1, 3, 0, 10) == bytes.fromhex("01030000000AC5CD")
    assert rtu(1, 0x83, 2, fmt=">BBB") == bytes.fromhex("018302C0F1")


def test_process_value_is_register_100_scaled_by_the_decimal_places() -> None:
    assert read_block_request(100, 2) == bytes.fromhex("010300640002 85D4".replace(" ", ""))
    with expected_protocol(
        WatlowF4,
        [*SETUP, (read_block_request(100, 2), read_block_reply(256, 0))],
    ) as chamber:
        assert chamber.read_temperature() == pytest.approx(25.6)


def test_decimals_and_units_are_read_once() -> None:
    with expected_protocol(
        WatlowF4,
        [
            *SETUP,
            (read_request(300), read_reply(850)),
            (read_request(300), read_reply(-400)),
        ],
    ) as chamber:
        assert chamber.read_setpoint() == pytest.approx(85.0)
        assert chamber.read_setpoint() == pytest.approx(-40.0)


def test_setpoint_write_is_function_06_on_register_300_signed() -> None:
    with expected_protocol(
        WatlowF4,
        [
            *SETUP,
            (write_frame(300, 1250), write_frame(300, 1250)),
            (write_frame(300, -105), write_frame(300, -105)),
        ],
    ) as chamber:
        chamber.set_setpoint(125.0)
        chamber.set_setpoint(-10.5)


def test_two_decimals_and_fahrenheit_are_converted_to_celsius() -> None:
    with expected_protocol(
        WatlowF4,
        [
            (read_request(606), read_reply(2)),
            (read_request(901), read_reply(0)),
            (read_request(300), read_reply(7700)),
            (write_frame(300, 21200), write_frame(300, 21200)),
        ],
    ) as chamber:
        assert chamber.read_setpoint() == pytest.approx(25.0)
        chamber.set_setpoint(100.0)


def test_identify_reports_model_software_address_decimals_and_units() -> None:
    with expected_protocol(
        WatlowF4,
        [
            (read_request(606, 3), read_reply(1, 3)),
            (read_request(901, 3), read_reply(1, 3)),
            (read_request(0, 3), read_reply(5270, 3)),
            (read_request(4, 3), read_reply(0x0105, 3)),
        ],
        address=3,
    ) as chamber:
        assert chamber.identify() == (
            "Watlow F4 model 5270 software 1.05, Modbus address 3 (1 decimals, units C)"
        )


def test_alarms_come_from_registers_101_to_106_in_one_frame() -> None:
    with expected_protocol(
        WatlowF4,
        [
            (read_block_request(101, 6), read_block_reply(0, 0, 0, 0, 0, 0)),
            (read_block_request(101, 6), read_block_reply(0, 1, 0, 0, 0, 0)),
            (read_block_request(101, 6), read_block_reply(1, 0, 0, 0, 0, 1)),
        ],
    ) as chamber:
        chamber.check_alarms()
        with pytest.raises(ChamberAlarm, match=r"chamber alarm: alarm 1 \(register 102\) active"):
            chamber.check_alarms()
        with pytest.raises(
            ChamberSensorFault,
            match=r"input 1 error 1: open sensor and alarm 2 \(register 106\) active",
        ):
            chamber.check_alarms()


def test_a_sensor_fault_in_register_101_is_an_error_not_a_temperature() -> None:
    with (
        expected_protocol(
            WatlowF4, [*SETUP, (read_block_request(100, 2), read_block_reply(9999, 5))]
        ) as chamber,
        pytest.raises(
            ChamberSensorFault,
            match=r"sensor fault, the temperature reading is invalid: input 1 error 5 "
            r"\(not in the table\) \(register 101 reads 5\)",
        ),
    ):
        chamber.read_temperature()


def test_a_modbus_exception_reply_is_a_protocol_error() -> None:
    exception = rtu(1, 0x86, 3, fmt=">BBB")  # illegal data value
    with (
        expected_protocol(WatlowF4, [*SETUP, (write_frame(300, 9999), exception)]) as chamber,
        pytest.raises(
            InstrumentProtocolError, match="Modbus exception from address 1 while writing 9999"
        ),
    ):
        chamber.set_setpoint(999.9)


def test_a_bad_crc_is_a_protocol_error() -> None:
    bad = bytearray(read_reply(250))
    bad[-1] ^= 0xFF
    with (
        expected_protocol(WatlowF4, [*SETUP, (read_request(300), bytes(bad))]) as chamber,
        pytest.raises(InstrumentProtocolError, match="invalid Modbus reply"),
    ):
        chamber.read_setpoint()


def test_silence_becomes_a_timeout_naming_the_address() -> None:
    with (
        expected_protocol(WatlowF4, [*SETUP, (read_request(300), InstrumentTimeout)]) as chamber,
        pytest.raises(
            InstrumentTimeout, match="no Modbus reply from address 1 while reading register 300"
        ),
    ):
        chamber.read_setpoint()


def test_values_that_do_not_fit_a_register_send_nothing() -> None:
    with (
        expected_protocol(WatlowF4, SETUP) as chamber,
        pytest.raises(ValueError, match="does not fit a signed 16-bit register"),
    ):
        chamber.set_setpoint(5000.0)
    with pytest.raises(ValueError, match="1..247"):
        WatlowF4(None, address=0)  # type: ignore[arg-type]
