"""The nvmlab crossbar / eFlash probe board (protocol: docs/probe-board.md).

ASCII lines ending in LF; every command gets exactly one reply line: ``OK``, a value, or
``ERR <code>,"<message>"``. The driver therefore *queries* every command and checks the
reply, raising :class:`~nvmlab.errors.InstrumentProtocolError` (with the board's code and
message) on ``ERR``. Indices are 0-based; voltages in V, widths in s. The constructor does
no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nvmlab.drivers.transport import Transport
from nvmlab.errors import InstrumentProtocolError

LineKind = Literal["row", "col"]
#: Line states as the board names them.
BoardLineMode = Literal["GND", "FLOAT", "SMUA", "SMUB", "TRACK", "TRACKB", "DAC"]
BoardReadScheme = Literal["GND", "FLOAT", "TRACK", "TRACKB"]
BoardWriteScheme = Literal["V2", "V3", "GND", "FLOAT"]
LINE_MODES: tuple[str, ...] = ("GND", "FLOAT", "SMUA", "SMUB", "TRACK", "TRACKB", "DAC")
READ_SCHEMES: tuple[str, ...] = ("GND", "FLOAT", "TRACK", "TRACKB")
READ_COLUMNS: tuple[str, ...] = ("GND", "SMUB")
WRITE_SCHEMES: tuple[str, ...] = ("V2", "V3", "GND", "FLOAT")
EFLASH_BIASES: tuple[str, ...] = ("CG", "EG", "SL", "WL")

_ERR = re.compile(r'^ERR\s+(?P<code>-?\d+)\s*,\s*"?(?P<message>.*?)"?$')


@dataclass(frozen=True)
class BoardConfiguration:
    """``CONF?``: array kind (``"MEMRISTOR"``, ``"EFLASH"``, ``"RESISTOR"``) and size."""

    kind: str
    rows: int
    cols: int

    @property
    def is_eflash(self) -> bool:
        return self.kind == "EFLASH"


@dataclass(frozen=True)
class BoardLimits:
    """``LIMITS?``: the board's hardware ranges (V, s); ``(0, 0)`` = not on this board."""

    dac_v: tuple[float, float]
    pulse_abs_v: float
    width_s: tuple[float, float]
    control_gate_v: tuple[float, float]
    erase_gate_v: tuple[float, float]
    source_v: tuple[float, float]
    word_line_v: tuple[float, float]


def _num(value: float) -> str:
    """A number as the board reads it: shortest round-trip decimal, no nan / inf."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"the board accepts only finite numbers, got {value!r}")
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


class ProbeBoard:
    """One probe board over a :class:`~nvmlab.drivers.transport.Transport`."""

    model = "probe board"
    transport_defaults: dict[str, Any] = {
        "read_termination": "\n",
        "write_termination": "\n",
        "serial_options": {"baudrate": 115200, "bytesize": 8, "parity": "N", "stopbits": 1},
    }

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    # -- plumbing -------------------------------------------------------------------------
    def ask(self, command: str, *, idempotent: bool = False) -> str:
        """Send one command, return its reply line; ``ERR`` replies raise."""
        reply = self.transport.query(command, idempotent=idempotent)
        if reply.startswith("ERR"):
            match = _ERR.match(reply)
            detail = f"error {match['code']}: {match['message']}" if match else reply
            raise self.transport.error(
                InstrumentProtocolError, f"board refused {command!r}: {detail}"
            )
        return reply

    def command(self, command: str) -> None:
        """Send one setting; the board must answer ``OK``."""
        reply = self.ask(command)
        if reply != "OK":
            raise self.transport.error(
                InstrumentProtocolError, f"unexpected reply {reply!r} to {command!r}; expected 'OK'"
            )

    def _bad_reply(self, command: str, reply: str, expected: str) -> InstrumentProtocolError:
        error = self.transport.error(
            InstrumentProtocolError, f"reply {reply!r} to {command!r} is not {expected}"
        )
        assert isinstance(error, InstrumentProtocolError)
        return error

    @staticmethod
    def line_name(kind: LineKind, index: int) -> str:
        """``R3`` / ``C4``."""
        if kind not in ("row", "col"):
            raise ValueError(f"line kind must be 'row' or 'col', got {kind!r}")
        if isinstance(index, bool) or int(index) != index or index < 0:
            raise ValueError(f"line index must be a non-negative integer, got {index!r}")
        return f"{'R' if kind == 'row' else 'C'}{int(index)}"

    # -- identification and configuration -------------------------------------------------
    def identify(self) -> str:
        """``*IDN?``: ``NVMLAB,PROBE-BOARD,<serial>,<firmware>``."""
        return self.ask("*IDN?", idempotent=True)

    def reset(self) -> None:
        """``*RST``: every line grounded, biases 0 V, schemes to defaults."""
        self.command("*RST")

    def configuration(self) -> BoardConfiguration:
        """``CONF?``: array kind and size."""
        reply = self.ask("CONF?", idempotent=True)
        parts = [p.strip() for p in reply.split(",")]
        try:
            return BoardConfiguration(parts[0].upper(), int(parts[1]), int(parts[2]))
        except (IndexError, ValueError):
            raise self._bad_reply("CONF?", reply, "'<kind>,<rows>,<cols>'") from None

    def hardware_limits(self) -> BoardLimits:
        """``LIMITS?``: the board's own ranges (V, s)."""
        reply = self.ask("LIMITS?", idempotent=True)
        try:
            fields = dict(item.split("=", 1) for item in reply.split(";"))

            def pair(key: str) -> tuple[float, float]:
                low, high = fields[key].split(",")
                return float(low), float(high)

            return BoardLimits(
                pair("DAC"),
                float(fields["PULSE"]),
                pair("WIDTH"),
                pair("CG"),
                pair("EG"),
                pair("SL"),
                pair("WL"),
            )
        except (KeyError, ValueError):
            raise self._bad_reply(
                "LIMITS?", reply, "'DAC=..;PULSE=..;WIDTH=..;CG=..;EG=..;SL=..;WL=..'"
            ) from None

    def status(self) -> dict[str, str]:
        """``STAT?`` as a dict (``SEL``, ``READ``, ``COL``, ``WRITE``, ``TEMP``)."""
        reply = self.ask("STAT?", idempotent=True)
        try:
            return dict(item.split("=", 1) for item in reply.split(";"))
        except ValueError:
            raise self._bad_reply("STAT?", reply, "'KEY=value;...'") from None

    def last_error(self) -> tuple[int, str]:
        """``ERR?``: the most recent error (code, message), then cleared; ``(0, "No error")``."""
        reply = self.transport.query("ERR?", idempotent=False)
        code, _, message = reply.partition(",")
        try:
            return int(code), message.strip().strip('"')
        except ValueError:
            raise self._bad_reply("ERR?", reply, "'<code>,\"<message>\"'") from None

    # -- routing --------------------------------------------------------------------------
    def select(self, row: int, col: int) -> None:
        """``SEL r,c``: the read routing for device (row, col)."""
        self.command(f"SEL {self.line_name('row', row)[1:]},{self.line_name('col', col)[1:]}")

    def selection(self) -> tuple[int, int] | None:
        """``SEL?``: the selected device, or None."""
        reply = self.ask("SEL?", idempotent=True)
        if reply.upper() == "NONE":
            return None
        try:
            row, col = (int(p) for p in reply.split(","))
        except ValueError:
            raise self._bad_reply("SEL?", reply, "'<row>,<col>' or 'NONE'") from None
        return row, col

    def set_read_scheme(self, scheme: BoardReadScheme) -> None:
        """``READ:SCHEME GND|FLOAT|TRACK|TRACKB``: unselected lines during reads (``TRACKB``:
        the tracking read, every unselected line on the buffer following SMU terminal B)."""
        if scheme not in READ_SCHEMES:
            raise ValueError(
                f"read scheme must be one of {', '.join(READ_SCHEMES)}, got {scheme!r}"
            )
        self.command(f"READ:SCHEME {scheme}")

    def read_scheme(self) -> str:
        return self.ask("READ:SCHEME?", idempotent=True).upper()

    def set_read_column(self, mode: Literal["GND", "SMUB"]) -> None:
        """``READ:COL GND|SMUB``: one-channel or two-channel read routing."""
        if mode not in READ_COLUMNS:
            raise ValueError(f"read column must be one of {', '.join(READ_COLUMNS)}, got {mode!r}")
        self.command(f"READ:COL {mode}")

    def set_line(self, kind: LineKind, index: int, mode: BoardLineMode, volts: float = 0.0) -> None:
        """``LINE R<i>|C<i>,<mode>[,<volts>]``; ``volts`` (V) only for ``DAC``; ``TRACK`` /
        ``TRACKB`` follow SMU terminal A / B through the board's buffers."""
        if mode not in LINE_MODES:
            raise ValueError(f"line mode must be one of {', '.join(LINE_MODES)}, got {mode!r}")
        name = self.line_name(kind, index)
        self.command(f"LINE {name},DAC,{_num(volts)}" if mode == "DAC" else f"LINE {name},{mode}")

    def line_state(self, kind: LineKind, index: int) -> tuple[str, float | None]:
        """``LINE? R<i>``: the mode and, for ``DAC``, its voltage (V)."""
        command = f"LINE? {self.line_name(kind, index)}"
        reply = self.ask(command, idempotent=True)
        mode, _, volts = reply.partition(",")
        if mode.upper() not in LINE_MODES:
            raise self._bad_reply(command, reply, f"one of {', '.join(LINE_MODES)}")
        try:
            return mode.upper(), float(volts) if volts else None
        except ValueError:
            raise self._bad_reply(command, reply, "'DAC,<volts>'") from None

    def set_row_voltages(self, volts: Sequence[float]) -> None:
        """``ROWS:DAC v0,...``: every row on its DAC (V), one value per row."""
        self.command("ROWS:DAC " + ",".join(_num(v) for v in volts))

    def ground_all(self) -> None:
        """``GND:ALL``: every line grounded, eFlash biases 0 V."""
        self.command("GND:ALL")

    # -- writes ---------------------------------------------------------------------------
    def set_write_scheme(self, scheme: BoardWriteScheme) -> None:
        """``WRITE:SCHEME V2|V3|GND|FLOAT``: default half-select scheme of pulses."""
        if scheme not in WRITE_SCHEMES:
            raise ValueError(
                f"write scheme must be one of {', '.join(WRITE_SCHEMES)}, got {scheme!r}"
            )
        self.command(f"WRITE:SCHEME {scheme}")

    def pulse(
        self,
        row: int,
        col: int,
        amplitude_v: float,
        width_s: float,
        scheme: BoardWriteScheme | None = None,
    ) -> None:
        """``PULSE r,c,V,width[,scheme]``: on-board write pulse (V, s); answers once it is over."""
        if scheme is not None and scheme not in WRITE_SCHEMES:
            raise ValueError(
                f"write scheme must be one of {', '.join(WRITE_SCHEMES)}, got {scheme!r}"
            )
        r, c = self.line_name("row", row)[1:], self.line_name("col", col)[1:]
        command = f"PULSE {r},{c},{_num(amplitude_v)},{_num(width_s)}"
        self.command(command + (f",{scheme}" if scheme else ""))

    # -- eFlash ---------------------------------------------------------------------------
    def set_eflash_bias(self, which: Literal["CG", "EG", "SL", "WL"], volts: float) -> None:
        """``EFLASH:CG|EG|SL|WL <v>``: control gate, erase gate, source line, read word line (V)."""
        if which not in EFLASH_BIASES:
            raise ValueError(
                f"eFlash bias must be one of {', '.join(EFLASH_BIASES)}, got {which!r}"
            )
        self.command(f"EFLASH:{which} {_num(volts)}")

    def eflash_biases(self) -> tuple[float, float, float, float]:
        """``EFLASH?``: control gate, erase gate, source line, word line (V)."""
        reply = self.ask("EFLASH?", idempotent=True)
        try:
            cg, eg, sl, wl = (float(p) for p in reply.split(","))
        except ValueError:
            raise self._bad_reply("EFLASH?", reply, "'<cg>,<eg>,<sl>,<wl>'") from None
        return cg, eg, sl, wl
