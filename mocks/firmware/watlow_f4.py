"""Firmware of a Watlow F4 chamber controller (TestEquity 107 / 115 / 1007), Modbus RTU.

Binary Modbus RTU frames with CRC-16/MODBUS (low byte first). Over TCP there are no
inter-frame silences, so requests are framed by length from the function code (03 and 06:
8 bytes; 16: 9 + byte count) and accepted only with a valid CRC. Garbage is discarded a
byte at a time until a frame with a valid CRC starts. As on a real slave:

- a bad CRC gets no reply;
- bytes are discarded until a frame addressed to this slave (or to 0, broadcast) with a
  valid CRC starts, so frames for other slaves are ignored; broadcast writes are executed
  without a reply;
- function codes other than 03, 06 and 16 answer exception 01 (illegal function);
- an address outside the register map (or a write to a read-only register) answers
  exception 02 (illegal data address);
- a bad quantity, byte count or value answers exception 03 (illegal data value).

Holding registers (protocol addresses as sent on the wire; signed 16-bit values scaled by
the decimal places of register 606, temperatures in the units of register 901):

=====  ============================================  ======
 reg   meaning                                       access
=====  ============================================  ======
   0   model number (5270 = F4)                      r
   1   serial number, high word                      r
   2   serial number, low word                       r
   4   software version (e.g. 0x0105 = 1.05)          r
 100   input 1 process value                         r
 101   input 1 error (0 none, 1 open sensor)         r
 102   alarm 1 status (0 none, 1 active)             r
 103   input 2 process value (not fitted: 0)         r
 104   input 2 process value, alternate map (0)      r
 105   input 2 error (0)                             r
 106   alarm 2 status (0 none, 1 active)             r
 200   profile status (0 = no profile running)       r
 300   static set point, input 1                     rw
 319   static set point 2 (not fitted: 0)            rw
 600   input 1 sensor type (0 thermocouple)          r
 602   input 1 range low                             r
 603   input 1 range high                            r
 606   input 1 decimal places (0..3, default 1)      rw
 608   input 1 units type (0 temperature)            r
 901   temperature units (0 F, 1 C, default 1)       rw
=====  ============================================  ======

The F4 has no standby register: "standby" for an F4 chamber is the configured safe set
point (the driver writes it to register 300); regulation never stops from the protocol.

Fault injection (documented choice):

- :meth:`WatlowF4Emulator.inject_alarm`: the chamber's limit controller trips: alarm 1
  status (102) = 1, heating and cooling off (the air drifts to ambient) until
  :meth:`~WatlowF4Emulator.clear_alarm`.
- :meth:`~WatlowF4Emulator.inject_sensor_fault`: input 1 error (101) = 1 (open sensor),
  alarm 2 status (106) = 1, the process value reads the upscale burnout value 999.9 C
  (clipped to the signed 16-bit range), outputs off (air drifts to ambient) until repaired.
"""

from __future__ import annotations

import struct

from nvmlab.mocks.firmware.base import ChamberFaults, EmulatedInstrument
from nvmlab.mocks.world import Bench

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03

READ_HOLDING = 0x03
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10

#: Longest RTU frame (bytes); the input buffer keeps at most twice that.
MAX_FRAME = 256
BURNOUT_C = 999.9


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) of ``data``."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    """``frame`` followed by its CRC, low byte first (as on the wire)."""
    return frame + struct.pack("<H", crc16_modbus(frame))


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16_modbus(frame[:-2]) == struct.unpack("<H", frame[-2:])[0]


class ModbusException(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _signed(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def _c_to_units(celsius: float, units: int) -> float:
    return celsius if units == 1 else celsius * 9.0 / 5.0 + 32.0


def _units_to_c(value: float, units: int) -> float:
    return value if units == 1 else (value - 32.0) * 5.0 / 9.0


class WatlowF4Emulator(ChamberFaults, EmulatedInstrument):
    """A Watlow F4 controller on Modbus RTU driving the bench's thermal model."""

    model = "watlow_f4"

    def __init__(
        self,
        bench: Bench,
        *,
        address: int = 1,
        query_latency_s: float = 0.0,
        serial_number: int = 1234567,
        software_version: int = 0x0105,
    ) -> None:
        super().__init__(bench.clock, query_latency_s=query_latency_s)
        if not 1 <= int(address) <= 247:
            raise ValueError(f"Modbus slave address {address!r} out of range 1..247")
        self.bench = bench
        self.thermal = bench.thermal
        self.address = int(address)
        self.serial_number = int(serial_number)
        self.software_version = int(software_version)
        self.decimal_places = 1
        self.units = 1  # 1 = C, 0 = F
        self.setpoint2_raw = 0
        self.range_low_c = float(self.thermal.params.min_setpoint_c)
        self.range_high_c = float(self.thermal.params.max_setpoint_c)
        self.injected_alarm: str | None = None
        self.sensor_fault = False
        self._in = bytearray()
        self._sync_thermal()

    def _sync_thermal(self) -> None:
        self.thermal.advance()
        self.thermal.running = self.injected_alarm is None and not self.sensor_fault

    # -- registers ---------------------------------------------------------------------------
    def _scale(self, celsius: float) -> int:
        raw = round(_c_to_units(celsius, self.units) * 10**self.decimal_places)
        return max(-32768, min(32767, raw))

    def _unscale(self, raw: int) -> float:
        return _units_to_c(raw / 10**self.decimal_places, self.units)

    def _read_register(self, reg: int) -> int:
        """Signed value of holding register ``reg``; ModbusException(02) if it doesn't exist."""
        if reg == 0:
            return 5270
        if reg == 1:
            return (self.serial_number >> 16) & 0xFFFF
        if reg == 2:
            return self.serial_number & 0xFFFF
        if reg == 4:
            return self.software_version
        if reg == 100:
            pv = BURNOUT_C if self.sensor_fault else self.thermal.sensor_reading_c()
            return self._scale(pv)
        if reg == 101:
            return 1 if self.sensor_fault else 0
        if reg == 102:
            return 1 if self.injected_alarm is not None else 0
        if reg in (103, 104, 105, 200, 600, 608):
            return 0
        if reg == 106:
            return 1 if self.sensor_fault else 0
        if reg == 300:
            return self._scale(self.thermal.setpoint_c)
        if reg == 319:
            return self.setpoint2_raw
        if reg == 602:
            return self._scale(self.range_low_c)
        if reg == 603:
            return self._scale(self.range_high_c)
        if reg == 606:
            return self.decimal_places
        if reg == 901:
            return self.units
        raise ModbusException(ILLEGAL_DATA_ADDRESS)

    WRITABLE = (300, 319, 606, 901)

    def _check_write(self, reg: int, word: int) -> None:
        """Validate a write (ModbusException 02 / 03) without applying it."""
        self._read_register(reg)  # 02 for an address outside the map
        if reg not in self.WRITABLE:
            raise ModbusException(ILLEGAL_DATA_ADDRESS)
        value = _signed(word)
        if reg == 300:
            celsius = self._unscale(value)
            if not self.range_low_c - 1e-9 <= celsius <= self.range_high_c + 1e-9:
                raise ModbusException(ILLEGAL_DATA_VALUE)
        elif (reg == 606 and not 0 <= value <= 3) or (reg == 901 and value not in (0, 1)):
            raise ModbusException(ILLEGAL_DATA_VALUE)

    def _write_register(self, reg: int, word: int) -> None:
        value = _signed(word)
        if reg == 300:
            self.thermal.advance()
            self.thermal.setpoint_c = self._unscale(value)
        elif reg == 319:
            self.setpoint2_raw = value
        elif reg == 606:
            self.decimal_places = value
        elif reg == 901:
            self.units = value

    # -- framing -----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        with self._lock:
            self._in += data
            if len(self._in) > 2 * MAX_FRAME:
                del self._in[: len(self._in) - 2 * MAX_FRAME]
            self._process()

    def reset_io(self) -> None:
        with self._lock:
            super().reset_io()
            self._in.clear()

    def _frame_at(self, k: int) -> int | None:
        """Length of a complete, CRC-valid frame for this slave (or broadcast) at offset ``k``.

        None if it may still be arriving, -1 if no such frame starts there.
        """
        buf = self._in
        avail = len(buf) - k
        if avail < 1:
            return None
        if buf[k] not in (0, self.address):
            return -1
        if avail < 2:
            return None
        fc = buf[k + 1]
        if fc in (READ_HOLDING, WRITE_SINGLE):
            n = 8
        elif fc == WRITE_MULTIPLE:
            if avail < 7:
                return None
            n = 9 + buf[k + 6]
        else:
            # Unknown function: its length is unknown; the first CRC match ends it.
            crc = 0xFFFF
            limit = min(avail, MAX_FRAME)
            for i in range(limit):
                if i >= 2 and i + 2 <= limit and buf[k + i] | (buf[k + i + 1] << 8) == crc:
                    return i + 2
                crc ^= buf[k + i]
                for _ in range(8):
                    crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
            return None if avail < MAX_FRAME else -1
        if avail < n:
            return None
        return n if crc_ok(bytes(buf[k : k + n])) else -1

    def _process(self) -> None:
        while self._in:
            n = self._frame_at(0)
            if n is None:
                # Incomplete: unless a complete valid frame starts later (garbage before it).
                for k in range(1, len(self._in) - 3):
                    if self._in[k] not in (0, self.address):
                        continue
                    m = self._frame_at(k)
                    if m is not None and m > 0:
                        del self._in[:k]
                        break
                else:
                    return
                continue
            if n < 0:
                del self._in[:1]
                continue
            frame = bytes(self._in[:n])
            del self._in[:n]
            self._handle_frame(frame)

    def _handle_frame(self, frame: bytes) -> None:
        slave, fc = frame[0], frame[1]
        if slave not in (0, self.address):
            return
        self.clock.sleep(self.query_latency_s)
        try:
            reply = self._execute(fc, frame[2:-2], broadcast=slave == 0)
        except ModbusException as exc:
            reply = bytes([fc | 0x80, exc.code])
        except Exception:  # never crash on input: a slave device failure (exception 04)
            reply = bytes([fc | 0x80, 0x04])
        if slave != 0:
            self._emit(with_crc(bytes([self.address]) + reply))

    def _execute(self, fc: int, pdu: bytes, *, broadcast: bool) -> bytes:
        if fc == READ_HOLDING:
            if broadcast:
                raise ModbusException(ILLEGAL_FUNCTION)
            start, count = struct.unpack(">HH", pdu)
            if not 1 <= count <= 125:
                raise ModbusException(ILLEGAL_DATA_VALUE)
            words = [self._read_register(start + i) & 0xFFFF for i in range(count)]
            return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *words)
        if fc == WRITE_SINGLE:
            reg, word = struct.unpack(">HH", pdu)
            self._check_write(reg, word)
            self._write_register(reg, word)
            return bytes([fc]) + pdu
        if fc == WRITE_MULTIPLE:
            start, count, nbytes = struct.unpack(">HHB", pdu[:5])
            data = pdu[5:]
            if not 1 <= count <= 123 or nbytes != 2 * count or len(data) != nbytes:
                raise ModbusException(ILLEGAL_DATA_VALUE)
            values = struct.unpack(f">{count}H", data)
            for i, word in enumerate(values):
                self._check_write(start + i, word)
            for i, word in enumerate(values):
                self._write_register(start + i, word)
            return bytes([fc]) + struct.pack(">HH", start, count)
        raise ModbusException(ILLEGAL_FUNCTION)
