"""A toy sweep for testing the runner and the command line: reads each row once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from nvmlab.characterization.sweep import (
    _SWEEPS,
    ProfileUpdate,
    Sweep,
    SweepUnit,
    register_sweep,
)
from nvmlab.steps import Param, unregister_step


class ReadEachRow(Sweep):
    """Reads every device of each row once; stops on demand inside a chosen unit."""

    kind = "test-read-rows"
    summary = "test sweep"
    params = (
        Param("sample", int, 0, low=0, high=1 << 24),
        Param("spare_v", float, None, unit="V", low=0.0, high=1.0, help="unset by default"),
    )
    interrupt_in: str | None = None
    measured: list[str] = []

    def plan(self, params, chip, rng, profile):
        return [
            SweepUnit(f"row-{r}", tuple((r, c) for c in range(chip.cols))) for r in range(chip.rows)
        ]

    def run_unit(self, ctx, unit):
        for i, (r, c) in enumerate(unit.devices):
            read = ctx.read(r, c)
            ctx.parameter(r, c, "conductance_s", read.conductance_s, "S")
            if unit.key == self.interrupt_in and i == 3:
                raise KeyboardInterrupt
        self.measured.append(unit.key)

    def finish(self, ctx):
        g = ctx.chain_parameters(["conductance_s"])["conductance_s"]
        return ProfileUpdate(
            arrays={"conductance_s": g}, summary={"median_s": float(np.nanmedian(g))}
        )


@contextlib.contextmanager
def registered_toy_sweep() -> Iterator[ReadEachRow]:
    register_sweep(ReadEachRow)
    try:
        yield _SWEEPS["test-read-rows"]  # type: ignore[misc]
    finally:
        _SWEEPS.pop("test-read-rows", None)
        unregister_step("test-read-rows")
