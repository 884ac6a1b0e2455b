"""A Lua-subset interpreter for emulated TSP (Test Script Processor) instruments.

The Keithley 2600B firmware runs Lua; instrument commands are Lua chunks. This package is
a real lexer (:mod:`.lexer`), a recursive-descent parser (:mod:`.parser`), the value model
(:mod:`.values`), the tree-walking evaluator (:mod:`.interpreter`), Lua's standard library
(:mod:`.stdlib`) and the instrument-independent TSP library (:mod:`.instrument`:
``print``, ``printbuffer``, ``format``, ``errorqueue``, ``delay``, ``timer`` ...). The instrument
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
``max_steps`` statements / loop iterations (default :data:`DEFAULT_MAX_STEPS`; the real instrument would hang on an infinite loop, the emulator reports
-286 ``... step budget of N exceeded``) and nest at most ``max_call_depth`` Lua calls
(default :data:`DEFAULT_MAX_CALL_DEPTH`, then ``stack overflow``). No string may grow
beyond :data:`MAX_STRING_CHARS` characters (``..``, ``string.rep``, ``table.concat``):
the instrument's Lua heap is a few megabytes, so a longer one is Lua's ``not enough
memory`` error. ``string.format`` widths and precisions have at most two digits, as in
Lua 5.0 (``invalid format (width or precision too long)``).
"""

from __future__ import annotations

from .instrument import ErrorQueue, FormatSettings, Namespace
from .interpreter import Interpreter
from .lexer import LuaSyntaxError
from .values import (
    DEFAULT_MAX_CALL_DEPTH,
    DEFAULT_MAX_STEPS,
    MAX_STRING_CHARS,
    QUEUE_OVERFLOW,
    RUNTIME_ERROR,
    SYNTAX_ERROR,
    Builtin,
    LuaError,
    LuaFunction,
    LuaTable,
    Scope,
    TspChunkError,
    TspObject,
    arith,
    fmt_number,
    lua_eq,
    lua_type,
    str_to_number,
    to_number,
    to_str,
    truthy,
)

#: The old private name of :class:`Namespace`.
_Namespace = Namespace

__all__ = [
    "Builtin",
    "DEFAULT_MAX_CALL_DEPTH",
    "DEFAULT_MAX_STEPS",
    "ErrorQueue",
    "FormatSettings",
    "Interpreter",
    "LuaError",
    "LuaFunction",
    "LuaSyntaxError",
    "LuaTable",
    "MAX_STRING_CHARS",
    "Namespace",
    "QUEUE_OVERFLOW",
    "RUNTIME_ERROR",
    "SYNTAX_ERROR",
    "Scope",
    "TspChunkError",
    "TspObject",
    "arith",
    "fmt_number",
    "lua_eq",
    "lua_type",
    "str_to_number",
    "to_number",
    "to_str",
    "truthy",
]
