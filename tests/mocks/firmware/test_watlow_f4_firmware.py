"""The Watlow F4 firmware: Modbus RTU frames built by hand, CRC, exceptions, framing, clients.

Frames are written out byte by byte as in the Modbus specification; the CRC is checked
against minimalmodbus's own implementation, and minimalmodbus and pymodbus's RTU framer are
used as real clients would use them.
"""

from __future__ import annotations

import struct

import minimalmodbus
import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.firmware.watlow_f4 import WatlowF4Emulator, crc16_modbus, with_crc
from nvmlab.mocks.physics.resistor import ResistorArray
from nvmlab.mocks.thermal import ThermalModel, ThermalParams
from nvmlab.mocks.world import Bench


def make_f4(noise_c: float = 0.0, **options: object) -> WatlowF4Emulator:
    clock = VirtualClock()
    thermal = ThermalModel(clock, ThermalParams(sensor_noise_c=noise_c))
    bench = Bench(ResistorArray(np.full((4, 4), 50e-6)), clock, thermal)
    return WatlowF4Emulator(bench, **options)  # type: ignore[arg-type]


@pytest.fixture
def f4() -> WatlowF4Emulator:
    return make_f4()


def exchange(f4: WatlowF4Emulator, frame_hex: str) -> str:
    """Send a hand-written request (hex, CRC appended here) and return the reply as hex."""
    f4.write(with_crc(bytes.fromhex(frame_hex)))
    return f4.read().hex()


def crc_hex(frame_hex: str) -> str:
    return with_crc(bytes.fromhex(frame_hex)).hex()


# -- CRC -------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", ["010300640001", "0106012c0320", "0203025803e8", "00"])
def test_crc_matches_minimalmodbus(frame: str) -> None:
    data = bytes.fromhex(frame)
    assert struct.pack("<H", crc16_modbus(data)) == minimalmodbus._calculate_crc(data)


def test_crc_of_the_textbook_frame() -> None:
    # Read holding register 100 of slave 1: the CRC bytes as every F4 manual example shows.
    assert with_crc(bytes.fromhex("010300640001")).hex() == "010300640001c5d5"


# -- function codes ----------------------------------------------------------------------------
def test_read_process_value_error_and_alarm(f4: WatlowF4Emulator) -> None:
    # 25.0 C with one decimal = 250 = 0x00fa; no input error, no alarm.
    assert exchange(f4, "010300640003") == crc_hex("010306" + "00fa" + "0000" + "0000")


def test_read_configuration_registers(f4: WatlowF4Emulator) -> None:
    assert exchange(f4, "010302" + "5e0001") == crc_hex("010302" + "0001")  # 606: 1 decimal
    assert exchange(f4, "010303850001") == crc_hex("010302" + "0001")  # 901: C
    assert exchange(f4, "010300000001") == crc_hex("010302" + "1496")  # 0: model 5270
    # 602/603: range -40.0 .. 180.0 C as signed 16-bit (-400 = 0xfe70, 1800 = 0x0708)
    assert exchange(f4, "0103025a0002") == crc_hex("010304" + "fe70" + "0708")


def test_write_single_setpoint_echoes_and_drives_the_chamber(f4: WatlowF4Emulator) -> None:
    # 80.0 C = 800 = 0x0320 to register 300 (0x012c)
    assert exchange(f4, "0106012c0320") == crc_hex("0106012c0320")
    assert f4.thermal.setpoint_c == pytest.approx(80.0)
    assert exchange(f4, "0103012c0001") == crc_hex("010302" + "0320")
    f4.clock.sleep(3600)
    assert exchange(f4, "010300640001") == crc_hex("010302" + "0320")


def test_negative_setpoint_is_signed_16_bit(f4: WatlowF4Emulator) -> None:
    # -20.5 C = -205 = 0xff33
    assert exchange(f4, "0106012cff33") == crc_hex("0106012cff33")
    assert f4.thermal.setpoint_c == pytest.approx(-20.5)


def test_write_multiple_registers(f4: WatlowF4Emulator) -> None:
    # 16 at 300, one register, 2 bytes: 45.0 C
    assert exchange(f4, "0110012c00010201c2") == crc_hex("0110012c0001")
    assert f4.thermal.setpoint_c == pytest.approx(45.0)


def test_decimal_places_and_units_rescale_every_value(f4: WatlowF4Emulator) -> None:
    assert exchange(f4, "0106025e0000") == crc_hex("0106025e0000")  # 0 decimals
    assert exchange(f4, "010300640001") == crc_hex("010302" + "0019")  # 25
    assert exchange(f4, "010603850000") == crc_hex("010603850000")  # Fahrenheit
    assert exchange(f4, "010300640001") == crc_hex("010302" + "004d")  # 77 F
    assert exchange(f4, "0106012c00d4") == crc_hex("0106012c00d4")  # 212 F
    assert f4.thermal.setpoint_c == pytest.approx(100.0)


# -- exceptions ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_hex", "reply_hex"),
    [
        ("010400640001", "018401"),  # read input registers: illegal function
        ("012b0e010000", "01ab01"),  # device identification: illegal function
        ("010300c80005", "018302"),  # 200..204: 201 is not in the map
        ("010303e70001", "018302"),  # 999
        ("010300640000", "018303"),  # quantity 0
        ("01030064007e", "018303"),  # quantity 126
        ("010600640001", "018602"),  # the process value is read-only
        ("010607d00001", "018602"),  # 2000 does not exist
        ("0106012c0834", "018603"),  # 210.0 C above the 180.0 C range high
        ("0106012cfe0c", "018603"),  # -50.0 C below the -40.0 C range low
        ("0106025e0004", "018603"),  # 4 decimal places
        ("010603850002", "018603"),  # units 2
        ("0110012c0002020320", "019003"),  # byte count 2 for 2 registers
        ("0110012c00020403200064", "019002"),  # 301 is not writable
    ],
)
def test_exceptions(f4: WatlowF4Emulator, request_hex: str, reply_hex: str) -> None:
    setpoint = f4.thermal.setpoint_c
    assert exchange(f4, request_hex) == crc_hex(reply_hex)
    assert f4.thermal.setpoint_c == setpoint
    assert (f4.decimal_places, f4.units) == (1, 1)


# -- framing -------------------------------------------------------------------------------------
def test_bad_crc_gets_no_reply_and_the_next_frame_is_answered(f4: WatlowF4Emulator) -> None:
    f4.write(bytes.fromhex("010300640001c5d6"))
    assert f4.read() == b""
    assert exchange(f4, "010300640001") == crc_hex("010302" + "00fa")


def test_other_slaves_are_ignored_and_broadcast_writes_execute_silently(
    f4: WatlowF4Emulator,
) -> None:
    assert exchange(f4, "020300640001") == ""
    assert exchange(f4, "0206012c0320") == ""
    assert f4.thermal.setpoint_c == pytest.approx(25.0)
    assert exchange(f4, "0006012c0320") == ""
    assert f4.thermal.setpoint_c == pytest.approx(80.0)


def test_frames_split_and_joined_arbitrarily(f4: WatlowF4Emulator) -> None:
    frames = with_crc(bytes.fromhex("010300640001")) + with_crc(bytes.fromhex("0103025e0001"))
    for byte in frames:
        f4.write(bytes([byte]))
    assert f4.read().hex() == crc_hex("010302" + "00fa") + crc_hex("010302" + "0001")


def test_garbage_before_a_frame_is_discarded(f4: WatlowF4Emulator) -> None:
    f4.write(b"\x07\x99\x01\x42\xff" + with_crc(bytes.fromhex("010300640001")))
    assert f4.read().hex() == crc_hex("010302" + "00fa")


def test_another_slave_address(f4: WatlowF4Emulator) -> None:
    f4b = make_f4(address=7)
    assert exchange(f4b, "070300640001") == crc_hex("070302" + "00fa")
    assert exchange(f4b, "010300640001") == ""
    with pytest.raises(ValueError, match="1..247"):
        make_f4(address=0)


def test_query_latency_is_charged_per_frame() -> None:
    f4 = make_f4(query_latency_s=0.01)
    t0 = f4.clock.now()
    exchange(f4, "010300640001")
    exchange(f4, "0106012c0320")
    assert f4.clock.now() - t0 == pytest.approx(0.02)


# -- faults ------------------------------------------------------------------------------------
def test_sensor_fault_sets_the_input_error_and_burnout_value(f4: WatlowF4Emulator) -> None:
    f4.inject_sensor_fault(True)
    # 999.9 C at one decimal = 9999 = 0x270f; input error 1; alarm 1 clear.
    assert exchange(f4, "010300640003") == crc_hex("010306" + "270f" + "0001" + "0000")
    assert exchange(f4, "0103006a0001") == crc_hex("010302" + "0001")  # alarm 2
    f4.inject_sensor_fault(False)
    assert exchange(f4, "010300640003") == crc_hex("010306" + "00fa" + "0000" + "0000")


def test_alarm_sets_alarm_1_and_stops_heating(f4: WatlowF4Emulator) -> None:
    exchange(f4, "0106012c03e8")  # 100.0 C
    f4.clock.sleep(3600)
    f4.inject_alarm("limit controller tripped")
    assert exchange(f4, "010300660001") == crc_hex("010302" + "0001")
    f4.clock.sleep(3600)
    pv = struct.unpack(">h", bytes.fromhex(exchange(f4, "010300640001")[6:10]))[0] / 10
    assert pv < 30.0
    f4.clear_alarm()
    assert exchange(f4, "010300660001") == crc_hex("010302" + "0000")


def test_random_bytes_never_crash_the_controller(f4: WatlowF4Emulator) -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        f4.write(bytes(rng.integers(0, 256, size=int(rng.integers(1, 40)), dtype=np.uint8)))
        reply = f4.read()
        if reply:
            assert reply[0] == 1 and crc16_modbus(reply[:-2]) == struct.unpack("<H", reply[-2:])[0]
    f4.reset_io()
    assert exchange(f4, "010300000001") == crc_hex("010302" + "1496")


# -- real clients ------------------------------------------------------------------------------------
class EmulatedSerial:
    """A serial-port-like object (what minimalmodbus needs) in front of the emulator."""

    def __init__(self, device: WatlowF4Emulator) -> None:
        self.device = device
        self.port = "emulated-f4"
        self.is_open = True
        self.baudrate = 9600
        self.timeout = 0.05
        self._rx = bytearray()

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def write(self, data: bytes) -> int:
        self.device.write(bytes(data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        self._rx += self.device.read()
        out = bytes(self._rx[:size])
        del self._rx[:size]
        return out

    def reset_input_buffer(self) -> None:
        self._rx.clear()

    def reset_output_buffer(self) -> None:
        return None

    def flush(self) -> None:
        return None


def test_minimalmodbus_reads_and_writes_like_a_testequity_client(f4: WatlowF4Emulator) -> None:
    instrument = minimalmodbus.Instrument(EmulatedSerial(f4), 1)  # type: ignore[arg-type]
    assert instrument.read_register(100, 1, signed=True) == pytest.approx(25.0)
    instrument.write_register(300, -12.5, 1, signed=True)
    assert instrument.read_register(300, 1, signed=True) == pytest.approx(-12.5)
    assert instrument.read_register(901) == 1
    assert instrument.read_registers(100, 3) == [250, 0, 0]
    with pytest.raises(minimalmodbus.IllegalRequestError):
        instrument.read_register(150)
    with pytest.raises(minimalmodbus.IllegalRequestError):
        instrument.write_register(300, 500.0, 1, signed=True)


def test_pymodbus_rtu_framer_decodes_the_replies(f4: WatlowF4Emulator) -> None:
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU
    from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

    request = ReadHoldingRegistersRequest(address=100, count=3, dev_id=1)
    framer = FramerRTU(DecodePDU(is_server=False))
    f4.write(framer.buildFrame(request))
    used, pdu = framer.handleFrame(f4.read(), 1, 0)
    assert pdu is not None and pdu.registers == [250, 0, 0]
    assert used > 0
