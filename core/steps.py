"""The registry of step kinds: what a job (or a CLI command) can ask a station to do.

A step kind has a name (``"thresholds"``, ``"tune"``), a parameter schema (each
parameter with its type, unit, default and allowed range) and a function of the station,
the chip and the database. Characterization and tuning register their kinds when their
modules are imported; the job runner reads the registry to validate a job file in full
before any instrument is touched, and to run each step.

This module belongs to the core: it imports no layer, so the layers that fill it
(characterization, tuning) and the runner that reads it (jobs) all may import it.

Example::

    @register_step(
        "noise",
        summary="repeated reads at the chosen states; sigma versus conductance",
        params=(
            Param("reads", int, 100, low=2, high=100_000, help="reads per device and state"),
            Param("nplc", float, 1.0, unit="PLC", low=0.01, high=10.0),
        ),
    )
    def noise_step(context: StepContext, params: dict[str, Any]) -> dict[str, Any]: ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nvmlab.errors import ConfigError

__all__ = [
    "Param",
    "StepContext",
    "StepKind",
    "UnitGuard",
    "register_step",
    "get_step",
    "step_kinds",
    "unregister_step",
]

_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
}


@dataclass(frozen=True)
class Param:
    """One parameter of a step kind: type, default, unit and allowed values.

    ``kind`` is ``int``, ``float``, ``str``, ``bool`` or ``list`` (a list of numbers, each
    checked against ``low``/``high``). ``default`` is ``None`` for a required parameter
    (set ``required=True``) or one that may stay unset. ``low``/``high`` are inclusive.
    """

    name: str
    kind: type
    default: Any = None
    unit: str = ""
    low: float | None = None
    high: float | None = None
    choices: Sequence[Any] | None = None
    required: bool = False
    help: str = ""
    #: A path: ``"in"`` a file that must exist, ``"out"`` a file or folder written; a
    #: relative path in a job file is taken from the job file's folder.
    path: str = ""

    def allowed(self) -> str:
        """The allowed values in words, for error messages and ``--help``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        unit = f" {self.unit}" if self.unit else ""
        what = _TYPE_NAMES[self.kind]
        if self.kind is list:
            what = "a list of numbers"
        if self.low is not None and self.high is not None:
            return f"{what} from {self.low:g} to {self.high:g}{unit}"
        if self.low is not None:
            return f"{what} of at least {self.low:g}{unit}"
        if self.high is not None:
            return f"{what} of at most {self.high:g}{unit}"
        return what

    def _number(self, value: Any, where: str) -> float | int:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        is_float = isinstance(value, float)
        if self.kind is int and not is_int:
            raise ConfigError(
                f"value {value!r} is not allowed; expected {self.allowed()}", field=where
            )
        if not (is_int or is_float):
            raise ConfigError(
                f"value {value!r} is not allowed; expected {self.allowed()}", field=where
            )
        number = value if self.kind is int else float(value)
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(
                f"value {value!r} is not allowed; expected {self.allowed()}", field=where
            )
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            raise ConfigError(
                f"value {value!r} is not allowed; expected {self.allowed()}", field=where
            )
        return number

    def validate(self, value: Any, where: str) -> Any:
        """``value`` checked (and normalised: ints to floats for float parameters)."""
        if self.kind in (int, float):
            result: Any = self._number(value, where)
        elif self.kind is list:
            if not isinstance(value, (list, tuple)) or not value:
                raise ConfigError(
                    f"value {value!r} is not allowed; expected {self.allowed()}", field=where
                )
            result = [self._number(v, f"{where}[{i}]") for i, v in enumerate(value)]
        elif self.kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(
                    f"value {value!r} is not allowed; expected true or false", field=where
                )
            result = value
        else:
            if not isinstance(value, self.kind):
                raise ConfigError(
                    f"value {value!r} is not allowed; expected {self.allowed()}", field=where
                )
            result = value
        if self.choices is not None and result not in self.choices:
            raise ConfigError(
                f"value {value!r} is not allowed; expected {self.allowed()}", field=where
            )
        return result


@dataclass
class StepContext:
    """What a step runs against: the open station, the chip's name, the database.

    ``station`` is an open ``nvmlab.instruments.Station`` (typed ``Any`` here so the core
    imports no layer); ``database`` a ``nvmlab.storage.Database``; ``run_id`` the run the
    step's records belong to; ``progress(done, total)`` reports units done.
    """

    station: Any
    chip: str
    database: Any
    run_id: int | None = None
    progress: Callable[[int, int], None] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: Prefix of the step's unit keys inside a job's run (``"s2-tune/"``), so that two
    #: steps of one job never share a unit key and each reads back only its own records.
    unit_prefix: str = ""
    #: Raises KeyboardInterrupt when a stop was asked for (Ctrl-C, SIGTERM); called at
    #: every safe point between operations.
    stop_check: Callable[[], None] | None = None
    #: The job's fault handling (:class:`UnitGuard`), or None: faults propagate.
    guard: UnitGuard | None = None


class UnitGuard(Protocol):
    """What a job runner offers the step around each unit (``nvmlab.jobs``).

    ``before_unit(key)`` is called before every attempt at a unit (the chamber's alarm and
    band are checked there; it may wait, or raise to end the run). ``unit_done(key)`` is
    called when a unit's work is done, just before its records are committed (an
    emulated chip is saved there). ``recover(exc, key,
    attempt)`` is called when attempt number ``attempt`` of unit ``key`` raised ``exc``:
    it returns True after reconnecting the instruments (the step then redoes the unit
    with freshly configured instruments and state) or False to let ``exc`` end the step.
    """

    def before_unit(self, key: str) -> None: ...

    def unit_done(self, key: str) -> None: ...

    def recover(self, exc: BaseException, key: str, attempt: int) -> bool: ...


StepFunction = Callable[[StepContext, dict[str, Any]], Any]


@dataclass(frozen=True)
class StepKind:
    """A registered step kind."""

    name: str
    summary: str
    params: tuple[Param, ...]
    run: StepFunction
    #: instrument time (s) the step will take with these (validated) parameters, or None
    estimate_s: Callable[[dict[str, Any]], float] | None = None

    def validate(
        self, params: Mapping[str, Any], *, file: str | None = None, where: str = ""
    ) -> dict[str, Any]:
        """Every parameter checked, defaults filled; unknown or missing keys are errors.

        Errors name ``file`` and the field as ``where.param`` (e.g. ``steps[2].nplc``).
        """
        prefix = f"{where}." if where else ""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r} for step {self.name!r}; allowed: "
                f"{', '.join(known) or '(none)'}",
                file=file,
                field=f"{prefix}{unknown[0]}",
            )
        result: dict[str, Any] = {}
        for p in self.params:
            if p.name in params:
                try:
                    result[p.name] = p.validate(params[p.name], f"{prefix}{p.name}")
                except ConfigError as exc:
                    raise ConfigError(
                        str(exc).partition(": ")[2] or str(exc), file=file, field=exc.field
                    ) from None
            elif p.required:
                raise ConfigError(
                    f"missing; expected {p.allowed()}", file=file, field=f"{prefix}{p.name}"
                )
            else:
                result[p.name] = p.default
        return result


_REGISTRY: dict[str, StepKind] = {}


def register_step(
    name: str,
    *,
    summary: str,
    params: Sequence[Param] = (),
    estimate_s: Callable[[dict[str, Any]], float] | None = None,
) -> Callable[[StepFunction], StepFunction]:
    """Decorator registering a step function under ``name``.

    Registering the same function again (a module imported twice) is harmless; another
    function under a taken name is an error.
    """
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"step {name!r}: duplicate parameter names {names}")

    def decorate(function: StepFunction) -> StepFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.run.__qualname__ != function.__qualname__:
            raise ValueError(f"step kind {name!r} is already registered by {existing.run!r}")
        _REGISTRY[name] = StepKind(name, summary, tuple(params), function, estimate_s)
        return function

    return decorate


def unregister_step(name: str) -> None:
    """Remove a step kind (for tests that register their own)."""
    _REGISTRY.pop(name, None)


def get_step(name: str, *, file: str | None = None, where: str = "kind") -> StepKind:
    """The step kind ``name``; ConfigError naming the registered kinds if unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown step kind {name!r}; allowed: {', '.join(sorted(_REGISTRY)) or '(none registered)'}",
            file=file,
            field=where,
        ) from None


def step_kinds() -> dict[str, StepKind]:
    """Every registered step kind, by name."""
    return dict(_REGISTRY)
