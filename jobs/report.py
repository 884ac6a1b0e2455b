"""The ``report`` step: plots and a page of what the job measured, in the run's folder.

Writes into ``out`` (default ``<output>/run-<id>/report``):

- the chip report of :func:`nvmlab.characterization.report.write_report` (conductance and
  defect maps, threshold histograms ... from the chip's newest profile; ``report.html``);
- ``tuning.png`` when the job tuned devices: final read versus target and the histogram
  of the relative tuning error, from the tuning outcomes of this run's completed units;
- ``summary.json``: every step of the job so far with its summary.

Needs matplotlib (``pip install 'nvmlab[report]'``); a job with a report step is refused
before any instrument is touched when it is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nvmlab.errors import ConfigError
from nvmlab.steps import Param, StepContext, register_step
from nvmlab.storage.query import chain_tuning_outcomes

__all__ = ["report_step"]


def _check(params: dict[str, Any]) -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(
            "the report step needs matplotlib, which is not installed; allowed: install it "
            "(pip install 'nvmlab[report]') or remove the step",
            field="kind",
        ) from None


def _tuning_plot(
    outcomes: dict[str, np.ndarray], path: Path, tolerance: float, *, eflash: bool = False
) -> None:
    """Final read versus target and the error histogram; eFlash targets are cell currents
    (A, drawn in nA on log axes), memristor targets conductances (S, drawn in uS)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    scale, quantity, unit = (1e9, "cell current", "nA") if eflash else (1e6, "conductance", "uS")
    target = outcomes["target_s"] * scale
    final = outcomes["final_s"] * scale
    ok = np.isfinite(final)
    left.plot(target[ok], final[ok], ".", ms=3)
    span = [np.nanmin(target), np.nanmax(target)] if target.size else [0, 1]
    left.plot(span, span, "k-", lw=0.8)
    if eflash:
        left.set_xscale("log")
        left.set_yscale("log")
    left.set_xlabel(f"target {quantity} ({unit})")
    left.set_ylabel(f"final read ({unit})")
    left.set_title("final verification read versus target")
    err = outcomes["error_rel"][np.isfinite(outcomes["error_rel"])] * 100
    if err.size:
        lim = max(3 * tolerance * 100, float(np.quantile(np.abs(err), 0.98)))
        right.hist(np.clip(err, -lim, lim), bins=60)
        for x in (-tolerance * 100, tolerance * 100):
            right.axvline(x, color="k", lw=0.8, ls="--")
        within = float(np.mean(np.abs(err) <= tolerance * 100)) * 100
        right.set_title(f"tuning error: {within:.1f} % within +-{tolerance * 100:g} %")
    right.set_xlabel("relative error (%)")
    right.set_ylabel("devices")
    fig.savefig(path, dpi=110)


def _report(context: StepContext, params: dict[str, Any]) -> dict[str, Any]:
    from nvmlab.characterization.report import write_report
    from nvmlab.storage.runs import unit_attempts

    run_dir = context.extras.get("run_dir")
    out = Path(params["out"]) if params.get("out") else Path(run_dir or ".") / "report"
    out.mkdir(parents=True, exist_ok=True)
    db = context.database
    written = write_report(db, out_dir=out, chip=context.chip)
    files = [str(p) for p in written.png_paths.values()] + [str(written.html_path)]
    summary: dict[str, Any] = {"report_dir": str(out.resolve()), "files": len(files) + 1}
    if context.run_id is not None:
        outcomes = chain_tuning_outcomes(db, context.run_id)
        if outcomes["row"].size:
            tolerance = 0.01
            job = context.extras.get("job")
            if job is not None:
                tolerance = next(
                    (float(s.params.get("tolerance") or 0.01) for s in job.steps
                     if s.kind in ("tune", "tune-eflash")), 0.01,
                )  # fmt: skip
            from nvmlab.storage.inventory import require_chip

            eflash = require_chip(db, context.chip).kind == "eflash"
            _tuning_plot(outcomes, out / "tuning.png", tolerance, eflash=eflash)
            summary["files"] += 1
        steps = []
        for attempt in unit_attempts(db, context.run_id):
            if attempt["unit_key"].endswith("/step") and attempt["status"] == "completed":
                steps.append({"step": attempt["unit_key"][:-5], **(attempt["result"] or {})})
        _job_page(out, context.run_id, steps)
        (out / "summary.json").write_text(json.dumps(
            {"run_id": context.run_id, "chip": context.chip, "steps": steps},
            indent=1, default=str,
        ) + "\n")  # fmt: skip
    return summary


def _job_page(out: Path, run_id: int, steps: list[dict[str, Any]]) -> None:
    """``job.html``: the job's steps and its own plots (tuning, network impact) beside the
    chip's report, images embedded (one file to mail or archive)."""
    import base64
    import html

    rows = "".join(
        f"<tr><td>{html.escape(str(s['step']))}</td><td>{html.escape(json.dumps(s.get('summary', {}), default=str)[:400])}</td></tr>"
        for s in steps
    )  # fmt: skip
    images = "".join(
        f"<h2>{html.escape(p.stem)}</h2><img src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}' alt='{html.escape(p.stem)}'>"
        for p in sorted(out.glob("*.png"))
        if p.stem == "tuning" or p.stem.startswith("impact_")
    )  # fmt: skip
    (out / "job.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>run {run_id}</title>"
        f"<h1>Job run {run_id}</h1><p><a href='report.html'>the chip's report</a></p>"
        f"<table border='1'><tr><th>step</th><th>summary</th></tr>{rows}</table>{images}",
        encoding="utf-8",
    )


_report.check = _check  # type: ignore[attr-defined]

report_step = register_step(
    "report",
    summary="plots and a page of the chip's profile and the job's tuning, in the run's folder",
    params=(
        Param(
            "out",
            str,
            None,
            path="out",
            help="folder for the report (default: the run's folder, report/)",
        ),  # fmt: skip
    ),
)(_report)
