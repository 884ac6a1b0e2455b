"""Firmware of the crossbar / eFlash probe board (protocol: docs/probe-board.md).

The board routes SMU terminals to array lines, drives the other lines (ground, float, its
own DAC, a buffer that tracks SMU terminal A, another that tracks terminal B) and fires write pulses with a half-select
scheme. It acts on the physical world only through the :class:`~nvmlab.mocks.world.Bench`:
``bench.rows_state`` / ``bench.cols_state`` (line routing), the eFlash biases
(``control_gate_v``, ``erase_gate_v``, ``source_v``, V), :meth:`Bench.board_pulse` and
:meth:`Bench.ground_all`.

Every command line gets exactly one reply line (``OK``, a value, or
``ERR <code>,"<message>"``); a command that fails changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from nvmlab.mocks.firmware.base import LineInstrument
from nvmlab.mocks.world import Bench, LineState

#: Longest accepted command line (characters).
MAX_LINE = 8192

ERR_UNKNOWN = 1
ERR_PARAM_COUNT = 2
ERR_INVALID = 3
ERR_RANGE = 4
ERR_KIND = 5
ERR_INPUT = 6
ERR_INTERNAL = 9

READ_SCHEMES = ("GND", "FLOAT", "TRACK", "TRACKB")
READ_COLS = ("GND", "SMUB")
#: Board keyword -> scheme name of :func:`nvmlab.mocks.physics.base.scheme_bias`.
WRITE_SCHEMES = {"V2": "v/2", "V3": "v/3", "GND": "ground", "FLOAT": "float"}
LINE_MODES = ("GND", "FLOAT", "SMUA", "SMUB", "TRACK", "TRACKB", "DAC")

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INDEX = re.compile(r"^\d+$")
_LINE_NAME = re.compile(r"^([RC])(\d+)$", re.IGNORECASE)


class BoardError(Exception):
    """A command the board refuses: ``code`` and message as in docs/probe-board.md."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class BoardLimits:
    """Hardware limits of the board (V, s). ``None`` ranges: not present on this board."""

    dac_v: tuple[float, float] = (-5.0, 5.0)
    pulse_abs_v: float = 5.0
    width_s: tuple[float, float] = (1e-7, 1.0)
    control_gate_v: tuple[float, float] | None = None
    erase_gate_v: tuple[float, float] | None = None
    source_v: tuple[float, float] | None = None
    word_line_v: tuple[float, float] | None = None

    def reply(self) -> str:
        """The ``LIMITS?`` reply."""

        def pair(r: tuple[float, float] | None) -> str:
            lo, hi = r if r is not None else (0.0, 0.0)
            return f"{lo:.4f},{hi:.4f}"

        return (
            f"DAC={pair(self.dac_v)};PULSE={self.pulse_abs_v:.4f};"
            f"WIDTH={self.width_s[0]:.4e},{self.width_s[1]:.4e};"
            f"CG={pair(self.control_gate_v)};EG={pair(self.erase_gate_v)};"
            f"SL={pair(self.source_v)};WL={pair(self.word_line_v)}"
        )


MEMRISTOR_LIMITS = BoardLimits()
EFLASH_LIMITS = BoardLimits(
    pulse_abs_v=12.0,
    control_gate_v=(0.0, 12.0),
    erase_gate_v=(0.0, 14.0),
    source_v=(0.0, 6.0),
    word_line_v=(0.0, 5.0),
)


def _clean(text: str, limit: int = 40) -> str:
    """A host-sent token made safe to echo inside a quoted error message."""
    text = text.replace('"', "'")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ProbeBoardEmulator(LineInstrument):
    """The probe board: line routing, read schemes, on-board write pulses, eFlash biases.

    ``serial`` and ``firmware`` appear in ``*IDN?``. ``query_latency_s`` (s) is charged on
    the bench clock for every command line.
    """

    model = "probe_board"
    reply_termination = b"\n"

    def __init__(
        self,
        bench: Bench,
        *,
        query_latency_s: float = 0.0,
        serial: str = "PB-000001",
        firmware: str = "1.0",
        eflash_word_line_v: float = 1.5,
    ) -> None:
        super().__init__(bench.clock, query_latency_s=query_latency_s)
        self.bench = bench
        self.serial = serial
        self.firmware = firmware
        self.kind = str(getattr(bench.array, "kind", "memristor")).upper()
        self.is_eflash = self.kind == "EFLASH"
        self.limits = EFLASH_LIMITS if self.is_eflash else MEMRISTOR_LIMITS
        self._default_wl_v = float(eflash_word_line_v)
        self.read_scheme = "GND"
        self.read_col = "GND"
        self.write_scheme = "V2"
        self.word_line_v = self._default_wl_v
        self.selected: tuple[int, int] | None = None
        self.last_error: tuple[int, str] | None = None
        self._commands: dict[str, Callable[[list[str]], str]] = {
            "*IDN?": self._idn,
            "*RST": self._rst,
            "CONF?": self._conf,
            "LIMITS?": self._limits,
            "SEL": self._sel,
            "SEL?": self._sel_q,
            "READ:SCHEME": self._read_scheme,
            "READ:SCHEME?": lambda p: self._no_params("READ:SCHEME?", p) or self.read_scheme,
            "READ:COL": self._read_col,
            "READ:COL?": lambda p: self._no_params("READ:COL?", p) or self.read_col,
            "LINE": self._line,
            "LINE?": self._line_q,
            "ROWS:DAC": self._rows_dac,
            "WRITE:SCHEME": self._write_scheme,
            "WRITE:SCHEME?": lambda p: self._no_params("WRITE:SCHEME?", p) or self.write_scheme,
            "PULSE": self._pulse,
            "EFLASH:CG": lambda p: self._eflash_bias("EFLASH:CG", p),
            "EFLASH:EG": lambda p: self._eflash_bias("EFLASH:EG", p),
            "EFLASH:SL": lambda p: self._eflash_bias("EFLASH:SL", p),
            "EFLASH:WL": lambda p: self._eflash_bias("EFLASH:WL", p),
            "EFLASH?": self._eflash_q,
            "GND:ALL": self._gnd_all,
            "STAT?": self._stat,
            "ERR?": self._err_q,
        }

    # -- line handling -------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self.bench.array.rows)

    @property
    def cols(self) -> int:
        return int(self.bench.array.cols)

    def handle_line(self, line: str) -> str | None:
        text = line.strip()
        if not text:
            return None
        try:
            if len(line) > MAX_LINE:
                raise BoardError(
                    ERR_INPUT, f"input line too long: {len(line)} characters, at most {MAX_LINE}"
                )
            if not text.isascii() or any(ord(ch) < 32 and ch != "\t" for ch in text):
                raise BoardError(ERR_INPUT, "input line contains non-ASCII or control characters")
            with self.bench.lock:
                return self._execute(text)
        except BoardError as exc:
            self.last_error = (exc.code, exc.message)
            return f'ERR {exc.code},"{exc.message}"'
        except Exception as exc:  # never crash on input: report it the board's way
            message = _clean(f"internal error: {type(exc).__name__}: {exc}", 200)
            self.last_error = (ERR_INTERNAL, message)
            return f'ERR {ERR_INTERNAL},"{message}"'

    def _execute(self, text: str) -> str:
        match = re.match(r"^(\S+)(?:\s+(.*))?$", text)
        assert match is not None  # text is non-empty and stripped
        keyword = match.group(1).upper()
        rest = match.group(2)
        params = [] if rest is None or not rest.strip() else [p.strip() for p in rest.split(",")]
        handler = self._commands.get(keyword)
        if handler is None:
            raise BoardError(ERR_UNKNOWN, f"unknown command '{_clean(match.group(1))}'")
        return handler(params)

    # -- parameter helpers -----------------------------------------------------------------
    @staticmethod
    def _no_params(cmd: str, params: list[str]) -> None:
        if params:
            raise BoardError(ERR_PARAM_COUNT, f"{cmd}: expected no parameters, got {len(params)}")

    @staticmethod
    def _count(cmd: str, params: list[str], allowed: tuple[int, ...], names: str) -> None:
        if len(params) not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise BoardError(
                ERR_PARAM_COUNT, f"{cmd}: expected {want} parameters ({names}), got {len(params)}"
            )

    @staticmethod
    def _index(where: str, token: str, size: int) -> int:
        """Parse a 0-based index; ``where`` names the command and field in messages."""
        if not _INDEX.match(token):
            raise BoardError(
                ERR_INVALID, f"{where}: '{_clean(token)}' is not a non-negative integer"
            )
        value = int(token)
        if value >= size:
            raise BoardError(ERR_RANGE, f"{where}: {_clean(token)} out of range 0..{size - 1}")
        return value

    @staticmethod
    def _number(where: str, token: str, lo: float, hi: float, unit: str) -> float:
        """Parse a decimal number in [lo, hi] (``unit`` for messages)."""
        if not _NUMBER.match(token):
            raise BoardError(ERR_INVALID, f"{where}: '{_clean(token)}' is not a number")
        value = float(token)
        if not lo <= value <= hi:
            raise BoardError(
                ERR_RANGE, f"{where}: {_clean(token)} {unit} out of range {lo:g}..{hi:g} {unit}"
            )
        return value

    @staticmethod
    def _choice(cmd: str, token: str, allowed: tuple[str, ...]) -> str:
        value = token.upper()
        if value not in allowed:
            raise BoardError(
                ERR_INVALID, f"{cmd}: '{_clean(token)}' is not one of {', '.join(allowed)}"
            )
        return value

    # -- routing ---------------------------------------------------------------------------
    @staticmethod
    def _set(state: LineState, mode: str, volts: float = 0.0, terminal: str = "A") -> None:
        state.mode = mode  # type: ignore[assignment]
        state.volts = float(volts)
        state.terminal = terminal

    def _apply_selection(self, row: int, col: int) -> None:
        """Route the lines for a read of device (row, col) (docs/probe-board.md, Read routing)."""
        rows, cols = self.bench.rows_state, self.bench.cols_state
        unselected_col, col_terminal = {
            "GND": ("gnd", "A"),
            "FLOAT": ("float", "A"),
            "TRACK": ("track", "A"),
            "TRACKB": ("track", "B"),
        }[self.read_scheme]
        two_channel = self.read_col == "SMUB"
        if self.is_eflash:
            for state in rows:
                self._set(state, "gnd")
            if two_channel:
                self._set(rows[row], "smu", terminal="A")
            else:
                self._set(rows[row], "dac", self.word_line_v)
        else:
            # The tracking read (TRACKB): every unselected row follows terminal B too.
            unselected_row, row_terminal = {
                "GND": ("gnd", "A"),
                "FLOAT": ("float", "A"),
                "TRACK": ("gnd", "A"),
                "TRACKB": ("track", "B"),
            }[self.read_scheme]
            for state in rows:
                self._set(state, unselected_row, terminal=row_terminal)
            self._set(rows[row], "smu", terminal="A")
        for state in cols:
            self._set(state, unselected_col, terminal=col_terminal)
        if two_channel:
            self._set(cols[col], "smu", terminal="B")
        elif self.is_eflash:
            self._set(cols[col], "smu", terminal="A")
        else:
            self._set(cols[col], "gnd")
        self.selected = (row, col)

    def preselect(self, row: int, col: int, scheme: str = "track") -> None:
        """Apply the read routing for device (row, col) without a command.

        ``scheme``: ``"track"`` (default: SMU terminal A reads the device alone),
        ``"track-b"`` (the tracking read: every other line follows terminal B),
        ``"gnd"``/``"ground"`` or ``"float"``. On an eFlash board the read biases of the
        array (control gate, selected word line; source at 0 V) are applied too, so that
        sourcing the bit-line read voltage on terminal A reads the cell. Used by
        ``nvmlab emulate --select R,C``. Raises ValueError for an index or scheme the board
        does not have.
        """
        key = {
            "track": "TRACK",
            "track-b": "TRACKB",
            "trackb": "TRACKB",
            "gnd": "GND",
            "ground": "GND",
            "float": "FLOAT",
        }.get(str(scheme).lower())
        if key is None:
            raise ValueError(f"preselect scheme {scheme!r}: allowed track, track-b, gnd, float")
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise ValueError(
                f"preselect ({row},{col}) outside the {self.rows}x{self.cols} array "
                f"(rows 0..{self.rows - 1}, columns 0..{self.cols - 1})"
            )
        with self.bench.lock:
            self.read_scheme = key
            if key == "TRACKB":
                self.read_col = "GND"  # the tracking read grounds the selected column
            if self.is_eflash:
                params = getattr(self.bench.array, "params", None)
                self.bench.control_gate_v = float(getattr(params, "read_control_gate_v", 2.5))
                self.bench.source_v = 0.0
                self.word_line_v = float(getattr(params, "read_word_line_v", self._default_wl_v))
            self._apply_selection(int(row), int(col))

    # -- commands ---------------------------------------------------------------------------
    def _idn(self, params: list[str]) -> str:
        self._no_params("*IDN?", params)
        return f"NVMLAB,PROBE-BOARD,{self.serial},{self.firmware}"

    def _rst(self, params: list[str]) -> str:
        self._no_params("*RST", params)
        self.bench.ground_all()
        self.read_scheme, self.read_col, self.write_scheme = "GND", "GND", "V2"
        self.word_line_v = self._default_wl_v
        self.selected = None
        self.last_error = None
        return "OK"

    def _conf(self, params: list[str]) -> str:
        self._no_params("CONF?", params)
        return f"{self.kind},{self.rows},{self.cols}"

    def _limits(self, params: list[str]) -> str:
        self._no_params("LIMITS?", params)
        return self.limits.reply()

    def _sel(self, params: list[str]) -> str:
        self._count("SEL", params, (2,), "row,col")
        row = self._index("SEL row", params[0], self.rows)
        col = self._index("SEL col", params[1], self.cols)
        self._apply_selection(row, col)
        return "OK"

    def _sel_q(self, params: list[str]) -> str:
        self._no_params("SEL?", params)
        return "NONE" if self.selected is None else f"{self.selected[0]},{self.selected[1]}"

    def _check_tracking(self, cmd: str, scheme: str, column: str) -> None:
        """TRACKB keeps the selected column grounded: it cannot go with READ:COL SMUB."""
        if scheme == "TRACKB" and column == "SMUB":
            raise BoardError(
                ERR_INVALID,
                f"{cmd}: READ:SCHEME TRACKB needs READ:COL GND (terminal B drives the "
                "tracking buffer, the selected column is grounded)",
            )

    def _read_scheme(self, params: list[str]) -> str:
        self._count("READ:SCHEME", params, (1,), "GND|FLOAT|TRACK|TRACKB")
        scheme = self._choice("READ:SCHEME", params[0], READ_SCHEMES)
        self._check_tracking("READ:SCHEME", scheme, self.read_col)
        self.read_scheme = scheme
        if self.selected is not None:
            self._apply_selection(*self.selected)
        return "OK"

    def _read_col(self, params: list[str]) -> str:
        self._count("READ:COL", params, (1,), "GND|SMUB")
        column = self._choice("READ:COL", params[0], READ_COLS)
        self._check_tracking("READ:COL", self.read_scheme, column)
        self.read_col = column
        if self.selected is not None:
            self._apply_selection(*self.selected)
        return "OK"

    def _line_target(self, cmd: str, token: str) -> LineState:
        match = _LINE_NAME.match(token)
        if match is None:
            raise BoardError(ERR_INVALID, f"{cmd} line: '{_clean(token)}' is not R<row> or C<col>")
        is_row = match.group(1).upper() == "R"
        size = self.rows if is_row else self.cols
        field = "row" if is_row else "col"
        index = self._index(f"{cmd} {field}", match.group(2), size)
        return (self.bench.rows_state if is_row else self.bench.cols_state)[index]

    def _line(self, params: list[str]) -> str:
        self._count("LINE", params, (2, 3), "line,mode[,volts]")
        target = self._line_target("LINE", params[0])
        mode = self._choice("LINE", params[1], LINE_MODES)
        if mode == "DAC":
            if len(params) != 3:
                raise BoardError(ERR_PARAM_COUNT, "LINE: mode DAC needs a voltage (line,DAC,volts)")
            volts = self._number("LINE volts", params[2], *self.limits.dac_v, "V")
            self._set(target, "dac", volts)
        else:
            if len(params) != 2:
                raise BoardError(
                    ERR_PARAM_COUNT, f"LINE: mode {mode} takes no voltage (line,{mode})"
                )
            mapping = {
                "GND": ("gnd", "A"),
                "FLOAT": ("float", "A"),
                "SMUA": ("smu", "A"),
                "SMUB": ("smu", "B"),
                "TRACK": ("track", "A"),
                "TRACKB": ("track", "B"),
            }
            line_mode, terminal = mapping[mode]
            self._set(target, line_mode, 0.0, terminal)
        self.selected = None
        return "OK"

    def _line_q(self, params: list[str]) -> str:
        self._count("LINE?", params, (1,), "line")
        state = self._line_target("LINE?", params[0])
        if state.mode == "dac":
            return f"DAC,{state.volts:.4f}"
        if state.mode == "smu":
            return "SMUB" if state.terminal == "B" else "SMUA"
        if state.mode == "track":
            return "TRACKB" if state.terminal == "B" else "TRACK"
        return {"gnd": "GND", "float": "FLOAT", "track": "TRACK"}[state.mode]

    def _rows_dac(self, params: list[str]) -> str:
        if len(params) != self.rows:
            raise BoardError(
                ERR_PARAM_COUNT,
                f"ROWS:DAC: expected {self.rows} voltages (one per row), got {len(params)}",
            )
        volts = [
            self._number(f"ROWS:DAC row {i}", token, *self.limits.dac_v, "V")
            for i, token in enumerate(params)
        ]
        for state, v in zip(self.bench.rows_state, volts, strict=True):
            self._set(state, "dac", v)
        self.selected = None
        return "OK"

    def _write_scheme(self, params: list[str]) -> str:
        self._count("WRITE:SCHEME", params, (1,), "V2|V3|GND|FLOAT")
        self.write_scheme = self._choice("WRITE:SCHEME", params[0], tuple(WRITE_SCHEMES))
        return "OK"

    def _pulse(self, params: list[str]) -> str:
        self._count("PULSE", params, (4, 5), "row,col,amplitude_v,width_s[,scheme]")
        row = self._index("PULSE row", params[0], self.rows)
        col = self._index("PULSE col", params[1], self.cols)
        vmax = self.limits.pulse_abs_v
        # eFlash: a program pulse (positive) drives the source line, within its range.
        vhigh = self.limits.source_v[1] if self.limits.source_v is not None else vmax
        amplitude = self._number("PULSE amplitude_v", params[2], -vmax, vhigh, "V")
        width = self._number("PULSE width_s", params[3], *self.limits.width_s, "s")
        scheme = self.write_scheme
        if len(params) == 5:
            scheme = self._choice("PULSE scheme", params[4], tuple(WRITE_SCHEMES))
        self.bench.board_pulse(row, col, amplitude, width, WRITE_SCHEMES[scheme])
        return "OK"

    def _require_eflash(self, cmd: str) -> None:
        if not self.is_eflash:
            raise BoardError(ERR_KIND, f"{cmd}: not available on a {self.kind} board")

    def _eflash_bias(self, cmd: str, params: list[str]) -> str:
        self._require_eflash(cmd)
        self._count(cmd, params, (1,), "volts")
        ranges = {
            "EFLASH:CG": self.limits.control_gate_v,
            "EFLASH:EG": self.limits.erase_gate_v,
            "EFLASH:SL": self.limits.source_v,
            "EFLASH:WL": self.limits.word_line_v,
        }
        lo, hi = ranges[cmd] or (0.0, 0.0)
        value = self._number(cmd, params[0], lo, hi, "V")
        if cmd == "EFLASH:CG":
            self.bench.control_gate_v = value
        elif cmd == "EFLASH:EG":
            self.bench.erase_gate_v = value
        elif cmd == "EFLASH:SL":
            self.bench.source_v = value
        else:
            self.word_line_v = value
            if self.selected is not None:
                self._apply_selection(*self.selected)
        return "OK"

    def _eflash_q(self, params: list[str]) -> str:
        self._require_eflash("EFLASH?")
        self._no_params("EFLASH?", params)
        b = self.bench
        return (
            f"{b.control_gate_v:.4f},{b.erase_gate_v:.4f},{b.source_v:.4f},{self.word_line_v:.4f}"
        )

    def _gnd_all(self, params: list[str]) -> str:
        self._no_params("GND:ALL", params)
        self.bench.ground_all()
        self.selected = None
        return "OK"

    def _stat(self, params: list[str]) -> str:
        self._no_params("STAT?", params)
        sel = "NONE" if self.selected is None else f"{self.selected[0]},{self.selected[1]}"
        temp = self.bench.chip_temperature_c()
        return (
            f"SEL={sel};READ={self.read_scheme};COL={self.read_col};"
            f"WRITE={self.write_scheme};TEMP={temp:.1f}"
        )

    def _err_q(self, params: list[str]) -> str:
        self._no_params("ERR?", params)
        if self.last_error is None:
            return '0,"No error"'
        code, message = self.last_error
        self.last_error = None
        return f'{code},"{message}"'
