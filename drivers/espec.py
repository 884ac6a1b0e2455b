"""Espec temperature chambers (P300 / SCP-220 controllers, SH and SU series).

ASCII over RS-232 (9600 8N1, usually through a serial-to-Ethernet bridge), every message
ending in CR LF. Queries end in ``?``; settings answer ``OK:<echo>``; a refused message
answers ``NA:<reason>`` (``CMD ERR``, ``PARA ERR``, ``DATA OUT OF RANGE``, ``PROTECT ON``),
which this driver raises as :class:`~nvmlab.errors.InstrumentProtocolError` with the reason.

=========================  =================================  =============================
what                       sent                               reply
=========================  =================================  =============================
PV, SP and alarm limits    ``TEMP?``                          ``PV,SP,upper,lower`` (C)
set the setpoint           ``TEMP, S25.0``                    ``OK:TEMP, S25.0``
monitor                    ``MON?``                           ``temp,humi,mode,alarms``
operating mode             ``MODE, CONSTANT|STANDBY|OFF``     ``OK:MODE, ...``
mode read back             ``MODE?``                          ``CONSTANT`` ...
controller power           ``POWER, ON|OFF``                  ``OK:POWER, ...``
identification             ``TYPE?`` then ``ROM?``            model, firmware
=========================  =================================  =============================

Alarms: ``ALARM?`` lists the active alarm codes; :data:`ALARM_NAMES` gives each code the
chamber's name for it (the codes the emulator documents, mocks/firmware/espec.py; an unknown
code is reported by number). A dry-bulb sensor burnout (code 31) makes the controller's PV
the upscale burnout value, so a temperature read while it is active raises
:class:`~nvmlab.drivers.chamber_alarms.ChamberSensorFault` instead of returning it.

Temperatures in C. The constructor does no I/O.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

from nvmlab.drivers.chamber_alarms import ChamberAlarm, ChamberSensorFault
from nvmlab.drivers.transport import Transport
from nvmlab.errors import InstrumentProtocolError

log = logging.getLogger(__name__)

EspecMode = Literal["constant", "standby", "off"]
_MODES: tuple[str, ...] = ("constant", "standby", "off")

#: ``ALARM?`` codes and the chamber's name for each (mocks/firmware/espec.py).
ALARM_NAMES: dict[int, str] = {
    1: "alarm stop (operation stopped by a protective device)",
    2: "temperature absolute alarm (PV outside the upper / lower alarm limits)",
    31: "dry-bulb temperature sensor burnout",
}
#: Codes that make the temperature reading invalid.
SENSOR_FAULT_CODES: frozenset[int] = frozenset({31})


def alarm_name(code: int) -> str:
    """``"code 31: dry-bulb temperature sensor burnout"`` (the number alone when unknown)."""
    name = ALARM_NAMES.get(code)
    return f"code {code}: {name}" if name else f"code {code} (not in the alarm table)"


@dataclass(frozen=True)
class EspecTemperature:
    """``TEMP?``: process value, setpoint and the alarm band (C)."""

    process_c: float
    setpoint_c: float
    upper_alarm_c: float
    lower_alarm_c: float


@dataclass(frozen=True)
class EspecMonitor:
    """``MON?``: temperature (C), humidity (%RH, None without humidity control), mode, alarms.

    ``alarms`` is the number of active alarms (0 = none).
    """

    temperature_c: float
    humidity_rh: float | None
    mode: str
    alarms: int


class EspecChamber:
    """One Espec chamber controller over a :class:`~nvmlab.drivers.transport.Transport`."""

    model = "Espec chamber"
    transport_defaults: dict[str, Any] = {
        "read_termination": "\r\n",
        "write_termination": "\r\n",
        "serial_options": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1},
    }
    #: ``TEMP, S...`` resolution of the controller (C)
    setpoint_resolution_c = 0.1

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        #: ``TYPE?`` and ``ROM?`` replies learned by :meth:`identify`: the probes that find
        #: the reply stream's place again after a timeout on a local serial line.
        self._identity: dict[str, str] = {}
        transport.resync_hook = self._resync

    def _resync(self, transport: Transport) -> None:
        """After a timeout on a local serial line: ``ROM?`` (``TYPE?`` when a ``ROM?`` is
        unanswered), every reply before the one :meth:`identify` learned discarded."""
        if not self._identity:
            log.warning(
                "%s: no identity learned yet (identify() not run): cannot resynchronise "
                "after a timeout; a late reply could be read as a later query's",
                transport.name,
            )
            return
        probe = "TYPE?" if "ROM?" in transport.unanswered else "ROM?"
        transport.probe(probe, self._identity[probe])

    # -- plumbing -------------------------------------------------------------------------
    def _ask(self, message: str, *, idempotent: bool = False) -> str:
        reply = self.transport.query(message, idempotent=idempotent)
        if reply.startswith("NA:"):
            reason = reply[3:].strip()
            raise self.transport.error(
                InstrumentProtocolError,
                f"chamber refused {message!r}: {reason or 'no reason given'}",
            )
        return reply

    def _set(self, message: str) -> None:
        reply = self._ask(message)
        if not reply.startswith("OK:"):
            raise self.transport.error(
                InstrumentProtocolError,
                f"unexpected reply {reply!r} to {message!r}; expected 'OK:...'",
            )

    def _float(self, text: str, what: str, message: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise self.transport.error(
                InstrumentProtocolError,
                f"{what} {text!r} in the reply to {message!r} is not a number",
            ) from None

    # -- identification -------------------------------------------------------------------
    def identify(self) -> str:
        """Controller type and firmware, e.g. ``"SCP-220 ROM P-300 Ver 1.10"``."""
        kind = self._ask("TYPE?", idempotent=True)
        rom = self._ask("ROM?", idempotent=True)
        self._identity = {"TYPE?": kind, "ROM?": rom}
        return f"ESPEC {kind} ROM {rom}"

    # -- temperature ----------------------------------------------------------------------
    def read_temperature_status(self) -> EspecTemperature:
        """``TEMP?``: PV, SP, upper and lower alarm limits (C)."""
        reply = self._ask("TEMP?", idempotent=True)
        parts = [p.strip() for p in reply.split(",")]
        if len(parts) != 4:
            raise self.transport.error(
                InstrumentProtocolError, f"reply {reply!r} to 'TEMP?' is not 'PV,SP,upper,lower'"
            )
        names = ("PV", "SP", "upper alarm", "lower alarm")
        values = [self._float(p, n, "TEMP?") for p, n in zip(parts, names, strict=True)]
        return EspecTemperature(*values)

    def read_pv_sp(self) -> tuple[float, float]:
        """Process value (C, checked as :meth:`read_temperature` does) and setpoint (C)."""
        return self.read_temperature(), self.read_setpoint()

    def read_temperature(self) -> float:
        """Process value (C), from ``MON?`` with the alarm count.

        Raises :class:`~nvmlab.drivers.chamber_alarms.ChamberSensorFault` naming the alarm
        when an active alarm marks the reading invalid (``ALARM?`` is asked only when the
        count is not zero); other alarms leave the reading valid.
        """
        monitor = self.monitor()
        if monitor.alarms:
            self._check_reading(self.alarms())
        return monitor.temperature_c

    def _check_reading(self, codes: list[int]) -> None:
        faults = [code for code in codes if code in SENSOR_FAULT_CODES]
        if faults:
            raise self.transport.error(
                ChamberSensorFault,
                "chamber sensor fault, the temperature reading is invalid: "
                + "; ".join(alarm_name(code) for code in faults)
                + " (repair the sensor and clear the alarm at the chamber)",
            )

    def read_setpoint(self) -> float:
        """Setpoint (C)."""
        return self.read_temperature_status().setpoint_c

    def set_setpoint(self, celsius: float) -> None:
        """``TEMP, S<celsius>`` with 0.1 C resolution."""
        if not math.isfinite(celsius):
            raise ValueError(f"setpoint must be a finite temperature (C), got {celsius!r}")
        self._set(f"TEMP, S{celsius:.1f}")

    # -- modes ----------------------------------------------------------------------------
    def monitor(self) -> EspecMonitor:
        """``MON?``: temperature, humidity, mode and alarm count."""
        reply = self._ask("MON?", idempotent=True)
        parts = [p.strip() for p in reply.split(",")]
        if len(parts) != 4:
            raise self.transport.error(
                InstrumentProtocolError, f"reply {reply!r} to 'MON?' is not 'temp,humi,mode,alarms'"
            )
        temperature = self._float(parts[0], "temperature", "MON?")
        humidity = self._float(parts[1], "humidity", "MON?") if parts[1] else None
        try:
            alarms = int(parts[3])
        except ValueError:
            raise self.transport.error(
                InstrumentProtocolError,
                f"alarm count {parts[3]!r} in the reply to 'MON?' is not an integer",
            ) from None
        return EspecMonitor(temperature, humidity, parts[2].lower(), alarms)

    def set_mode(self, mode: EspecMode) -> None:
        """``MODE, CONSTANT`` (regulate at the setpoint), ``STANDBY`` (stop) or ``OFF``."""
        if mode not in _MODES:
            raise ValueError(f"Espec mode must be one of {', '.join(_MODES)}, got {mode!r}")
        self._set(f"MODE, {mode.upper()}")

    def mode(self) -> str:
        """The operating mode, lower case (``"constant"``, ``"standby"``, ``"off"`` ...)."""
        return self._ask("MODE?", idempotent=True).strip().lower()

    def set_power(self, on: bool) -> None:
        """``POWER, ON|OFF``: the controller's power."""
        self._set(f"POWER, {'ON' if on else 'OFF'}")

    def alarms(self) -> list[int]:
        """``ALARM?``: the active alarm codes (empty when none)."""
        reply = self._ask("ALARM?", idempotent=True)
        try:
            count, *codes = (int(p) for p in reply.split(",") if p.strip())
        except ValueError:
            raise self.transport.error(
                InstrumentProtocolError, f"reply {reply!r} to 'ALARM?' is not '<count>[,<code>...]'"
            ) from None
        return codes[:count] if codes else [0] * count

    # -- the common chamber-driver interface used by instruments/chambers.py ---------------
    def check_alarms(self) -> None:
        """Raise :class:`~nvmlab.drivers.chamber_alarms.ChamberAlarm` naming every active
        alarm (:class:`~nvmlab.drivers.chamber_alarms.ChamberSensorFault` for a sensor one)."""
        codes = self.alarms()
        if codes:
            cls = ChamberSensorFault if SENSOR_FAULT_CODES.intersection(codes) else ChamberAlarm
            raise self.transport.error(
                cls,
                f"chamber alarm: {len(codes)} active ("
                + "; ".join(alarm_name(code) for code in codes)
                + "); operation stopped, clear it at the chamber",
            )

    def regulate(self) -> None:
        """Run at the setpoint (constant mode)."""
        self.set_mode("constant")

    def standby(self) -> None:
        """Stop regulating: the chamber drifts to ambient."""
        self.set_mode("standby")

    @property
    def has_native_standby(self) -> bool:
        return True
