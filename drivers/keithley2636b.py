"""Keithley 2636B dual-channel SourceMeter (TSP: Lua statements run on the instrument).

Every command is a Lua chunk; only ``print()`` produces a reply (one LF-terminated line).
Channels are ``smua`` and ``smub`` (:attr:`Keithley2636B.smua`, :attr:`Keithley2636B.smub`).
Units: V, A, s; NPLC in power-line cycles (0.001..25).

Bulk operations:

- :meth:`Keithley2636BChannel.list_sweep`: the trigger model sources a list
  (``trigger.source.listv``) and measures into ``nvbuffer1``; one ``printbuffer`` returns
  every reading, in ASCII or binary REAL32 / REAL64 (``format.data``).
- :meth:`Keithley2636B.load_script` / :meth:`Keithley2636B.run_script`: ``loadscript`` ...
  ``endscript`` then ``name()``; loops and branches run on the instrument.
- :meth:`Keithley2636B.pulse_train`: uploads (once) a pulse-train function and runs it: the
  pulse loop, with an optional read after every pulse, runs on the instrument with no bus
  round trip per pulse; the readings come back in one ``printbuffer``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nvmlab.drivers.declarative import (
    Channel,
    Instrument,
    check_line_frequency,
    control,
    measurement,
    parse_float,
    strict_discrete_set,
    strict_range,
)

__all__ = ["Keithley2636B", "Keithley2636BChannel", "PULSE_TRAIN_SCRIPT", "lua_literal"]

#: Largest list sweep this driver sends (points); nvbuffers hold far more.
MAX_POINTS = 5000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: The pulse-train script: defines ``nvmlab_pulse_train`` on the instrument. Its caps are
#: parameters (globals set by :meth:`Keithley2636B.run_script` just before it runs), copied
#: into locals when the function is defined, so later assignments to the globals change
#: nothing; a call beyond the caps raises a TSP error (errorqueue) and sources nothing.
PULSE_TRAIN_SCRIPT = """\
local v_max, v_read_max, width_max = nvmlab_v_max, nvmlab_v_read_max, nvmlab_width_max
function nvmlab_pulse_train(smu, v_pulse, width_s, gap_s, count, v_read, read)
  if math.abs(v_pulse) > v_max or math.abs(v_read) > v_read_max or width_s > width_max then
    error("nvmlab_pulse_train: beyond the caps it was uploaded with")
  end
  smu.nvbuffer2.clear()
  smu.nvbuffer2.appendmode = 1
  for k = 1, count do
    smu.source.levelv = v_pulse
    delay(width_s)
    smu.source.levelv = v_read
    if read then
      smu.measure.i(smu.nvbuffer2)
    end
    if gap_s > 0 then
      delay(gap_s)
    end
  end
  smu.source.levelv = 0
  if read then
    printbuffer(1, count, smu.nvbuffer2.readings)
  else
    print(count)
  end
end"""
PULSE_TRAIN_SCRIPT_NAME = "nvmlab_pulses"


def lua_literal(value: Any) -> str:
    """A Python value as a Lua literal: numbers, booleans, strings, nil, channels, lists."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Keithley2636BChannel):
        return value.ch
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if not np.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number and has no Lua literal")
        return f"{number:.10g}"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple, np.ndarray)):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__} {value!r}")


def _output(value: Any) -> str:
    return "OUTPUT_ON" if value else "OUTPUT_OFF"


class Keithley2636BChannel(Channel):
    """One SMU channel (``smua`` or ``smub``); every command names it."""

    parent: Keithley2636B

    def __init__(self, parent: Keithley2636B, ch: str) -> None:
        super().__init__(parent, ch)
        self._nplc_hint = 1.0

    source_function = control(
        "print({ch}.source.func)",
        "{ch}.source.func = {ch}.{}",
        "Source function: ``'voltage'`` (OUTPUT_DCVOLTS) or ``'current'`` (OUTPUT_DCAMPS).",
        values={"voltage": "OUTPUT_DCVOLTS", "current": "OUTPUT_DCAMPS"},
        reply_values={"voltage": "1", "current": "0"},
    )
    source_voltage = control(
        "print({ch}.source.levelv)",
        "{ch}.source.levelv = {:.10g}",
        "Source level (V), -202..202 V.",
        validator=strict_range(-202.0, 202.0),
        cast=parse_float,
    )
    source_voltage_range = control(
        "print({ch}.source.rangev)",
        "{ch}.source.rangev = {:.10g}",
        "Source voltage range (V), 0..202 V (0.2, 2, 20 or 200 V chosen).",
        validator=strict_range(0.0, 202.0),
        cast=parse_float,
    )
    current_limit = control(
        "print({ch}.source.limiti)",
        "{ch}.source.limiti = {:.10g}",
        "Compliance current (A), 1e-12..1.5 A.",
        validator=strict_range(1e-12, 1.5),
        cast=parse_float,
    )
    source_delay = control(
        "print({ch}.source.delay)",
        "{ch}.source.delay = {:.10g}",
        "Delay after the source changes, before measuring (s), 0..1e4 s.",
        validator=strict_range(0.0, 1e4),
        cast=parse_float,
    )
    current_range = control(
        "print({ch}.measure.rangei)",
        "{ch}.measure.rangei = {:.10g}",
        "Current measurement range (A), 1e-12..1.5 A (disables auto range).",
        validator=strict_range(1e-12, 1.5),
        cast=parse_float,
    )
    nplc = control(
        "print({ch}.measure.nplc)",
        "{ch}.measure.nplc = {:.10g}",
        "Integration time in power-line cycles, 0.001..25 PLC.",
        validator=strict_range(0.001, 25.0),
        cast=parse_float,
    )
    output_enabled = control(
        "print({ch}.source.output)",
        "{ch}.source.output = {ch}.{}",
        "Output on (``True``) or off (``False``).",
        validator=strict_discrete_set((True, False)),
        set_format=_output,
        reply_values={True: "1", False: "0"},
    )

    def reset(self) -> None:
        """``smuX.reset()``: this channel's defaults (output off)."""
        self.write(f"{self.ch}.reset()")

    def configure_voltage_source(
        self, *, current_limit_a: float, nplc: float = 1.0, voltage_range_v: float | None = None
    ) -> None:
        """DC voltage source with compliance (A), integration (PLC) and optional range (V).

        Every value is validated before anything is sent.
        """
        cls = type(self)
        commands = [cls.source_function.format_command(self, "voltage")]
        if voltage_range_v is not None:
            commands.append(cls.source_voltage_range.format_command(self, voltage_range_v))
        commands.append(cls.current_limit.format_command(self, current_limit_a))
        commands.append(cls.nplc.format_command(self, nplc))
        for command in commands:
            self.write(command)
        self._nplc_hint = float(nplc)

    def _sweep_timeout_s(self, points: int, extra_s: float = 0.0) -> float:
        per_point = self._nplc_hint / self.parent.line_frequency_hz + 1e-3
        return self.parent.transport.timeout_s + 1.5 * (points * per_point + extra_s)

    def measure_current(self) -> float:
        """``print(smuX.measure.i())``: one current reading (A)."""
        reply = self.ask_once(f"print({self.ch}.measure.i())")
        return self.parent.parse_number(reply, "measure.i")

    def measure_iv(self) -> tuple[float, float]:
        """``print(smuX.measure.iv())``: (current A, voltage V) of one reading."""
        reply = self.ask_once(f"print({self.ch}.measure.iv())")
        parts = [p for p in re.split(r"[\s,]+", reply.strip()) if p]
        if len(parts) != 2:
            raise self.protocol_error(f"measure.iv: expected 2 values, got {reply!r}")
        return (
            self.parent.parse_number(parts[0], "measure.iv"),
            self.parent.parse_number(parts[1], "measure.iv"),
        )

    def list_sweep(
        self, volts: Sequence[float] | np.ndarray, *, source_delay_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Source each voltage (V) through the trigger model; returns (volts, amps) arrays.

        Sends::

            smuX.nvbuffer1.clear()
            smuX.trigger.source.listv({v1, v2, ...})
            smuX.trigger.source.action = smuX.ENABLE
            smuX.trigger.measure.action = smuX.ENABLE
            smuX.trigger.measure.i(smuX.nvbuffer1)
            smuX.trigger.endsweep.action = smuX.SOURCE_IDLE
            smuX.trigger.count = n
            smuX.trigger.arm.count = 1
            smuX.trigger.initiate()
            waitcomplete()
            printbuffer(1, n, smuX.nvbuffer1.readings)

        1..5000 points within -202..202 V; the output must be on. The volts returned are
        the programmed levels. ``source_delay_s`` (s) is set first when given.
        """
        levels = np.asarray(volts, dtype=float).ravel()
        if not 1 <= levels.size <= MAX_POINTS:
            raise ValueError(f"list sweep of {levels.size} points: allowed 1..{MAX_POINTS}")
        check = strict_range(-202.0, 202.0)
        for level in levels:
            check(level, "Keithley2636B.list_sweep voltage")
        ch = self.ch
        n = levels.size
        commands = []
        if source_delay_s is not None:
            commands.append(type(self).source_delay.format_command(self, source_delay_s))
        commands += [
            f"{ch}.nvbuffer1.clear()",
            f"{ch}.trigger.source.listv({lua_literal(levels)})",
            f"{ch}.trigger.source.action = {ch}.ENABLE",
            f"{ch}.trigger.measure.action = {ch}.ENABLE",
            f"{ch}.trigger.measure.i({ch}.nvbuffer1)",
            f"{ch}.trigger.endsweep.action = {ch}.SOURCE_IDLE",
            f"{ch}.trigger.count = {n:d}",
            f"{ch}.trigger.arm.count = 1",
            f"{ch}.trigger.initiate()",
            "waitcomplete()",
        ]
        for command in commands:
            self.write(command)
        delay = source_delay_s or 0.0
        with self.parent.transport.timeout_at_least(self._sweep_timeout_s(n, n * delay)):
            amps = self.parent.print_buffer(f"{ch}.nvbuffer1.readings", n)
        return levels.copy(), amps

    def list_sweep_trace(
        self, volts: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`list_sweep` with the reading buffer's timestamps: (volts V, amps A, time s
        of each reading from the first).

        Sends ``smuX.nvbuffer1.collecttimestamps = 1`` first and, after the sweep's
        readings, ``printbuffer(1, n, smuX.nvbuffer1.timestamps)``.
        """
        levels = np.asarray(volts, dtype=float).ravel()
        if not 1 <= levels.size <= MAX_POINTS:
            raise ValueError(f"list sweep of {levels.size} points: allowed 1..{MAX_POINTS}")
        self.write(f"{self.ch}.nvbuffer1.collecttimestamps = 1")
        levels, amps = self.list_sweep(levels)
        times = self.parent.print_buffer(f"{self.ch}.nvbuffer1.timestamps", levels.size)
        return levels, amps, times - times[0]

    def pulse(self, volts: float, width_s: float) -> None:
        """One pulse from 0 V to ``volts`` (V) for ``width_s`` (s), timed on the instrument.

        Sends one Lua chunk ``smuX.source.levelv = v delay(w) smuX.source.levelv = 0``; the
        output must already be on. ``width_s`` 1e-5..10 s.
        """
        level = strict_range(-202.0, 202.0)(volts, "Keithley2636B.pulse volts")
        width = strict_range(1e-5, 10.0)(width_s, "Keithley2636B.pulse width_s")
        ch = self.ch
        with self.parent.transport.timeout_at_least(self.parent.transport.timeout_s + width):
            self.write(
                f"{ch}.source.levelv = {level:.10g} delay({width:.10g}) {ch}.source.levelv = 0"
            )


class Keithley2636B(Instrument):
    """A Keithley 2636B over any :class:`~nvmlab.drivers.transport.Transport` (no I/O here)."""

    transport_defaults: dict[str, Any] = {
        "read_termination": "\n",
        "write_termination": "\n",
        "timeout_s": 10.0,
    }

    def __init__(self, transport: Any, *, line_frequency_hz: float = 60.0) -> None:
        super().__init__(transport)
        self.line_frequency_hz = check_line_frequency(line_frequency_hz)
        self.smua = Keithley2636BChannel(self, "smua")
        self.smub = Keithley2636BChannel(self, "smub")
        #: ``format.data`` as last set by this driver: "ascii", "real32" or "real64".
        self.data_format = "ascii"
        self._loaded_scripts: set[str] = set()
        self._pulse_train_caps: tuple[float, float, float] | None = None

    def channel(self, name: str) -> Keithley2636BChannel:
        """``"a"``/``"smua"`` or ``"b"``/``"smub"``."""
        key = name.lower()
        if key in ("a", "smua"):
            return self.smua
        if key in ("b", "smub"):
            return self.smub
        raise ValueError(f"channel {name!r}: allowed 'a' (smua) or 'b' (smub)")

    identity = measurement(
        "*IDN?", "Identification: ``Keithley Instruments Inc., Model 2636B, <sn>, <fw>``.", cast=str
    )

    def parse_number(self, reply: str, what: str) -> float:
        try:
            return float(reply.strip())
        except ValueError:
            raise self.protocol_error(f"{what}: expected a number, got {reply!r}") from None

    # -- housekeeping ---------------------------------------------------------------------
    def reset(self) -> None:
        """``reset()``: both channels to defaults, outputs off, scripts kept."""
        self.write("reset()")
        self.data_format = "ascii"
        self._pulse_train_caps = None

    def clear(self) -> None:
        """``errorqueue.clear()``."""
        self.write("errorqueue.clear()")

    def errors(self, max_errors: int = 50) -> list[tuple[int, str]]:
        """Read the error queue: ``print(errorqueue.count)`` then ``errorqueue.next()`` each."""
        count = int(self.parse_number(self.ask("print(errorqueue.count)"), "errorqueue.count"))
        found: list[tuple[int, str]] = []
        for _ in range(min(count, max_errors)):
            reply = self.ask_once("print(errorqueue.next())")
            parts = reply.split("\t")
            code = int(self.parse_number(parts[0], "errorqueue.next"))
            message = parts[1].strip() if len(parts) > 1 else ""
            found.append((code, message))
        return found

    # -- buffers --------------------------------------------------------------------------
    def set_data_format(self, data_format: str) -> None:
        """``format.data``: ``"ascii"``, ``"real32"`` or ``"real64"`` (little-endian)."""
        fmt = strict_discrete_set(("ascii", "real32", "real64"))(
            data_format.lower(), "Keithley2636B.data_format"
        )
        self.write(f"format.data = format.{fmt.upper()}")
        if fmt != "ascii":
            self.write("format.byteorder = format.LITTLEENDIAN")
        self.data_format = fmt

    def print_buffer(self, readings: str, points: int) -> np.ndarray:
        """``printbuffer(1, n, <readings>)`` decoded per :attr:`data_format` (float array).

        ASCII replies are comma-separated numbers; binary replies are ``#0`` followed by
        ``n`` little-endian REAL32 / REAL64 values and the LF termination.
        """
        self.write(f"printbuffer(1, {points:d}, {readings})")
        return self._read_buffer_reply(points, "printbuffer")

    def _read_buffer_reply(self, points: int, what: str) -> np.ndarray:
        """Read one ``printbuffer`` reply of ``points`` values in :attr:`data_format`."""
        if self.data_format == "ascii":
            values = self.parse_numbers(self.read())
        else:
            size = 4 if self.data_format == "real32" else 8
            header = self.transport.read_raw(2)
            if header != b"#0":
                raise self.protocol_error(f"{what}: expected binary header b'#0', got {header!r}")
            body = self.transport.read_raw(points * size)
            tail = self.transport.read_raw(len(self.transport.read_termination))
            if tail != self.transport.read_termination.encode():
                raise self.protocol_error(f"{what}: expected the termination, got {tail!r}")
            values = np.frombuffer(body, dtype="<f4" if size == 4 else "<f8").astype(float)
        if values.size != points:
            raise self.protocol_error(f"{what}: expected {points} values, got {values.size}")
        return values

    # -- scripts --------------------------------------------------------------------------
    def load_script(self, name: str, source: str) -> None:
        """Upload ``source`` as script ``name``: ``loadscript name`` / lines / ``endscript``.

        Loading a script replaces one of the same name; nothing runs until
        :meth:`run_script`.
        """
        if not _IDENTIFIER.match(name):
            raise ValueError(
                f"script name {name!r}: allowed a Lua identifier [A-Za-z_][A-Za-z0-9_]*"
            )
        lines = source.splitlines()
        if any(line.strip() in ("endscript", "loadscript") for line in lines):
            raise ValueError("script source may not contain a bare 'endscript'/'loadscript' line")
        self.write(f"loadscript {name}")
        for line in lines:
            self.write(line)
        self.write("endscript")
        self._loaded_scripts.add(name)

    def run_script(
        self,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        reply_lines: int = 0,
    ) -> list[str]:
        """Run script ``name``: set each parameter as a global, call ``name()``, read replies.

        Returns the ``reply_lines`` lines the script prints.
        """
        if not _IDENTIFIER.match(name):
            raise ValueError(f"script name {name!r}: allowed a Lua identifier")
        assignments = []
        for key, value in (parameters or {}).items():
            if not _IDENTIFIER.match(key):
                raise ValueError(f"script parameter {key!r}: allowed a Lua identifier")
            assignments.append(f"{key} = {lua_literal(value)}")
        for line in assignments:
            self.write(line)
        self.write(f"{name}()")
        return [self.read() for _ in range(reply_lines)]

    def run_script_until(
        self, name: str, end_marker: str, *, run_time_s: float, max_lines: int = 100_000
    ) -> list[str]:
        """Run script ``name`` (``name()``) and read its printed lines up to and including
        the first that starts with ``end_marker``; waits up to the transport timeout plus
        ``run_time_s`` (s) for each line. Raises InstrumentProtocolError after
        ``max_lines`` lines without the marker."""
        if not _IDENTIFIER.match(name):
            raise ValueError(f"script name {name!r}: allowed a Lua identifier")
        self.write(f"{name}()")
        lines: list[str] = []
        with self.transport.timeout_at_least(self.transport.timeout_s + run_time_s):
            while len(lines) < max_lines:
                line = self.read()
                lines.append(line)
                if line.startswith(end_marker):
                    return lines
        raise self.protocol_error(
            f"script {name}: no line starting with {end_marker!r} in {max_lines} lines"
        )

    def call(self, function: str, *args: Any, reply_lines: int = 1) -> list[str]:
        """Call a function defined on the instrument, ``function(args...)``; read its replies."""
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", function):
            raise ValueError(f"function {function!r}: allowed a Lua name")
        self.write(f"{function}({', '.join(lua_literal(a) for a in args)})")
        return [self.read() for _ in range(reply_lines)]

    def pulse_train(
        self,
        channel: str | Keithley2636BChannel,
        v_pulse: float,
        width_s: float,
        count: int,
        *,
        v_read: float = 0.0,
        read: bool = True,
        gap_s: float = 0.0,
        v_max: float = 202.0,
        v_read_max: float = 202.0,
        width_max_s: float = 10.0,
    ) -> np.ndarray:
        """``count`` pulses at ``v_pulse`` (V) of ``width_s`` (s), each followed by a read.

        The loop runs on the instrument (script :data:`PULSE_TRAIN_SCRIPT`, uploaded once
        per session): after each pulse the level returns to ``v_read`` (V), one current is
        measured into ``nvbuffer2`` when ``read`` is true, then ``gap_s`` (s) passes.
        Returns the currents (A) read after each pulse (empty when ``read`` is false). The
        output must be on; the level ends at 0 V.

        Caps: ``v_max`` (|V| of a pulse), ``v_read_max`` (|V| of the read level) and
        ``width_max_s`` (s) are the script's parameters. They are checked here, every
        argument is checked against them before anything is sent, and they are set on the
        instrument when the function is (re)defined, which happens whenever they change; the
        instrument refuses a call beyond them too.
        """
        smu = channel if isinstance(channel, Keithley2636BChannel) else self.channel(channel)
        caps = (
            strict_range(0.0, 202.0)(v_max, "Keithley2636B.pulse_train v_max"),
            strict_range(0.0, 202.0)(v_read_max, "Keithley2636B.pulse_train v_read_max"),
            strict_range(1e-5, 10.0)(width_max_s, "Keithley2636B.pulse_train width_max_s"),
        )
        v = strict_range(-caps[0], caps[0])(v_pulse, "Keithley2636B.pulse_train v_pulse")
        vr = strict_range(-caps[1], caps[1])(v_read, "Keithley2636B.pulse_train v_read")
        w = strict_range(1e-5, caps[2])(width_s, "Keithley2636B.pulse_train width_s")
        g = strict_range(0.0, 10.0)(gap_s, "Keithley2636B.pulse_train gap_s")
        n = int(strict_range(1, MAX_POINTS)(count, "Keithley2636B.pulse_train count"))
        if self._pulse_train_caps != caps:
            if PULSE_TRAIN_SCRIPT_NAME not in self._loaded_scripts:
                self.load_script(PULSE_TRAIN_SCRIPT_NAME, PULSE_TRAIN_SCRIPT)
            names = ("nvmlab_v_max", "nvmlab_v_read_max", "nvmlab_width_max")
            self.run_script(PULSE_TRAIN_SCRIPT_NAME, dict(zip(names, caps, strict=True)))
            self._pulse_train_caps = caps
        per_pulse = w + g + (smu._nplc_hint / self.line_frequency_hz if read else 0.0) + 1e-3
        self.write(
            "nvmlab_pulse_train("
            + ", ".join(lua_literal(x) for x in (smu, v, w, g, n, vr, bool(read)))
            + ")"
        )
        with self.transport.timeout_at_least(self.transport.timeout_s + 1.5 * n * per_pulse):
            if read:
                return self._read_buffer_reply(n, "pulse train")
            done = int(self.parse_number(self.read(), "pulse train count"))
            if done != n:
                raise self.protocol_error(f"pulse train: expected {n} pulses, got {done}")
            return np.zeros(0)
