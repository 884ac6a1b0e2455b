"""A Lua-subset interpreter for emulated TSP (Test Script Processor) instruments.

The Keithley 2600B firmware runs Lua; instrument commands are Lua chunks. This module is a
real lexer (:mod:`.tsp_lexer`), a recursive-descent parser (:mod:`.tsp_parser`) and the
tree-walking evaluator below, plus the instrument-independent TSP library (``print``,
``printbuffer``, ``format``, ``errorqueue``, ``delay``, ``timer`` ...). The instrument
model (:mod:`.keithley2636b`) adds ``smua`` / ``smub``, ``localnode``, ``reset()`` and the
script management.

Supported subset
----------------
- Values: ``nil``, booleans, numbers (IEEE double only, as Lua 5.0 on the instrument;
  literals ``3``, ``1e-3``, ``.5``, ``0x1F``), strings (``'..'``, ``".."`` with escapes
  ``\\n \\t \\r \\a \\b \\f \\v \\\\ \\" \\' \\ddd \\xXX``, long strings ``[[..]]`` /
  ``[==[..]==]``), tables, functions; instrument objects behave as tables.
- Statements: ``local`` (multiple names), multiple assignment, calls and method calls
  (``obj:m()``), ``do``/``end``, ``while``, ``repeat``/``until``, ``if``/``elseif``/
  ``else``, numeric ``for`` (with step) and generic ``for`` (``pairs``/``ipairs``/any
  iterator function), ``function name()``, ``function a.b:c()``, ``local function``,
  anonymous functions and closures, ``return`` with multiple values, varargs ``...``,
  ``break``; comments ``--`` and ``--[[ ]]``.
- Expressions: ``+ - * / % ^``, unary minus, ``== ~= < <= > >=``, ``and``/``or``/
  ``not`` with Lua truthiness (only ``nil`` and ``false`` are false) and short circuit,
  ``..`` (numbers convert with ``%.14g``), length ``#``, string -> number coercion in
  arithmetic, table constructors (array, record, ``[k]=v``, nested).
- Library: ``print`` (tab-separated; numbers as the instrument prints them, governed by
  ``format.asciiprecision``: ``%.{p-1}e``, default p = 6 -> ``1.00000e+01``;
  ``tostring`` gives Lua's ``%.14g``), ``printnumber``, ``printbuffer`` (ASCII: ``", "``
  separated; binary formats: ``#0`` + raw IEEE-754 bytes in ``format.byteorder`` +
  LF), ``tostring``, ``tonumber``, ``type``, ``ipairs``, ``pairs``, ``next``, ``select``,
  ``unpack``, ``error``, ``assert``, ``pcall``, ``rawget``/``rawset``/``rawequal``,
  ``collectgarbage``; ``math`` (abs, floor, ceil, sqrt, log, log10, exp, pow, mod, fmod,
  min, max, sin, cos, tan, asin, acos, atan, atan2, random, randomseed, pi, huge);
  ``string`` (format, len, sub, upper, lower, rep, byte, char; also as methods
  ``s:upper()``); ``table`` (insert, remove, getn, concat, sort); ``os.time``,
  ``os.clock``; ``delay(s)`` (bench time passes with the bias held), ``waitcomplete()``,
  ``timer.reset()`` / ``timer.measure.t()``, ``errorqueue`` (``clear()``, ``count``,
  ``next()``), ``format`` (``data``, ``byteorder``, ``asciiprecision`` and their
  constants), ``beeper``, ``status``, ``node``/``tsplink`` (minimal).
- Not supported (answered with a TSP error, never a crash): metatables, coroutines, Lua
  patterns (``string.find/gsub/match``), ``goto``, integer division ``//``, bitwise
  operators, file I/O.

Errors and resource limits
--------------------------
A chunk that does not parse is reported as error -285 ``TSP Syntax error at line N:
<lua message>``; an error while running as -286 ``TSP Runtime error at line N: <lua
message>`` (as the 2600B reports them in its error queue, severity 20). Output printed
before a runtime error stays printed (as on the instrument). Each chunk may execute at most
``max_steps`` statements / loop iterations (default :data:`DEFAULT_MAX_STEPS`, a few seconds
of host CPU; the real instrument would hang on an infinite loop, the emulator reports
-286 ``... step budget of N exceeded``) and nest at most ``max_call_depth`` Lua calls
(default :data:`DEFAULT_MAX_CALL_DEPTH`, then ``stack overflow``). No string may grow
beyond :data:`MAX_STRING_CHARS` characters (``..``, ``string.rep``, ``table.concat``):
the instrument's Lua heap is a few megabytes, so a longer one is Lua's ``not enough
memory`` error. ``string.format`` widths and precisions have at most two digits, as in
Lua 5.0 (``invalid format (width or precision too long)``).
"""

from __future__ import annotations

import functools
import math
import random
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from . import tsp_parser as ast
from .tsp_lexer import LuaSyntaxError

#: Statements / loop iterations one chunk may execute before -286 is reported.
DEFAULT_MAX_STEPS = 5_000_000
#: Deepest nesting of Lua function calls before ``stack overflow``.
DEFAULT_MAX_CALL_DEPTH = 100
#: Longest string a chunk may build (characters) before Lua's ``not enough memory``.
MAX_STRING_CHARS = 4 * 1024 * 1024

#: Python frames the evaluator needs: about 12 per Lua call plus expression nesting. Raised
#: (never lowered) at import so ``max_call_depth`` Lua calls fit; anything deeper is caught
#: as a TSP ``stack overflow`` error.
_PYTHON_RECURSION_LIMIT = 6000
if sys.getrecursionlimit() < _PYTHON_RECURSION_LIMIT:
    sys.setrecursionlimit(_PYTHON_RECURSION_LIMIT)

#: TSP error codes.
SYNTAX_ERROR = -285
RUNTIME_ERROR = -286
QUEUE_OVERFLOW = -350


class LuaError(Exception):
    """A Lua runtime error; ``line`` is filled in by the evaluator (1-based)."""

    def __init__(self, message: str, line: int | None = None, value: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.value = message if value is None else value


class TspChunkError(Exception):
    """A chunk failed: ``code`` (-285 / -286) and the error-queue ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- values ------------------------------------------------------------------------------
class _BoolKey:
    """Table key standing for a boolean (Python's True == 1 would clash with t[1])."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value


_TRUE_KEY = _BoolKey(True)
_FALSE_KEY = _BoolKey(False)


def _norm_key(key: Any) -> Any:
    if key is True:
        return _TRUE_KEY
    if key is False:
        return _FALSE_KEY
    if type(key) is int:
        return float(key)
    return key


def _unnorm_key(key: Any) -> Any:
    return key.value if type(key) is _BoolKey else key


class LuaTable:
    """A Lua table: a dense array part for keys 1..n plus a hash part."""

    __slots__ = ("arr", "hash")

    def __init__(
        self, items: list[Any] | None = None, record: dict[str, Any] | None = None
    ) -> None:
        self.arr: list[Any] = [v for v in (items or []) if v is not None]
        self.hash: dict[Any, Any] = dict(record or {})

    def get(self, key: Any) -> Any:
        tk = type(key)
        if tk is float or tk is int:
            if tk is float and not key.is_integer():
                return self.hash.get(key)
            i = int(key)
            if 1 <= i <= len(self.arr):
                return self.arr[i - 1]
            return self.hash.get(float(i))
        return self.hash.get(_norm_key(key))

    def set(self, key: Any, value: Any) -> None:
        tk = type(key)
        if key is None:
            raise LuaError("table index is nil")
        if tk is float or tk is int:
            if key != key:
                raise LuaError("table index is NaN")
            if float(key).is_integer():
                i = int(key)
                arr = self.arr
                n = len(arr)
                if 1 <= i <= n:
                    if value is not None:
                        arr[i - 1] = value
                    elif i == n:
                        arr.pop()
                    else:
                        for j in range(i, n):
                            self.hash[float(j + 1)] = arr[j]
                        del arr[i - 1 :]
                    return
                if i == n + 1 and value is not None:
                    arr.append(value)
                    self.hash.pop(float(i), None)
                    nxt = float(i + 1)
                    while nxt in self.hash:
                        arr.append(self.hash.pop(nxt))
                        nxt += 1.0
                    return
                key = float(i)
        else:
            key = _norm_key(key)
        if value is None:
            self.hash.pop(key, None)
        else:
            self.hash[key] = value

    def length(self) -> int:
        return len(self.arr)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Snapshot of (key, value) pairs: array part in order, then the hash part."""
        pairs: list[tuple[Any, Any]] = [(float(i + 1), v) for i, v in enumerate(self.arr)]
        pairs.extend((_unnorm_key(k), v) for k, v in self.hash.items())
        return iter(pairs)

    def next(self, key: Any) -> tuple[Any, Any]:
        """Lua's ``next``: the pair after ``key`` (``(None, None)`` at the end)."""
        keys = [k for k, _ in self.items()]
        if key is None:
            idx = 0
        else:
            try:
                idx = keys.index(key) + 1
            except ValueError:
                raise LuaError("invalid key to `next'") from None
        if idx >= len(keys):
            return None, None
        k = keys[idx]
        return k, self.get(k)


class LuaFunction:
    """A Lua closure: the function node and the scope it was created in."""

    __slots__ = ("node", "closure")

    def __init__(self, node: ast.Function, closure: Scope) -> None:
        self.node = node
        self.closure = closure


class Builtin:
    """A function implemented in Python: ``fn(*args)`` returns ``None``, one value, or a
    tuple of values (multiple results)."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name = name
        self.fn = fn


class TspObject:
    """An instrument object seen from Lua (``smua``, ``smua.source``, ``format`` ...).

    Subclasses use :meth:`attr` (read/write attribute), :meth:`const` (read-only value)
    and :meth:`method` (function); unknown names read as ``nil``; writing an unknown or
    read-only name is a runtime error naming the allowed attributes.
    """

    tsp_name = "object"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.tsp_name = name
        self._getters: dict[str, Callable[[], Any]] = {}
        self._setters: dict[str, Callable[[Any], None]] = {}

    def attr(
        self, name: str, getter: Callable[[], Any], setter: Callable[[Any], None] | None = None
    ) -> None:
        self._getters[name] = getter
        if setter is not None:
            self._setters[name] = setter

    def const(self, name: str, value: Any) -> None:
        self._getters[name] = lambda: value

    def method(self, name: str, fn: Callable[..., Any]) -> None:
        func = Builtin(f"{self.tsp_name}.{name}", fn)
        self._getters[name] = lambda: func

    def tsp_get(self, key: Any) -> Any:
        getter = self._getters.get(key) if type(key) is str else None
        return None if getter is None else getter()

    def tsp_set(self, key: Any, value: Any) -> None:
        setter = self._setters.get(key) if type(key) is str else None
        if setter is None:
            writable = ", ".join(sorted(self._setters)) or "none"
            kind = "read-only" if key in self._getters else "unknown"
            raise LuaError(
                f"cannot set {kind} attribute `{key}' of {self.tsp_name} (writable: {writable})"
            )
        setter(value)

    def tsp_len(self) -> int:
        raise LuaError(f"attempt to get length of {self.tsp_name}")

    def tsp_sequence(self) -> list[float] | None:
        """Values printed by ``printbuffer`` when this object is passed; None if not a buffer."""
        return None


class Scope:
    """One block's local variables, chained to the enclosing block."""

    __slots__ = ("vars", "parent")

    def __init__(self, parent: Scope | None) -> None:
        self.vars: dict[str, Any] = {}
        self.parent = parent


_BREAK = object()


# --- conversions ---------------------------------------------------------------------------
def lua_type(v: Any) -> str:
    """Lua's ``type()`` of a value."""
    if v is None:
        return "nil"
    t = type(v)
    if t is bool:
        return "boolean"
    if t is float or t is int:
        return "number"
    if t is str:
        return "string"
    if t is LuaTable or isinstance(v, TspObject):
        return "table"
    if t is LuaFunction or t is Builtin:
        return "function"
    return "userdata"


def truthy(v: Any) -> bool:
    return v is not None and v is not False


def fmt_number(x: float) -> str:
    """Lua's number-to-string conversion (``%.14g``)."""
    if x != x:
        return "nan"
    if x in (math.inf, -math.inf):
        return "inf" if x > 0 else "-inf"
    return f"{x:.14g}"


def str_to_number(s: str, base: int = 10) -> float | None:
    """Lua's string -> number conversion; ``None`` if ``s`` is not a number."""
    text = s.strip()
    if not text:
        return None
    if base != 10:
        neg = text.startswith("-")
        digits = text[1:] if neg else text
        try:
            value = int(digits, base)
        except ValueError:
            return None
        return float(-value if neg else value)
    low = text.lower()
    try:
        if low.startswith(("0x", "-0x", "+0x")):
            return float(int(low, 16))
        if low in ("inf", "-inf", "+inf", "nan", "-nan", "infinity", "-infinity"):
            return None
        return float(text)
    except ValueError:
        return None


def to_number(v: Any) -> float | None:
    t = type(v)
    if t is float:
        return v  # type: ignore[no-any-return]
    if t is int:
        return float(v)
    if t is str:
        return str_to_number(v)
    return None


def to_str(v: Any) -> str:
    """Lua's ``tostring``."""
    if v is None:
        return "nil"
    t = type(v)
    if t is bool:
        return "true" if v else "false"
    if t is float or t is int:
        return fmt_number(float(v))
    if t is str:
        return v  # type: ignore[no-any-return]
    if t is Builtin:
        return f"function: builtin: {v.name}"
    if t is LuaFunction:
        return f"function: 0x{id(v):08x}"
    if isinstance(v, TspObject):
        return f"table: {v.tsp_name}"
    return f"table: 0x{id(v):08x}"


def lua_eq(a: Any, b: Any) -> bool:
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return False
    if (ta is float or ta is int) and (tb is float or tb is int):
        return bool(a == b)
    if ta is str and tb is str:
        return bool(a == b)
    return False


def _arg_number(fname: str, v: Any, n: int = 1) -> float:
    x = to_number(v)
    if x is None:
        raise LuaError(f"bad argument #{n} to `{fname}' (number expected, got {lua_type(v)})")
    return x


def _arg_int(fname: str, v: Any, n: int = 1) -> int:
    x = _arg_number(fname, v, n)
    if x != x or x in (math.inf, -math.inf):
        raise LuaError(f"bad argument #{n} to `{fname}' (number has no integer representation)")
    return int(x)


def _arg_str(fname: str, v: Any, n: int = 1) -> str:
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if t is float or t is int:
        return fmt_number(float(v))
    raise LuaError(f"bad argument #{n} to `{fname}' (string expected, got {lua_type(v)})")


def _check_length(chars: int) -> None:
    """Refuse a string of ``chars`` characters longer than :data:`MAX_STRING_CHARS`."""
    if chars > MAX_STRING_CHARS:
        raise LuaError("not enough memory")


def _string_rep(x: Any, n: Any) -> str:
    text, count = _arg_str("rep", x), max(0, _arg_int("rep", n, 2))
    _check_length(len(text) * count)
    return text * count


def _arg_table(fname: str, v: Any, n: int = 1) -> LuaTable:
    if type(v) is not LuaTable:
        raise LuaError(f"bad argument #{n} to `{fname}' (table expected, got {lua_type(v)})")
    return v  # type: ignore[no-any-return]


# --- output formats -----------------------------------------------------------------------
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


class _Namespace(TspObject):
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


# --- the interpreter ------------------------------------------------------------------------
class Interpreter:
    """Runs TSP chunks against one Lua global environment.

    ``output(text)`` receives each response message (one per ``print`` /
    ``printbuffer`` / ``printnumber``); ``sleep(s)`` lets instrument time pass (``delay``);
    ``now()`` is the instrument's clock (s). The instrument adds its own globals with
    :meth:`set_global`.
    """

    def __init__(
        self,
        *,
        output: Callable[[str], None],
        sleep: Callable[[float], None] | None = None,
        now: Callable[[], float] | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_call_depth: int = DEFAULT_MAX_CALL_DEPTH,
        seed: int = 0,
    ) -> None:
        self.output = output
        self.sleep = sleep or (lambda s: None)
        self.now = now or time.monotonic
        self.max_steps = int(max_steps)
        self.max_call_depth = int(max_call_depth)
        self.steps = 0
        self.depth = 0
        self.globals = LuaTable()
        self.format = FormatSettings()
        self.errorqueue = ErrorQueue()
        self.rng = random.Random(seed)
        self._timer_origin = self.now()
        self._ev: dict[type, Callable[[Any, Scope], Any]] = {
            ast.Nil: lambda n, s: None,
            ast.TrueLit: lambda n, s: True,
            ast.FalseLit: lambda n, s: False,
            ast.Number: lambda n, s: n.value,
            ast.String: lambda n, s: n.value,
            ast.Vararg: self._ev_vararg,
            ast.Name: self._ev_name,
            ast.Index: self._ev_index,
            ast.Call: self._ev_call1,
            ast.MethodCall: self._ev_call1,
            ast.Function: lambda n, s: LuaFunction(n, s),
            ast.BinOp: self._ev_binop,
            ast.And: self._ev_and,
            ast.Or: self._ev_or,
            ast.UnOp: self._ev_unop,
            ast.Paren: lambda n, s: self.eval(n.expr, s),
            ast.TableCons: self._ev_table,
        }
        self._ex: dict[type, Callable[[Any, Scope], Any]] = {
            ast.Local: self._ex_local,
            ast.LocalFunction: self._ex_local_function,
            ast.Assign: self._ex_assign,
            ast.CallStat: self._ex_callstat,
            ast.Do: self._ex_do,
            ast.While: self._ex_while,
            ast.Repeat: self._ex_repeat,
            ast.If: self._ex_if,
            ast.NumericFor: self._ex_numeric_for,
            ast.GenericFor: self._ex_generic_for,
            ast.Return: self._ex_return,
            ast.Break: lambda n, s: _BREAK,
        }
        self._install_library()

    # -- public API ---------------------------------------------------------------------------
    def set_global(self, name: str, value: Any) -> None:
        self.globals.set(name, value)

    def get_global(self, name: str) -> Any:
        return self.globals.get(name)

    def compile(self, src: str) -> ast.Block:
        """Parse a chunk; raises :class:`TspChunkError` (-285) if it does not parse."""
        try:
            return ast.parse(src)
        except LuaSyntaxError as exc:
            raise TspChunkError(
                SYNTAX_ERROR, f"TSP Syntax error at line {exc.line}: {exc.message}"
            ) from None
        except RecursionError:
            raise TspChunkError(
                SYNTAX_ERROR, "TSP Syntax error at line 1: chunk has too many syntax levels"
            ) from None

    def run(self, src: str) -> None:
        """Parse and execute one chunk; raises :class:`TspChunkError` on any error."""
        self.execute(self.compile(src))

    def execute(self, block: ast.Block) -> list[Any]:
        """Execute a parsed chunk with a fresh step budget; returns its return values."""
        self.steps = 0
        self.depth = 0
        scope = Scope(None)
        scope.vars["..."] = ()
        try:
            r = self.exec_block(block, scope)
        except LuaError as exc:
            raise TspChunkError(RUNTIME_ERROR, self._runtime_message(exc, block)) from None
        except RecursionError:
            raise TspChunkError(
                RUNTIME_ERROR, "TSP Runtime error at line 1: stack overflow"
            ) from None
        except TspChunkError:
            raise
        except Exception as exc:  # noqa: BLE001 - the firmware must never crash
            raise TspChunkError(
                RUNTIME_ERROR,
                f"TSP Runtime error at line 1: internal error ({type(exc).__name__}: {exc})",
            ) from None
        return r if isinstance(r, list) else []

    @staticmethod
    def _runtime_message(exc: LuaError, block: ast.Block) -> str:
        line = exc.line if exc.line is not None else block.line
        return f"TSP Runtime error at line {line}: {exc.message}"

    # -- statements ---------------------------------------------------------------------------
    def count_step(self) -> None:
        """Charge one step against the chunk budget (also used by instrument loops)."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise LuaError(
                f"step budget of {self.max_steps} statements exceeded (emulator limit; infinite loop?)"
            )

    def exec_block(self, block: ast.Block, scope: Scope) -> Any:
        ex = self._ex
        stmt: ast.Node = block
        try:
            for stmt in block.stmts:
                self.steps += 1
                if self.steps > self.max_steps:
                    self.count_step()
                r = ex[type(stmt)](stmt, scope)
                if r is not None:
                    return r
        except LuaError as exc:
            if exc.line is None:
                exc.line = stmt.line
            raise
        return None

    def _ex_local(self, node: ast.Local, scope: Scope) -> None:
        values = self.eval_list(node.exprs, scope)
        vars_ = scope.vars
        for i, name in enumerate(node.names):
            vars_[name] = values[i] if i < len(values) else None

    def _ex_local_function(self, node: ast.LocalFunction, scope: Scope) -> None:
        scope.vars[node.name] = LuaFunction(node.func, scope)

    def _assign(self, target: ast.Node, value: Any, scope: Scope) -> None:
        if type(target) is ast.Name:
            name = target.name
            s: Scope | None = scope
            while s is not None:
                if name in s.vars:
                    s.vars[name] = value
                    return
                s = s.parent
            self.globals.set(name, value)
            return
        assert isinstance(target, ast.Index)
        obj = self.eval(target.obj, scope)
        key = self.eval(target.key, scope)
        self.setindex(obj, key, value, target, scope)

    def _ex_assign(self, node: ast.Assign, scope: Scope) -> None:
        targets = node.targets
        if len(targets) == 1 and len(node.exprs) == 1:
            value = self.eval(node.exprs[0], scope)
            self._assign(targets[0], value, scope)
            return
        values = self.eval_list(node.exprs, scope)
        for i, target in enumerate(targets):
            self._assign(target, values[i] if i < len(values) else None, scope)

    def _ex_callstat(self, node: ast.CallStat, scope: Scope) -> None:
        self.eval_call(node.call, scope)

    def _ex_do(self, node: ast.Do, scope: Scope) -> Any:
        return self.exec_block(node.body, Scope(scope))

    def _ex_while(self, node: ast.While, scope: Scope) -> Any:
        while truthy(self.eval(node.cond, scope)):
            self.count_step()
            r = self.exec_block(node.body, Scope(scope))
            if r is not None:
                return None if r is _BREAK else r
        return None

    def _ex_repeat(self, node: ast.Repeat, scope: Scope) -> Any:
        while True:
            self.count_step()
            inner = Scope(scope)
            r = self.exec_block(node.body, inner)
            if r is not None:
                return None if r is _BREAK else r
            if truthy(self.eval(node.cond, inner)):
                return None

    def _ex_if(self, node: ast.If, scope: Scope) -> Any:
        for cond, block in node.arms:
            if truthy(self.eval(cond, scope)):
                return self.exec_block(block, Scope(scope))
        if node.orelse is not None:
            return self.exec_block(node.orelse, Scope(scope))
        return None

    def _ex_numeric_for(self, node: ast.NumericFor, scope: Scope) -> Any:
        start = to_number(self.eval(node.start, scope))
        if start is None:
            raise LuaError("`for' initial value must be a number", node.line)
        stop = to_number(self.eval(node.stop, scope))
        if stop is None:
            raise LuaError("`for' limit must be a number", node.line)
        step = 1.0
        if node.step is not None:
            s = to_number(self.eval(node.step, scope))
            if s is None:
                raise LuaError("`for' step must be a number", node.line)
            step = s
        i = start
        var = node.var
        body = node.body
        while (i <= stop) if step > 0 else (i >= stop):
            self.count_step()
            inner = Scope(scope)
            inner.vars[var] = i
            r = self.exec_block(body, inner)
            if r is not None:
                return None if r is _BREAK else r
            i += step
        return None

    def _ex_generic_for(self, node: ast.GenericFor, scope: Scope) -> Any:
        values = self.eval_list(node.exprs, scope)
        values += [None] * (3 - len(values))
        f, state, control = values[0], values[1], values[2]
        names = node.names
        body = node.body
        if f is self._next_builtin and type(state) is LuaTable:
            # pairs(t): iterate a snapshot, skipping entries cleared meanwhile.
            for k, _ in state.items():
                v = state.get(k)
                if v is None:
                    continue
                self.count_step()
                r = self._for_body(names, [k, v], body, scope)
                if r is not None:
                    return None if r is _BREAK else r
            return None
        if f is self._ipairs_iter and type(state) is LuaTable:
            i = 1
            while True:
                v = state.get(float(i))
                if v is None:
                    return None
                self.count_step()
                r = self._for_body(names, [float(i), v], body, scope)
                if r is not None:
                    return None if r is _BREAK else r
                i += 1
        while True:
            self.count_step()
            results = self.call(f, [state, control], node)
            first = results[0] if results else None
            if first is None:
                return None
            control = first
            r = self._for_body(names, results, body, scope)
            if r is not None:
                return None if r is _BREAK else r

    def _for_body(self, names: list[str], values: list[Any], body: ast.Block, scope: Scope) -> Any:
        inner = Scope(scope)
        for i, name in enumerate(names):
            inner.vars[name] = values[i] if i < len(values) else None
        return self.exec_block(body, inner)

    def _ex_return(self, node: ast.Return, scope: Scope) -> list[Any]:
        return self.eval_list(node.exprs, scope)

    # -- expressions --------------------------------------------------------------------------
    def eval(self, node: ast.Node, scope: Scope) -> Any:
        t = type(node)
        if t is ast.Name:
            name = node.name  # type: ignore[attr-defined]
            s: Scope | None = scope
            while s is not None:
                v = s.vars
                if name in v:
                    return v[name]
                s = s.parent
            return self.globals.get(name)
        if t is ast.Number:
            return node.value  # type: ignore[attr-defined]
        return self._ev[t](node, scope)

    def eval_list(self, exprs: list[ast.Node], scope: Scope) -> list[Any]:
        if not exprs:
            return []
        out = [self.eval(e, scope) for e in exprs[:-1]]
        last = exprs[-1]
        tl = type(last)
        if tl is ast.Call or tl is ast.MethodCall:
            out.extend(self.eval_call(last, scope))
        elif tl is ast.Vararg:
            out.extend(self._varargs(scope))
        else:
            out.append(self.eval(last, scope))
        return out

    def _varargs(self, scope: Scope) -> tuple[Any, ...]:
        s: Scope | None = scope
        while s is not None:
            if "..." in s.vars:
                return s.vars["..."]  # type: ignore[no-any-return]
            s = s.parent
        return ()

    def _ev_vararg(self, node: ast.Vararg, scope: Scope) -> Any:
        values = self._varargs(scope)
        return values[0] if values else None

    def _ev_name(self, node: ast.Name, scope: Scope) -> Any:
        return self.eval(node, scope)

    def _is_local(self, name: str, scope: Scope | None) -> bool:
        while scope is not None:
            if name in scope.vars:
                return True
            scope = scope.parent
        return False

    def describe(self, node: ast.Node | None, scope: Scope | None) -> str:
        """How Lua names an expression in error messages (``global `x'``, ``field `y'``)."""
        if isinstance(node, ast.Name):
            kind = "local" if self._is_local(node.name, scope) else "global"
            return f"{kind} `{node.name}'"
        if isinstance(node, ast.Index) and isinstance(node.key, ast.String):
            return f"field `{node.key.value}'"
        if isinstance(node, ast.MethodCall):
            return f"method `{node.name}'"
        return ""

    def _type_error(
        self, what: str, node: ast.Node | None, value: Any, scope: Scope | None
    ) -> LuaError:
        desc = self.describe(node, scope)
        line = node.line if node is not None else None
        if desc:
            return LuaError(f"attempt to {what} {desc} (a {lua_type(value)} value)", line)
        return LuaError(f"attempt to {what} a {lua_type(value)} value", line)

    def index(
        self, obj: Any, key: Any, node: ast.Node | None = None, scope: Scope | None = None
    ) -> Any:
        t = type(obj)
        if t is LuaTable:
            return obj.get(key)
        if isinstance(obj, TspObject):
            return obj.tsp_get(key)
        if t is str:
            return self._string_lib.get(key)
        raise self._type_error(
            "index", node.obj if isinstance(node, ast.Index) else node, obj, scope
        )

    def setindex(
        self,
        obj: Any,
        key: Any,
        value: Any,
        node: ast.Node | None = None,
        scope: Scope | None = None,
    ) -> None:
        t = type(obj)
        if t is LuaTable:
            obj.set(key, value)
            return
        if isinstance(obj, TspObject):
            obj.tsp_set(key, value)
            return
        raise self._type_error(
            "index", node.obj if isinstance(node, ast.Index) else node, obj, scope
        )

    def _ev_index(self, node: ast.Index, scope: Scope) -> Any:
        obj = self.eval(node.obj, scope)
        if type(obj) is LuaTable:
            return obj.get(self.eval(node.key, scope))
        return self.index(obj, self.eval(node.key, scope), node, scope)

    def _ev_call1(self, node: ast.Node, scope: Scope) -> Any:
        results = self.eval_call(node, scope)
        return results[0] if results else None

    def eval_call(self, node: ast.Node, scope: Scope) -> list[Any]:
        if type(node) is ast.MethodCall:
            obj = self.eval(node.obj, scope)
            fn = self.index(obj, node.name, node, scope)
            if fn is None:
                raise self._type_error("call", node, fn, scope)
            args = [obj, *self.eval_list(node.args, scope)]
            return self.call(fn, args, node, node, scope)
        assert isinstance(node, ast.Call)
        fn = self.eval(node.func, scope)
        args = self.eval_list(node.args, scope)
        return self.call(fn, args, node, node.func, scope)

    def call(
        self,
        fn: Any,
        args: list[Any],
        node: ast.Node | None,
        fnode: ast.Node | None = None,
        scope: Scope | None = None,
    ) -> list[Any]:
        t = type(fn)
        if t is LuaFunction:
            return self._call_lua(fn, args)
        if t is Builtin:
            try:
                r = fn.fn(*args)
            except LuaError as exc:
                if exc.line is None and node is not None:
                    exc.line = node.line
                raise
            except TspChunkError:
                raise
            except RecursionError:
                raise
            except (
                TypeError,
                ValueError,
                OverflowError,
                ZeroDivisionError,
                IndexError,
                KeyError,
            ) as exc:
                raise LuaError(
                    f"bad argument to `{fn.name}' ({exc})", node.line if node else None
                ) from None
            if r is None:
                return []
            if type(r) is tuple:
                return [float(v) if type(v) is int else v for v in r]
            if type(r) is int:
                return [float(r)]
            return [r]
        callable_obj = getattr(fn, "tsp_call", None)
        if callable_obj is not None:
            return self.call(callable_obj, args, node, fnode, scope)
        raise self._type_error("call", fnode, fn, scope)

    def _call_lua(self, fn: LuaFunction, args: list[Any]) -> list[Any]:
        self.depth += 1
        try:
            if self.depth > self.max_call_depth:
                raise LuaError(f"stack overflow (more than {self.max_call_depth} nested calls)")
            f = fn.node
            scope = Scope(fn.closure)
            vars_ = scope.vars
            params = f.params
            n = len(args)
            for i, p in enumerate(params):
                vars_[p] = args[i] if i < n else None
            vars_["..."] = tuple(args[len(params) :]) if f.is_vararg else ()
            r = self.exec_block(f.body, scope)
            if r is None or r is _BREAK:
                return []
            return r  # type: ignore[no-any-return]
        finally:
            self.depth -= 1

    def _ev_and(self, node: ast.And, scope: Scope) -> Any:
        left = self.eval(node.left, scope)
        return self.eval(node.right, scope) if truthy(left) else left

    def _ev_or(self, node: ast.Or, scope: Scope) -> Any:
        left = self.eval(node.left, scope)
        return left if truthy(left) else self.eval(node.right, scope)

    def _ev_binop(self, node: ast.BinOp, scope: Scope) -> Any:
        op = node.op
        a = self.eval(node.left, scope)
        b = self.eval(node.right, scope)
        ta, tb = type(a), type(b)
        if ta is float and tb is float:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "<":
                return a < b
            if op == "<=":
                return a <= b
            if op == ">":
                return a > b
            if op == ">=":
                return a >= b
            if op == "==":
                return a == b
            if op == "~=":
                return a != b
        if op == "==":
            return lua_eq(a, b)
        if op == "~=":
            return not lua_eq(a, b)
        if op == "..":
            return self._concat(a, b, node, scope)
        if op in ("<", "<=", ">", ">="):
            return self._compare(op, a, b, node)
        x = to_number(a) if ta is not bool else None
        if x is None:
            raise self._type_error("perform arithmetic on", node.left, a, scope)
        y = to_number(b) if tb is not bool else None
        if y is None:
            raise self._type_error("perform arithmetic on", node.right, b, scope)
        return arith(op, x, y)

    def _concat(self, a: Any, b: Any, node: ast.BinOp, scope: Scope) -> str:
        parts = []
        for v, sub in ((a, node.left), (b, node.right)):
            t = type(v)
            if t is str:
                parts.append(v)
            elif t is float or t is int:
                parts.append(fmt_number(float(v)))
            else:
                raise self._type_error("concatenate", sub, v, scope)
        _check_length(len(parts[0]) + len(parts[1]))
        return parts[0] + parts[1]

    @staticmethod
    def _compare(op: str, a: Any, b: Any, node: ast.Node) -> bool:
        ta, tb = lua_type(a), lua_type(b)
        if ta == tb and ta in ("number", "string"):
            if op == "<":
                return bool(a < b)
            if op == "<=":
                return bool(a <= b)
            if op == ">":
                return bool(a > b)
            return bool(a >= b)
        if ta == tb:
            raise LuaError(f"attempt to compare two {ta} values", node.line)
        raise LuaError(f"attempt to compare {ta} with {tb}", node.line)

    def _ev_unop(self, node: ast.UnOp, scope: Scope) -> Any:
        v = self.eval(node.operand, scope)
        op = node.op
        if op == "not":
            return not truthy(v)
        if op == "-":
            x = to_number(v) if type(v) is not bool else None
            if x is None:
                raise self._type_error("perform arithmetic on", node.operand, v, scope)
            return -x
        t = type(v)
        if t is str:
            return float(len(v))
        if t is LuaTable:
            return float(v.length())
        if isinstance(v, TspObject):
            return float(v.tsp_len())
        raise self._type_error("get length of", node.operand, v, scope)

    def _ev_table(self, node: ast.TableCons, scope: Scope) -> LuaTable:
        t = LuaTable()
        i = 1
        items = node.items
        last = len(items) - 1
        for k, (key, value) in enumerate(items):
            if key is None:
                tv = type(value)
                if k == last and (tv is ast.Call or tv is ast.MethodCall or tv is ast.Vararg):
                    for v in self.eval_list([value], scope):
                        t.set(float(i), v)
                        i += 1
                else:
                    t.set(float(i), self.eval(value, scope))
                    i += 1
            else:
                kv = self.eval(key, scope)
                try:
                    t.set(kv, self.eval(value, scope))
                except LuaError as exc:
                    exc.line = key.line
                    raise
        return t

    # -- library ---------------------------------------------------------------------------------
    def _install_library(self) -> None:
        g = self.globals

        def reg(table: LuaTable, name: str, fn: Callable[..., Any], prefix: str = "") -> Builtin:
            b = Builtin(prefix + name, fn)
            table.set(name, b)
            return b

        reg(g, "print", self._print)
        reg(g, "printnumber", self._printnumber)
        reg(g, "printbuffer", self._printbuffer)
        reg(g, "tostring", to_str)
        reg(g, "tonumber", self._tonumber)
        reg(g, "type", self._type)
        self._next_builtin = reg(g, "next", self._next)
        reg(g, "pairs", self._pairs)
        self._ipairs_iter = Builtin("ipairs_iterator", self._ipairs_step)
        reg(g, "ipairs", self._ipairs)
        reg(g, "select", self._select)
        reg(g, "unpack", self._unpack)
        reg(g, "error", self._error)
        reg(g, "assert", self._assert)
        reg(g, "pcall", self._pcall)
        reg(g, "rawget", lambda t, k: _arg_table("rawget", t).get(k))
        reg(g, "rawset", self._rawset)
        reg(g, "rawequal", lambda a, b: lua_eq(a, b))
        reg(g, "collectgarbage", lambda *a: 0.0)
        reg(g, "gcinfo", lambda *a: (0.0, 0.0))
        reg(g, "delay", self._delay)
        reg(g, "waitcomplete", _noop)
        reg(g, "opc", _noop)
        reg(g, "exit", _noop)

        m = LuaTable()
        g.set("math", m)
        fn: Callable[..., Any]
        for name, fn in (
            ("abs", lambda x: abs(_arg_number("abs", x))),
            (
                "floor",
                lambda x: (
                    float(math.floor(_arg_number("floor", x)))
                    if math.isfinite(_arg_number("floor", x))
                    else _arg_number("floor", x)
                ),
            ),
            (
                "ceil",
                lambda x: (
                    float(math.ceil(_arg_number("ceil", x)))
                    if math.isfinite(_arg_number("ceil", x))
                    else _arg_number("ceil", x)
                ),
            ),
            ("sqrt", lambda x: _math_call(math.sqrt, _arg_number("sqrt", x))),
            ("log", lambda x: _math_call(math.log, _arg_number("log", x))),
            ("log10", lambda x: _math_call(math.log10, _arg_number("log10", x))),
            ("exp", lambda x: _math_call(math.exp, _arg_number("exp", x))),
            ("pow", lambda x, y: arith("^", _arg_number("pow", x), _arg_number("pow", y, 2))),
            (
                "mod",
                lambda x, y: (
                    math.fmod(_arg_number("mod", x), _arg_number("mod", y, 2))
                    if _arg_number("mod", y, 2) != 0
                    else math.nan
                ),
            ),
            (
                "fmod",
                lambda x, y: (
                    math.fmod(_arg_number("fmod", x), _arg_number("fmod", y, 2))
                    if _arg_number("fmod", y, 2) != 0
                    else math.nan
                ),
            ),
            ("sin", lambda x: math.sin(_arg_number("sin", x))),
            ("cos", lambda x: math.cos(_arg_number("cos", x))),
            ("tan", lambda x: math.tan(_arg_number("tan", x))),
            ("asin", lambda x: _math_call(math.asin, _arg_number("asin", x))),
            ("acos", lambda x: _math_call(math.acos, _arg_number("acos", x))),
            ("atan", lambda x: math.atan(_arg_number("atan", x))),
            ("atan2", lambda y, x: math.atan2(_arg_number("atan2", y), _arg_number("atan2", x, 2))),
            ("min", self._min),
            ("max", self._max),
            ("random", self._random),
            ("randomseed", lambda x: self.rng.seed(_arg_number("randomseed", x))),
        ):
            reg(m, name, fn, "math.")
        m.set("pi", math.pi)
        m.set("huge", math.inf)

        s = LuaTable()
        g.set("string", s)
        for name, fn in (
            ("format", self._string_format),
            ("len", lambda x: float(len(_arg_str("len", x)))),
            ("sub", self._string_sub),
            ("upper", lambda x: _arg_str("upper", x).upper()),
            ("lower", lambda x: _arg_str("lower", x).lower()),
            ("rep", _string_rep),
            ("byte", self._string_byte),
            (
                "char",
                lambda *cs: "".join(
                    chr(_arg_int("char", c, i + 1) % 256) for i, c in enumerate(cs)
                ),
            ),
        ):
            reg(s, name, fn, "string.")
        self._string_lib = s

        t = LuaTable()
        g.set("table", t)
        for name, fn in (
            ("insert", self._table_insert),
            ("remove", self._table_remove),
            ("getn", lambda x: float(_arg_table("getn", x).length())),
            ("concat", self._table_concat),
            ("sort", self._table_sort),
        ):
            reg(t, name, fn, "table.")

        os_ = LuaTable()
        g.set("os", os_)
        epoch = time.time() - self.now()
        reg(os_, "time", lambda *a: float(int(epoch + self.now())), "os.")
        reg(os_, "clock", lambda: self.now() - self._timer_origin, "os.")

        g.set("format", self.format)
        g.set("errorqueue", self.errorqueue)

        timer = _Namespace("timer")
        timer.method("reset", self._timer_reset)
        measure = _Namespace("timer.measure")
        measure.method("t", lambda: self.now() - self._timer_origin)
        timer.values["measure"] = measure
        g.set("timer", timer)

        beeper = _Namespace("beeper", {"enable": 1.0, "ON": 1.0, "OFF": 0.0})
        beeper.method("beep", lambda *a: None)
        g.set("beeper", beeper)

    # -- library functions ------------------------------------------------------------------------
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

    @staticmethod
    def _rawset(t: Any = None, k: Any = None, v: Any = None) -> Any:
        _arg_table("rawset", t).set(k, v)
        return t

    def _tonumber(self, v: Any = None, base: Any = None) -> float | None:
        if base is None:
            return to_number(v)
        b = _arg_int("tonumber", base, 2)
        if not 2 <= b <= 36:
            raise LuaError("bad argument #2 to `tonumber' (base out of range)")
        return str_to_number(_arg_str("tonumber", v), b)

    def _type(self, *args: Any) -> str:
        if not args:
            raise LuaError("bad argument #1 to `type' (value expected)")
        return lua_type(args[0])

    def _next(self, t: Any = None, k: Any = None) -> tuple[Any, Any]:
        return _arg_table("next", t).next(k)

    def _pairs(self, t: Any = None) -> tuple[Any, Any, Any]:
        _arg_table("pairs", t)
        return self._next_builtin, t, None

    def _ipairs_step(self, t: Any, i: Any) -> tuple[Any, Any] | None:
        n = int(i) + 1
        v = self.index(t, float(n))
        if v is None:
            return None
        return float(n), v

    def _ipairs(self, t: Any = None) -> tuple[Any, Any, Any]:
        if type(t) is not LuaTable and not isinstance(t, TspObject):
            raise LuaError(f"bad argument #1 to `ipairs' (table expected, got {lua_type(t)})")
        return self._ipairs_iter, t, 0.0

    def _select(self, n: Any, *args: Any) -> Any:
        if n == "#":
            return float(len(args))
        i = _arg_int("select", n)
        if i < 1:
            raise LuaError("bad argument #1 to `select' (index out of range)")
        return tuple(args[i - 1 :])

    def _unpack(self, t: Any, i: Any = None, j: Any = None) -> tuple[Any, ...]:
        tab = _arg_table("unpack", t)
        lo = 1 if i is None else _arg_int("unpack", i, 2)
        hi = tab.length() if j is None else _arg_int("unpack", j, 3)
        if hi - lo > 100_000:
            raise LuaError("too many results to unpack")
        return tuple(tab.get(float(k)) for k in range(lo, hi + 1))

    def _error(self, message: Any = None, level: Any = None) -> None:
        raise LuaError(to_str(message) if message is not None else "nil", value=message)

    def _assert(self, v: Any = None, message: Any = None, *rest: Any) -> tuple[Any, ...]:
        if not truthy(v):
            raise LuaError(to_str(message) if message is not None else "assertion failed!")
        return (v, message, *rest)

    def _pcall(self, fn: Any = None, *args: Any) -> tuple[Any, ...]:
        depth = self.depth
        try:
            results = self.call(fn, list(args), None)
        except LuaError as exc:
            self.depth = depth
            if exc.message.startswith("step budget"):
                raise
            msg = (
                exc.value
                if not isinstance(exc.value, str)
                else (f'[string "chunk"]:{exc.line}: {exc.message}' if exc.line else exc.message)
            )
            return False, msg
        return (True, *results)

    def _delay(self, seconds: Any = None) -> None:
        s = _arg_number("delay", seconds)
        if s < 0:
            raise LuaError(
                f"bad argument #1 to `delay' (delay must be >= 0 s, got {fmt_number(s)})"
            )
        self.sleep(s)

    def _timer_reset(self) -> None:
        self._timer_origin = self.now()

    def _min(self, *args: Any) -> float:
        if not args:
            raise LuaError("bad argument #1 to `min' (number expected, got no value)")
        return min(_arg_number("min", a, i + 1) for i, a in enumerate(args))

    def _max(self, *args: Any) -> float:
        if not args:
            raise LuaError("bad argument #1 to `max' (number expected, got no value)")
        return max(_arg_number("max", a, i + 1) for i, a in enumerate(args))

    def _random(self, m: Any = None, n: Any = None) -> float:
        if m is None:
            return self.rng.random()
        lo, hi = (
            (1, _arg_int("random", m))
            if n is None
            else (_arg_int("random", m), _arg_int("random", n, 2))
        )
        if lo > hi:
            raise LuaError("bad argument to `random' (interval is empty)")
        return float(self.rng.randint(lo, hi))

    def _string_sub(self, s: Any, i: Any = 1.0, j: Any = -1.0) -> str:
        text = _arg_str("sub", s)
        n = len(text)
        a = _arg_int("sub", i, 2)
        b = _arg_int("sub", -1.0 if j is None else j, 3)
        if a < 0:
            a = max(n + a + 1, 1)
        elif a == 0:
            a = 1
        if b < 0:
            b = n + b + 1
        elif b > n:
            b = n
        return text[a - 1 : b] if a <= b else ""

    def _string_byte(self, s: Any, i: Any = 1.0) -> float | None:
        text = _arg_str("byte", s)
        k = _arg_int("byte", i, 2)
        if k < 0:
            k = len(text) + k + 1
        if 1 <= k <= len(text):
            return float(ord(text[k - 1]))
        return None

    def _string_format(self, fmt: Any = None, *args: Any) -> str:
        text = _arg_str("format", fmt)
        out: list[str] = []
        i, n, argi = 0, len(text), 0
        while i < n:
            c = text[i]
            if c != "%":
                out.append(c)
                i += 1
                continue
            i += 1
            if i < n and text[i] == "%":
                out.append("%")
                i += 1
                continue
            j = i
            while j < n and text[j] in "-+ #0":
                j += 1
            digits = 0
            while j < n and text[j].isdigit():
                j, digits = j + 1, digits + 1
            if j < n and text[j] == ".":
                j += 1
                precision = 0
                while j < n and text[j].isdigit():
                    j, precision = j + 1, precision + 1
                digits = max(digits, precision)
            if digits > 2:
                raise LuaError("invalid format (width or precision too long)")
            if j >= n:
                raise LuaError("invalid option to `format'")
            conv = text[j]
            spec = "%" + text[i:j]
            i = j + 1
            if argi >= len(args):
                raise LuaError(f"bad argument #{argi + 2} to `format' (no value)")
            arg = args[argi]
            argi += 1
            if conv in "di":
                out.append((spec + "d") % _arg_int("format", arg, argi + 1))
            elif conv in "ouxXc":
                v = _arg_int("format", arg, argi + 1)
                if conv == "c":
                    out.append(chr(v % 256))
                else:
                    out.append((spec + ("o" if conv == "o" else "d" if conv == "u" else conv)) % v)
            elif conv in "eEfgG":
                out.append((spec + conv) % _arg_number("format", arg, argi + 1))
            elif conv == "s":
                out.append((spec + "s") % to_str(arg))
            elif conv == "q":
                q = (
                    _arg_str("format", arg, argi + 1)
                    .replace("\\", "\\\\")
                    .replace('"', '\\"')
                    .replace("\n", "\\n")
                )
                out.append(f'"{q}"')
            else:
                raise LuaError(f"invalid option `%{conv}' to `format'")
        return "".join(out)

    def _table_insert(self, t: Any = None, *args: Any) -> None:
        tab = _arg_table("insert", t)
        if len(args) == 1:
            tab.set(float(tab.length() + 1), args[0])
            return
        if len(args) != 2:
            raise LuaError("wrong number of arguments to `insert'")
        pos = _arg_int("insert", args[0], 2)
        n = tab.length()
        for k in range(n, pos - 1, -1):
            tab.set(float(k + 1), tab.get(float(k)))
        tab.set(float(pos), args[1])

    def _table_remove(self, t: Any = None, pos: Any = None) -> Any:
        tab = _arg_table("remove", t)
        n = tab.length()
        if n == 0:
            return None
        p = n if pos is None else _arg_int("remove", pos, 2)
        value = tab.get(float(p))
        for k in range(p, n):
            tab.set(float(k), tab.get(float(k + 1)))
        tab.set(float(n), None)
        return value

    def _table_concat(self, t: Any = None, sep: Any = "", i: Any = None, j: Any = None) -> str:
        tab = _arg_table("concat", t)
        lo = 1 if i is None else _arg_int("concat", i, 3)
        hi = tab.length() if j is None else _arg_int("concat", j, 4)
        parts = []
        for k in range(lo, hi + 1):
            v = tab.get(float(k))
            if type(v) is str:
                parts.append(v)
            elif type(v) in (float, int):
                parts.append(fmt_number(float(v)))
            else:
                raise LuaError(
                    f"bad argument to `concat' (table contains a {lua_type(v)} at index {k})"
                )
        separator = _arg_str("concat", "" if sep is None else sep, 2)
        _check_length(sum(map(len, parts)) + len(separator) * max(0, len(parts) - 1))
        return separator.join(parts)

    def _table_sort(self, t: Any = None, comp: Any = None) -> None:
        tab = _arg_table("sort", t)
        if comp is None:

            def less(a: Any, b: Any) -> int:
                if self._compare("<", a, b, ast.Nil(0)):
                    return -1
                return 1 if self._compare("<", b, a, ast.Nil(0)) else 0
        else:

            def less(a: Any, b: Any) -> int:
                if truthy(next(iter(self.call(comp, [a, b], None)), None)):
                    return -1
                return 1 if truthy(next(iter(self.call(comp, [b, a], None)), None)) else 0

        tab.arr.sort(key=functools.cmp_to_key(less))


def arith(op: str, x: float, y: float) -> float:
    """Lua arithmetic on two numbers (IEEE semantics: x/0 is +-inf or nan, never an error)."""
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        if y == 0:
            if x == 0 or x != x:
                return math.nan
            return math.copysign(math.inf, x) * math.copysign(1.0, y)
        return x / y
    if op == "%":
        if y == 0 or math.isinf(x) or x != x or y != y:
            return math.nan
        if math.isinf(y):
            return x if (x >= 0) == (y > 0) else y
        return x - math.floor(x / y) * y
    if op == "^":
        try:
            return math.pow(x, y)
        except OverflowError:
            return math.inf if x > 0 or float(y).is_integer() and int(y) % 2 == 0 else -math.inf
        except ValueError:
            return math.nan
    raise LuaError(f"unknown operator {op}")


def _math_call(fn: Callable[[float], float], x: float) -> float:
    try:
        return fn(x)
    except OverflowError:
        return math.inf
    except ValueError:
        if x == 0 and fn in (math.log, math.log10):
            return -math.inf
        return math.nan
