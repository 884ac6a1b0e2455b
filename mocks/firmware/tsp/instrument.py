"""The TSP instrument library: output formats, the error queue and the functions every
TSP instrument has whatever its model (``print``, ``printnumber``, ``printbuffer``,
``delay``, ``waitcomplete``, ``format``, ``errorqueue``, ``timer``, ``beeper``).

The model itself (``smua`` / ``smub``, ``localnode``, scripts) is in
:mod:`nvmlab.mocks.firmware.keithley2636b`.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from .values import (
    QUEUE_OVERFLOW,
    LuaError,
    LuaTable,
    TspObject,
    _arg_int,
    _arg_number,
    fmt_number,
    lua_type,
    register,
    to_number,
    to_str,
)


class FormatSettings(TspObject):
    """The ``format`` object: data format, byte order, ASCII precision (reset defaults:
    ASCII, little endian (format.SWAPPED), 6 digits)."""

    ASCII, REAL32, REAL64 = 1, 2, 3
    BIGENDIAN, LITTLEENDIAN = 0, 1

    def __init__(self) -> None:
        super().__init__("format")
        self.reset()
        for name, value in (
            ("ASCII", 1),
            ("SREAL", 2),
            ("REAL32", 2),
            ("REAL", 3),
            ("REAL64", 3),
            ("DREAL", 3),
            ("NORMAL", 0),
            ("BIGENDIAN", 0),
            ("NETWORK", 0),
            ("SWAPPED", 1),
            ("LITTLEENDIAN", 1),
        ):
            self.const(name, float(value))
        self.attr("data", lambda: float(self.data), self._set_data)
        self.attr("byteorder", lambda: float(self.byteorder), self._set_byteorder)
        self.attr("asciiprecision", lambda: float(self.asciiprecision), self._set_precision)

    def reset(self) -> None:
        self.data = self.ASCII
        self.byteorder = self.LITTLEENDIAN
        self.asciiprecision = 6

    def _set_data(self, v: Any) -> None:
        x = to_number(v)
        if x not in (1.0, 2.0, 3.0):
            raise LuaError(
                f"format.data must be format.ASCII (1), format.REAL32 (2) or format.REAL64 (3), got {to_str(v)}"
            )
        self.data = int(x)  # type: ignore[arg-type]

    def _set_byteorder(self, v: Any) -> None:
        x = to_number(v)
        if x not in (0.0, 1.0):
            raise LuaError(
                f"format.byteorder must be format.BIGENDIAN (0) or format.LITTLEENDIAN (1), got {to_str(v)}"
            )
        self.byteorder = int(x)  # type: ignore[arg-type]

    def _set_precision(self, v: Any) -> None:
        x = to_number(v)
        if x is None or not (0 <= x <= 16) or not float(x).is_integer():
            raise LuaError(f"format.asciiprecision must be an integer 0..16, got {to_str(v)}")
        self.asciiprecision = int(x)

    def ascii_number(self, x: float) -> str:
        """A number as ``print``/``printbuffer`` write it (``%.{p-1}e``; p = 0: ``%.14g``)."""
        if x != x:
            return "nan"
        if x in (math.inf, -math.inf):
            return "inf" if x > 0 else "-inf"
        p = self.asciiprecision
        if p == 0:
            return f"{x:.14g}"
        return f"{x:.{p - 1}e}"

    def encode(self, values: list[float]) -> str:
        """A ``printnumber``/``printbuffer`` response message (text; binary as latin-1)."""
        if self.data == self.ASCII:
            return ", ".join(self.ascii_number(v) for v in values)
        code = "f" if self.data == self.REAL32 else "d"
        order = "<" if self.byteorder == self.LITTLEENDIAN else ">"
        raw = b"".join(struct.pack(order + code, _to_real(v, code)) for v in values)
        return "#0" + raw.decode("latin-1")


def _to_real(v: float, code: str) -> float:
    if code == "f" and v == v and abs(v) > 3.4028234663852886e38 and abs(v) != math.inf:
        return math.copysign(math.inf, v)
    return v


class ErrorQueue(TspObject):
    """The TSP error queue: FIFO of (code, message, severity, node); at most ``capacity``."""

    def __init__(self, capacity: int = 100) -> None:
        super().__init__("errorqueue")
        self.capacity = capacity
        self.entries: deque[tuple[int, str, int, int]] = deque()
        self.method("clear", self.clear)
        self.method("next", self.next)
        self.attr("count", lambda: float(len(self.entries)))

    def push(self, code: int, message: str, severity: int = 20, node: int = 1) -> None:
        if len(self.entries) >= self.capacity:
            self.entries.pop()
            self.entries.append((QUEUE_OVERFLOW, "Queue overflow", 20, node))
            return
        self.entries.append((code, message, severity, node))

    def clear(self) -> None:
        self.entries.clear()

    def next(self) -> tuple[float, str, float, float]:
        if not self.entries:
            return 0.0, "Queue Is Empty", 0.0, 0.0
        code, message, severity, node = self.entries.popleft()
        return float(code), message, float(severity), float(node)


class Namespace(TspObject):
    """A library object whose attributes are freely settable (``display``, ``beeper``...)."""

    def __init__(self, name: str, values: dict[str, Any] | None = None) -> None:
        super().__init__(name)
        self.values: dict[str, Any] = dict(values or {})

    def tsp_get(self, key: Any) -> Any:
        if key in self.values:
            return self.values[key]
        return super().tsp_get(key)

    def tsp_set(self, key: Any, value: Any) -> None:
        if key in self._setters:
            self._setters[key](value)
        else:
            self.values[key] = value


def _noop(*_args: Any) -> None:
    return None


class InstrumentLibrary:
    """The instrument library's Lua functions, mixed into
    :class:`~nvmlab.mocks.firmware.tsp.interpreter.Interpreter`."""

    globals: LuaTable
    format: FormatSettings
    errorqueue: ErrorQueue
    output: Callable[[str], None]
    sleep: Callable[[float], None]
    now: Callable[[], float]
    _timer_origin: float

    def _install_instrument_library(self) -> None:
        """Register the TSP instrument library: ``print``-family output, ``delay``,
        ``waitcomplete``, ``format``, ``errorqueue``, ``timer`` and ``beeper``."""
        g = self.globals
        reg = register
        reg(g, "print", self._print)
        reg(g, "printnumber", self._printnumber)
        reg(g, "printbuffer", self._printbuffer)
        reg(g, "delay", self._delay)
        reg(g, "waitcomplete", _noop)
        reg(g, "opc", _noop)
        reg(g, "exit", _noop)
        g.set("format", self.format)
        g.set("errorqueue", self.errorqueue)

        timer = Namespace("timer")
        timer.method("reset", self._timer_reset)
        measure = Namespace("timer.measure")
        measure.method("t", lambda: self.now() - self._timer_origin)
        timer.values["measure"] = measure
        g.set("timer", timer)

        beeper = Namespace("beeper", {"enable": 1.0, "ON": 1.0, "OFF": 0.0})
        beeper.method("beep", lambda *a: None)
        g.set("beeper", beeper)

    def _print(self, *args: Any) -> None:
        parts = []
        for v in args:
            t = type(v)
            if t is float or t is int:
                parts.append(self.format.ascii_number(float(v)))
            else:
                parts.append(to_str(v))
        self.output("\t".join(parts))

    def _printnumber(self, *args: Any) -> None:
        values = [_arg_number("printnumber", v, i + 1) for i, v in enumerate(args)]
        self.output(self.format.encode(values))

    def _buffer_values(self, buf: Any, n: int) -> list[float]:
        if type(buf) is LuaTable:
            return [float(v) if type(v) in (float, int) else math.nan for v in buf.arr]
        if isinstance(buf, TspObject):
            seq = buf.tsp_sequence()
            if seq is not None:
                return seq
        raise LuaError(
            f"bad argument #{n} to `printbuffer' (table or reading buffer expected, got {lua_type(buf)})"
        )

    def _printbuffer(self, start: Any = None, stop: Any = None, *bufs: Any) -> None:
        first = _arg_int("printbuffer", start, 1)
        last = _arg_int("printbuffer", stop, 2)
        if not bufs:
            raise LuaError(
                "bad argument #3 to `printbuffer' (table or reading buffer expected, got no value)"
            )
        columns = [self._buffer_values(b, i + 3) for i, b in enumerate(bufs)]
        n = min(len(c) for c in columns)
        first = max(first, 1)
        last = min(last, n)
        values: list[float] = []
        for i in range(first - 1, last):
            for c in columns:
                values.append(c[i])
        self.output(self.format.encode(values) if values or self.format.data != 1 else "")

    def _delay(self, seconds: Any = None) -> None:
        s = _arg_number("delay", seconds)
        if s < 0:
            raise LuaError(
                f"bad argument #1 to `delay' (delay must be >= 0 s, got {fmt_number(s)})"
            )
        self.sleep(s)

    def _timer_reset(self) -> None:
        self._timer_origin = self.now()
