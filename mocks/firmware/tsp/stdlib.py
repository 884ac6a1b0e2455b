"""The Lua standard library of the TSP interpreter: base functions (``tostring``,
``tonumber``, ``type``, ``pairs``, ``ipairs``, ``next``, ``select``, ``unpack``, ``error``,
``assert``, ``pcall``, ``raw*``), ``math``, ``string``, ``table`` and ``os``, as Lua 5.0
on the 2600B firmware has them (see :mod:`nvmlab.mocks.firmware.tsp` for the subset).
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import parser as ast
from .values import (
    Builtin,
    LuaError,
    LuaTable,
    TspObject,
    _arg_int,
    _arg_number,
    _arg_str,
    _arg_table,
    _check_length,
    _math_call,
    _string_rep,
    arith,
    fmt_number,
    lua_eq,
    lua_type,
    register,
    str_to_number,
    to_number,
    to_str,
    truthy,
)


class StandardLibrary:
    """The standard library's Lua functions, mixed into
    :class:`~nvmlab.mocks.firmware.tsp.interpreter.Interpreter`."""

    globals: LuaTable
    rng: random.Random
    depth: int
    now: Callable[[], float]
    _timer_origin: float
    _next_builtin: Builtin
    _ipairs_iter: Builtin
    _string_lib: LuaTable

    if TYPE_CHECKING:

        def call(
            self,
            fn: Any,
            args: list[Any],
            node: ast.Node | None,
            fnode: ast.Node | None = None,
            scope: Any = None,
        ) -> list[Any]: ...

        def index(
            self, obj: Any, key: Any, node: ast.Node | None = None, scope: Any = None
        ) -> Any: ...

        @staticmethod
        def _compare(op: str, a: Any, b: Any, node: ast.Node) -> bool: ...

    def _install_standard_library(self) -> None:
        """Register Lua's base functions and the ``math``, ``string``, ``table`` and ``os``
        libraries in the global table."""
        g = self.globals
        reg = register
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
