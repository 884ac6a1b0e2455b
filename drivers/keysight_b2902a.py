"""Keysight B2902A two-channel Precision Source/Measure Unit (SCPI), voltage source.

Channel-specific commands carry the channel number as a suffix (``:SOUR2:VOLT``,
``:SENS1:CURR:PROT``, ``:OUTP2``); measurement and trigger commands take a channel list
(``(@1)``, ``(@2)``, ``(@1,2)``). Units: V, A, s; NPLC 4e-4..100 PLC.

Bulk operations: a list sweep (``:SOUR:VOLT:MODE LIST``, up to 2500 levels, trace buffer
100,000 points per channel) runs from one ``:INIT`` and comes back from one
``:FETC:ARR:CURR?``; :meth:`KeysightB2902A.measure_currents` reads both channels at once.

Pulse mode (``:SOUR:FUNC:SHAP PULS``): the base level is the immediate level
(``:SOUR:VOLT``), the peak is the triggered level (``:SOUR:VOLT:TRIG``); width
(``:SOUR:PULS:WIDT``) 50 us..2 s in 1 us steps, delay (``:SOUR:PULS:DEL``) 0..99999.9 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nvmlab.drivers.declarative import (
    Channel,
    ScpiInstrument,
    check_line_frequency,
    control,
    measurement,
    parse_bool,
    parse_float,
    strict_discrete_set,
    strict_range,
)

__all__ = ["KeysightB2902A", "KeysightB2902AChannel", "MIN_PULSE_WIDTH_S", "MAX_LIST_POINTS"]

#: Shortest pulse the B2902A sources (s), and its width resolution (s).
MIN_PULSE_WIDTH_S = 50e-6
PULSE_WIDTH_STEP_S = 1e-6
MAX_PULSE_WIDTH_S = 2.0
#: Longest list sweep (points).
MAX_LIST_POINTS = 2500


def _on_off(value: Any) -> str:
    return "ON" if value else "OFF"


def _pulse_width(value: Any, what: str) -> float:
    width = strict_range(MIN_PULSE_WIDTH_S, MAX_PULSE_WIDTH_S)(value, what)
    return round(width / PULSE_WIDTH_STEP_S) * PULSE_WIDTH_STEP_S


class KeysightB2902AChannel(Channel):
    """One SMU channel (``"1"`` or ``"2"``)."""

    parent: KeysightB2902A

    def __init__(self, parent: KeysightB2902A, ch: str) -> None:
        super().__init__(parent, ch)
        self._nplc_hint = 1.0

    source_mode = control(
        ":SOUR{ch}:FUNC:MODE?",
        ":SOUR{ch}:FUNC:MODE {}",
        "Source function: ``'voltage'`` or ``'current'``.",
        values={"voltage": "VOLT", "current": "CURR"},
    )
    source_shape = control(
        ":SOUR{ch}:FUNC:SHAP?",
        ":SOUR{ch}:FUNC:SHAP {}",
        "Source shape: ``'dc'`` or ``'pulse'``.",
        values={"dc": "DC", "pulse": "PULS"},
    )
    voltage_mode = control(
        ":SOUR{ch}:VOLT:MODE?",
        ":SOUR{ch}:VOLT:MODE {}",
        "Voltage output mode: ``'fixed'``, ``'sweep'`` or ``'list'``.",
        values={"fixed": "FIX", "sweep": "SWE", "list": "LIST"},
    )
    source_voltage = control(
        ":SOUR{ch}:VOLT?",
        ":SOUR{ch}:VOLT {:.10g}",
        "Immediate source level (V), -210..210 V (the pulse base level in pulse mode).",
        validator=strict_range(-210.0, 210.0),
        cast=parse_float,
    )
    triggered_voltage = control(
        ":SOUR{ch}:VOLT:TRIG?",
        ":SOUR{ch}:VOLT:TRIG {:.10g}",
        "Triggered source level (V), -210..210 V (the pulse peak in pulse mode).",
        validator=strict_range(-210.0, 210.0),
        cast=parse_float,
    )
    source_voltage_range = control(
        ":SOUR{ch}:VOLT:RANG?",
        ":SOUR{ch}:VOLT:RANG {:.10g}",
        "Source voltage range (V), 0..210 V (0.2, 2, 20, 200 V chosen).",
        validator=strict_range(0.0, 210.0),
        cast=parse_float,
    )
    pulse_width = control(
        ":SOUR{ch}:PULS:WIDT?",
        ":SOUR{ch}:PULS:WIDT {:.10g}",
        "Pulse width (s), 5e-5..2 s, rounded to 1 us.",
        validator=_pulse_width,
        cast=parse_float,
    )
    pulse_delay = control(
        ":SOUR{ch}:PULS:DEL?",
        ":SOUR{ch}:PULS:DEL {:.10g}",
        "Delay from the trigger to the pulse (s), 0..99999.9 s.",
        validator=strict_range(0.0, 99999.9),
        cast=parse_float,
    )
    compliance_current = control(
        ":SENS{ch}:CURR:PROT?",
        ":SENS{ch}:CURR:PROT {:.10g}",
        "Compliance current (A), 1e-12..3.03 A.",
        validator=strict_range(1e-12, 3.03),
        cast=parse_float,
    )
    current_range = control(
        ":SENS{ch}:CURR:RANG?",
        ":SENS{ch}:CURR:RANG {:.10g}",
        "Current measurement range (A), 1e-8..3.03 A (disables auto range).",
        validator=strict_range(1e-8, 3.03),
        cast=parse_float,
    )
    nplc = control(
        ":SENS{ch}:CURR:NPLC?",
        ":SENS{ch}:CURR:NPLC {:.10g}",
        "Current integration time in power-line cycles, 4e-4..100 PLC.",
        validator=strict_range(4e-4, 100.0),
        cast=parse_float,
    )
    trigger_count = control(
        ":TRIG{ch}:COUN?",
        ":TRIG{ch}:COUN {:d}",
        "Trigger count (points per :INIT), 1..100000.",
        validator=lambda v, what: int(strict_range(1, 100000)(v, what)),
        cast=lambda s: int(float(s)),
    )
    output_enabled = control(
        ":OUTP{ch}?",
        ":OUTP{ch} {}",
        "Output on (``True``) or off (``False``).",
        validator=strict_discrete_set((True, False)),
        set_format=_on_off,
        cast=parse_bool,
    )

    @property
    def channel_list(self) -> str:
        """This channel as a channel list, ``(@1)`` or ``(@2)``."""
        return f"(@{self.ch})"

    def configure_voltage_source(
        self, *, compliance_a: float, nplc: float = 1.0, voltage_range_v: float | None = None
    ) -> None:
        """DC voltage source measuring current: compliance (A), NPLC, optional range (V).

        Sends ``:SOURn:FUNC:MODE VOLT``, ``:SOURn:FUNC:SHAP DC``, ``:SOURn:VOLT:MODE FIX``,
        (``:SOURn:VOLT:RANG``), ``:SENSn:FUNC "CURR"``, ``:SENSn:CURR:PROT``,
        ``:SENSn:CURR:NPLC``. Every value is validated before anything is sent.
        """
        cls = type(self)
        commands = [
            cls.source_mode.format_command(self, "voltage"),
            cls.source_shape.format_command(self, "dc"),
            cls.voltage_mode.format_command(self, "fixed"),
        ]
        if voltage_range_v is not None:
            commands.append(cls.source_voltage_range.format_command(self, voltage_range_v))
        commands += [
            f':SENS{self.ch}:FUNC "CURR"',
            cls.compliance_current.format_command(self, compliance_a),
            cls.nplc.format_command(self, nplc),
        ]
        for command in commands:
            self.write(command)
        self._nplc_hint = float(nplc)

    def measure_current(self) -> float:
        """``:MEAS:CURR? (@n)``: one spot current reading (A)."""
        reply = self.ask_once(f":MEAS:CURR? {self.channel_list}")
        return float(self.parent.parse_numbers(reply, 1)[0])

    def _timeout_for(self, points: int, extra_s: float = 0.0) -> float:
        per_point = self._nplc_hint / self.parent.line_frequency_hz + 1e-3
        return self.parent.transport.timeout_s + 1.5 * (points * per_point + extra_s)

    def list_sweep(self, volts: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source each level (V) in turn, one reading per level: returns (volts, amps).

        Sends ``:SOURn:FUNC:MODE VOLT``, ``:SOURn:VOLT:MODE LIST``, ``:SOURn:LIST:VOLT
        v1,...``, ``:TRIGn:COUN n``, ``:INIT (@n)``, ``:FETC:ARR:CURR? (@n)``, then
        ``:SOURn:VOLT:MODE FIX`` and ``:TRIGn:COUN 1``. 1..2500 levels within
        -210..210 V; the output must be on. The volts returned are the programmed levels.
        """
        levels = np.asarray(volts, dtype=float).ravel()
        if not 1 <= levels.size <= MAX_LIST_POINTS:
            raise ValueError(f"list sweep of {levels.size} points: allowed 1..{MAX_LIST_POINTS}")
        check = strict_range(-210.0, 210.0)
        for level in levels:
            check(level, "KeysightB2902A.list_sweep voltage")
        n = levels.size
        ch = self.ch
        self.write(f":SOUR{ch}:FUNC:MODE VOLT")
        self.write(f":SOUR{ch}:VOLT:MODE LIST")
        self.write(f":SOUR{ch}:LIST:VOLT " + ",".join(f"{v:.10g}" for v in levels))
        self.write(f":TRIG{ch}:COUN {n:d}")
        self.write(f":INIT {self.channel_list}")
        try:
            with self.parent.transport.timeout_at_least(self._timeout_for(n)):
                reply = self.ask_once(f":FETC:ARR:CURR? {self.channel_list}")
        finally:
            self.write(f":SOUR{ch}:VOLT:MODE FIX")
            self.write(f":TRIG{ch}:COUN 1")
        return levels.copy(), self.parent.parse_numbers(reply, n)

    def list_sweep_trace(
        self, volts: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`list_sweep`, then the readings' times from the acquisition buffer: (volts
        V, amps A, time s of each reading from the first). Adds ``:FETC:ARR:TIME? (@n)``."""
        levels, amps = self.list_sweep(volts)
        times = self.parent.parse_numbers(
            self.ask_once(f":FETC:ARR:TIME? {self.channel_list}"), levels.size
        )
        return levels, amps, times - times[0]

    def pulse(self, volts: float, width_s: float, *, base_v: float = 0.0) -> None:
        """One pulse from ``base_v`` to ``volts`` (V) lasting ``width_s`` (s, >= 50 us).

        Sends ``:SOURn:FUNC:SHAP PULS``, ``:SOURn:VOLT base``, ``:SOURn:VOLT:TRIG peak``,
        ``:SOURn:PULS:DEL 0``, ``:SOURn:PULS:WIDT w``, ``:TRIGn:COUN 1``, ``:INIT (@n)``,
        ``*OPC?`` (waits for the pulse), then ``:SOURn:FUNC:SHAP DC``. The output must be
        on. Every value is validated before anything is sent.
        """
        cls = type(self)
        commands = [
            cls.source_shape.format_command(self, "pulse"),
            cls.source_voltage.format_command(self, base_v),
            cls.triggered_voltage.format_command(self, volts),
            cls.pulse_delay.format_command(self, 0.0),
            cls.pulse_width.format_command(self, width_s),
            f":TRIG{self.ch}:COUN 1",
            f":INIT {self.channel_list}",
        ]
        for command in commands:
            self.write(command)
        try:
            with self.parent.transport.timeout_at_least(self._timeout_for(1, float(width_s))):
                done = self.ask_once("*OPC?")
            if done.strip() not in ("1", "+1"):
                raise self.protocol_error(f"*OPC? after a pulse answered {done!r}, expected 1")
        finally:
            self.write(cls.source_shape.format_command(self, "dc"))


class KeysightB2902A(ScpiInstrument):
    """A Keysight B2902A over any :class:`~nvmlab.drivers.transport.Transport` (no I/O here)."""

    transport_defaults: dict[str, Any] = {
        "read_termination": "\n",
        "write_termination": "\n",
        "timeout_s": 10.0,
    }

    def __init__(self, transport: Any, *, line_frequency_hz: float = 60.0) -> None:
        super().__init__(transport)
        self.line_frequency_hz = check_line_frequency(line_frequency_hz)
        self.ch1 = KeysightB2902AChannel(self, "1")
        self.ch2 = KeysightB2902AChannel(self, "2")

    def channel(self, name: str | int) -> KeysightB2902AChannel:
        """``"a"``/``1`` or ``"b"``/``2``."""
        key = str(name).lower()
        if key in ("a", "1"):
            return self.ch1
        if key in ("b", "2"):
            return self.ch2
        raise ValueError(f"channel {name!r}: allowed 'a' (1) or 'b' (2)")

    identity = measurement(
        "*IDN?", "Identification: ``Keysight Technologies,B2902A,<serial>,<firmware>``.", cast=str
    )

    def measure_currents(self) -> tuple[float, float]:
        """``:MEAS:CURR? (@1,2)``: both channels' currents (A) from one query."""
        values = self.parse_numbers(self.ask_once(":MEAS:CURR? (@1,2)"), 2)
        return float(values[0]), float(values[1])
