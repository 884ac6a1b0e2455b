"""Device physics of the emulated chips, vectorized over the array.

:func:`create_array` builds a chip from a bench-file table: ``"memristor"``
(:class:`~nvmlab.mocks.physics.memristor.MemristorArray`), ``"eflash"``
(:class:`~nvmlab.mocks.physics.eflash.EflashArray`) or ``"resistor"`` (an ideal ohmic
crossbar for circuit tests). The same seed gives the same chip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.mocks.physics.base import ArrayPhysics

ARRAY_KINDS: tuple[str, ...] = ("memristor", "eflash", "resistor")
#: Conductance (S) of every device of a resistor array unless the table sets ``conductance_s``.
RESISTOR_DEFAULT_S = 50e-6


def create_array(
    kind: str,
    rows: int,
    cols: int,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> ArrayPhysics:
    """A ``rows`` x ``cols`` chip of ``kind`` with device parameters drawn from ``seed``.

    ``params`` is the bench file's table for that kind (every key optional, validated:
    ConfigError names an unknown key or an out-of-range value and the allowed range).
    """
    if kind not in ARRAY_KINDS:
        raise ConfigError(
            f"unknown array kind {kind!r}; allowed: {', '.join(ARRAY_KINDS)}", field="array.kind"
        )
    for name, value in (("rows", rows), ("cols", cols)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not 1 <= value <= 4096
        ):
            raise ConfigError(
                f"value {value!r} is not allowed; allowed 1 to 4096", field=f"array.{name}"
            )
    if kind == "memristor":
        from nvmlab.mocks.physics.memristor import MemristorArray, MemristorParams

        return MemristorArray(rows, cols, seed=seed, params=MemristorParams.from_table(params))
    if kind == "eflash":
        from nvmlab.mocks.physics.eflash import EflashArray, EflashParams

        return EflashArray(rows, cols, seed=seed, params=EflashParams.from_table(params))
    from nvmlab.mocks.physics.resistor import ResistorArray

    table = dict(params or {})
    conductance = table.pop("conductance_s", RESISTOR_DEFAULT_S)
    if table:
        key = sorted(table)[0]
        raise ConfigError(
            f"unknown parameter {key!r}; allowed parameters: conductance_s", field=f"resistor.{key}"
        )
    try:
        g = np.broadcast_to(np.asarray(conductance, dtype=float), (rows, cols)).copy()
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"value {conductance!r} is not a conductance or a {rows} x {cols} table of them ({exc})",
            field="resistor.conductance_s",
        ) from exc
    if not (np.all(np.isfinite(g)) and np.all(g > 0) and np.all(g <= 1.0)):
        raise ConfigError(
            f"value {conductance!r} is out of range; allowed above 0 up to 1 S",
            field="resistor.conductance_s",
        )
    return ResistorArray(g)


__all__ = ["ARRAY_KINDS", "RESISTOR_DEFAULT_S", "create_array"]
