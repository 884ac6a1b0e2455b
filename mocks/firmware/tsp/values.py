"""TSP values: the Lua value model, errors, conversions and arithmetic.

Numbers are Python floats (IEEE doubles, as Lua 5.0 on the instrument), strings are
``str``, ``nil`` is ``None``; :class:`LuaTable`, :class:`LuaFunction` (a closure),
:class:`Builtin` (a Python function callable from Lua) and :class:`TspObject` (an
instrument object that behaves as a table) complete the set. The supported subset, the
error codes and the resource limits are described in :mod:`nvmlab.mocks.firmware.tsp`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from . import parser as ast

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


def register(table: LuaTable, name: str, fn: Callable[..., Any], prefix: str = "") -> Builtin:
    """Put Python function ``fn`` into ``table`` as Lua-callable ``name`` (named
    ``prefix + name`` in error messages)."""
    b = Builtin(prefix + name, fn)
    table.set(name, b)
    return b
