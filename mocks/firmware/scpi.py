"""A SCPI (IEEE 488.2 / SCPI-99) command engine shared by the SCPI instrument emulators.

What it implements, as the standards and the Keithley / Keysight manuals describe:

- **Command tree** built from patterns written as in the manuals:
  ``"[:SOURce#1]:VOLTage[:LEVel][:IMMediate][:AMPLitude]"``. Capitals are the short form,
  the whole word the long form; only those two spellings match, in any case. ``[...]``
  marks an optional (default) node; ``#`` allows a numeric suffix (``SOUR2``) and ``#2``
  limits it to 1..2 (a larger suffix is error -114).
- **Program messages**: ``;`` separates message units; a unit that does not begin with
  ``:`` or ``*`` is relative to the path of the previous header (``:SOUR:VOLT 1;RANG 2``
  is ``:SOUR:VOLT:RANG 2``); a leading ``:`` returns to the root; common commands
  (``*IDN?``) never change the path. Every new line starts at the root. Empty units
  (``a;;b``, a trailing ``;``) are ignored. The replies of several queries on one line are
  joined with ``;`` into one response message.
- **Parameters**: numbers (``100e-6``, ``.5``, ``-1E+3``) with ``MIN``/``MAX``/``DEF``
  where the command defines them, optional unit suffixes with multipliers (``100mV``,
  ``50US``) only on instruments that accept them, booleans ``ON``/``OFF``/``1``/``0``,
  character data in short or long form, strings in ``'...'`` or ``"..."`` (a doubled quote
  inside is a literal quote), lists ``a,b,c`` and channel lists ``(@1)``, ``(@1,2)``,
  ``(@1:2)``.
- **Error/event queue** (FIFO, default 10 entries; when full the newest entry becomes
  -350 "Queue overflow"), read with ``:SYST:ERR[:NEXT]?``, ``:SYST:ERR:ALL?``,
  ``:SYST:ERR:COUN?``, ``:SYST:ERR:CODE[:NEXT]?``, ``:SYST:ERR:CODE:ALL?``; an empty queue
  answers ``0,"No error"``. Errors set the standard event register bits (CME, EXE, DDE,
  QYE) as IEEE 488.2 requires.
- **Common commands**: ``*IDN? *RST *CLS *OPC *OPC? *WAI *TRG *ESR? *ESE *ESE? *STB?
  *SRE *SRE? *TST? *OPT?``.
- **Robustness**: nothing a host sends can raise out of :meth:`ScpiInstrument.handle_line`.
  Parse errors become -1xx errors (and end the program message, as IEEE 488.2 parsers
  do), execution problems -2xx, and an unexpected exception inside a handler becomes -300
  "Device-specific error" naming the exception.
- **-410 Query INTERRUPTED**: a new program message arriving while the reply of the
  previous one is still unread discards that reply and queues -410 (IEEE 488.2 6.3.2.3).
  -420 "Query UNTERMINATED" is raised by :meth:`ScpiInstrument.talk_without_query`,
  which a transport calls when the host reads with nothing to read after no query.

Units: volts (V), amperes (A), seconds (s).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nvmlab.clock import Clock
from nvmlab.mocks.firmware.base import LineInstrument

#: Value reported for a field that was not measured (SCPI "not a number").
NAN_READING = 9.91e37
#: Value reported for a measurement above the present range (overflow).
OVERFLOW_READING = 9.9e37

#: Standard SCPI error messages (SCPI-99 volume 2, chapter 21).
SCPI_ERRORS: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -110: "Command header error",
    -112: "Program mnemonic too long",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -120: "Numeric data error",
    -121: "Invalid character in number",
    -123: "Exponent too large",
    -131: "Invalid suffix",
    -138: "Suffix not allowed",
    -141: "Invalid character data",
    -150: "String data error",
    -151: "Invalid string data",
    -200: "Execution error",
    -210: "Trigger error",
    -211: "Trigger ignored",
    -213: "Init ignored",
    -220: "Parameter error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -230: "Data corrupt or stale",
    -300: "Device-specific error",
    -350: "Queue overflow",
    -400: "Query error",
    -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED",
    -430: "Query DEADLOCKED",
    -440: "Query UNTERMINATED after indefinite response",
}

# Standard event status register bits (IEEE 488.2).
ESR_OPC = 0x01
ESR_QYE = 0x04
ESR_DDE = 0x08
ESR_EXE = 0x10
ESR_CME = 0x20
ESR_PON = 0x80
# Status byte bits.
STB_EAV = 0x04
STB_MAV = 0x10
STB_ESB = 0x20
STB_MSS = 0x40


class ScpiError(Exception):
    """Raised by a handler or parser: queue error ``code`` with an optional detail text."""

    def __init__(self, code: int, detail: str = "", *, message: str | None = None) -> None:
        self.code = int(code)
        self.message = message if message is not None else SCPI_ERRORS.get(self.code, "Error")
        self.detail = detail
        super().__init__(f"{self.code},{self.message}" + (f"; {detail}" if detail else ""))


# --------------------------------------------------------------------------------------
# Command tree
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    short: str  #: short form, upper case ("SOUR")
    long: str  #: long form, upper case ("SOURCE")
    optional: bool
    suffix_max: int  #: 0: no numeric suffix; else the largest allowed suffix


_PATTERN_NODE = re.compile(r"(\[)?:?([A-Za-z][A-Za-z0-9]*?)(#(\d*))?(\])?$")


def _compile_pattern(pattern: str) -> tuple[_Node, ...]:
    """Turn ``"[:SOURce#1]:VOLTage[:LEVel]"`` into nodes."""
    parts = re.findall(r"\[:?[^\]]+\]|:?[^:\[]+", pattern)
    nodes = []
    for part in parts:
        m = _PATTERN_NODE.match(part)
        if not m:
            raise ValueError(f"bad SCPI pattern {pattern!r} at {part!r}")
        word = m.group(2)
        short = "".join(ch for ch in word if ch.isupper() or ch.isdigit())
        suffix_max = 0
        if m.group(3):
            suffix_max = int(m.group(4)) if m.group(4) else 9999
        nodes.append(_Node(short.upper(), word.upper(), bool(m.group(1)), suffix_max))
    return tuple(nodes)


Handler = Callable[["Call"], "str | None"]


@dataclass
class Command:
    """One leaf of the tree: a setter and/or a query handler."""

    pattern: str
    nodes: tuple[_Node, ...]
    set_fn: Handler | None = None
    query_fn: Handler | None = None


@dataclass
class Call:
    """One parsed message unit handed to a handler."""

    header: str  #: the header as the host typed it (with any relative path resolved)
    query: bool
    params: list[str]
    suffixes: dict[str, int] = field(default_factory=dict)

    def suffix(self, short: str, default: int = 1) -> int:
        """Numeric suffix given to node ``short`` (e.g. ``"SOUR"``), ``default`` if none."""
        return self.suffixes.get(short.upper(), default)

    def expect(self, n_min: int, n_max: int | None = None) -> None:
        """Check the parameter count: -109 if too few, -108 if too many."""
        n_max = n_min if n_max is None else n_max
        if len(self.params) < n_min:
            raise ScpiError(-109, f"{self.header} needs {n_min} parameter(s)")
        if len(self.params) > n_max:
            raise ScpiError(
                -108, f"{self.header} takes at most {n_max} parameter(s), got {len(self.params)}"
            )


_TOKEN = re.compile(r"([A-Za-z][A-Za-z_]*)(\d*)$")


class CommandTree:
    """Patterns -> handlers, with short/long forms, optional nodes and numeric suffixes."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        #: Bumped by every :meth:`add` (what caches of looked-up handlers check).
        self.version = 0
        self._cache: dict[
            tuple[tuple[str, int | None], ...], tuple[Command, dict[str, int]] | None
        ] = {}

    def add(
        self, pattern: str, set_fn: Handler | None = None, query_fn: Handler | None = None
    ) -> None:
        """Register ``pattern``; a pattern registered twice merges its handlers."""
        self.version += 1
        self._cache.clear()
        nodes = _compile_pattern(pattern)
        for cmd in self.commands:
            if cmd.nodes == nodes:
                cmd.set_fn = set_fn or cmd.set_fn
                cmd.query_fn = query_fn or cmd.query_fn
                return
        self.commands.append(Command(pattern, nodes, set_fn, query_fn))
        self._cache.clear()

    @staticmethod
    def _match(
        nodes: tuple[_Node, ...], tokens: Sequence[tuple[str, int | None]]
    ) -> dict[str, int] | None:
        found: dict[str, int] = {}

        def rec(i: int, j: int) -> bool:
            if j == len(nodes):
                return i == len(tokens)
            node = nodes[j]
            if i < len(tokens):
                word, suffix = tokens[i]
                fits = word in (node.short, node.long) and (suffix is None or node.suffix_max)
                if fits and rec(i + 1, j + 1):
                    if suffix is not None:
                        found[node.short] = suffix
                    return True
            return node.optional and rec(i, j + 1)

        return found if rec(0, 0) else None

    def lookup(self, tokens: Sequence[tuple[str, int | None]]) -> tuple[Command, dict[str, int]]:
        """Find the command for header ``tokens`` ``[(WORD, suffix|None), ...]``.

        Raises -113 (no such header) or -114 (suffix above the node's maximum).
        """
        key = tuple(tokens)
        if key in self._cache:
            hit = self._cache[key]
        else:
            hit = None
            for cmd in self.commands:
                suffixes = self._match(cmd.nodes, tokens)
                if suffixes is not None:
                    hit = (cmd, suffixes)
                    break
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = hit
        header = ":" + ":".join(w + ("" if s is None else str(s)) for w, s in tokens)
        if hit is None:
            raise ScpiError(-113, f"{header} is not a command of this instrument")
        cmd, suffixes = hit
        for node in cmd.nodes:
            value = suffixes.get(node.short)
            if value is not None and not 1 <= value <= node.suffix_max:
                raise ScpiError(
                    -114, f"{header}: suffix {value} of {node.short}; allowed 1..{node.suffix_max}"
                )
        return cmd, dict(suffixes)


# --------------------------------------------------------------------------------------
# Lexing: message units and parameters
# --------------------------------------------------------------------------------------


def split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside quotes and parentheses.

    Raises -151 for an unterminated string, -102 for unbalanced parentheses.
    """
    parts: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            buf.append(ch)
            if ch == quote:
                if i + 1 < len(text) and text[i + 1] == quote:  # doubled quote = literal
                    buf.append(text[i + 1])
                    i += 1
                else:
                    quote = None
        elif ch in "'\"":
            quote = ch
            buf.append(ch)
        elif ch == "(":
            depth += 1
            buf.append(ch)
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ScpiError(-102, f"unbalanced ')' in {text.strip()[:60]!r}")
            buf.append(ch)
        elif ch == sep and depth == 0:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    if quote:
        raise ScpiError(-151, f"string not terminated (missing {quote}) in {text.strip()[:60]!r}")
    if depth:
        raise ScpiError(-102, f"unbalanced '(' in {text.strip()[:60]!r}")
    parts.append("".join(buf))
    return parts


def split_params(text: str) -> list[str]:
    """Comma-separated parameters (quotes and channel lists kept whole), stripped."""
    if not text.strip():
        return []
    parts = [p.strip() for p in split_top_level(text, ",")]
    if any(not p for p in parts):
        raise ScpiError(-102, f"empty parameter in {text.strip()[:60]!r}")
    return parts


_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE]\s*[+-]?\d+)?)\s*(.*?)\s*$")
_MULTIPLIERS = {
    "EX": 1e18, "PE": 1e15, "T": 1e12, "G": 1e9, "MA": 1e6, "K": 1e3,
    "M": 1e-3, "U": 1e-6, "N": 1e-9, "P": 1e-12, "F": 1e-15, "A": 1e-18,
}  # fmt: skip


def _apply_suffix(value: float, suffix: str, units: Sequence[str]) -> float:
    """``100`` + ``"mV"`` -> 0.1 (SCPI suffix: optional multiplier then the unit)."""
    up = suffix.upper()
    for unit in sorted((u.upper() for u in units), key=len, reverse=True):
        if up.endswith(unit):
            mult = up[: len(up) - len(unit)]
            if not mult:
                return value
            # "MA" alone means mega only for units other than A / ampere; for amperes
            # SCPI reads "MA" as milliampere, which is what every SMU manual shows.
            if mult == "M" or (mult == "MA" and unit == "A"):
                return value * 1e-3
            if mult in _MULTIPLIERS:
                return value * _MULTIPLIERS[mult]
            break
    raise ScpiError(-131, f"suffix {suffix!r}; allowed units: {', '.join(units) or 'none'}")


def parse_number(
    raw: str,
    *,
    name: str = "value",
    lo: float | None = None,
    hi: float | None = None,
    default: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    units: Sequence[str] = (),
    accept_units: bool = False,
) -> float:
    """A numeric parameter (NRf) as float.

    ``MIN``/``MAX``/``DEF`` map to ``minimum`` (default ``lo``), ``maximum`` (default
    ``hi``) and ``default``; absent there they are -224. A unit suffix is accepted only with
    ``accept_units`` (else -138). Values outside ``lo``..``hi`` and non-finite values are
    -222 (data out of range).
    """
    text = raw.strip()
    word = text.upper()
    specials = {
        "MIN": minimum if minimum is not None else lo,
        "MINIMUM": minimum if minimum is not None else lo,
        "MAX": maximum if maximum is not None else hi,
        "MAXIMUM": maximum if maximum is not None else hi,
        "DEF": default,
        "DEFAULT": default,
    }
    if word in specials:
        value = specials[word]
        if value is None:
            raise ScpiError(-224, f"{name}: {text} is not defined here")
        return float(value)
    if text[:1] in "'\"":
        raise ScpiError(-104, f"{name}: expected a number, got string {text[:40]}")
    m = _NUMBER.match(text)
    if not m:
        if text[:1].isalpha():
            raise ScpiError(-104, f"{name}: expected a number, got {text[:40]!r}")
        raise ScpiError(-121, f"{name}: {text[:40]!r} is not a number")
    try:
        value = float(m.group(1).replace(" ", ""))
    except (ValueError, OverflowError) as exc:
        raise ScpiError(-121, f"{name}: {text[:40]!r} is not a number") from exc
    suffix = m.group(2)
    if suffix:
        if not accept_units:
            raise ScpiError(-138, f"{name}: suffix {suffix[:20]!r} is not accepted here")
        value = _apply_suffix(value, suffix, units)
    if not math.isfinite(value):
        raise ScpiError(-222, f"{name}: {text[:40]} is out of range")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ScpiError(-222, f"{name}: {value:g} outside {lo:g} to {hi:g}")
    return value


def parse_int(raw: str, *, name: str = "value", lo: int | None = None, hi: int | None = None,
              default: int | None = None) -> int:  # fmt: skip
    """An integer parameter (a number rounded to the nearest integer, as SCPI does)."""
    value = parse_number(
        raw,
        name=name,
        lo=None if lo is None else lo - 0.5,
        hi=None if hi is None else hi + 0.4999,
        default=default,
        minimum=lo,
        maximum=hi,
    )
    return int(round(value))


def parse_bool(raw: str, *, name: str = "value") -> bool:
    """``ON``/``OFF``/``1``/``0`` (any number: non-zero after rounding is ON)."""
    word = raw.strip().upper()
    if word == "ON":
        return True
    if word == "OFF":
        return False
    if word[:1] in "'\"":
        raise ScpiError(-104, f"{name}: expected ON, OFF, 1 or 0, got string {raw[:40]}")
    if word[:1].isalpha():
        raise ScpiError(-224, f"{name}: {raw[:40]!r}; allowed ON, OFF, 1, 0")
    return round(parse_number(raw, name=name)) != 0


def mnemonic_forms(mnemonic: str) -> tuple[str, str]:
    """(short, long) upper-case forms of ``"SWEep"`` -> ("SWE", "SWEEP")."""
    short = "".join(ch for ch in mnemonic if ch.isupper() or ch.isdigit())
    return short or mnemonic.upper(), mnemonic.upper()


def parse_choice(raw: str, choices: Sequence[str], *, name: str = "value",
                 allow_quoted: bool = False) -> str:  # fmt: skip
    """Character data matching one of ``choices`` (manual spelling, e.g. ``"FIXed"``).

    Returns the choice's short form in upper case. A string is accepted only with
    ``allow_quoted``; a number is -104; anything else -224 naming the allowed values.
    """
    text = raw.strip()
    if text[:1] in "'\"":
        if not allow_quoted:
            raise ScpiError(-104, f"{name}: expected one of {', '.join(choices)}, got a string")
        text = unquote(text)
    word = text.upper()
    for choice in choices:
        short, long = mnemonic_forms(choice)
        if word in (short, long):
            return short
    if word[:1].isdigit() or word[:1] in "+-.":
        raise ScpiError(-104, f"{name}: expected one of {', '.join(choices)}, got {text[:40]!r}")
    raise ScpiError(-224, f"{name}: {text[:40]!r}; allowed {', '.join(choices)}")


def unquote(raw: str) -> str:
    """The content of a quoted string parameter (doubled quotes undone)."""
    text = raw.strip()
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:
        q = text[0]
        return text[1:-1].replace(q + q, q)
    raise ScpiError(-104, f"expected a quoted string, got {text[:40]!r}")


def parse_channel_list(raw: str, *, channels: int) -> list[int]:
    """``(@1)``, ``(@1,2)``, ``(@1:2)`` -> [1], [1, 2], [1, 2]; channels 1..``channels``."""
    text = raw.strip().replace(" ", "")
    if not (text.startswith("(@") and text.endswith(")")):
        raise ScpiError(-102, f"channel list {raw.strip()[:40]!r}; expected (@1), (@1,2) or (@1:2)")
    out: list[int] = []
    body = text[2:-1]
    if not body:
        raise ScpiError(-102, "empty channel list (@)")
    for item in body.split(","):
        ends = item.split(":")
        if len(ends) > 2 or not all(e.isdigit() for e in ends):
            raise ScpiError(
                -102, f"channel list item {item!r}; expected a channel number or a range a:b"
            )
        a, b = int(ends[0]), int(ends[-1])
        for ch in range(min(a, b), max(a, b) + 1):
            if not 1 <= ch <= channels:
                raise ScpiError(
                    -224, f"channel {ch} in {raw.strip()[:40]}; allowed 1 to {channels}"
                )
            if ch not in out:
                out.append(ch)
    return out


def is_channel_list(raw: str) -> bool:
    return raw.strip().replace(" ", "").startswith("(@")


# --------------------------------------------------------------------------------------
# Error queue
# --------------------------------------------------------------------------------------


class ErrorQueue:
    """The SCPI error/event FIFO."""

    def __init__(self, size: int = 10, *, code_format: str = "{code:d}") -> None:
        self.size = size
        self.code_format = code_format
        self._q: deque[tuple[int, str]] = deque()

    def push(self, code: int, text: str) -> None:
        if len(self._q) < self.size:
            self._q.append((code, text))
        elif self._q[-1][0] != -350:
            self._q[-1] = (-350, SCPI_ERRORS[-350])

    def pop(self) -> tuple[int, str]:
        return self._q.popleft() if self._q else (0, SCPI_ERRORS[0])

    def clear(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)

    def format(self, entry: tuple[int, str]) -> str:
        code, text = entry
        safe = text.replace('"', "'")[:255]
        return self.code_format.format(code=code) + f',"{safe}"'


# --------------------------------------------------------------------------------------
# The instrument base
# --------------------------------------------------------------------------------------


def format_reading(value: float) -> str:
    """Reading format of Keithley / Keysight ASCII data: ``+1.234567E-04``."""
    return f"{value:+.6E}"


class ScpiInstrument(LineInstrument):
    """A SCPI instrument: tree, error queue, status registers, common commands.

    Subclasses set :attr:`identity`, build their commands in :meth:`build_tree` (with the
    ``add_*`` setting helpers or :attr:`tree` directly) and implement :meth:`reset`
    (``*RST`` defaults). :attr:`settings` holds the present value of every setting.
    """

    model = "scpi"
    identity = "NVMLAB,SCPI,0,0"
    #: Error queue depth (entries).
    error_queue_size = 10
    #: How the error code is printed in :SYST:ERR? replies ("{code:d}" or "{code:+d}").
    error_code_format = "{code:d}"
    #: Whether numeric parameters may carry unit suffixes (``100mV``).
    accept_units = False
    #: Options string for ``*OPT?``.
    options = "0"

    def __init__(self, clock: Clock, *, query_latency_s: float = 0.0) -> None:
        super().__init__(clock, query_latency_s=query_latency_s)
        self.tree = CommandTree()
        self.errors = ErrorQueue(self.error_queue_size, code_format=self.error_code_format)
        self.settings: dict[str, Any] = {}
        self.defaults: dict[str, Any] = {}
        self.esr = ESR_PON
        self.ese = 0
        self.sre = 0
        self._common: dict[str, tuple[Handler | None, Handler | None]] = {}
        #: Program messages parsed without error: text -> (tree version, number of common
        #: commands, its units), so a repeated message skips lexing and header lookup.
        self._parsed: dict[str, tuple[int, int, list[_ParsedUnit]]] = {}
        self._register_common()
        self._register_system()
        self.build_tree()
        self.settings = dict(self.defaults)

    # -- to override ------------------------------------------------------------------
    def build_tree(self) -> None:
        """Register the model's commands."""

    def reset(self) -> None:
        """``*RST``: restore the defaults (subclasses also make the hardware safe)."""
        self.settings = dict(self.defaults)

    def bus_trigger(self) -> None:
        """``*TRG`` (a bus trigger); default: ignored."""

    def status_summary_bits(self) -> int:
        """Model-specific status byte bits (e.g. MSB / QSB / OSB summaries)."""
        return 0

    def clear_status(self) -> None:
        """``*CLS``: clears event registers and the error queue (subclasses extend)."""
        self.errors.clear()
        self.esr = 0

    # -- errors and status --------------------------------------------------------------
    def push_error(self, code: int, detail: str = "", *, message: str | None = None) -> None:
        """Queue an error and set the matching standard event bit."""
        text = message if message is not None else SCPI_ERRORS.get(code, "Error")
        if detail:
            text = f"{text}; {detail}"
        self.errors.push(code, text)
        if -199 <= code <= -100:
            self.esr |= ESR_CME
        elif -299 <= code <= -200:
            self.esr |= ESR_EXE
        elif -499 <= code <= -400:
            self.esr |= ESR_QYE
        elif code >= 800:
            self.esr |= ESR_EXE
        elif code != 0:
            self.esr |= ESR_DDE

    def status_byte(self) -> int:
        stb = self.status_summary_bits() & ~STB_MSS
        if len(self.errors):
            stb |= STB_EAV
        if self.pending():
            stb |= STB_MAV
        if self.esr & self.ese:
            stb |= STB_ESB
        if stb & self.sre & ~STB_MSS:
            stb |= STB_MSS
        return stb

    def talk_without_query(self) -> None:
        """The host tried to read with no query pending: -420 Query UNTERMINATED."""
        with self._lock:
            if not self.pending():
                self.push_error(-420, "read requested with no query pending")

    # -- setting helpers ------------------------------------------------------------------
    @staticmethod
    def _key(key: str | Callable[[Call], str], call: Call) -> str:
        return key(call) if callable(key) else key

    def add_number(
        self,
        pattern: str,
        key: str | Callable[[Call], str],
        default: float,
        lo: float,
        hi: float,
        *,
        on_change: Callable[[Call, float], None] | None = None,
        units: Sequence[str] = (),
        integer: bool = False,
        fmt: Callable[[float], str] | None = None,
        check: Callable[[Call, float], None] | None = None,
    ) -> None:
        """A numeric setting with MIN/MAX/DEF and a range check (-222 outside lo..hi).

        ``check(call, value)`` may raise :class:`ScpiError` before the value is stored;
        ``on_change(call, value)`` runs after."""
        if isinstance(key, str):
            self.defaults[key] = default

        def set_fn(call: Call) -> None:
            call.expect(1)
            if integer:
                value: float = parse_int(call.params[0], name=call.header, lo=int(lo), hi=int(hi),
                                         default=int(default))  # fmt: skip
            else:
                value = parse_number(call.params[0], name=call.header, lo=lo, hi=hi,
                                     default=default, units=units,
                                     accept_units=self.accept_units and bool(units))  # fmt: skip
            if check is not None:
                check(call, value)
            self.settings[self._key(key, call)] = value
            if on_change is not None:
                on_change(call, value)

        def query_fn(call: Call) -> str:
            if call.params:
                call.expect(1)
                word = call.params[0].strip().upper()
                specials = {"MIN": lo, "MINIMUM": lo, "MAX": hi, "MAXIMUM": hi,
                            "DEF": default, "DEFAULT": default}  # fmt: skip
                if word not in specials:
                    raise ScpiError(
                        -224, f"{call.header}? {call.params[0][:20]}; allowed MIN, MAX, DEF"
                    )
                value = specials[word]
            else:
                value = self.settings.get(self._key(key, call), default)
            if integer:
                return str(int(value))
            return fmt(value) if fmt else self.format_setting(value)

        self.tree.add(pattern, set_fn, query_fn)

    def add_bool(
        self,
        pattern: str,
        key: str | Callable[[Call], str],
        default: bool,
        *,
        on_change: Callable[[Call, bool], None] | None = None,
    ) -> None:
        """An ON/OFF setting; the query answers ``1`` or ``0``."""
        if isinstance(key, str):
            self.defaults[key] = default

        def set_fn(call: Call) -> None:
            call.expect(1)
            value = parse_bool(call.params[0], name=call.header)
            self.settings[self._key(key, call)] = value
            if on_change is not None:
                on_change(call, value)

        def query_fn(call: Call) -> str:
            call.expect(0)
            return "1" if self.settings.get(self._key(key, call), default) else "0"

        self.tree.add(pattern, set_fn, query_fn)

    def add_choice(
        self,
        pattern: str,
        key: str | Callable[[Call], str],
        choices: Sequence[str],
        default: str,
        *,
        on_change: Callable[[Call, str], None] | None = None,
        allow_quoted: bool = False,
        check: Callable[[Call, str], None] | None = None,
    ) -> None:
        """A character-data setting; the query answers the short form (``FIX``)."""
        if isinstance(key, str):
            self.defaults[key] = mnemonic_forms(default)[0]

        def set_fn(call: Call) -> None:
            call.expect(1)
            value = parse_choice(
                call.params[0], choices, name=call.header, allow_quoted=allow_quoted
            )
            if check is not None:
                check(call, value)
            self.settings[self._key(key, call)] = value
            if on_change is not None:
                on_change(call, value)

        def query_fn(call: Call) -> str:
            call.expect(0)
            return str(self.settings.get(self._key(key, call), mnemonic_forms(default)[0]))

        self.tree.add(pattern, set_fn, query_fn)

    def add_accepted(self, pattern: str, n_max: int = 1, reply: str | None = None) -> None:
        """A command the emulator accepts without effect on the physics (display, beeper).

        The last parameters are remembered and answered by the query (or ``reply``)."""
        store = f"_accepted:{pattern}"

        def set_fn(call: Call) -> None:
            call.expect(0, n_max)
            self.settings[store] = ",".join(p.upper() for p in call.params)

        def query_fn(call: Call) -> str:
            return reply if reply is not None else str(self.settings.get(store, "0"))

        self.tree.add(pattern, set_fn, query_fn)

    def format_setting(self, value: float) -> str:
        """How a numeric setting is answered (Keithley: ``1.050000E-04``)."""
        return f"{value:.6E}"

    # -- common commands ----------------------------------------------------------------
    def _register_common(self) -> None:
        def no_params(fn: Callable[[], str | None]) -> Handler:
            def handler(call: Call) -> str | None:
                call.expect(0)
                return fn()

            return handler

        def rst() -> None:
            self.reset()

        def cls() -> None:
            self.clear_status()

        def opc() -> None:
            self.esr |= ESR_OPC  # every operation completes before the next is parsed

        def esr_q() -> str:
            value, self.esr = self.esr, 0
            return str(value)

        def trg() -> None:
            self.bus_trigger()

        def set_reg(name: str) -> Handler:
            def handler(call: Call) -> None:
                call.expect(1)
                setattr(
                    self, name, parse_int(call.params[0], name=f"*{name.upper()}", lo=0, hi=255)
                )

            return handler

        self._common = {
            "*IDN": (None, no_params(lambda: self.identity)),
            "*RST": (no_params(rst), None),
            "*CLS": (no_params(cls), None),
            "*OPC": (no_params(opc), no_params(lambda: "1")),
            "*WAI": (no_params(lambda: None), None),
            "*TRG": (no_params(trg), None),
            "*ESR": (None, no_params(esr_q)),
            "*ESE": (set_reg("ese"), no_params(lambda: str(self.ese))),
            "*SRE": (set_reg("sre"), no_params(lambda: str(self.sre))),
            "*STB": (None, no_params(lambda: str(self.status_byte()))),
            "*TST": (None, no_params(lambda: "0")),
            "*OPT": (None, no_params(lambda: self.options)),
        }

    def _register_system(self) -> None:
        def err_next(call: Call) -> str:
            call.expect(0)
            return self.errors.format(self.errors.pop())

        def err_all(call: Call) -> str:
            call.expect(0)
            entries = [self.errors.pop() for _ in range(len(self.errors))] or [self.errors.pop()]
            return ",".join(self.errors.format(e) for e in entries)

        def err_count(call: Call) -> str:
            call.expect(0)
            return str(len(self.errors))

        def code_next(call: Call) -> str:
            call.expect(0)
            return self.errors.code_format.format(code=self.errors.pop()[0])

        def code_all(call: Call) -> str:
            call.expect(0)
            codes = [self.errors.pop()[0] for _ in range(len(self.errors))] or [0]
            return ",".join(self.errors.code_format.format(code=c) for c in codes)

        def clear(call: Call) -> None:
            call.expect(0)
            self.errors.clear()

        self.tree.add(":SYSTem:ERRor[:NEXT]", None, err_next)
        self.tree.add(":SYSTem:ERRor:ALL", None, err_all)
        self.tree.add(":SYSTem:ERRor:COUNt", None, err_count)
        self.tree.add(":SYSTem:ERRor:CODE[:NEXT]", None, code_next)
        self.tree.add(":SYSTem:ERRor:CODE:ALL", None, code_all)
        self.tree.add(":SYSTem:CLEar", clear, None)
        self.tree.add(":SYSTem:VERSion", None, lambda call: "1999.0")

    # -- execution ----------------------------------------------------------------------
    def handle_line(self, line: str) -> str | None:
        """Execute one program message; never raises."""
        with self._lock:
            if self._out:
                # IEEE 488.2: a new message while a response is unread interrupts the query.
                self._out.clear()
                self.push_error(-410, "a new command arrived before the previous reply was read")
            try:
                return self._execute_message(line)
            except Exception as exc:  # noqa: BLE001 - no input may crash the emulator
                self.push_error(-300, f"internal {type(exc).__name__}: {str(exc)[:120]}")
                return None

    def _execute_message(self, line: str) -> str | None:
        text = line.strip()
        if not text:
            return None
        parsed = self._parsed.get(text)
        if parsed is None or parsed[:2] != (self.tree.version, len(self._common)):
            units = self._parse_message(text)
            if units is None:  # an error: parse and run unit by unit, reporting it in turn
                return self._execute_units(text)
            if len(self._parsed) >= PARSED_MESSAGES_KEPT:
                self._parsed.clear()
            parsed = (self.tree.version, len(self._common), units)
            self._parsed[text] = parsed
        replies: list[str] = []
        for unit in parsed[2]:
            try:
                reply = unit.run()
            except ScpiError as err:
                self.push_error(err.code, err.detail, message=err.message)
                if -199 <= err.code <= -100:
                    break  # a parse error ends the program message
                continue
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def _parse_message(self, text: str) -> list[_ParsedUnit] | None:
        """Every message unit of ``text`` parsed, or None if any fails to parse."""
        if any(ord(ch) < 32 and ch not in "\t" or ord(ch) > 126 for ch in text):
            return None
        try:
            units: list[_ParsedUnit] = []
            prefix: list[tuple[str, int | None]] = []
            for unit in split_top_level(text, ";"):
                unit = unit.strip()
                if unit:
                    parsed, prefix = self._parse_unit(unit, prefix)
                    units.append(parsed)
        except ScpiError:
            return None
        return units

    def _execute_units(self, text: str) -> str | None:
        """Parse and run ``text`` unit by unit; an error is reported when reached."""
        replies: list[str] = []
        if any(ord(ch) < 32 and ch not in "\t" or ord(ch) > 126 for ch in text):
            bad = next(ch for ch in text if ord(ch) < 32 and ch not in "\t" or ord(ch) > 126)
            self.push_error(-101, f"character {bad!r} (code {ord(bad)}) is not allowed")
            return None
        try:
            units = split_top_level(text, ";")
        except ScpiError as err:
            self.push_error(err.code, err.detail, message=err.message)
            return None
        prefix: list[tuple[str, int | None]] = []
        for unit in units:
            unit = unit.strip()
            if not unit:
                continue
            try:
                reply, prefix = self._execute_unit(unit, prefix)
            except ScpiError as err:
                self.push_error(err.code, err.detail, message=err.message)
                if -199 <= err.code <= -100:
                    break  # a parse error ends the program message
                continue
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def _execute_unit(
        self, unit: str, prefix: list[tuple[str, int | None]]
    ) -> tuple[str | None, list[tuple[str, int | None]]]:
        parsed, new_prefix = self._parse_unit(unit, prefix)
        return parsed.run(), new_prefix

    def _parse_unit(
        self, unit: str, prefix: list[tuple[str, int | None]]
    ) -> tuple[_ParsedUnit, list[tuple[str, int | None]]]:
        """The handler and call of one message unit, and the header path it leaves for the
        next unit; raises the parse errors (-1xx)."""
        m = re.match(r"^(\S+?)(\?)?(?:\s+(.*))?$", unit, re.S)
        if not m:
            raise ScpiError(-102, f"cannot parse {unit[:60]!r}")
        head, qmark, rest = m.group(1), m.group(2), m.group(3) or ""
        if head.endswith("?"):  # e.g. "OUTP?" matched non-greedily above is handled here
            head, qmark = head[:-1], "?"
        if "?" in head:
            raise ScpiError(-102, f"'?' inside header {unit[:60]!r}")
        if "(" in head or "'" in head or '"' in head or "," in head:
            raise ScpiError(-102, f"header {head[:40]!r} followed by parameters without a space")
        params = split_params(rest)
        query = bool(qmark)
        if head.startswith(":*"):
            head = head[1:]
        if head.startswith("*"):
            name = head.upper()
            if name not in self._common:
                raise ScpiError(-113, f"common command {head}{qmark or ''} is not supported")
            set_fn, query_fn = self._common[name]
            fn = query_fn if query else set_fn
            if fn is None:
                raise ScpiError(
                    -113,
                    f"{head}{'?' if query else ''} has no {'query' if query else 'command'} form",
                )
            return _ParsedUnit(fn, name, query, tuple(params), None), prefix
        absolute = head.startswith(":")
        words = head[1:].split(":") if absolute else head.split(":")
        tokens: list[tuple[str, int | None]] = []
        for word in words:
            tm = _TOKEN.match(word)
            if not tm:
                raise ScpiError(
                    -102, f"bad header {head[:40]!r}" if word else f"empty node in {head[:40]!r}"
                )
            if len(tm.group(1)) > 12:
                raise ScpiError(-112, f"{tm.group(1)[:20]} in {head[:40]!r}")
            tokens.append((tm.group(1).upper(), int(tm.group(2)) if tm.group(2) else None))
        full = tokens if absolute else [*prefix, *tokens]
        cmd, suffixes = self.tree.lookup(full)
        header = ":" + ":".join(w + ("" if s is None else str(s)) for w, s in full)
        fn = cmd.query_fn if query else cmd.set_fn
        if fn is None:
            kind = "query" if query else "command"
            raise ScpiError(
                -113, f"{header}{'?' if query else ''}: {cmd.pattern} has no {kind} form"
            )
        return _ParsedUnit(fn, header, query, tuple(params), suffixes), full[:-1]


#: Parsed program messages kept per instrument (the cache starts over beyond).
PARSED_MESSAGES_KEPT = 512


@dataclass(frozen=True)
class _ParsedUnit:
    """One message unit parsed: its handler and what the handler's :class:`Call` holds
    (``suffixes`` None for a common command)."""

    fn: Handler
    header: str
    query: bool
    params: tuple[str, ...]
    suffixes: dict[str, int] | None

    def run(self) -> str | None:
        """Call the handler with a fresh :class:`Call` (handlers may change theirs)."""
        if self.suffixes is None:
            return self.fn(Call(self.header, self.query, list(self.params)))
        return self.fn(Call(self.header, self.query, list(self.params), dict(self.suffixes)))


__all__ = [
    "NAN_READING",
    "OVERFLOW_READING",
    "SCPI_ERRORS",
    "Call",
    "Command",
    "CommandTree",
    "ErrorQueue",
    "ScpiError",
    "ScpiInstrument",
    "format_reading",
    "is_channel_list",
    "parse_bool",
    "parse_channel_list",
    "parse_choice",
    "parse_int",
    "parse_number",
    "split_params",
    "split_top_level",
    "unquote",
]
