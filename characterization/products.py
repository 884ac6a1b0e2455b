"""The ``products`` sweep: vector-matrix products measured through the array.

Each input vector ``u`` (one value per row, in [0, 1]) drives the rows from the board's
DACs at ``u read_v`` (V, each within the station's read limit) while every column is held
at 0 V; each column's current is measured in turn by the SMU
(:meth:`~nvmlab.instruments.arrays.ArrayOperations.vector_matrix_product`). That is the
analog core of a layer of a network mapped onto the array: the network-impact analysis
(``nvmlab impact``) compares these stored products with what its error model predicts.

Inputs: ``inputs``, a table of vectors (NPY or CSV, vectors x rows, values in [0, 1]), or
``count`` random vectors (uniform in [0, 1], seeded by the run). Stored per vector: two
traces on device (0, 0) of the chip, ``vmm-input`` (x: row index, y: row voltage, V) and
``vmm`` (x: column index, y: column current, A), with the vector's index in their meta.
Units: V, A.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nvmlab.characterization.sweep import (
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    check_station_limits,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.steps import Param

__all__ = ["ProductsSweep", "input_vectors"]


def input_vectors(params: dict[str, Any], rows: int, seed: int) -> np.ndarray:
    """The input vectors (vectors x rows, in [0, 1]) of a products sweep."""
    if params.get("inputs"):
        path = str(params["inputs"])
        try:
            table = (
                np.load(path, allow_pickle=False) if path.endswith(".npy")
                else np.loadtxt(path, delimiter=",", comments="#", ndmin=2)
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read {path}: {exc}; allowed: a table of numbers (.npy or .csv)",
                field="inputs",
            ) from None
        table = np.asarray(table, dtype=float)
        if table.ndim != 2 or table.shape[1] != rows or not np.isfinite(table).all():
            raise ConfigError(
                f"table of shape {table.shape}; allowed: vectors x {rows} (one value per "
                "row of the chip), every value finite",
                field="inputs",
            )
        if table.min() < 0 or table.max() > 1:
            raise ConfigError(
                f"values from {table.min():g} to {table.max():g}; allowed: 0 to 1 (a row's "
                "voltage is the value times read_v)",
                field="inputs",
            )
        return table
    return np.random.default_rng(seed).random((int(params["count"]), rows))


@register_sweep
class ProductsSweep(Sweep):
    kind = "products"
    summary = "vector-matrix products: one DAC voltage per row, every column's current"
    description = __doc__ or ""
    params = (
        Param("inputs", str, None, path="in",
              help="input vectors, vectors x rows in [0, 1] (.npy or .csv)"),
        Param("count", int, 32, "", 1, 100_000, help="random input vectors when no inputs file"),
        Param("read_v", float, 0.2, "V", 0.01, 0.5, help="row voltage of an input of 1"),
        Param("nplc", float, 1.0, "PLC", 0.01, 10.0, help="integration of each column read"),
        Param("current_limit_a", float, 1e-3, "A", 1e-9, 1.0, help="SMU compliance"),
        Param("per_unit", int, 8, "", 1, 10_000, help="vectors per unit"),
    )  # fmt: skip

    def check(self, params: dict[str, Any], chip: Any, station: Any) -> None:
        check_station_limits(
            params, station.limits, read_v="max_read_v", current_limit_a="max_current_a"
        )
        input_vectors(params, chip.rows, 0)

    def plan(self, params: dict[str, Any], chip: Any, rng: Any, profile: Any) -> list[SweepUnit]:
        n = len(input_vectors(params, chip.rows, 0)) if params.get("inputs") else params["count"]
        per = int(params["per_unit"])
        return [SweepUnit(f"vectors-{k:05d}", info={"k": k}) for k in range(-(-n // per))]

    def estimate_s(self, params: dict[str, Any], chip: Any) -> float | None:
        if chip is None:
            return None
        n = params["count"] if not params.get("inputs") else 32
        return float(n * chip.cols * (params["nplc"] / 60.0 + 2e-3))

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        vectors = input_vectors(p, ctx.chip.rows, ctx.seed)
        per = int(p["per_unit"])
        k = int(unit.info["k"])
        for index in range(k * per, min((k + 1) * per, len(vectors))):
            ctx.check_stop()
            volts = vectors[index] * float(p["read_v"])
            currents = ctx.ops.vector_matrix_product(
                volts, nplc=float(p["nplc"]), current_limit_a=float(p["current_limit_a"])
            )
            meta = {"vector": index}
            ctx.writer.add_trace(0, 0, "vmm-input", np.arange(ctx.chip.rows), volts,
                                 x_name="row", y_name="voltage_v", meta=meta)  # fmt: skip
            ctx.writer.add_trace(0, 0, "vmm", np.arange(ctx.chip.cols), currents,
                                 x_name="column", y_name="current_a", meta=meta)  # fmt: skip

    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        traces = ctx.chain_traces("vmm")
        currents = np.array([t["y"] for t in traces]) if traces else np.zeros((0, 0))
        return ProfileUpdate(summary={
            "vectors": len(traces),
            "column_current_max_a": float(np.abs(currents).max()) if currents.size else 0.0,
        })  # fmt: skip
