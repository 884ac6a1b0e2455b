"""Validated parameter dataclasses built from a bench-file table.

Each device family declares its parameters as a dataclass whose fields carry an allowed
range in their metadata (``metadata={"range": (lo, hi)}``, inclusive). :func:`from_table`
builds one from a dict (a TOML table), rejecting unknown keys, wrong types and
out-of-range values with a :class:`~nvmlab.errors.ConfigError` that names the field, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from nvmlab.errors import ConfigError

P = TypeVar("P")


def ranged(default: float, lo: float, hi: float, doc: str = "") -> Any:
    """A float dataclass field with default and inclusive allowed range [lo, hi]."""
    return dataclasses.field(default=default, metadata={"range": (lo, hi), "doc": doc})


def from_table(cls: type[P], table: Mapping[str, Any] | None, *, section: str) -> P:
    """Build ``cls`` from ``table``, validating every key; ``section`` names the table."""
    table = dict(table or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown parameter {unknown[0]!r} (value {table[unknown[0]]!r}); "
            f"allowed parameters: {', '.join(sorted(fields))}",
            field=f"{section}.{unknown[0]}",
        )
    values: dict[str, Any] = {}
    for name, value in table.items():
        f = fields[name]
        where = f"{section}.{name}"
        if isinstance(f.default, bool):
            if not isinstance(value, bool):
                raise ConfigError(
                    f"value {value!r} is not allowed; expected true or false", field=where
                )
            values[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"value {value!r} is not a number", field=where)
        lo, hi = f.metadata.get("range", (-math.inf, math.inf))
        if not (math.isfinite(float(value)) and lo <= float(value) <= hi):
            raise ConfigError(
                f"value {value!r} is out of range; allowed {lo:g} to {hi:g}", field=where
            )
        values[name] = float(value)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(section)
    return obj


def require_less(section: str, low_name: str, low: float, high_name: str, high: float) -> None:
    """Raise ConfigError unless ``low < high`` (two related fields of one table)."""
    if not low < high:
        raise ConfigError(
            f"value {low!r} must be below {high_name} = {high!r}",
            field=f"{section}.{low_name}",
        )


def require_initial_range_within(
    params: Any, section: str, initial: tuple[str, str], window: tuple[str, str], what: str
) -> None:
    """Raise ConfigError unless the initial-state range ``initial`` (min, max field names)
    is ordered and lies inside the window ``window`` (min, max field names)."""
    lo_name, hi_name = initial
    wlo_name, whi_name = window
    wlo, whi = getattr(params, wlo_name), getattr(params, whi_name)
    require_less(section, wlo_name, wlo, whi_name, whi)
    lo, hi = getattr(params, lo_name), getattr(params, hi_name)
    if not lo <= hi:  # equal bounds are allowed: every device starts in the same state
        raise ConfigError(
            f"value {lo!r} must not exceed {hi_name} = {hi!r}", field=f"{section}.{lo_name}"
        )
    for name in initial:
        value = getattr(params, name)
        if not wlo <= value <= whi:
            raise ConfigError(
                f"value {value!r} is outside {what}; allowed {wlo_name} = {wlo:g} "
                f"to {whi_name} = {whi:g}",
                field=f"{section}.{name}",
            )


def to_table(obj: Any) -> dict[str, Any]:
    """The parameters as a plain dict (the inverse of :func:`from_table`)."""
    return dataclasses.asdict(obj)
