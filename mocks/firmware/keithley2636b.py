"""Emulated Keithley 2636B System SourceMeter: TSP (Lua) firmware on the shared bench.

Every line received is what the instrument's TSP command interface receives: a Lua chunk
run by :class:`~nvmlab.mocks.firmware.tsp.Interpreter`, a script-management line
(``loadscript name`` / ``loadandrunscript [name]`` ... ``endscript``: lines in between
are collected, compiled at ``endscript``, then callable as ``name()`` / ``name.run()``),
``abort``, or a common command (``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?``, ``*OPC``,
``*WAI``, ``*TRG``). Only ``print``-family functions produce replies; each is one
LF-terminated message. Errors go to the TSP error queue (-285 syntax, -286 runtime; see
:mod:`.tsp`); with ``localnode.showerrors = 1`` they are printed instead.

Channels: ``smua`` drives bench terminal ``"A"``, ``smub`` terminal ``"B"``. Output off
follows ``smuX.source.offmode``: ``OUTPUT_NORMAL`` / ``OUTPUT_ZERO`` hold the terminal at
0 V (current limited to ``offlimiti``, as the real normal output-off state),
``OUTPUT_HIGH_Z`` disconnects it (``bench.set_terminal(t, None)``). Sourcing is the
bench's (:meth:`~nvmlab.mocks.world.Bench.source` with ``limiti``,
:meth:`~nvmlab.mocks.world.Bench.source_current` within ``limitv``); in compliance
``smuX.source.compliance`` reads true.

Current readings: ranges 100 pA to 1.5 A, ``measure.autorangei`` (not below
``measure.lowrangei``) or the fixed ``measure.rangei`` (setting it turns auto-range off and
rounds up to a range), each range's resolution and noise floor at ``measure.nplc``
(:mod:`.smu_ranges`); above a fixed range a reading is :data:`OVERFLOW`. The NPLC also
reaches the chip's read noise.

Time: each reading holds the bias for ``nplc / localnode.linefreq`` plus the measure
delay plus a firmware overhead (``measure_overhead_s``, fitted to the 2600B spec sheet's
script-to-memory reading rate at 0.01 NPLC; sweep-engine points use ``sweep_overhead_s``,
fitted to its sweep reading rate; both are constructor arguments).
``delay()`` and source delays hold the bias too. ``DELAY_AUTO`` measure delay is modelled
as 0 s. Sweeps (``smuX.trigger``) run synchronously point by point inside
``trigger.initiate()``; ``waitcomplete()`` returns at once. With ``endpulse.action =
SOURCE_IDLE`` each point is a pulse of width ``source.delay`` + measurement time (or the
delay of the ``trigger.timer[n]`` named as ``endpulse.stimulus``) followed by the idle
level.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nvmlab.mocks.firmware.base import LineInstrument, line_frequency
from nvmlab.mocks.firmware.smu_ranges import KEITHLEY_2636B
from nvmlab.mocks.firmware.tsp import (
    DEFAULT_MAX_STEPS,
    RUNTIME_ERROR,
    SYNTAX_ERROR,
    Builtin,
    Interpreter,
    LuaError,
    LuaTable,
    Namespace,
    Scope,
    TspChunkError,
    TspObject,
    lua_type,
    to_number,
    to_str,
)
from nvmlab.mocks.world import Bench, TerminalReading

#: Reading returned for an overrange measurement (above 102 % of a fixed range).
OVERFLOW = 9.91e37
#: Largest source voltage (V) and current (A) of the 2636B.
MAX_V = 202.0
MAX_I = 1.515
#: Capacity (readings) of each dedicated reading buffer (nvbuffer1/2).
NVBUFFER_CAPACITY = 60_000

_SMU_CONSTANTS: dict[str, float] = {
    "OUTPUT_DCAMPS": 0,
    "OUTPUT_DCVOLTS": 1,
    "OUTPUT_OFF": 0,
    "OUTPUT_ON": 1,
    "OUTPUT_HIGH_Z": 2,
    "OUTPUT_NORMAL": 0,
    "OUTPUT_ZERO": 1,
    "SENSE_LOCAL": 0,
    "SENSE_REMOTE": 1,
    "SENSE_CALA": 3,
    "AUTORANGE_OFF": 0,
    "AUTORANGE_ON": 1,
    "AUTORANGE_FOLLOW_LIMIT": 2,
    "DELAY_OFF": 0,
    "DELAY_AUTO": -1,
    "AUTOZERO_OFF": 0,
    "AUTOZERO_ONCE": 1,
    "AUTOZERO_AUTO": 2,
    "ENABLE": 1,
    "DISABLE": 0,
    "ASYNC": 2,
    "SOURCE_IDLE": 0,
    "SOURCE_HOLD": 1,
    "LIMIT_AUTO": 0,
    "FILTER_MOVING_AVG": 0,
    "FILTER_REPEAT_AVG": 1,
    "FILTER_MEDIAN": 2,
}


def _num(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """A numeric attribute value, range-checked; booleans count as 0/1 as on the instrument."""
    if value is True or value is False:
        x: float | None = 1.0 if value else 0.0
    else:
        x = to_number(value)
    if x is None or x != x:
        raise LuaError(f"{name} must be a number, got {lua_type(value)} {to_str(value)}")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise LuaError(f"{name} = {to_str(x)} out of range (allowed {to_str(lo)} to {to_str(hi)})")
    return x


def _choice(name: str, value: Any, allowed: tuple[int, ...]) -> int:
    x = _num(name, value)
    if x not in allowed:
        raise LuaError(
            f"{name} = {to_str(x)} not allowed (allowed: {', '.join(map(str, allowed))})"
        )
    return int(x)


class BufferColumn(TspObject):
    """One subtable of a reading buffer (``readings``, ``sourcevalues``, ``timestamps``)."""

    def __init__(self, name: str, values: list[Any]) -> None:
        super().__init__(name)
        self.values = values

    def tsp_get(self, key: Any) -> Any:
        if type(key) is float and key.is_integer() and 1 <= key <= len(self.values):
            return self.values[int(key) - 1]
        return None

    def tsp_len(self) -> int:
        return len(self.values)

    def tsp_sequence(self) -> list[float]:
        return [float(v) for v in self.values]


class ReadingBuffer(TspObject):
    """A 2600B reading buffer (``smuX.nvbufferY`` or ``smuX.makebuffer(n)``)."""

    def __init__(self, name: str, capacity: int, clock_now: Any) -> None:
        super().__init__(name)
        self.capacity = capacity
        self._now = clock_now
        self.readings: list[float] = []
        self.sourcevalues: list[float] = []
        self.timestamps: list[float] = []
        self.statuses: list[float] = []
        self.measurefunctions: list[str] = []
        self.appendmode = 0
        self.collectsourcevalues = 0
        self.collecttimestamps = 1
        self.timestampresolution = 1e-6
        self.basetimestamp = 0.0
        self.attr("n", lambda: float(len(self.readings)))
        self.attr("capacity", lambda: float(self.capacity))
        self.attr("basetimestamp", lambda: self.basetimestamp)
        self.attr("appendmode", lambda: float(self.appendmode), self._setter("appendmode"))
        self.attr(
            "collectsourcevalues",
            lambda: float(self.collectsourcevalues),
            self._setter("collectsourcevalues"),
        )
        self.attr(
            "collecttimestamps",
            lambda: float(self.collecttimestamps),
            self._setter("collecttimestamps"),
        )
        self.attr("timestampresolution", lambda: self.timestampresolution, self._set_resolution)
        self.attr("fillmode", lambda: 0.0, lambda v: None)
        self.attr("cachemode", lambda: 1.0, lambda v: None)
        self.attr("readings", lambda: BufferColumn(f"{name}.readings", self.readings))
        self.attr("sourcevalues", lambda: BufferColumn(f"{name}.sourcevalues", self.sourcevalues))
        self.attr("timestamps", lambda: BufferColumn(f"{name}.timestamps", self.timestamps))
        self.attr("statuses", lambda: BufferColumn(f"{name}.statuses", self.statuses))
        self.attr(
            "measurefunctions",
            lambda: BufferColumn(f"{name}.measurefunctions", self.measurefunctions),
        )
        self.method("clear", self.clear)
        self.method("clearcache", lambda *a: None)

    def _setter(self, attr: str) -> Any:
        def set_(v: Any) -> None:
            setattr(self, attr, _choice(f"{self.tsp_name}.{attr}", v, (0, 1)))

        return set_

    def _set_resolution(self, v: Any) -> None:
        self.timestampresolution = _num(f"{self.tsp_name}.timestampresolution", v, 1e-6, 1.0)

    def clear(self, *_args: Any) -> None:
        for column in (
            self.readings,
            self.sourcevalues,
            self.timestamps,
            self.statuses,
            self.measurefunctions,
        ):
            column.clear()

    def append(self, reading: float, source_value: float, status: float, function: str) -> None:
        if len(self.readings) >= self.capacity:
            raise LuaError(f"{self.tsp_name} is full (capacity {self.capacity} readings)")
        if not self.readings:
            self.basetimestamp = self._now()
        self.readings.append(reading)
        self.statuses.append(status)
        self.measurefunctions.append(function)
        if self.collectsourcevalues:
            self.sourcevalues.append(source_value)
        if self.collecttimestamps:
            self.timestamps.append(self._now() - self.basetimestamp)

    def tsp_get(self, key: Any) -> Any:
        if type(key) is float:
            if key.is_integer() and 1 <= key <= len(self.readings):
                return self.readings[int(key) - 1]
            return None
        return super().tsp_get(key)

    def tsp_len(self) -> int:
        return len(self.readings)

    def tsp_sequence(self) -> list[float]:
        return list(self.readings)


class ScriptObject(TspObject):
    """A named (or anonymous) script: ``name()``, ``name.run()``, ``name.source``."""

    def __init__(self, inst: Keithley2636BEmulator, name: str, source: str, block: Any) -> None:
        super().__init__(name or "script.anonymous")
        self.inst = inst
        self.name = name
        self.source = source
        self.block = block
        self.tsp_call = Builtin(f"{self.tsp_name}.run", self.run)
        self.attr("source", lambda: self.source)
        self.attr("name", lambda: self.name, self._rename)
        self.method("run", self.run)
        self.method("save", lambda *a: None)

    def _rename(self, value: Any) -> None:
        self.name = to_str(value)

    def run(self, *_args: Any) -> None:
        scope = Scope(None)
        scope.vars["..."] = ()
        self.inst.interp.exec_block(self.block, scope)


class SmuChannel(TspObject):
    """One SMU channel (``smua`` / ``smub``) on a bench terminal."""

    def __init__(self, inst: Keithley2636BEmulator, name: str, terminal: str) -> None:
        super().__init__(name)
        self.inst = inst
        self.bench: Bench = inst.bench
        self.terminal = terminal
        for key, value in _SMU_CONSTANTS.items():
            self.const(key, float(value))
        now = self.bench.clock.now
        self.nvbuffer1 = ReadingBuffer(f"{name}.nvbuffer1", NVBUFFER_CAPACITY, now)
        self.nvbuffer2 = ReadingBuffer(f"{name}.nvbuffer2", NVBUFFER_CAPACITY, now)
        self.const("nvbuffer1", self.nvbuffer1)
        self.const("nvbuffer2", self.nvbuffer2)
        self.source = TspObject(f"{name}.source")
        self.measure = TspObject(f"{name}.measure")
        self.trigger = Namespace(f"{name}.trigger")
        self.const("source", self.source)
        self.const("measure", self.measure)
        self.const("trigger", self.trigger)
        self.method("reset", self.reset)
        self.method("makebuffer", self._makebuffer)
        self.method("abort", lambda *a: None)
        self.attr("sense", lambda: float(self.sense), self._set_sense)
        self.reset()
        self._build_source()
        self._build_measure()
        self._build_trigger()

    # -- state ------------------------------------------------------------------------------
    def reset(self, *_args: Any) -> None:
        """Factory defaults for this channel (``smuX.reset()``); output off."""
        self.func = 1
        self.levelv = 0.0
        self.leveli = 0.0
        self.limitv = 20.0
        self.limiti = 0.1
        self.limitp = 1e6
        self.rangev = 0.2
        self.rangei = 1e-7
        self.autorangev = 1
        self.autorangei = 1
        self.lowrangev = 0.2
        self.lowrangei = 1e-8
        self.output = 0
        self.offmode = 0
        self.offfunc = 1
        self.offlimiti = 1e-3
        self.offlimitv = 40.0
        self.source_delay = 0.0
        self.settling = 0.0
        self.highc = 0
        self.sink = 0
        self.compliance = False
        self.compliance_kind = 0  # status bits: 1 = voltage limit, 2 = current limit
        self.nplc = 1.0
        self.m_autorangei = 1
        self.m_autorangev = 1
        self.m_rangei = 1e-7
        self.m_rangev = 0.2
        self.m_lowrangei = 1e-8
        self.m_lowrangev = 0.2
        self.m_delay = -1.0
        self.m_delayfactor = 1.0
        self.m_count = 1
        self.m_interval = 0.0
        self.m_autozero = 2
        self.sense = 0
        self.sweep_values: list[float] = []
        self.sweep_func = 1
        self.t_source_action = 0
        self.t_source_limitv = 0.0
        self.t_source_limiti = 0.0
        self.t_measure_action = 0
        self.t_measure_func = "i"
        self.t_measure_bufs: list[ReadingBuffer] = []
        self.t_count = 1
        self.t_arm_count = 1
        self.t_endpulse_action = 1
        self.t_endpulse_stimulus = 0.0
        self.t_endsweep_action = 0
        for buf in (self.nvbuffer1, self.nvbuffer2):
            buf.appendmode = 0
            buf.collectsourcevalues = 0
            buf.collecttimestamps = 1
        self._apply()

    def _set_sense(self, v: Any) -> None:
        self.sense = _choice(f"{self.tsp_name}.sense", v, (0, 1, 3))

    def _makebuffer(self, n: Any = None) -> ReadingBuffer:
        size = int(_num("makebuffer size", n, 0, 1_000_000))
        return ReadingBuffer(
            f"{self.tsp_name}.buffer", size or NVBUFFER_CAPACITY, self.bench.clock.now
        )

    # -- attribute tables -------------------------------------------------------------------------
    def _bind(
        self, obj: TspObject, lua_name: str, attr: str, check: Any, *, apply: bool = False
    ) -> None:
        def getter() -> Any:
            return float(getattr(self, attr))

        def setter(v: Any) -> None:
            setattr(self, attr, check(f"{obj.tsp_name}.{lua_name}", v))
            if apply:
                self._apply()

        obj.attr(lua_name, getter, setter)

    def _build_source(self) -> None:
        s = self.source

        def rng(lo: float, hi: float) -> Any:
            return lambda name, v: _num(name, v, lo, hi)

        def onoff(name: str, v: Any) -> int:
            return _choice(name, v, (0, 1))

        self._bind(s, "func", "func", lambda n, v: _choice(n, v, (0, 1)), apply=True)
        self._bind(s, "levelv", "levelv", rng(-MAX_V, MAX_V), apply=True)
        self._bind(s, "leveli", "leveli", rng(-MAX_I, MAX_I), apply=True)
        self._bind(s, "limitv", "limitv", rng(0.02, MAX_V), apply=True)
        self._bind(s, "limiti", "limiti", rng(1e-10, MAX_I), apply=True)
        self._bind(s, "limitp", "limitp", rng(0.0, 1e6))
        self._bind(s, "rangev", "rangev", rng(0.0, MAX_V))
        self._bind(s, "rangei", "rangei", rng(0.0, MAX_I))
        self._bind(s, "autorangev", "autorangev", onoff)
        self._bind(s, "autorangei", "autorangei", onoff)
        self._bind(s, "lowrangev", "lowrangev", rng(0.0, MAX_V))
        self._bind(s, "lowrangei", "lowrangei", rng(0.0, MAX_I))
        self._bind(s, "output", "output", lambda n, v: _choice(n, v, (0, 1, 2)), apply=True)
        self._bind(s, "offmode", "offmode", lambda n, v: _choice(n, v, (0, 1, 2)), apply=True)
        self._bind(s, "offfunc", "offfunc", lambda n, v: _choice(n, v, (0, 1)), apply=True)
        self._bind(s, "offlimiti", "offlimiti", rng(1e-10, MAX_I), apply=True)
        self._bind(s, "offlimitv", "offlimitv", rng(0.02, MAX_V))
        self._bind(s, "delay", "source_delay", lambda n, v: max(0.0, _num(n, v, -1.0, 1e4)))
        self._bind(s, "settling", "settling", rng(0, 256))
        self._bind(s, "highc", "highc", onoff)
        self._bind(s, "sink", "sink", onoff)
        s.attr("compliance", lambda: self.compliance)

    def _build_measure(self) -> None:
        m = self.measure

        def rng(lo: float, hi: float) -> Any:
            return lambda name, v: _num(name, v, lo, hi)

        def onoff(name: str, v: Any) -> int:
            return _choice(name, v, (0, 1, 2))

        self._bind(m, "nplc", "nplc", rng(0.001, 25.0))
        self._bind(m, "autorangei", "m_autorangei", onoff)
        self._bind(m, "autorangev", "m_autorangev", onoff)
        self._bind(m, "rangei", "m_rangei", self._set_rangei)
        self._bind(m, "rangev", "m_rangev", rng(0.0, MAX_V))
        self._bind(m, "lowrangei", "m_lowrangei", rng(0.0, MAX_I))
        self._bind(m, "lowrangev", "m_lowrangev", rng(0.0, MAX_V))
        self._bind(m, "delay", "m_delay", rng(-1.0, 1e4))
        self._bind(m, "delayfactor", "m_delayfactor", rng(0.0, 1e3))
        self._bind(m, "count", "m_count", lambda n, v: int(_num(n, v, 1, 60_000)))
        self._bind(m, "interval", "m_interval", rng(0.0, 1.0))
        self._bind(m, "autozero", "m_autozero", lambda n, v: _choice(n, v, (0, 1, 2)))
        m.const(
            "filter",
            Namespace(
                f"{self.tsp_name}.measure.filter", {"count": 1.0, "enable": 0.0, "type": 1.0}
            ),
        )
        m.const(
            "rel",
            Namespace(
                f"{self.tsp_name}.measure.rel",
                {"enablei": 0.0, "enablev": 0.0, "leveli": 0.0, "levelv": 0.0},
            ),
        )
        m.const("analogfilter", 1.0)
        for kind in ("i", "v", "r", "p"):
            m.method(kind, self._measure_fn(kind))
            m.method("overlapped" + kind, self._measure_fn(kind))
        m.method("iv", self._measure_iv)
        m.method("overlappediv", self._measure_iv)

    def _build_trigger(self) -> None:
        t = self.trigger
        name = self.tsp_name
        src = Namespace(f"{name}.trigger.source")
        src.method("listv", lambda tab=None: self._set_sweep(1, self._list_arg("listv", tab)))
        src.method("listi", lambda tab=None: self._set_sweep(0, self._list_arg("listi", tab)))
        src.method("linearv", lambda a=None, b=None, n=None: self._set_sweep(1, _linear(a, b, n)))
        src.method("lineari", lambda a=None, b=None, n=None: self._set_sweep(0, _linear(a, b, n)))
        src.method(
            "logv", lambda a=None, b=None, n=None, asym=0.0: self._set_sweep(1, _log(a, b, n, asym))
        )
        src.method(
            "logi", lambda a=None, b=None, n=None, asym=0.0: self._set_sweep(0, _log(a, b, n, asym))
        )
        self._bind(src, "action", "t_source_action", lambda n, v: _choice(n, v, (0, 1)))
        self._bind(src, "limitv", "t_source_limitv", lambda n, v: _num(n, v, 0.0, MAX_V))
        self._bind(src, "limiti", "t_source_limiti", lambda n, v: _num(n, v, 0.0, MAX_I))
        meas = Namespace(f"{name}.trigger.measure")
        self._bind(meas, "action", "t_measure_action", lambda n, v: _choice(n, v, (0, 1, 2)))
        for kind in ("i", "v", "r", "p"):
            meas.method(kind, self._trigger_measure_fn(kind))
        meas.method(
            "iv", lambda ibuf=None, vbuf=None: self._set_trigger_measure("iv", [ibuf, vbuf])
        )
        arm = Namespace(f"{name}.trigger.arm")
        self._bind(arm, "count", "t_arm_count", lambda n, v: int(_num(n, v, 0, 1e6)))
        endpulse = Namespace(f"{name}.trigger.endpulse")
        self._bind(endpulse, "action", "t_endpulse_action", lambda n, v: _choice(n, v, (0, 1)))
        self._bind(endpulse, "stimulus", "t_endpulse_stimulus", lambda n, v: _num(n, v))
        endsweep = Namespace(f"{name}.trigger.endsweep")
        self._bind(endsweep, "action", "t_endsweep_action", lambda n, v: _choice(n, v, (0, 1)))
        for key, ns in (
            ("source", src),
            ("measure", meas),
            ("arm", arm),
            ("endpulse", endpulse),
            ("endsweep", endsweep),
        ):
            t.values[key] = ns
        self._bind(t, "count", "t_count", lambda n, v: int(_num(n, v, 0, 1e6)))
        t.method("initiate", self._initiate)
        t.method("abort", lambda *a: None)
        for i, event in enumerate(
            (
                "ARMED_EVENT_ID",
                "SOURCE_COMPLETE_EVENT_ID",
                "MEASURE_COMPLETE_EVENT_ID",
                "PULSE_COMPLETE_EVENT_ID",
                "SWEEP_COMPLETE_EVENT_ID",
                "IDLE_EVENT_ID",
                "SWEEPING_EVENT_ID",
            )
        ):
            t.values[event] = float(100 + 10 * (1 if self.terminal == "A" else 2) + i)
        t.values["autoclear"] = 0.0

    # -- physics --------------------------------------------------------------------------------
    def _apply(self, level: float | None = None, func: int | None = None) -> TerminalReading:
        """Put the source state on the terminal and read it (no time passes)."""
        bench = self.bench
        func = self.func if func is None else func
        if self.output != 1:
            self.compliance, self.compliance_kind = False, 0
            if self.offmode == 2 or self.output == 2:
                bench.set_terminal(self.terminal, None)
                return TerminalReading(0.0, 0.0, False)
            return bench.source(self.terminal, 0.0, self.offlimiti, nplc=self.nplc)
        if func == 1:
            volts = self.levelv if level is None else level
            limit = self.limiti
            if level is not None and self.t_source_limiti > 0:
                limit = self.t_source_limiti
            reading = bench.source(self.terminal, volts, limit, nplc=self.nplc)
            self.compliance = reading.in_compliance
            self.compliance_kind = 2 if reading.in_compliance else 0
            return reading
        amps = self.leveli if level is None else level
        limitv = self.limitv
        if level is not None and self.t_source_limitv > 0:
            limitv = self.t_source_limitv
        reading = bench.source_current(self.terminal, amps, limitv, nplc=self.nplc)
        self.compliance = reading.in_compliance
        self.compliance_kind = 1 if reading.in_compliance else 0
        return reading

    def _read(
        self, level: float | None = None, func: int | None = None, *, overhead_s: float
    ) -> TerminalReading:
        """One reading: hold the bias for the measure delay + integration time, then sample."""
        delay = self.m_delay if self.m_delay >= 0 else 0.0
        self.bench.hold(delay + self.nplc / self.inst.line_frequency_hz + overhead_s)
        return self._apply(level, func)

    def _value(self, kind: str, reading: TerminalReading) -> float:
        v, i = reading.volts, reading.amps
        if kind == "i":
            return self._current_reading(i)
        if kind == "v":
            if self.m_autorangev == 0 and abs(v) > 1.01 * self.m_rangev > 0:
                return OVERFLOW
            return v
        if kind == "r":
            return OVERFLOW if i == 0 else v / i
        return v * i

    def _current_reading(self, amps: float) -> float:
        """The current (A) this channel reports for ``amps``: on the range auto-range
        settles on (not below ``measure.lowrangei``; ``measure.rangei`` then reads it) or
        the fixed ``measure.rangei``, with that range's noise floor and resolution
        (:mod:`.smu_ranges`); above a fixed range it is :data:`OVERFLOW`."""
        if self.m_autorangei:
            rng = KEITHLEY_2636B.auto(amps, lowest_a=self.m_lowrangei)
            self.m_rangei = rng.nominal_a
        else:
            rng = KEITHLEY_2636B.fixed(self.m_rangei)
        value = KEITHLEY_2636B.read(amps, rng, self.nplc, self.inst.noise)
        return OVERFLOW if value is None else value

    def _set_rangei(self, name: str, value: Any) -> float:
        """``measure.rangei = x``: the lowest range holding ``x``; auto-range turns off."""
        x = _num(name, value, 0.0, MAX_I)
        self.m_autorangei = 0
        return KEITHLEY_2636B.fixed(x).nominal_a

    def _status_byte(self) -> float:
        return float(self.compliance_kind)

    def _measure_fn(self, kind: str) -> Any:
        def measure(*bufs: Any) -> Any:
            buffers = [b for b in bufs if b is not None]
            for b in buffers:
                if not isinstance(b, ReadingBuffer):
                    raise LuaError(
                        f"bad argument to `{self.tsp_name}.measure.{kind}' (reading buffer expected, got {lua_type(b)})"
                    )
            readings = self._measure_series([kind], [buffers[:1]] if buffers else [[]])
            return readings[-1][0]

        return measure

    def _measure_iv(self, ibuf: Any = None, vbuf: Any = None) -> tuple[float, float]:
        for b in (ibuf, vbuf):
            if b is not None and not isinstance(b, ReadingBuffer):
                raise LuaError(
                    f"bad argument to `{self.tsp_name}.measure.iv' (reading buffer expected, got {lua_type(b)})"
                )
        readings = self._measure_series(
            ["i", "v"], [[ibuf] if ibuf is not None else [], [vbuf] if vbuf is not None else []]
        )
        return readings[-1][0], readings[-1][1]

    def _measure_series(self, kinds: list[str], buffers: list[list[Any]]) -> list[list[float]]:
        """``measure.count`` readings spaced by ``measure.interval``, stored into buffers."""
        for bufs in buffers:
            for b in bufs:
                if not b.appendmode:
                    b.clear()
        out: list[list[float]] = []
        clock = self.bench.clock
        for k in range(self.m_count):
            t0 = clock.now()
            reading = self._read(overhead_s=self.inst.measure_overhead_s)
            values = [self._value(kind, reading) for kind in kinds]
            self._store(kinds, values, buffers, reading)
            out.append(values)
            if k + 1 < self.m_count and self.m_interval > 0:
                self.bench.hold(max(0.0, self.m_interval - (clock.now() - t0)))
        return out

    def _store(
        self,
        kinds: list[str],
        values: list[float],
        buffers: list[list[Any]],
        reading: TerminalReading,
    ) -> None:
        source_value = reading.volts if self.func == 1 else reading.amps
        for kind, value, bufs in zip(kinds, values, buffers, strict=True):
            for b in bufs:
                b.append(
                    value,
                    source_value,
                    self._status_byte(),
                    {"i": "Current", "v": "Voltage", "r": "Resistance", "p": "Power"}[kind],
                )

    # -- sweeps ------------------------------------------------------------------------------------
    @staticmethod
    def _list_arg(fname: str, tab: Any) -> list[float]:
        if type(tab) is not LuaTable:
            raise LuaError(f"bad argument #1 to `{fname}' (table expected, got {lua_type(tab)})")
        values = [to_number(v) for v in tab.arr]
        if not values or any(v is None for v in values):
            raise LuaError(f"bad argument #1 to `{fname}' (non-empty table of numbers expected)")
        return [float(v) for v in values if v is not None]

    def _set_sweep(self, func: int, values: list[float]) -> None:
        limit = MAX_V if func == 1 else MAX_I
        if any(abs(v) > limit for v in values):
            raise LuaError(
                f"sweep value out of range (|value| <= {limit} {'V' if func == 1 else 'A'})"
            )
        self.sweep_func = func
        self.sweep_values = values

    def _trigger_measure_fn(self, kind: str) -> Any:
        def set_(buf: Any = None) -> None:
            self._set_trigger_measure(kind, [buf])

        return set_

    def _set_trigger_measure(self, kind: str, bufs: list[Any]) -> None:
        for b in bufs:
            if not isinstance(b, ReadingBuffer):
                raise LuaError(
                    f"bad argument to `{self.tsp_name}.trigger.measure.{kind}' (reading buffer expected, got {lua_type(b)})"
                )
        self.t_measure_func = kind
        self.t_measure_bufs = bufs

    def _initiate(self, *_args: Any) -> None:
        """Run the configured sweep now, point by point, on the bench."""
        if self.output != 1:
            raise LuaError(
                f"{self.tsp_name}.trigger.initiate(): output is off (set {self.tsp_name}.source.output = {self.tsp_name}.OUTPUT_ON)"
            )
        if self.t_source_action == 1 and not self.sweep_values:
            raise LuaError(
                f"{self.tsp_name}.trigger.initiate(): no sweep list (use trigger.source.listv/linearv/logv)"
            )
        count = self.t_count if self.t_count > 0 else len(self.sweep_values) or 1
        kinds = ["i", "v"] if self.t_measure_func == "iv" else [self.t_measure_func]
        buffers = (
            [[b] for b in self.t_measure_bufs]
            if self.t_measure_func == "iv"
            else [self.t_measure_bufs]
        )
        if self.t_measure_action:
            for bufs in buffers:
                for b in bufs:
                    if not b.appendmode:
                        b.clear()
        width_s = self._timer_width()
        interp = self.inst.interp
        clock = self.bench.clock
        for _ in range(max(1, self.t_arm_count)):
            for p in range(count):
                interp.count_step()
                level = (
                    self.sweep_values[p % len(self.sweep_values)]
                    if self.t_source_action == 1
                    else None
                )
                func = self.sweep_func if level is not None else None
                t0 = clock.now()
                self._apply(level, func)
                if self.source_delay > 0:
                    self.bench.hold(self.source_delay)
                if self.t_measure_action:
                    reading = self._read(level, func, overhead_s=self.inst.sweep_overhead_s)
                    values = [self._value(kind, reading) for kind in kinds]
                    self._store(kinds, values, buffers, reading)
                if width_s > 0:
                    self.bench.hold(max(0.0, width_s - (clock.now() - t0)))
                if self.t_endpulse_action == 0:
                    self._apply()
        if self.t_endsweep_action == 0:
            self._apply()

    def _timer_width(self) -> float:
        stim = self.t_endpulse_stimulus
        for timer in self.inst.trigger_timers:
            if stim and timer.values.get("EVENT_ID") == stim:
                return float(to_number(timer.values.get("delay")) or 0.0)
        return 0.0


def _linear(a: Any, b: Any, n: Any) -> list[float]:
    start, stop = _num("sweep start", a), _num("sweep stop", b)
    points = int(_num("sweep points", n, 1, 60_000))
    if points == 1:
        return [start]
    return [start + (stop - start) * k / (points - 1) for k in range(points)]


def _log(a: Any, b: Any, n: Any, asym: Any) -> list[float]:
    start, stop = _num("sweep start", a), _num("sweep stop", b)
    points = int(_num("sweep points", n, 2, 60_000))
    offset = _num("sweep asymptote", asym if asym is not None else 0.0)
    lo, hi = start - offset, stop - offset
    if lo <= 0 or hi <= 0:
        raise LuaError(
            "log sweep: start and stop must lie on the same side of the asymptote (> asymptote)"
        )
    ratio = math.log10(hi / lo)
    return [offset + lo * 10 ** (ratio * k / (points - 1)) for k in range(points)]


class Keithley2636BEmulator(LineInstrument):
    """Keithley 2636B (two SMU channels) speaking TSP over a line interface.

    ``line_frequency_hz`` (Hz) sets ``localnode.linefreq`` and the integration time of one
    PLC; ``max_steps`` bounds each chunk (see :mod:`.tsp`).
    """

    model = "keithley2636b"
    encoding = "latin-1"

    def __init__(
        self,
        bench: Bench,
        *,
        query_latency_s: float = 0.0,
        line_frequency_hz: float = 60.0,
        serial: str = "4428182",
        firmware: str = "4.0.0",
        measure_overhead_s: float = 120e-6,
        sweep_overhead_s: float = 70e-6,
        max_steps: int = DEFAULT_MAX_STEPS,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(bench.clock, query_latency_s=query_latency_s)
        self.bench = bench
        #: The instrument's own reading noise (:mod:`.smu_ranges`), seeded for repeatability.
        self.noise = np.random.default_rng(noise_seed)
        self.line_frequency_hz = line_frequency(line_frequency_hz)
        self.serial = str(serial)
        self.firmware = str(firmware)
        self.measure_overhead_s = float(measure_overhead_s)
        self.sweep_overhead_s = float(sweep_overhead_s)
        self._messages: list[str] = []
        self.interp = Interpreter(
            output=self._messages.append, sleep=bench.hold, now=bench.clock.now, max_steps=max_steps
        )
        self._collecting: tuple[str, bool, list[str]] | None = None
        self.scripts: dict[str, ScriptObject] = {}
        self.prompts = 0
        self.showerrors = 0
        self.smua = SmuChannel(self, "smua", "A")
        self.smub = SmuChannel(self, "smub", "B")
        self.trigger_timers: list[Namespace] = []
        self._install_globals()

    # -- globals ----------------------------------------------------------------------------------
    def _install_globals(self) -> None:
        it = self.interp
        it.set_global("smua", self.smua)
        it.set_global("smub", self.smub)
        it.set_global("reset", Builtin("reset", self.reset))

        localnode = Namespace("localnode")
        localnode.const("model", "2636B")
        localnode.const("serialno", self.serial)
        localnode.const("revision", self.firmware)
        localnode.const("description", f"Keithley Instruments SMU 2636B - {self.serial}")
        localnode.attr("linefreq", lambda: self.line_frequency_hz, self._set_linefreq)
        localnode.attr("autolinefreq", lambda: 0.0, lambda v: None)
        localnode.attr(
            "prompts",
            lambda: float(self.prompts),
            lambda v: setattr(self, "prompts", _choice("localnode.prompts", v, (0, 1))),
        )
        localnode.attr(
            "showerrors",
            lambda: float(self.showerrors),
            lambda v: setattr(self, "showerrors", _choice("localnode.showerrors", v, (0, 1))),
        )
        localnode.values["prompts4882"] = 1.0
        localnode.method("reset", self.reset)
        it.set_global("localnode", localnode)
        it.set_global("node", LuaTable([localnode]))

        display = Namespace(
            "display", {"SMUA": 0.0, "SMUB": 1.0, "SMUA_SMUB": 2.0, "USER": 3.0, "screen": 0.0}
        )
        for name in ("clear", "settext", "setcursor", "sendkey", "loadmenu", "prompt"):
            display.method(name, lambda *a: None)
        display.method("getcursor", lambda *a: (1.0, 1.0))
        for sub in ("smua", "smub"):
            display.values[sub] = Namespace(
                f"display.{sub}", {"measure": Namespace(f"display.{sub}.measure", {"func": 1.0})}
            )
        it.set_global("display", display)

        measurement = Namespace("status.measurement")
        instrument = Namespace("status.measurement.instrument")
        for smu in (self.smua, self.smub):
            ns = Namespace(f"status.measurement.instrument.{smu.tsp_name}")
            ns.attr("condition", smu._status_byte)
            ns.attr("event", smu._status_byte)
            instrument.values[smu.tsp_name] = ns
        instrument.attr(
            "condition", lambda: float(self.smua.compliance_kind | self.smub.compliance_kind)
        )
        measurement.values["instrument"] = instrument
        measurement.attr("condition", lambda: 0.0)
        status = Namespace("status", {"condition": 0.0})
        status.values["measurement"] = measurement
        status.method("reset", lambda *a: None)
        it.set_global("status", status)

        tsplink = Namespace("tsplink", {"state": "offline", "node": 1.0})
        tsplink.method("reset", lambda *a: 0.0)
        it.set_global("tsplink", tsplink)

        trigger = Namespace("trigger")
        timers = LuaTable()
        for n in range(1, 9):
            timer = Namespace(
                f"trigger.timer[{n}]",
                {
                    "delay": 10e-6,
                    "count": 1.0,
                    "passthrough": False,
                    "stimulus": 0.0,
                    "EVENT_ID": float(200 + n),
                },
            )
            timer.method("clear", lambda *a: None)
            timers.set(float(n), timer)
            self.trigger_timers.append(timer)
        trigger.values["timer"] = timers
        trigger.method("clear", lambda *a: None)
        trigger.method("wait", lambda *a: True)
        it.set_global("trigger", trigger)

        script_ns = Namespace("script")
        script_ns.method("new", self._script_new)
        script_ns.method("newautorun", self._script_new)
        script_ns.method("delete", self._script_delete)
        script_ns.values["user"] = Namespace("script.user", {"scripts": LuaTable()})
        it.set_global("script", script_ns)
        self._script_ns = script_ns

    def _set_linefreq(self, v: Any) -> None:
        self.line_frequency_hz = float(_choice("localnode.linefreq", v, (50, 60)))

    # -- commands ---------------------------------------------------------------------------------
    def reset(self, *_args: Any) -> None:
        """``reset()`` / ``*RST``: both channels, formats and display to defaults."""
        self.smua.reset()
        self.smub.reset()
        self.interp.format.reset()

    def handle_line(self, line: str) -> str | None:
        self._messages.clear()
        try:
            self._handle(line)
        except Exception as exc:  # noqa: BLE001 - the firmware never crashes
            self._report(
                RUNTIME_ERROR,
                f"TSP Runtime error at line 1: internal error ({type(exc).__name__}: {exc})",
            )
        if self.prompts and self._collecting is None:
            self._messages.append("TSP>")
        if not self._messages:
            return None
        return "\n".join(self._messages)

    def _handle(self, line: str) -> None:
        stripped = line.strip()
        if self._collecting is not None:
            if stripped == "endscript":
                self._finish_script()
            else:
                self._collecting[2].append(line)
            return
        if not stripped:
            return
        if stripped.startswith("*"):
            self._common(stripped)
            return
        words = stripped.split(None, 2)
        if words[0] in ("loadscript", "loadandrunscript"):
            name = words[1] if len(words) > 1 else ""
            if name and not (name.replace("_", "a").isalnum() and not name[0].isdigit()):
                self._report(
                    SYNTAX_ERROR, f"TSP Syntax error at line 1: invalid script name `{name}'"
                )
                return
            self._collecting = (name, words[0] == "loadandrunscript", [])
            if len(words) > 2:
                self._collecting[2].append(words[2])
            return
        if stripped == "endscript":
            self._report(
                SYNTAX_ERROR, "TSP Syntax error at line 1: `endscript' without `loadscript'"
            )
            return
        if stripped == "abort":
            return
        self._run(stripped)

    def _common(self, cmd: str) -> None:
        upper = cmd.upper()
        if upper == "*IDN?":
            self._messages.append(
                f"Keithley Instruments Inc., Model 2636B, {self.serial}, {self.firmware}"
            )
        elif upper == "*RST":
            self.reset()
        elif upper == "*CLS":
            self.interp.errorqueue.clear()
        elif upper == "*OPC?":
            self._messages.append("1")
        elif upper in ("*OPC", "*WAI", "*TRG"):
            pass
        else:
            self._run(cmd)

    def _run(self, src: str) -> None:
        try:
            self.interp.run(src)
        except TspChunkError as exc:
            self._report(exc.code, exc.message)

    def _report(self, code: int, message: str) -> None:
        if self.showerrors:
            self._messages.append(message)
        else:
            self.interp.errorqueue.push(code, message)

    # -- scripts ----------------------------------------------------------------------------------
    def _finish_script(self) -> None:
        assert self._collecting is not None
        name, run, lines = self._collecting
        self._collecting = None
        source = "\n".join(lines)
        try:
            block = self.interp.compile(source)
        except TspChunkError as exc:
            self._report(exc.code, exc.message)
            return
        obj = self._register(name, source, block)
        if run:
            try:
                self.interp.execute(obj.block)
            except TspChunkError as exc:
                self._report(exc.code, exc.message)

    def _register(self, name: str, source: str, block: Any) -> ScriptObject:
        obj = ScriptObject(self, name, source, block)
        if name:
            self.scripts[name] = obj
            self.interp.set_global(name, obj)
            users = self._script_ns.values["user"].values["scripts"]
            users.set(name, obj)
        else:
            self._script_ns.values["anonymous"] = obj
        return obj

    def _script_new(self, code: Any = None, name: Any = None) -> ScriptObject | None:
        if type(code) is not str:
            raise LuaError(
                f"bad argument #1 to `script.new' (string expected, got {lua_type(code)})"
            )
        script_name = "" if name is None else to_str(name)
        try:
            block = self.interp.compile(code)
        except TspChunkError as exc:
            self._report(exc.code, exc.message)
            return None
        return self._register(script_name, code, block)

    def _script_delete(self, name: Any = None) -> None:
        key = to_str(name)
        obj = self.scripts.pop(key, None)
        if obj is not None and self.interp.get_global(key) is obj:
            self.interp.set_global(key, None)
        self._script_ns.values["user"].values["scripts"].set(key, None)

    # -- helpers for tests and benchmarks -------------------------------------------------------------
    def errors(self) -> list[tuple[int, str]]:
        """Drain the error queue as (code, message) pairs (a test helper, not a TSP command)."""
        out = []
        while self.interp.errorqueue.entries:
            code, message, _, _ = self.interp.errorqueue.entries.popleft()
            out.append((code, message))
        return out


__all__ = ["Keithley2636BEmulator", "ReadingBuffer", "ScriptObject", "SmuChannel"]
