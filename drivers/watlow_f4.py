"""Watlow F4 controllers (TestEquity 107 / 115 / 1007 chambers), Modbus RTU.

Frames are built, checksummed (CRC-16/Modbus) and parsed by :mod:`minimalmodbus`; this
driver hands it a small serial-port adapter over any nvmlab
:class:`~nvmlab.drivers.transport.Transport`, so the same driver runs on a real RS-232 port,
any pyserial URL (``socket://``, ``rfc2217://``, ``nvmlab://``), a VISA ``ASRL`` session,
a recording transport or a scripted protocol test.

Holding registers (protocol addresses, as on the wire), signed 16-bit, scaled by the
decimal-places setting:

====================  ========  ===================================================
register              address   meaning
====================  ========  ===================================================
process value         100       chamber temperature (input 1)
input error           101       0 = sensor fine; anything else = sensor / input fault
static setpoint       300       temperature setpoint
decimal places        606       0..3; read once, scales every temperature
temperature units     901       1 = C, 0 = F
====================  ========  ===================================================

Registers 101-106 are the chamber's alarms, named as the F4 names them: input 1 error (101,
:data:`INPUT_ERRORS` names its codes, mocks/firmware/watlow_f4.py), alarm 1 (102) and alarm
2 (106). A temperature read while input 1 reports an error raises
:class:`~nvmlab.drivers.chamber_alarms.ChamberSensorFault` naming it.

Modbus exception replies, bad CRCs and silences become the nvmlab error family. There is no
standby register: "standby" for an F4 chamber is the station's safe setpoint, which the
chamber role applies. Temperatures in C (converted when the controller runs in F).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import minimalmodbus

from nvmlab.drivers.chamber_alarms import ChamberAlarm, ChamberSensorFault
from nvmlab.drivers.transport import Transport
from nvmlab.errors import InstrumentError, InstrumentProtocolError, InstrumentTimeout

REG_MODEL = 0
REG_SOFTWARE = 4
REG_PROCESS_VALUE = 100
REG_INPUT_ERROR = 101
REG_ALARM_1 = 102
REG_ALARM_2 = 106
REG_SETPOINT = 300
REG_DECIMALS = 606
REG_UNITS = 901
UNITS_CELSIUS = 1

#: Input 1 error codes (register 101) and the controller's name for each
#: (mocks/firmware/watlow_f4.py); 0 is no error.
INPUT_ERRORS: dict[int, str] = {1: "open sensor"}
#: The alarm registers and the F4's name for each.
ALARM_REGISTERS: tuple[tuple[str, int], ...] = (
    ("input 1 error (register 101)", REG_INPUT_ERROR),
    ("alarm 1 (register 102)", REG_ALARM_1),
    ("alarm 2 (register 106)", REG_ALARM_2),
)


def input_error_name(code: int) -> str:
    """``"input 1 error 1: open sensor"`` (the number alone when the code is unknown)."""
    name = INPUT_ERRORS.get(code)
    return f"input 1 error {code}: {name}" if name else f"input 1 error {code} (not in the table)"


#: Block lengths (registers from 100) of the resynchronisation probe, used in turn: no other
#: request of this driver reads 3, 4, 5 or 7 registers, so its reply is recognised.
_PROBE_COUNTS = (3, 4, 5, 7)


def _crc16(frame: bytes) -> bytes:
    """CRC-16/Modbus of ``frame``, low byte first as on the wire."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def _is_local_uart(resource: str) -> bool:
    """True for a serial port of this computer (``/dev/tty...``, ``COM3``, ``ASRL...``)."""
    text = resource.strip().upper()
    if text.startswith("ASRL"):
        return "://" not in text[4:]
    return text.startswith("/DEV/") or text.startswith("COM")


class _TransportPort:
    """The slice of the ``serial.Serial`` interface minimalmodbus uses, over a Transport.

    ``read(n)`` reads the first 5 bytes and stops there when they are a Modbus exception
    reply (function code with bit 7 set, 5 bytes long), so an exception is parsed at once
    instead of after a timeout.
    """

    def __init__(self, transport: Transport, baudrate: int) -> None:
        self.transport = transport
        self.baudrate = baudrate
        #: Only a UART on this computer needs the host to keep the 3.5-character silence
        #: between frames; through a TCP bridge or an emulator the host cannot shape the
        #: wire timing, so minimalmodbus's wall-clock sleep is skipped there.
        self.local_uart = _is_local_uart(transport.resource)
        self.port = f"nvmlab-transport-{id(transport):x}"
        self.timeout = transport.timeout_s
        self.is_open = True

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:  # the station owns the transport's lifetime
        self.is_open = False

    def write(self, data: bytes) -> int:
        self.transport.write_raw(bytes(data))
        return len(data)

    def read(self, size: int) -> bytes:
        head = self.transport.read_raw(min(size, 5))
        if size <= 5 or (len(head) >= 2 and head[1] & 0x80):
            return head
        return head + self.transport.read_raw(size - 5)

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        self.transport.clear_input()

    def reset_output_buffer(self) -> None:
        pass


class WatlowF4:
    """One Watlow F4 controller at Modbus ``address`` (1 on TestEquity chambers).

    ``baudrate`` (Bd) only sets the inter-frame silence minimalmodbus keeps (3.5 characters).
    The constructor does no I/O; the decimal places and units are read once, on first use.
    """

    model = "Watlow F4 chamber"
    transport_defaults: dict[str, Any] = {
        "read_termination": "",
        "write_termination": "",
        "serial_options": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1},
    }

    def __init__(self, transport: Transport, *, address: int = 1, baudrate: int = 9600) -> None:
        if not 1 <= address <= 247:
            raise ValueError(f"Modbus address must be 1..247, got {address!r}")
        self.transport = transport
        self.address = address
        self._port = _TransportPort(transport, baudrate)
        self._modbus = minimalmodbus.Instrument(self._port, address)  # type: ignore[arg-type]
        # Buffers are cleared only after a failure (a real link never has stale bytes
        # otherwise), so a healthy transaction is exactly one request and one reply.
        self._modbus.clear_buffers_before_each_transaction = False
        self._decimals: int | None = None
        self._celsius: bool | None = None
        self._probes = 0
        transport.resync_hook = self._resync

    # -- resynchronising after a timeout (a local serial line) ----------------------------
    def _resync(self, transport: Transport) -> None:
        """Read a block no other request reads (3, 4, 5 or 7 registers from 100, in turn)
        and discard every frame before its reply: a late reply of the same length as the
        next request's would otherwise pass minimalmodbus's checks."""
        count = _PROBE_COUNTS[self._probes % len(_PROBE_COUNTS)]
        self._probes += 1
        body = struct.pack(">BBHH", self.address, 3, REG_PROCESS_VALUE, count)
        transport.write_raw(body + _crc16(body))
        for _ in range(64):
            frame = self._read_frame(transport)
            if frame[0] == self.address and frame[1] == 3 and frame[2] == 2 * count:
                return
        raise transport.error(
            InstrumentProtocolError, "could not resynchronise: more than 64 stale frames"
        )

    def _read_frame(self, transport: Transport) -> bytes:
        """One RTU frame, delimited by its function code, CRC checked."""
        head = transport.read_raw(2)
        function = head[1]
        if function & 0x80:
            rest = transport.read_raw(3)
        elif function == 3:
            size = transport.read_raw(1)
            rest = size + transport.read_raw(size[0] + 2)
        elif function in (6, 16):
            rest = transport.read_raw(6)
        else:
            raise transport.error(
                InstrumentProtocolError, f"cannot resynchronise on a frame {head!r}..."
            )
        frame = head + rest
        if _crc16(frame[:-2]) != frame[-2:]:
            raise transport.error(
                InstrumentProtocolError, f"cannot resynchronise: bad CRC in {frame!r}"
            )
        return frame

    # -- plumbing -------------------------------------------------------------------------
    def _call_raw(self, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        finally:
            if not self._port.local_uart:
                # minimalmodbus remembers the last read per port to sleep out the silent
                # interval before the next frame; meaningless off a local UART.
                minimalmodbus._latest_read_times.pop(self._port.port, None)

    def _call(self, what: str, func: Any, *args: Any) -> Any:
        try:
            return self._call_raw(func, *args)
        except InstrumentTimeout as exc:
            self.transport.clear_input()
            raise self.transport.error(
                InstrumentTimeout,
                f"no Modbus reply from address {self.address} while {what}: {exc}",
            ) from exc
        except InstrumentError:
            raise
        except minimalmodbus.SlaveReportedException as exc:
            raise self.transport.error(
                InstrumentProtocolError,
                f"Modbus exception from address {self.address} while {what}: {exc}",
            ) from exc
        except minimalmodbus.NoResponseError as exc:
            raise self.transport.error(
                InstrumentTimeout, f"no Modbus reply from address {self.address} while {what}"
            ) from exc
        except (minimalmodbus.ModbusException, ValueError, TypeError) as exc:
            self.transport.clear_input()
            raise self.transport.error(
                InstrumentProtocolError,
                f"invalid Modbus reply from address {self.address} while {what}: {exc}",
            ) from exc

    def read_register(self, address: int, *, signed: bool = True) -> int:
        """One holding register (function 03), raw integer."""
        value = self._call(
            f"reading register {address}", self._modbus.read_register, address, 0, 3, signed
        )
        return int(value)

    def read_registers(self, start: int, count: int) -> list[int]:
        """``count`` consecutive holding registers from ``start`` in one frame (function 03), signed."""
        values = self._call(
            f"reading registers {start}..{start + count - 1}",
            self._modbus.read_registers,
            start,
            count,
            3,
        )
        return [v - 0x10000 if v >= 0x8000 else v for v in values]

    def write_register(self, address: int, value: int, *, signed: bool = True) -> None:
        """One holding register (function 06)."""
        self._call(
            f"writing {value} to register {address}",
            self._modbus.write_register,
            address,
            int(value),
            0,
            6,
            signed,
        )

    # -- scaling --------------------------------------------------------------------------
    @property
    def decimals(self) -> int:
        """Decimal places of every temperature register (0..3), read once."""
        if self._decimals is None:
            value = self.read_register(REG_DECIMALS, signed=False)
            if not 0 <= value <= 3:
                raise self.transport.error(
                    InstrumentProtocolError,
                    f"decimal places register {REG_DECIMALS} reads {value}; expected 0..3",
                )
            self._decimals = value
        return self._decimals

    @property
    def celsius(self) -> bool:
        """True when the controller works in C (register 901 = 1), read once."""
        if self._celsius is None:
            self._celsius = self.read_register(REG_UNITS, signed=False) == UNITS_CELSIUS
        return self._celsius

    def _ensure_scaling(self) -> None:
        """Read the decimal places, then the units, the first time a temperature is needed."""
        _ = self.decimals, self.celsius

    def _to_celsius(self, raw: int) -> float:
        value = raw / 10**self.decimals
        return value if self.celsius else (value - 32.0) / 1.8

    def _from_celsius(self, celsius: float) -> int:
        value = celsius if self.celsius else celsius * 1.8 + 32.0
        raw = round(value * 10**self.decimals)
        if not -32768 <= raw <= 32767:
            raise ValueError(
                f"{celsius:g} C does not fit a signed 16-bit register with {self.decimals} decimals"
            )
        return raw

    # -- identification -------------------------------------------------------------------
    def identify(self) -> str:
        """Model number (register 0), software version (4), address, decimals and units."""
        self._ensure_scaling()
        model = self.read_register(REG_MODEL, signed=False)
        software = self.read_register(REG_SOFTWARE, signed=False)
        units = "C" if self.celsius else "F"
        return (
            f"Watlow F4 model {model} software {software >> 8}.{software & 0xFF:02d}, "
            f"Modbus address {self.address} ({self.decimals} decimals, units {units})"
        )

    # -- temperature ----------------------------------------------------------------------
    def input_error(self) -> int:
        """Register 101: 0 when the sensor reads fine, otherwise the controller's error code."""
        return self.read_register(REG_INPUT_ERROR, signed=False)

    def read_temperature(self) -> float:
        """Process value (C), read with the input error in one frame (registers 100-101);
        raises when the controller flags an input (sensor) error."""
        self._ensure_scaling()
        process_raw, error = self.read_registers(REG_PROCESS_VALUE, 2)
        if error:
            raise self.transport.error(
                ChamberSensorFault,
                f"chamber sensor fault, the temperature reading is invalid: {input_error_name(error)} "
                f"(register {REG_INPUT_ERROR} reads {error}); repair the sensor at the chamber",
            )
        return self._to_celsius(process_raw)

    def read_setpoint(self) -> float:
        """Static setpoint (C)."""
        self._ensure_scaling()
        return self._to_celsius(self.read_register(REG_SETPOINT))

    def read_pv_sp(self) -> tuple[float, float]:
        """Process value and setpoint (C)."""
        return self.read_temperature(), self.read_setpoint()

    def set_setpoint(self, celsius: float) -> None:
        """Write the static setpoint (C), rounded to the controller's decimal places."""
        if not math.isfinite(celsius):
            raise ValueError(f"setpoint must be a finite temperature (C), got {celsius!r}")
        self._ensure_scaling()
        self.write_register(REG_SETPOINT, self._from_celsius(celsius))

    def check_alarms(self) -> None:
        """Raise when the input error (101), alarm 1 (102, limit controller) or alarm 2
        (106) is active; registers 101-106 are read in one frame."""
        block = self.read_registers(REG_INPUT_ERROR, REG_ALARM_2 - REG_INPUT_ERROR + 1)
        input_error = block[0]
        active = [
            input_error_name(input_error) if register == REG_INPUT_ERROR else name
            for name, register in ALARM_REGISTERS
            if block[register - REG_INPUT_ERROR]
        ]
        if active:
            raise self.transport.error(
                ChamberSensorFault if input_error else ChamberAlarm,
                f"chamber alarm: {' and '.join(active)} active; operation stopped, "
                "clear it at the chamber",
            )

    # -- the common chamber-driver interface used by instruments/chambers.py ---------------
    def regulate(self) -> None:
        """An F4 always regulates at its setpoint: nothing to send."""

    @property
    def has_native_standby(self) -> bool:
        return False
