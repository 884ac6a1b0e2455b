"""Firmware of an Espec temperature chamber controller (P300 / SCP-220 command set).

ASCII over RS-232 (usually through a serial-to-Ethernet bridge): each message ends in
CR LF, replies too. Commands may carry an RS-485 address prefix (``1,TEMP?``), which is
accepted and ignored. What is implemented (temperature-only chamber):

========================  ================================================================
``TEMP?``                 ``PV,SP,upper_alarm,lower_alarm`` (C, one decimal)
``TEMP, S25.0``           setpoint; also ``TEMP,S25.0``, ``TEMP, H120.0`` / ``L-45.0``
                          (absolute alarm limits), combinable: ``TEMP, S25.0 H120.0 L-45.0``;
                          a trailing ``, C1`` (constant-setting number) is accepted.
                          Reply ``OK: <command as sent>``
``MON?``                  ``temp,humi,mode,alarms``; humidity empty on this chamber
                          (``25.0,,CONSTANT,0``)
``MODE?``                 ``OFF``, ``STANDBY`` or ``CONSTANT``
``MODE, CONSTANT``        also ``STANDBY``, ``OFF``; reply ``OK: MODE, CONSTANT``
``POWER, ON|OFF``         control power: ON goes OFF -> STANDBY, OFF goes to OFF
``ALARM?``                ``<count>[,<code>...]`` active alarm codes
``ROM?``, ``TYPE?``       controller ROM version, ``<sensor>,<controller>,<max temp>``
``SRQ?``                  7 status bits; bit 1 (second char) = alarm
``HUMI?``                 ``NA:CONT NOT READY-1`` (no humidity on this chamber)
========================  ================================================================

Errors, as the controller reports them (``NA:<reason>``): ``NA:CMD ERR`` (unknown
command), ``NA:PARA ERR`` (parameter missing or unrecognisable), ``NA:DATA OUT OF RANGE``,
``NA:PROTECT ON`` (settings refused while data protection is on at the front panel,
:attr:`EspecEmulator.protect`).

Regulation: ``CONSTANT`` drives :attr:`Bench.thermal` to the setpoint; ``STANDBY`` and
``OFF`` stop it (the air drifts back to ambient). The reported PV is the chamber sensor:
air temperature plus sensor noise.

Fault injection (documented choice, modelled on the controller's alarm-stop behaviour):

- :meth:`inject_alarm` raises alarm code 1 (``message`` kept for logs): the alarm count
  in ``MON?`` becomes non-zero, ``SRQ?`` flags it, and operation stops (heater and
  refrigerator off, air drifts to ambient) while ``MODE?`` still reports the selected
  mode, until :meth:`clear_alarm`.
- :meth:`inject_sensor_fault` (``True``) is a dry-bulb sensor burnout: alarm code 31,
  the reported PV is the upscale burnout value ``999.9``, operation stops; ``False``
  repairs the sensor (the alarm clears with it).
- The absolute alarm limits (``H`` / ``L``) raise alarm code 2 while the sensor reads
  outside them; this one does not stop operation.
"""

from __future__ import annotations

import re

from nvmlab.mocks.firmware.base import ChamberFaults, LineInstrument
from nvmlab.mocks.world import Bench

ALARM_INJECTED = 1
ALARM_LIMIT = 2
ALARM_SENSOR = 31
#: The PV a burnt-out sensor reads (upscale burnout), C.
BURNOUT_PV_C = 999.9

NA_CMD = "NA:CMD ERR"
NA_PARA = "NA:PARA ERR"
NA_RANGE = "NA:DATA OUT OF RANGE"
NA_PROTECT = "NA:PROTECT ON"
NA_NO_HUMIDITY = "NA:CONT NOT READY-1"

_ADDRESS = re.compile(r"^\s*(\d{1,2})\s*,\s*(.*)$")
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_TEMP_FIELD = re.compile(rf"^([SHLC])({_NUMBER})$", re.IGNORECASE)
MODES = ("OFF", "STANDBY", "CONSTANT")


class EspecEmulator(ChamberFaults, LineInstrument):
    """An Espec chamber (P300-style controller) driving the bench's thermal model."""

    model = "espec"
    reply_termination = b"\r\n"

    def __init__(
        self,
        bench: Bench,
        *,
        query_latency_s: float = 0.0,
        rom: str = "P300 Ver.1.20",
        controller_type: str = "T,P300",
        protect: bool = False,
    ) -> None:
        super().__init__(bench.clock, query_latency_s=query_latency_s)
        self.bench = bench
        self.thermal = bench.thermal
        self.rom = rom
        self.controller_type = controller_type
        #: Data protection set at the front panel: every setting answers ``NA:PROTECT ON``.
        self.protect = bool(protect)
        params = self.thermal.params
        self.min_setpoint_c = float(params.min_setpoint_c)
        self.max_setpoint_c = float(params.max_setpoint_c)
        #: Absolute alarm limits (C) and the range they may be set in.
        self.upper_alarm_c = self.max_setpoint_c + 5.0
        self.lower_alarm_c = self.min_setpoint_c - 5.0
        self.alarm_range_c = (self.min_setpoint_c - 20.0, self.max_setpoint_c + 20.0)
        self.mode = "CONSTANT" if self.thermal.running else "STANDBY"
        self.injected_alarm: str | None = None
        self.sensor_fault = False
        self._sync_thermal()

    # -- state ------------------------------------------------------------------------------
    def _stopped_by_alarm(self) -> bool:
        return self.injected_alarm is not None or self.sensor_fault

    def _sync_thermal(self) -> None:
        """Bring the thermal model up to now, then apply the regulation state."""
        self.thermal.advance()
        self.thermal.running = self.mode == "CONSTANT" and not self._stopped_by_alarm()

    def _pv(self) -> float:
        if self.sensor_fault:
            return BURNOUT_PV_C
        return self.thermal.sensor_reading_c()

    def alarms(self, pv: float | None = None) -> list[int]:
        """Active alarm codes (``pv``: a reading just taken, C, to judge the limit alarm)."""
        codes: list[int] = []
        if self.injected_alarm is not None:
            codes.append(ALARM_INJECTED)
        if not self.sensor_fault and self.mode != "OFF":
            reading = self._pv() if pv is None else pv
            if not self.lower_alarm_c <= reading <= self.upper_alarm_c:
                codes.append(ALARM_LIMIT)
        if self.sensor_fault:
            codes.append(ALARM_SENSOR)
        return codes

    # -- protocol ----------------------------------------------------------------------------
    def handle_line(self, line: str) -> str | None:
        text = line.strip()
        if not text:
            return None
        try:
            with self._lock:
                return self._execute(text)
        except Exception:  # never crash on input: the controller rejects what it can't parse
            return NA_PARA

    def _execute(self, text: str) -> str:
        address = _ADDRESS.match(text)
        if address is not None:
            text = address.group(2).strip()
        head, _, rest = text.partition(",")
        keyword = " ".join(head.split()).upper()
        rest = rest.strip()
        if keyword.endswith("?"):
            return self._query(keyword, rest)
        handlers = {"TEMP": self._set_temp, "MODE": self._set_mode, "POWER": self._set_power}
        handler = handlers.get(keyword)
        if handler is None:
            return NA_CMD
        if not rest:
            return NA_PARA
        if self.protect:
            return NA_PROTECT
        error = handler(rest)
        if error is not None:
            return error
        self._sync_thermal()
        return f"OK: {text}"

    def _query(self, keyword: str, rest: str) -> str:
        # The P300 knows ",DETAIL" (MODE?, MON?) and ",DISP" (ROM?); answered as without.
        if rest and rest.upper() not in ("DETAIL", "DISP"):
            return NA_PARA
        if keyword == "TEMP?":
            pv = self._pv()
            sp = self.thermal.setpoint_c
            return f"{pv:.1f},{sp:.1f},{self.upper_alarm_c:.1f},{self.lower_alarm_c:.1f}"
        if keyword == "MON?":
            pv = self._pv()
            return f"{pv:.1f},,{self.mode},{len(self.alarms(pv))}"
        if keyword == "MODE?":
            return self.mode
        if keyword == "ALARM?":
            codes = self.alarms()
            return ",".join(str(v) for v in [len(codes), *codes])
        if keyword == "ROM?":
            return self.rom
        if keyword == "TYPE?":
            return f"{self.controller_type},{self.max_setpoint_c:.1f}"
        if keyword == "SRQ?":
            return "0" + ("1" if self.alarms() else "0") + "00000"
        if keyword == "HUMI?":
            return NA_NO_HUMIDITY
        return NA_CMD

    def _set_temp(self, rest: str) -> str | None:
        tokens = [t for t in re.split(r"[\s,]+", rest) if t]
        if not tokens:
            return NA_PARA
        values: dict[str, float] = {}
        for token in tokens:
            match = _TEMP_FIELD.match(token)
            if match is None:
                return NA_PARA
            key = match.group(1).upper()
            if key in values:
                return NA_PARA
            values[key] = float(match.group(2))
        if "C" in values and values["C"] != 1:  # only constant setting 1 on this chamber
            return NA_RANGE
        sp = values.get("S", self.thermal.setpoint_c)
        upper = values.get("H", self.upper_alarm_c)
        lower = values.get("L", self.lower_alarm_c)
        if "S" in values and not self.min_setpoint_c <= sp <= self.max_setpoint_c:
            return NA_RANGE
        lo, hi = self.alarm_range_c
        for key in ("H", "L"):
            if key in values and not lo <= values[key] <= hi:
                return NA_RANGE
        if lower >= upper:
            return NA_RANGE
        self.thermal.advance()
        self.thermal.setpoint_c = round(sp, 1)
        self.upper_alarm_c, self.lower_alarm_c = round(upper, 1), round(lower, 1)
        return None

    def _set_mode(self, rest: str) -> str | None:
        mode = rest.strip().upper()
        if mode not in MODES:
            return NA_PARA
        self.thermal.advance()
        self.mode = mode
        return None

    def _set_power(self, rest: str) -> str | None:
        state = rest.strip().upper()
        if state not in ("ON", "OFF"):
            return NA_PARA
        self.thermal.advance()
        if state == "OFF":
            self.mode = "OFF"
        elif self.mode == "OFF":
            self.mode = "STANDBY"
        return None
