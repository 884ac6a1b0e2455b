"""Keithley 2400 SourceMeter (SCPI), sourcing voltage and measuring current.

Protocol facts: the project's instrument reference (instruments.md) and the 2400 Series User's Manual
(chapter 18, SCPI command reference). Units: V, A, s; NPLC in power-line cycles
(1 PLC = 16.7 ms at 60 Hz, 20 ms at 50 Hz).

Bulk operations: a staircase or LIST sweep of up to 2500 points runs from one ``:READ?``
(``:TRIG:COUN n``), and the trace buffer stores up to 2500 readings, so a caller never
needs one query per point.

There is no true pulse mode on the 2400 (the 2430 has one). :meth:`Keithley2400.pulse`
approximates a pulse with source auto-clear (``:SOUR:CLE:AUTO ON``): the output switches on
at the pulse level, waits the source delay (``:SOUR:DEL``, the pulse width), takes one
reading and switches off again. The true width is the source delay plus the integration
time (NPLC / line frequency) plus a few hundred microseconds of firmware overhead; the
width is therefore only approximate and at least about 0.2 ms plus the integration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nvmlab.drivers.declarative import (
    ScpiInstrument,
    check_line_frequency,
    control,
    measurement,
    parse_bool,
    strict_discrete_set,
    strict_range,
)

__all__ = ["Keithley2400", "ELEMENTS", "OVERFLOW"]

#: Reading fields :FORM:ELEM can select, in the order the 2400 returns them.
ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT")
#: The value the 2400 returns for a field it did not measure.
OVERFLOW = 9.91e37
#: Largest sweep / list / buffer size (points).
MAX_POINTS = 2500
#: Values per :SOUR:LIST:VOLT command; longer lists continue with :SOUR:LIST:VOLT:APP.
LIST_CHUNK = 100


def _on_off(value: Any) -> str:
    return "ON" if value else "OFF"


class Keithley2400(ScpiInstrument):
    """A Keithley 2400 over any :class:`~nvmlab.drivers.transport.Transport` (no I/O here).

    ``line_frequency_hz`` (50 or 60 Hz) is used only to estimate how long a sweep takes,
    so the read timeout can be raised to cover it.
    """

    transport_defaults: dict[str, Any] = {
        "read_termination": "\n",
        "write_termination": "\n",
        "timeout_s": 10.0,
    }

    def __init__(self, transport: Any, *, line_frequency_hz: float = 60.0) -> None:
        super().__init__(transport)
        self.line_frequency_hz = check_line_frequency(line_frequency_hz)
        #: Fields returned per reading, as last set by :meth:`set_data_elements` / :meth:`reset`.
        self.elements: tuple[str, ...] = ELEMENTS
        #: Last NPLC and source delay (s) this driver set; used to size sweep timeouts.
        self._nplc_hint = 1.0
        self._delay_hint_s = 0.0

    # -- identity and housekeeping --------------------------------------------------------
    identity = measurement(
        "*IDN?", "Identification: ``KEITHLEY INSTRUMENTS INC.,MODEL 2400,<serial>,<fw>``.", cast=str
    )

    def reset(self) -> None:
        """``*RST``: defaults (compliance 105 uA, output off, all five reading fields)."""
        super().reset()
        self.elements = ELEMENTS
        self._nplc_hint = 1.0
        self._delay_hint_s = 0.0

    # -- source ---------------------------------------------------------------------------
    source_function = control(
        ":SOUR:FUNC?",
        ":SOUR:FUNC {}",
        "Source function: ``'voltage'`` or ``'current'``.",
        values={"voltage": "VOLT", "current": "CURR"},
    )
    source_mode = control(
        ":SOUR:VOLT:MODE?",
        ":SOUR:VOLT:MODE {}",
        "Voltage source mode: ``'fixed'``, ``'sweep'`` or ``'list'``.",
        values={"fixed": "FIX", "sweep": "SWE", "list": "LIST"},
    )
    source_voltage = control(
        ":SOUR:VOLT?",
        ":SOUR:VOLT {:g}",
        "Immediate source level (V), -210..210 V.",
        validator=strict_range(-210.0, 210.0),
        cast=float,
    )
    source_voltage_range = control(
        ":SOUR:VOLT:RANG?",
        ":SOUR:VOLT:RANG {:g}",
        "Source voltage range (V), 0..210 V; the 2400 picks 0.2, 2, 20 or 200 V.",
        validator=strict_range(0.0, 210.0),
        cast=float,
    )
    source_delay = control(
        ":SOUR:DEL?",
        ":SOUR:DEL {:g}",
        "Source delay before each measurement (s), 0..9999.999 s.",
        validator=strict_range(0.0, 9999.999),
        cast=float,
    )
    source_auto_clear = control(
        ":SOUR:CLE:AUTO?",
        ":SOUR:CLE:AUTO {}",
        "Output switches off after each reading (used to approximate pulses).",
        validator=strict_discrete_set((True, False)),
        set_format=_on_off,
        cast=parse_bool,
    )
    output_enabled = control(
        ":OUTP?",
        ":OUTP {}",
        "Output relay on (``True``) or off (``False``).",
        validator=strict_discrete_set((True, False)),
        set_format=_on_off,
        cast=parse_bool,
    )

    # -- sense ----------------------------------------------------------------------------
    sense_function = control(
        None,
        ":SENS:FUNC '{}'",
        "Measured function: ``'current'``, ``'voltage'`` or ``'resistance'``.",
        values={"current": "CURR", "voltage": "VOLT", "resistance": "RES"},
    )
    compliance_current = control(
        ":SENS:CURR:PROT?",
        ":SENS:CURR:PROT {:g}",
        "Compliance current (A), 1e-9..1.05 A (105 uA after ``*RST``).",
        validator=strict_range(1e-9, 1.05),
        cast=float,
    )
    current_range = control(
        ":SENS:CURR:RANG?",
        ":SENS:CURR:RANG {:g}",
        "Current measurement range (A), 1e-6..1.05 A (disables auto range).",
        validator=strict_range(1e-6, 1.05),
        cast=float,
    )
    nplc = control(
        ":SENS:CURR:NPLC?",
        ":SENS:CURR:NPLC {:g}",
        "Current integration time in power-line cycles, 0.01..10 PLC.",
        validator=strict_range(0.01, 10.0),
        cast=float,
    )
    trigger_count = control(
        ":TRIG:COUN?",
        ":TRIG:COUN {:d}",
        "Readings per ``:READ?``, 1..2500.",
        validator=lambda v, what: int(strict_range(1, MAX_POINTS)(v, what)),
        cast=lambda s: int(float(s)),
    )

    def set_data_elements(self, *fields: str) -> None:
        """``:FORM:ELEM``: fields returned per reading, any of VOLT, CURR, RES, TIME, STAT."""
        chosen = tuple(f.upper() for f in fields)
        bad = [f for f in chosen if f not in ELEMENTS]
        if not chosen or bad:
            raise ValueError(f"data elements {fields!r}: allowed {list(ELEMENTS)!r}")
        ordered = tuple(f for f in ELEMENTS if f in chosen)
        self.write(":FORM:ELEM " + ",".join(ordered))
        self.elements = ordered

    # -- configuration in one call --------------------------------------------------------
    def configure_voltage_source(
        self,
        *,
        compliance_a: float,
        nplc: float = 1.0,
        voltage_range_v: float | None = None,
    ) -> None:
        """Fixed voltage source measuring current: compliance (A), NPLC, optional range (V).

        Sends ``:SOUR:FUNC VOLT``, ``:SOUR:VOLT:MODE FIX``, (``:SOUR:VOLT:RANG``),
        ``:SENS:FUNC 'CURR'``, ``:SENS:CURR:PROT``, ``:SENS:CURR:NPLC``, ``:FORM:ELEM VOLT,CURR``.
        Every value is validated before anything is sent.
        """
        commands = [
            type(self).source_function.format_command(self, "voltage"),
            type(self).source_mode.format_command(self, "fixed"),
        ]
        if voltage_range_v is not None:
            commands.append(type(self).source_voltage_range.format_command(self, voltage_range_v))
        commands += [
            type(self).sense_function.format_command(self, "current"),
            type(self).compliance_current.format_command(self, compliance_a),
            type(self).nplc.format_command(self, nplc),
        ]
        for command in commands:
            self.write(command)
        self.set_data_elements("VOLT", "CURR")
        self._nplc_hint = float(nplc)

    # -- readings -------------------------------------------------------------------------
    def _parse_readings(self, reply: str, points: int | None = None) -> np.ndarray:
        values = self.parse_numbers(reply)
        width = len(self.elements)
        if values.size % width or (points is not None and values.size != points * width):
            expected = f"{points} x {width}" if points is not None else f"a multiple of {width}"
            raise self.protocol_error(
                f"got {values.size} values for fields {self.elements}, expected {expected}"
            )
        return values.reshape(-1, width)

    def _field(self, table: np.ndarray, name: str) -> np.ndarray:
        if name not in self.elements:
            raise ValueError(f"{name} is not among the reading fields {self.elements}")
        return np.asarray(table[:, self.elements.index(name)], dtype=float)

    def _sweep_time_s(self, points: int) -> float:
        per_point = self._nplc_hint / self.line_frequency_hz + self._delay_hint_s + 2e-3
        return self.transport.timeout_s + points * per_point * 1.5

    def read_readings(self, points: int = 1) -> np.ndarray:
        """``:READ?``: trigger and return a (points, fields) array of the reading fields."""
        with self.transport.timeout_at_least(self._sweep_time_s(points)):
            reply = self.ask_once(":READ?")
        return self._parse_readings(reply, points)

    def measure_current(self) -> float:
        """One reading at the present source level: the current (A)."""
        return float(self._field(self.read_readings(1), "CURR")[0])

    # -- sweeps ---------------------------------------------------------------------------
    def list_sweep(
        self, volts: Sequence[float] | np.ndarray, *, source_delay_s: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Source each voltage (V) in turn from one ``:READ?``: returns (volts, amps) arrays.

        Sends ``:SOUR:FUNC VOLT``, ``:SOUR:VOLT:MODE LIST``, ``:SOUR:LIST:VOLT v1,...``
        (continued with ``:SOUR:LIST:VOLT:APP`` past 100 values), ``:SOUR:DEL``,
        ``:TRIG:COUN n``, ``:READ?``, then ``:SOUR:VOLT:MODE FIX`` and ``:TRIG:COUN 1``.
        1..2500 points, each within -210..210 V; the output must be on.
        """
        levels = np.asarray(volts, dtype=float).ravel()
        if not 1 <= levels.size <= MAX_POINTS:
            raise ValueError(f"list sweep of {levels.size} points: allowed 1..{MAX_POINTS}")
        check = strict_range(-210.0, 210.0)
        for level in levels:
            check(level, "Keithley2400.list_sweep voltage")
        delay_cmd = type(self).source_delay.format_command(self, source_delay_s)
        self.write(":SOUR:FUNC VOLT")
        self.write(":SOUR:VOLT:MODE LIST")
        for start in range(0, levels.size, LIST_CHUNK):
            chunk = ",".join(f"{v:g}" for v in levels[start : start + LIST_CHUNK])
            self.write((":SOUR:LIST:VOLT " if start == 0 else ":SOUR:LIST:VOLT:APP ") + chunk)
        self.write(delay_cmd)
        self._delay_hint_s = float(source_delay_s)
        self.write(f":TRIG:COUN {levels.size:d}")
        try:
            table = self.read_readings(levels.size)
        finally:
            self.write(":SOUR:VOLT:MODE FIX")
            self.write(":TRIG:COUN 1")
        return self._sweep_result(table, levels)

    def staircase_sweep(
        self,
        start_v: float,
        stop_v: float,
        points: int,
        *,
        spacing: str = "LIN",
        source_delay_s: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Staircase sweep ``start_v``..``stop_v`` (V) in ``points`` steps: (volts, amps).

        Sends ``:SOUR:FUNC VOLT``, ``:SOUR:VOLT:STAR``, ``:SOUR:VOLT:STOP``,
        ``:SOUR:SWE:SPAC LIN|LOG``, ``:SOUR:SWE:POIN n``, ``:SOUR:VOLT:MODE SWE``,
        ``:SOUR:DEL``, ``:TRIG:COUN n``, ``:READ?``, then back to ``FIX`` and one trigger.
        """
        check = strict_range(-210.0, 210.0)
        start = check(start_v, "Keithley2400.staircase_sweep start_v")
        stop = check(stop_v, "Keithley2400.staircase_sweep stop_v")
        n = int(strict_range(2, MAX_POINTS)(points, "Keithley2400.staircase_sweep points"))
        space = strict_discrete_set(("LIN", "LOG"))(spacing.upper(), "spacing")
        if space == "LOG" and (start <= 0 or stop <= 0):
            raise ValueError("a LOG staircase needs start_v and stop_v > 0 V")
        delay_cmd = type(self).source_delay.format_command(self, source_delay_s)
        self.write(":SOUR:FUNC VOLT")
        self.write(f":SOUR:VOLT:STAR {start:g}")
        self.write(f":SOUR:VOLT:STOP {stop:g}")
        self.write(f":SOUR:SWE:SPAC {space}")
        self.write(f":SOUR:SWE:POIN {n:d}")
        self.write(":SOUR:VOLT:MODE SWE")
        self.write(delay_cmd)
        self._delay_hint_s = float(source_delay_s)
        self.write(f":TRIG:COUN {n:d}")
        try:
            table = self.read_readings(n)
        finally:
            self.write(":SOUR:VOLT:MODE FIX")
            self.write(":TRIG:COUN 1")
        levels = np.linspace(start, stop, n) if space == "LIN" else np.geomspace(start, stop, n)
        return self._sweep_result(table, levels)

    def _sweep_result(self, table: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        volts = self._field(table, "VOLT") if "VOLT" in self.elements else levels.copy()
        return volts, self._field(table, "CURR")

    # -- trace buffer ---------------------------------------------------------------------
    def buffer_setup(self, points: int) -> None:
        """Store the next ``points`` readings (1..2500) in the trace buffer.

        Sends ``:TRAC:CLE``, ``:TRAC:POIN n``, ``:TRAC:FEED SENS``, ``:TRAC:FEED:CONT NEXT``.
        """
        n = int(strict_range(1, MAX_POINTS)(points, "Keithley2400.buffer_setup points"))
        self.write(":TRAC:CLE")
        self.write(f":TRAC:POIN {n:d}")
        self.write(":TRAC:FEED SENS")
        self.write(":TRAC:FEED:CONT NEXT")

    def buffer_data(self) -> np.ndarray:
        """``:TRAC:DATA?``: the stored readings as a (points, fields) array."""
        return self._parse_readings(self.ask(":TRAC:DATA?"))

    def buffer_clear(self) -> None:
        """``:TRAC:CLE``: empty the trace buffer."""
        self.write(":TRAC:CLE")

    def list_sweep_trace(
        self, volts: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A list sweep stored in the trace buffer, read back from it: (volts V, amps A,
        time s of each reading from the first).

        Sends ``:FORM:ELEM VOLT,CURR,TIME``, the trace setup of :meth:`buffer_setup`, the
        list sweep of :meth:`list_sweep`, ``:TRAC:DATA?``, then ``:TRAC:FEED:CONT NEV``
        and the previous ``:FORM:ELEM``. The volts are the measured source voltages.
        """
        levels = np.asarray(volts, dtype=float).ravel()
        if not 1 <= levels.size <= MAX_POINTS:
            raise ValueError(f"list sweep of {levels.size} points: allowed 1..{MAX_POINTS}")
        previous = self.elements
        self.set_data_elements("VOLT", "CURR", "TIME")
        try:
            self.buffer_setup(levels.size)
            self.list_sweep(levels)
            table = self.buffer_data()
            if table.shape[0] != levels.size:
                raise self.protocol_error(
                    f"trace buffer holds {table.shape[0]} readings, expected {levels.size}"
                )
            self.write(":TRAC:FEED:CONT NEV")
            times = self._field(table, "TIME")
            return self._field(table, "VOLT"), self._field(table, "CURR"), times - times[0]
        finally:
            self.set_data_elements(*previous)

    # -- pulse approximation --------------------------------------------------------------
    def pulse(self, volts: float, width_s: float) -> float:
        """Approximate one pulse at ``volts`` (V) lasting about ``width_s`` (s); returns A.

        Uses source auto-clear (see the module docstring): sends ``:SOUR:VOLT:MODE FIX``,
        ``:SOUR:CLE:AUTO ON``, ``:SOUR:DEL width``, ``:SOUR:VOLT v``, ``:READ?`` (output on,
        wait, one reading, output off), then ``:SOUR:CLE:AUTO OFF``, ``:SOUR:DEL 0``,
        ``:SOUR:VOLT 0``. Returns the current read at the end of the pulse (A).
        """
        level_cmd = type(self).source_voltage.format_command(self, volts)
        delay_cmd = type(self).source_delay.format_command(self, width_s)
        self.write(":SOUR:VOLT:MODE FIX")
        self.write(":SOUR:CLE:AUTO ON")
        self.write(delay_cmd)
        self.write(level_cmd)
        self._delay_hint_s = float(width_s)
        try:
            table = self.read_readings(1)
        finally:
            self.write(":SOUR:CLE:AUTO OFF")
            self.write(":SOUR:DEL 0")
            self.write(":SOUR:VOLT 0")
            self._delay_hint_s = 0.0
        return float(self._field(table, "CURR")[0])
