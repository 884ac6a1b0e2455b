"""A small declarative layer for drivers: settings and readings as documented properties.

In the PyMeasure style, a driver is a flat list of properties, each with its command, its
unit and allowed range in the docstring, and a validator that runs *before* any command
is formatted, so an out-of-range value never reaches the wire::

    class Smu(Instrument):
        source_voltage = control(
            ":SOUR:VOLT?", ":SOUR:VOLT {:g}",
            "Source level (V), -210..210.",
            validator=strict_range(-210, 210), cast=float,
        )

Commands are :meth:`str.format` templates: the value goes in the positional field and a
channel's placeholders (``{ch}``) in named fields, so one descriptor serves ``smua`` and
``smub``. ``values`` maps Python values to the instrument's tokens (``{True: "ON"}``) in
both directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from nvmlab.drivers.transport import Transport
from nvmlab.errors import InstrumentProtocolError

__all__ = [
    "Instrument",
    "ScpiInstrument",
    "check_line_frequency",
    "Channel",
    "control",
    "measurement",
    "setting",
    "strict_range",
    "strict_discrete_set",
    "parse_float",
    "parse_bool",
]

Validator = Callable[[Any, str], Any]


def strict_range(low: float, high: float) -> Validator:
    """Accept a finite number within [low, high]; raise ``ValueError`` naming the range."""

    def check(value: Any, what: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{what}: {value!r} is not a number; allowed {low:g}..{high:g}"
            ) from None
        if not math.isfinite(number) or not low <= number <= high:
            raise ValueError(f"{what}: {value!r} is outside the allowed range {low:g}..{high:g}")
        return number

    check.allowed = f"{low:g}..{high:g}"  # type: ignore[attr-defined]
    return check


def strict_discrete_set(allowed: Iterable[Any]) -> Validator:
    """Accept only one of ``allowed``; raise ``ValueError`` listing them."""
    choices = tuple(allowed)

    def check(value: Any, what: str) -> Any:
        if value not in choices:
            raise ValueError(f"{what}: {value!r} is not one of {list(choices)!r}")
        return value

    check.allowed = repr(list(choices))  # type: ignore[attr-defined]
    return check


def parse_float(reply: str) -> float:
    """A number as the instrument prints it (``+1.000E-05``, ``nil`` is rejected)."""
    return float(reply.strip())


def parse_bool(reply: str) -> bool:
    token = reply.strip().upper()
    if token in ("1", "ON", "TRUE", "1.00000E+00"):
        return True
    if token in ("0", "OFF", "FALSE", "0.00000E+00"):
        return False
    return bool(float(token))


class _CommandOwner:
    """What descriptors need: formatting placeholders and the write/query primitives."""

    def _placeholders(self) -> dict[str, str]:
        return {}

    def write(self, command: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def ask(self, command: str) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class Instrument(_CommandOwner):
    """Base of every driver: holds the transport; the constructor does no I/O.

    ``transport_defaults`` are the settings the station passes to
    :func:`~nvmlab.drivers.transport.open_transport` for this model.
    """

    transport_defaults: dict[str, Any] = {"read_termination": "\n", "write_termination": "\n"}

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @property
    def name(self) -> str:
        return self.transport.name

    def write(self, command: str) -> None:
        """Send one command line."""
        self.transport.write(command)

    def ask(self, command: str) -> str:
        """Query a setting or identity (changes nothing): retried after a timeout."""
        return self.transport.query(command, idempotent=True)

    def ask_once(self, command: str) -> str:
        """Query that triggers an action (a measurement, a sweep): never repeated."""
        return self.transport.query(command, idempotent=False)

    def read(self) -> str:
        return self.transport.read()

    def protocol_error(self, message: str) -> InstrumentProtocolError:
        return InstrumentProtocolError(
            message, instrument=self.transport.name, resource=self.transport.resource
        )

    def parse_numbers(self, reply: str, expected: int | None = None) -> np.ndarray:
        """Comma-separated numbers (``+1.0E-05,2e-6``) as a float array; ``expected`` counts."""
        try:
            values = np.array([float(x) for x in reply.split(",") if x.strip()], dtype=float)
        except ValueError as exc:
            raise self.protocol_error(f"unparsable readings {reply[:80]!r}: {exc}") from exc
        if expected is not None and values.size != expected:
            raise self.protocol_error(f"expected {expected} values, got {values.size}")
        return values

    def errors(self, max_errors: int = 50) -> list[tuple[int, str]]:
        """The instrument's error queue, emptied: [(code, text)] (per model)."""
        raise NotImplementedError

    def check_errors(self) -> None:
        """Raise :class:`~nvmlab.errors.InstrumentProtocolError` with the instrument's errors."""
        found = self.errors()
        if found:
            text = "; ".join(f"{code},{message!r}" for code, message in found)
            raise self.protocol_error(f"the instrument reported error(s): {text}")

    def close(self) -> None:
        self.transport.close()


class ScpiInstrument(Instrument):
    """An IEEE 488.2 / SCPI instrument: ``*RST``, ``*CLS`` and the ``:SYST:ERR?`` queue."""

    def reset(self) -> None:
        """``*RST``: the instrument's defaults, outputs off."""
        self.write("*RST")

    def clear(self) -> None:
        """``*CLS``: clear the error queue and the status registers."""
        self.write("*CLS")

    def errors(self, max_errors: int = 50) -> list[tuple[int, str]]:
        """Read the error queue (``:SYST:ERR?`` until ``0,"No error"``): [(code, text)]."""
        found: list[tuple[int, str]] = []
        for _ in range(max_errors):
            reply = self.ask(":SYST:ERR?")
            code_text, _, message = reply.partition(",")
            try:
                code = int(code_text)
            except ValueError:
                raise self.protocol_error(f"unreadable error-queue entry {reply!r}") from None
            if code == 0:
                return found
            found.append((code, message.strip().strip('"')))
        return found


def check_line_frequency(hz: float) -> float:
    """The mains frequency (Hz) an SMU integrates over: 50 or 60."""
    if hz not in (50.0, 60.0):
        raise ValueError(f"line_frequency_hz must be 50 or 60 Hz, got {hz!r}")
    return float(hz)


class Channel(_CommandOwner):
    """One channel of a multi-channel instrument; fills ``{ch}`` in command templates."""

    def __init__(self, parent: Instrument, ch: str) -> None:
        self.parent = parent
        self.ch = ch

    def _placeholders(self) -> dict[str, str]:
        return {"ch": self.ch}

    def write(self, command: str) -> None:
        self.parent.write(command)

    def ask(self, command: str) -> str:
        return self.parent.ask(command)

    def ask_once(self, command: str) -> str:
        return self.parent.ask_once(command)

    def protocol_error(self, message: str) -> InstrumentProtocolError:
        return self.parent.protocol_error(message)


class control:  # noqa: N801 - named like PyMeasure's descriptor
    """A setting the driver can read back and change.

    Args:
        get_cmd: query template (``None``: write-only).
        set_cmd: command template with one positional field for the value (``None``: read-only).
        doc: docstring; state the unit and the allowed range.
        validator: checks (and may coerce) the value before formatting; raises ``ValueError``.
        values: map of Python values to the instrument's tokens.
        reply_values: map used to parse replies when they differ from the tokens sent
            (TSP prints ``1.00000e+00`` for ``smua.OUTPUT_DCVOLTS``).
        cast: parser for the reply (after ``values`` are mapped back).
        set_format: optional function formatting the (validated, mapped) value.
    """

    def __init__(
        self,
        get_cmd: str | None,
        set_cmd: str | None,
        doc: str,
        *,
        validator: Validator | None = None,
        values: Mapping[Any, str] | None = None,
        reply_values: Mapping[Any, str] | None = None,
        cast: Callable[[str], Any] = str,
        set_format: Callable[[Any], str] | None = None,
    ) -> None:
        self.get_cmd = get_cmd
        self.set_cmd = set_cmd
        self.validator = validator
        self.values = dict(values) if values else None
        self.reply_values = dict(reply_values) if reply_values else self.values
        self.cast = cast
        self.set_format = set_format
        self.__doc__ = doc
        self.attr = "property"

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, obj: _CommandOwner | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        if self.get_cmd is None:
            raise AttributeError(f"{self.attr} is write-only")
        reply = obj.ask(self.get_cmd.format(**obj._placeholders()))
        return self.parse(obj, reply)

    def parse(self, obj: _CommandOwner, reply: str) -> Any:
        token = reply.strip().strip('"')
        if self.reply_values is not None:
            for key, text in self.reply_values.items():
                if token.upper() == str(text).upper():
                    return key
            try:
                number = float(token)
            except ValueError:
                number = None
            if number is not None:
                for key, text in self.reply_values.items():
                    try:
                        if float(text) == number:
                            return key
                    except ValueError:
                        continue
            raise _protocol_error(
                obj,
                f"{self.attr}: reply {reply!r} is none of {list(self.reply_values.values())!r}",
            )
        try:
            return self.cast(token)
        except (TypeError, ValueError) as exc:
            raise _protocol_error(obj, f"{self.attr}: cannot parse reply {reply!r}: {exc}") from exc

    def __set__(self, obj: _CommandOwner, value: Any) -> None:
        if self.set_cmd is None:
            raise AttributeError(f"{self.attr} is read-only")
        obj.write(self.format_command(obj, value))

    def format_command(self, obj: _CommandOwner, value: Any) -> str:
        """The command setting ``value`` (validated first; nothing is sent here)."""
        assert self.set_cmd is not None
        what = f"{type(obj).__name__}.{self.attr}"
        if self.validator is not None:
            value = self.validator(value, what)
        if self.values is not None:
            if value not in self.values:
                raise ValueError(f"{what}: {value!r} is not one of {list(self.values)!r}")
            value = self.values[value]
        text = self.set_format(value) if self.set_format else value
        return self.set_cmd.format(text, **obj._placeholders())


def measurement(get_cmd: str, doc: str, *, cast: Callable[[str], Any] = parse_float) -> control:
    """A read-only value (a reading, an identity)."""
    return control(get_cmd, None, doc, cast=cast)


def setting(set_cmd: str, doc: str, **kwargs: Any) -> control:
    """A write-only setting."""
    return control(None, set_cmd, doc, **kwargs)


def _protocol_error(obj: _CommandOwner, message: str) -> InstrumentProtocolError:
    maker = getattr(obj, "protocol_error", None)
    if maker is not None:
        return maker(message)  # type: ignore[no-any-return]
    return InstrumentProtocolError(message)
