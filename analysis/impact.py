"""The network impact of a chip: ``nvmlab impact`` and the ``impact`` job step.

From the chip's stored measurements (:func:`~nvmlab.analysis.errormodel.
build_error_model`) and a network (the built-in digits benchmark, or the user's NPZ /
PyTorch network with NPZ data or a local CIFAR-10 copy), :func:`run_impact` computes every
figure of :func:`~nvmlab.analysis.studies.impact_study` (accuracy versus temperature,
naive and mitigated; the memory-state optimization's energy ratio; defect tolerance; the
error-multiplier margin) and, when the run holds measured products (the ``products``
step after a ``tune``), the in-the-loop comparison. It draws three plots
(``impact_temperature.png``, ``impact_energy.png``, ``impact_defects.png``), writes the
JSON (``impact.json``; every printed figure under the names of docs/analysis.md) and the
error model (``error_model.json``). It reads the database only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from nvmlab.analysis.errormodel import ErrorModel, build_error_model
from nvmlab.analysis.network import (
    Network,
    digits_benchmark,
    load_cifar10,
    load_dataset_npz,
    load_network_npz,
    load_torch_state_dict,
)
from nvmlab.analysis.studies import Evaluator, impact_study
from nvmlab.errors import ConfigError
from nvmlab.steps import Param, StepContext, register_step
from nvmlab.storage.jsonable import jsonable

__all__ = ["format_impact", "impact_step", "load_network", "run_impact", "write_plots"]


def load_network(
    network: str | None, data: str | None, *, seed: int = 0
) -> tuple[Network, np.ndarray, np.ndarray]:
    """The network and its test data: the built-in benchmark without ``network``; else the
    user's (``.npz`` or a PyTorch ``.pt``/``.pth`` state dict) with ``data`` (an NPZ of x,
    y, or a CIFAR-10 ``cifar-10-batches-py`` folder)."""
    if network is None:
        if data is not None:
            raise ConfigError(
                "--data goes with --network (the benchmark has its own)", field="--data"
            )
        return digits_benchmark(seed=seed)
    if data is None:
        raise ConfigError("a user network needs its test data: --data FILE.npz or a CIFAR-10 folder",
                          field="--data")  # fmt: skip
    path = Path(network)
    net = load_torch_state_dict(path) if path.suffix in (".pt", ".pth") else load_network_npz(path)
    x, y = load_cifar10(data) if Path(data).is_dir() else load_dataset_npz(data)
    if x.shape[1] != net.weights[0].shape[0]:
        raise ConfigError(
            f"the data have {x.shape[1]} inputs, the network's first layer takes "
            f"{net.weights[0].shape[0]}",
            field="--data",
        )
    return net, x, y


def run_impact(
    db: Any, chip: str, *, network: str | None = None, data: str | None = None,
    draws: int = 25, seed: int = 0, products_run: int | None = None,
    model: ErrorModel | None = None,
) -> tuple[dict[str, Any], ErrorModel]:  # fmt: skip
    """Every figure (a JSON-able dict) and the error model used."""
    from nvmlab.analysis.inloop import compare_products

    model = model if model is not None else build_error_model(db, chip)
    if not model.tuning:
        raise ConfigError(
            f"chip {chip!r} has no tuning outcomes: the error model needs the tuner's error; "
            "tune devices of it first ('nvmlab tune' or a tune step)",
            field="--chip",
        )
    net, x, y = load_network(network, data, seed=seed)
    ev = Evaluator(net, x, y, model, draws=draws, seed=seed)
    figures = impact_study(ev)
    figures["chip"] = chip
    figures["error_model"] = {
        k: v for k, v in model.to_dict().items() if k not in ("tuning", "format", "version")
    }
    figures["error_model"]["tuning_within_1pct"] = {
        a: t.within(0.01) for a, t in model.tuning.items()
    }
    figures["in_the_loop"] = (
        compare_products(db, products_run, model, chip) if products_run is not None else None
    )
    return figures, model


def write_plots(figures: dict[str, Any], folder: Path) -> list[Path]:
    """The three plots of the impact (PNG) into ``folder``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    def new() -> tuple[Any, Any]:
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        return fig, fig.subplots()

    fig, ax = new()
    rows = figures["accuracy_vs_temperature"]
    t = [r["temperature_c"] for r in rows]
    for name, style in (("naive", "o-"), ("mitigated", "s-")):
        mean = [r[name]["mean"] for r in rows]
        ci = [r[name]["ci95"] for r in rows]
        ax.errorbar(t, mean, yerr=ci, fmt=style, capsize=3, label=name)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("temperature (C)")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_title(f"{figures['network']}: accuracy drop versus temperature")
    ax.legend()
    paths.append(folder / "impact_temperature.png")
    fig.savefig(paths[-1], dpi=110)

    fig, ax = new()
    tried = figures["energy_vs_window"]
    energy = np.array([r["energy_j"] for r in tried])
    drop = np.array([r["screen_worst_drop_pts"] for r in tried])
    ok = drop < 1.0
    ax.scatter(energy[ok] * 1e12, drop[ok], s=12, label="under 1 point (screen)")
    ax.scatter(energy[~ok] * 1e12, drop[~ok], s=12, marker="x", label="over 1 point")
    ax.axvline(figures["energy_naive_j"] * 1e12, color="C3", ls=":", label="naive window")
    ax.axvline(figures["energy_mitigated_j"] * 1e12, color="C2", ls="--", label="chosen")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short decade
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("array energy per inference (pJ)")
    ax.set_ylabel("worst accuracy drop (points)")
    ax.set_title(f"memory-state search: {_x(figures['energy_ratio'], '.2f', 'x')} less energy")
    ax.legend(fontsize=8)
    paths.append(folder / "impact_energy.png")
    fig.savefig(paths[-1], dpi=110)

    fig, ax = new()
    rows = figures["accuracy_vs_defect_rate"]
    rate = [r["defect_rate"] * 100 for r in rows]
    for name, style in (("naive", "o-"), ("mitigated", "s-")):
        ax.errorbar(rate, [r[name]["mean"] for r in rows], yerr=[r[name]["ci95"] for r in rows],
                    fmt=style, capsize=3, label=name)  # fmt: skip
    if all("mitigated_defect_blind_mean" in r for r in rows):
        ax.plot(rate, [r["mitigated_defect_blind_mean"] for r in rows], "^:",
                label="mitigated, mapped defect-blind")  # fmt: skip
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("defect rate (%)")
    ax.set_ylabel("accuracy drop (points)")
    factor = figures["defect_tolerance_factor"]
    ax.set_title(
        f"defect tolerance: {factor:.1f}x"
        if factor is not None and math.isfinite(factor)
        else "defect tolerance"
    )
    ax.legend()
    paths.append(folder / "impact_defects.png")
    fig.savefig(paths[-1], dpi=110)
    return paths


def _pct(value: float | None) -> str:
    return f"{value * 100:.3g} %" if value is not None and math.isfinite(value) else "n/a"


def _x(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    """A figure as printed; NaN and infinity (null in the JSON) in words."""
    if value is None or math.isnan(value):
        return "undefined"
    if math.isinf(value):
        return "not reached (beyond 64)"
    return f"{value:{spec}}{unit}"


def format_impact(f: dict[str, Any]) -> list[str]:
    """The printed summary (every figure here is in the JSON under its name)."""
    lines = [
        f"network {f['network']} on chip {f['chip']!r}: float accuracy "
        f"{f['float_accuracy'] * 100:.2f} % on {f['test_samples']} test samples; "
        f"{f['draws']} error-model draws per point (drop: mean +- 95 % CI, points)",
        f"naive: window {f['naive']['g_lo_s'] * 1e6:g}-{f['naive']['g_hi_s'] * 1e6:g} uS at "
        f"{f['naive']['read_v']:g} V, {f['naive']['algorithm']} tuning errors",
        f"mitigated: window {f['mitigated']['g_lo_s'] * 1e6:g}-{f['mitigated']['g_hi_s'] * 1e6:g}"
        f" uS at {f['mitigated']['read_v']:g} V, {f['mitigated']['algorithm']} tuning errors, "
        "temperature gain compensation, defect-aware mapping, I-V pre-distortion",
        "accuracy_vs_temperature:   T (C)   naive drop        mitigated drop",
    ]
    for r in f["accuracy_vs_temperature"]:
        lines.append(
            f"  {r['temperature_c']:>27.0f}   {r['naive']['mean']:6.2f} +- {r['naive']['ci95']:5.2f}"
            f"    {r['mitigated']['mean']:6.2f} +- {r['mitigated']['ci95']:5.2f}"
        )
    lines += [
        f"naive_worst_drop_pts {f['naive_worst_drop_pts']:.2f}; mitigated_worst_drop_pts "
        f"{f['mitigated_worst_drop_pts']:.2f} (target: under 1 point over 25-100 C)",
        f"energy_ratio {_x(f['energy_ratio'], '.2f', 'x')} (naive {f['energy_naive_j'] * 1e12:.3g} pJ, "
        f"mitigated {f['energy_mitigated_j'] * 1e12:.3g} pJ per inference; target 2.5-9x)"
        + (
            ""
            if f["state_search_passed"]
            else "; state_search_passed false: no window keeps "
            "the drop under 1 point at this chip's defects"
        ),
        f"energy_ratio_defect_free {_x(f['energy_ratio_defect_free'], '.2f', 'x')} (the same "
        f"search without defects: window {f['mitigated_defect_free']['g_lo_s'] * 1e6:g}-"
        f"{f['mitigated_defect_free']['g_hi_s'] * 1e6:g} uS at "
        f"{f['mitigated_defect_free']['read_v']:g} V)",
        "accuracy_vs_defect_rate:   rate   naive drop        mitigated drop",
    ]
    for r in f["accuracy_vs_defect_rate"]:
        lines.append(
            f"  {_pct(r['defect_rate']):>26}   {r['naive']['mean']:6.2f} +- {r['naive']['ci95']:5.2f}"
            f"    {r['mitigated']['mean']:6.2f} +- {r['mitigated']['ci95']:5.2f}"
        )
    lines += [
        f"tolerable_defect_rate_naive {_pct(f['tolerable_defect_rate_naive'])}, mitigated "
        f"{_pct(f['tolerable_defect_rate_mitigated'])}: defect_tolerance_factor "
        f"{_x(f['defect_tolerance_factor'], '.1f', 'x')} (target: over 100x; undefined when "
        "the naive network loses 1 point without any defect)",
        f"tolerable_defect_rate_defect_blind {_pct(f['tolerable_defect_rate_defect_blind'])} "
        f"(the mitigated point mapped without regard to defects): "
        f"defect_tolerance_factor_mapping {_x(f['defect_tolerance_factor_mapping'], '.1f', 'x')}",
        f"error_multiplier_margin {_x(f['error_multiplier_margin'])} (the mitigated network "
        "first loses 1 point with every random error times this); "
        f"error_multiplier_margin_defect_free {_x(f['error_multiplier_margin_defect_free'])} "
        "(the same without defects, at the state the defect-free search chose)",
        f"seconds_per_evaluation {f['seconds_per_evaluation']:.3f} ({f['evaluations']} "
        "evaluations)",
    ]
    loop = f.get("in_the_loop")
    if loop:
        lines.append(
            f"in_the_loop: {loop['vectors']} vectors, {loop['columns_compared']} column "
            f"currents: relative error against the targets median "
            f"{_pct(loop['relative_error_target_median'])} (p95 "
            f"{_pct(loop['relative_error_target_p95'])}), {_pct(loop['within_95pct_share'])} "
            f"within the model's 95 % interval; against the device reads median "
            f"{_pct(loop['relative_error_reads_median'])}; differential outputs median "
            f"{_pct(loop['differential_error_full_scale_median'])} of full scale"
        )
    return lines


def write_outputs(figures: dict[str, Any], model: ErrorModel, folder: Path) -> dict[str, Path]:
    """``impact.json``, ``error_model.json`` and the plots into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"json": folder / "impact.json", "model": folder / "error_model.json"}
    out["json"].write_text(json.dumps(jsonable(figures), indent=1) + "\n")
    model.to_json(out["model"])
    for path in write_plots(figures, folder):
        out[path.stem] = path
    return out


def _impact(context: StepContext, params: dict[str, Any]) -> dict[str, Any]:
    run_dir = context.extras.get("run_dir")
    folder = Path(params["out"]) if params.get("out") else Path(run_dir or ".") / "report"
    figures, model = run_impact(
        context.database, context.chip, network=params.get("network"), data=params.get("data"),
        draws=int(params["draws"]), seed=int(params["seed"]), products_run=context.run_id,
    )  # fmt: skip
    paths = write_outputs(figures, model, folder)
    for line in format_impact(figures):
        import logging

        logging.getLogger("nvmlab.jobs").info("impact: %s", line)
    keep = ("float_accuracy", "naive_worst_drop_pts", "mitigated_worst_drop_pts", "energy_ratio",
            "defect_tolerance_factor", "error_multiplier_margin")  # fmt: skip
    summary = {k: figures[k] for k in keep}
    summary["json"] = str(paths["json"].resolve())
    if figures.get("in_the_loop"):
        summary["in_the_loop_median_error"] = figures["in_the_loop"]["relative_error_target_median"]
    return summary


def _check(params: dict[str, Any]) -> None:
    if params.get("network") is None:
        try:
            import sklearn  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError(
                "the built-in benchmark needs scikit-learn; allowed: pip install "
                "'nvmlab[analysis]', or give network and data files",
                field="network",
            ) from None
    elif params.get("data") is None:
        raise ConfigError("a user network needs its data file", field="data")


_impact.check = _check  # type: ignore[attr-defined]

impact_step = register_step(
    "impact",
    summary="network accuracy and array energy from the chip's measured errors (naive vs mitigated)",
    params=(
        Param("network", str, None, path="in", help="network NPZ (W0, b0, ...) or PyTorch state dict; default the digits benchmark"),
        Param("data", str, None, path="in", help="test data NPZ (x in [0, 1], y)"),
        Param("draws", int, 25, "", 2, 1000, help="error-model draws (chips) per operating point"),
        Param("seed", int, 0, "", 0, 2**31 - 1, help="seed of the draws and of the benchmark"),
        Param("out", str, None, path="out", help="folder for impact.json and the plots (default the run's report folder)"),
    ),
)(_impact)  # fmt: skip
