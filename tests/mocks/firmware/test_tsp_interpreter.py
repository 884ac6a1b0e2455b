"""The TSP Lua-subset interpreter on its own: semantics a test script relies on.

Each check runs a chunk as the instrument would and compares what ``print`` sends back
(numbers in the instrument's ``%.5e`` form unless ``tostring`` is used).
"""

from __future__ import annotations

import struct

import pytest

from nvmlab.mocks.firmware.tsp import (
    DEFAULT_MAX_STEPS,
    MAX_STRING_CHARS,
    Interpreter,
    TspChunkError,
)


class Lua:
    """An interpreter plus its output, as the instrument's command interface sees it."""

    def __init__(self, max_steps: int = 200_000) -> None:
        self.output: list[str] = []
        self.slept: list[float] = []
        self.t = 0.0
        self.interp = Interpreter(
            output=self.output.append, sleep=self._sleep, now=lambda: self.t, max_steps=max_steps
        )

    def _sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s

    def run(self, src: str) -> list[str]:
        self.output.clear()
        self.interp.run(src)
        return list(self.output)

    def one(self, src: str) -> str:
        out = self.run(src)
        assert len(out) == 1, out
        return out[0]

    def error(self, src: str) -> tuple[int, str]:
        self.output.clear()
        with pytest.raises(TspChunkError) as info:
            self.interp.run(src)
        return info.value.code, info.value.message


@pytest.fixture
def lua() -> Lua:
    return Lua()


def test_numbers_print_like_the_instrument_and_tostring_like_lua(lua: Lua) -> None:
    assert lua.one("print(10)") == "1.00000e+01"
    assert lua.one("print(tostring(10), tostring(0.1), tostring(1e20))") == "10\t0.1\t1e+20"
    assert lua.one("print(tostring(0x1F), tostring(1e-3), tostring(.5))") == "31\t0.001\t0.5"
    assert lua.one("format.asciiprecision = 10 print(2.54)") == "2.540000000e+00"
    assert lua.one("print(nil, true, false, 'text')") == "nil\ttrue\tfalse\ttext"


def test_arithmetic_and_precedence(lua: Lua) -> None:
    cases = {
        "1 + 2 * 3": "7",
        "(1 + 2) * 3": "9",
        "2 ^ 3 ^ 2": "512",
        "-2 ^ 2": "-4",
        "7 % 3": "1",
        "-7 % 3": "2",
        "7 % -3": "-2",
        "10 / 4": "2.5",
        "1 / 0": "inf",
        "-1 / 0": "-inf",
        "2 - -3": "5",
        "'10' + 5": "15",
        "1 .. 2": "12",
        "'a' .. 'b' .. 1.5": "ab1.5",
        "1 + 2 .. ''": "3",
        "#'hello' + #{1, 2, 3}": "8",
        "1 < 2 and 2 <= 2 and 3 > 2 and 3 >= 3 and 1 ~= 2 and 1 == 1": "true",
        "'a' < 'b'": "true",
        "1 == '1'": "false",
    }
    for expr, expected in cases.items():
        assert lua.one(f"print(tostring({expr}))") == expected, expr


def test_truthiness_and_short_circuit(lua: Lua) -> None:
    assert lua.one(
        "print(nil and 1, false or 'x', 1 and 2, not nil, not 0, 0 and 'zero is true')"
    ) == ("nil\tx\t2.00000e+00\ttrue\tfalse\tzero is true")
    # The right operand is not evaluated when the left decides (no error from nil.x).
    assert lua.one("t = nil print(t and t.x, t == nil or t.x)") == "nil\ttrue"


def test_locals_globals_and_multiple_assignment(lua: Lua) -> None:
    out = lua.run(
        """
        a, b, c = 1, 2
        print(a, b, c)
        a, b = b, a
        print(a, b)
        local x = 10
        do local x = 20 print(x) end
        print(x)
        function f() return 1, 2, 3 end
        local p, q, r, s = f()
        print(p, q, r, s)
        local t = {f()}
        print(#t, #{f(), f()}, (f()))
        """
    )
    assert out == [
        "1.00000e+00\t2.00000e+00\tnil",
        "2.00000e+00\t1.00000e+00",
        "2.00000e+01",
        "1.00000e+01",
        "1.00000e+00\t2.00000e+00\t3.00000e+00\tnil",
        "3.00000e+00\t4.00000e+00\t1.00000e+00",
    ]
    # A local does not leak into the globals.
    assert lua.one("print(x)") == "nil"


def test_functions_closures_recursion_and_varargs(lua: Lua) -> None:
    out = lua.run(
        """
        local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
        print(fib(15))
        function counter()
          local n = 0
          return function() n = n + 1 return n end
        end
        local c1, c2 = counter(), counter()
        c1() c1()
        print(c1(), c2())
        local function count(...) return select('#', ...), ... end
        print(count('a', nil, 3))
        local obj = {v = 5}
        function obj:get(k) return self.v * k end
        print(obj:get(2))
        local adders = {}
        for i = 1, 3 do adders[i] = function(x) return x + i end end
        print(adders[1](10), adders[3](10))
        """
    )
    assert out == [
        "6.10000e+02",
        "3.00000e+00\t1.00000e+00",
        "3.00000e+00\ta\tnil\t3.00000e+00",
        "1.00000e+01",
        "1.10000e+01\t1.30000e+01",
    ]


def test_loops_and_branches(lua: Lua) -> None:
    out = lua.run(
        """
        s = 0
        for i = 1, 10 do s = s + i end
        for i = 10, 1, -3 do s = s + 1000 * i end
        print(tostring(s))
        local n = 0
        while true do n = n + 1 if n >= 5 then break end end
        repeat local k = n n = n - 1 until k <= 2
        print(tostring(n))
        for _, v in ipairs({'a', 'b', 'c'}) do io_dummy = v end
        print(io_dummy)
        local keys = {}
        for k, v in pairs({x = 1, y = 2}) do keys[#keys + 1] = k .. '=' .. v end
        table.sort(keys)
        print(table.concat(keys, ','))
        for i = 1, 3 do
          if i == 1 then print('one') elseif i == 2 then print('two') else print('many') end
        end
        for i = 1, 0 do print('never') end
        """
    )
    assert out == ["22055", "1", "c", "x=1,y=2", "one", "two", "many"]


def test_tables_nested_and_length(lua: Lua) -> None:
    out = lua.run(
        """
        local t = {1, 2, 3, name = 'dev', [10] = 'ten', sub = {x = {y = 42}}}
        print(#t, t.name, t[10], t.sub.x.y, t['name'])
        t[#t + 1] = 4
        table.insert(t, 5)
        table.insert(t, 1, 0)
        print(table.concat(t, ' '))
        print(table.remove(t), table.getn(t))
        t.name = nil
        print(t.name)
        local m = {}
        m[1.0] = 'a' m[true] = 'b'
        print(m[1], m[true])
        """
    )
    assert out == [
        "3.00000e+00\tdev\tten\t4.20000e+01\tdev",
        "0 1 2 3 4 5",
        "5.00000e+00\t5.00000e+00",
        "nil",
        "a\tb",
    ]


def test_string_library(lua: Lua) -> None:
    out = lua.run(
        r"""
        print(string.format('%5.2f|%d|%s|%x|%e|%g', 3.14159, 42, 'hi', 255, 1234.5, 0.0001))
        print(string.len('abc'), string.sub('hello', 2, -2), string.upper('ab'), ('xy'):upper())
        print('tab\there', "q\"uote", 'new\\line', [[long
string]], '\65\066')
        print(tostring(tonumber('0x10')), tostring(tonumber(' 12.5 ')), tonumber('abc'), tonumber('ff', 16))
        print(type(print), type(nil), type({}), type('s'), type(2), type(true))
        """
    )
    assert out == [
        " 3.14|42|hi|ff|1.234500e+03|0.0001",
        "3.00000e+00\tell\tAB\tXY",
        'tab\there\tq"uote\tnew\\line\tlong\nstring\tAB',
        "16\t12.5\tnil\t2.55000e+02",
        "function\tnil\ttable\tstring\tnumber\tboolean",
    ]


def test_comments_are_ignored(lua: Lua) -> None:
    out = lua.run(
        """
        -- a line comment
        x = 1 -- trailing
        --[[ a block
        comment print('no') ]]
        --[==[ another ]==]
        print(tostring(x))
        """
    )
    assert out == ["1"]


def test_math_library(lua: Lua) -> None:
    assert (
        lua.one(
            "print(math.abs(-2), math.floor(3.7), math.ceil(3.2), math.sqrt(16), math.max(1, 5, 3), math.min(4, 2))"
        )
        == "2.00000e+00\t3.00000e+00\t4.00000e+00\t4.00000e+00\t5.00000e+00\t2.00000e+00"
    )
    assert lua.one(
        "print(tostring(math.log10(1000)), tostring(math.exp(0)), tostring(math.pi))"
    ) == ("3\t1\t3.1415926535898")
    r = float(lua.one("math.randomseed(3) print(math.random())"))
    assert 0.0 <= r < 1.0
    assert lua.one("print(math.huge, -math.huge)") == "inf\t-inf"


def test_syntax_errors_name_the_line(lua: Lua) -> None:
    code, msg = lua.error("x = = 1")
    assert code == -285
    assert msg == "TSP Syntax error at line 1: unexpected symbol near `='"
    code, msg = lua.error("for i = 1, 3 do\n  print(i)\n")
    assert code == -285
    assert msg.startswith("TSP Syntax error at line 3: `end' expected (to close `for' at line 1)")
    code, msg = lua.error("print('unfinished)")
    assert (code, msg.split(":")[0]) == (-285, "TSP Syntax error at line 1")
    assert "unfinished string" in msg
    assert lua.error("break")[1] == "TSP Syntax error at line 1: no loop to break near `break'"


def test_runtime_errors_name_the_line_and_the_culprit(lua: Lua) -> None:
    code, msg = lua.error("a = 1\nb = 2\nc = smub.source.levelv")
    assert code == -286
    assert msg == "TSP Runtime error at line 3: attempt to index global `smub' (a nil value)"
    assert lua.error("undefined_function(1)")[1] == (
        "TSP Runtime error at line 1: attempt to call global `undefined_function' (a nil value)"
    )
    assert lua.error("local t = {}\nprint(t.x.y)")[1] == (
        "TSP Runtime error at line 2: attempt to index field `x' (a nil value)"
    )
    assert (
        lua.error("print(1 < 'a')")[1]
        == "TSP Runtime error at line 1: attempt to compare number with string"
    )
    assert lua.error("error('custom failure')")[1] == "TSP Runtime error at line 1: custom failure"
    # Output printed before the error stays printed, as on the instrument.
    assert lua.output == []
    with pytest.raises(TspChunkError):
        lua.run("print('before') x = nil + 1")
    assert lua.output == ["before"]


def test_pcall_catches_errors(lua: Lua) -> None:
    assert (
        lua.one("print(pcall(function() error('boom') end))") == 'false\t[string "chunk"]:1: boom'
    )
    assert lua.one("print(pcall(function(a) return a * 2 end, 21))") == "true\t4.20000e+01"


def test_step_budget_stops_infinite_loops() -> None:
    lua = Lua(max_steps=10_000)
    code, msg = lua.error("while true do end")
    assert code == -286
    assert "step budget of 10000 statements exceeded" in msg
    code, msg = lua.error("repeat x = 1 until false")
    assert "step budget" in msg
    # The budget is per chunk: the next chunk runs normally.
    assert lua.run("for i = 1, 100 do end print('done')") == ["done"]


def test_recursion_is_bounded(lua: Lua) -> None:
    depth = "local function d(n) if n == 0 then return 0 end return 1 + d(n - 1) end\n"
    assert lua.one(depth + "print(d(99))") == "9.90000e+01"
    assert "stack overflow (more than 100 nested calls)" in lua.error(depth + "d(100)")[1]
    code, msg = lua.error("local function r(n) return r(n + 1) + 1 end\nr(1)")
    assert code == -286
    assert "stack overflow" in msg
    code, msg = lua.error("x = " + "(" * 500 + "1" + ")" * 500)
    assert code == -285
    assert "too many syntax levels" in msg


def test_delay_and_timer_use_instrument_time(lua: Lua) -> None:
    out = lua.run("timer.reset() delay(0.25) delay(1e-3) print(timer.measure.t())")
    assert lua.slept == [0.25, 1e-3]
    assert float(out[0]) == pytest.approx(0.251)
    assert lua.error("delay(-1)")[0] == -286


def test_printnumber_and_printbuffer_formats(lua: Lua) -> None:
    assert lua.one("printbuffer(1, 3, {1, 2.5, -3})") == "1.00000e+00, 2.50000e+00, -3.00000e+00"
    assert lua.one("printbuffer(2, 10, {1, 2, 3}, {4, 5, 6})") == (
        "2.00000e+00, 5.00000e+00, 3.00000e+00, 6.00000e+00"
    )
    assert lua.one("printnumber(1, 2)") == "1.00000e+00, 2.00000e+00"
    raw = lua.one(
        "format.data = format.REAL64 format.byteorder = format.BIGENDIAN printnumber(3.14159265)"
    )
    data = raw.encode("latin-1")
    assert data[:2] == b"#0"
    assert struct.unpack(">d", data[2:]) == (3.14159265,)
    raw = lua.one(
        "format.data = format.SREAL format.byteorder = format.SWAPPED printbuffer(1, 2, {1.5, -2})"
    )
    assert struct.unpack("<2f", raw.encode("latin-1")[2:]) == (1.5, -2.0)
    assert lua.error("format.data = 7")[1].endswith("got 7")


def test_errorqueue_is_readable_from_lua(lua: Lua) -> None:
    lua.interp.errorqueue.push(-285, "TSP Syntax error at line 1: test")
    assert lua.run("print(errorqueue.count)") == ["1.00000e+00"]
    assert lua.one("print(errorqueue.next())") == (
        "-2.85000e+02\tTSP Syntax error at line 1: test\t2.00000e+01\t1.00000e+00"
    )
    assert (
        lua.one("code, msg = errorqueue.next() print(code, msg)") == "0.00000e+00\tQueue Is Empty"
    )
    lua.interp.errorqueue.push(-286, "x")
    lua.run("errorqueue.clear()")
    assert len(lua.interp.errorqueue.entries) == 0


def test_unsupported_features_are_errors_not_crashes(lua: Lua) -> None:
    for src in (
        "x = 5 // 2",
        "goto label",
        "local x <const> = 1",
        "x = 1 & 2",
        "string.gsub('a', 'a', 'b')",
        "setmetatable({}, {})",
        "\x00\xff\x7f",
        "print(" * 50,
        "]]",
        "'" * 7,
        "0x",
        "1e",
        "3..4",
    ):
        with pytest.raises(TspChunkError) as info:
            lua.interp.run(src)
        assert info.value.code in (-285, -286), src


def test_runaway_strings_are_lua_memory_errors_not_host_exhaustion() -> None:
    """The instrument's Lua heap is a few megabytes: a doubling string, a huge string.rep or
    table.concat is Lua's ``not enough memory``, raised before the host allocates it."""
    lua = Lua(max_steps=DEFAULT_MAX_STEPS)
    for src in (
        "s = 'a' for i = 1, 40 do s = s .. s end",
        "s = string.rep('ab', 1e9)",
        "t = {} for i = 1, 5 do t[i] = string.rep('x', 1e6) end s = table.concat(t, ',')",
    ):
        assert lua.error(src) == (-286, "TSP Runtime error at line 1: not enough memory"), src
    # The limit is the documented one, and strings up to it still work.
    assert lua.one(f"print(#string.rep('x', {MAX_STRING_CHARS}))") == (
        f"{float(MAX_STRING_CHARS):.5e}"
    )
    assert lua.error(f"s = string.rep('x', {MAX_STRING_CHARS}) .. 'y'")[1].endswith(
        "not enough memory"
    )


def test_format_widths_have_at_most_two_digits_as_in_lua_5_0(lua: Lua) -> None:
    assert lua.one("print(string.format('%5.2f|%-4s|%02d', 3.14159, 'x', 7))") == " 3.14|x   |07"
    for spec in ("%100d", "%.100f", "%999999999s"):
        assert lua.error(f"print(string.format('{spec}', 1))") == (
            -286,
            "TSP Runtime error at line 1: invalid format (width or precision too long)",
        ), spec


def test_deeply_nested_input_is_a_syntax_error(lua: Lua) -> None:
    for src in (
        "print(" + "(" * 5000 + "1" + ")" * 5001,
        "x = " + "{" * 3000 + "}" * 3000,
        "if true then " * 3000 + "end " * 3000,
    ):
        code, message = lua.error(src)
        assert code == -285 and "too many syntax levels" in message
    assert lua.one("print(" + "(" * 100 + "1" + ")" * 101) == "1.00000e+00"
