"""``nvmlab report``: PNG plots and one self-contained HTML page of a chip's characterization.

What is reported (:func:`write_report`):

* ``--run RUN``: that run — its chip's profile *as of that run* (the profile the run stored,
  else the newest profile stored before the run ended), the run's own summary and the
  traces of the run and of the runs it resumes;
* ``--chip NAME``: the chip's newest profile and, for every sweep kind in the profile's
  ``meta["runs"]``, that run's summary and traces.

Plots (one PNG each, in ``--out``; :data:`PLOTS` in this order):

=========================== ================================================================
``conductance_map``         profile ``conductance_s`` per device (uS), NaN grey
``defect_map``              profile ``defect_class`` (functional / stuck-off / stuck-on)
``threshold_histograms``    profile ``set_threshold_v``, ``reset_threshold_v``, ``vth_v`` (V)
``conductance_vs_temperature`` a summary's ``plot``: ``temperatures_c``, ``states_s``,
                            ``mean_conductance_s`` (per state, per temperature)
``noise_vs_conductance``    a summary's ``plot``: ``conductance_s``, ``sigma_s``, ``nplc``
``iv_loops``                traces ``iv-loop`` / ``iv-dc`` / ``iv-pulsed`` (V, A)
``drift``                   a summary's ``plot``: ``time_s``, ``states_s``,
                            ``mean_relative_change``; profile ``drift_per_decade_rel``
``idvg``                    traces ``idvg`` (control-gate V, A, temperature C)
``endurance``               a summary's ``plot``: ``cycles``, ``g_on_s``, ``g_off_s``
``disturb``                 a summary's ``plot``: ``read_v``, ``read_drift_rel`` and/or
                            ``amplitude_v``, ``disturb_v2_rel``, ``disturb_v3_rel``
``program_erase``           a summary's ``plot``: ``program_v``, ``program_dvth_v`` and/or
                            ``erase_v``, ``erase_dvth_v``
=========================== ================================================================

A summary's ``plot`` is found by its keys (the sweep kind named in the table is preferred
when several have them). A plot whose data is absent is *skipped* with the reason (and
the sweep that would provide it); the HTML page lists the skipped plots.

The HTML page (``report.html``) embeds every PNG as a base64 ``data:`` URI and has no
external resource; it holds the chip, the runs (kind, status, times, parameters), summary
statistics of every profile array, the defect counts, the profile scalars and each sweep's
scalar summary figures.

matplotlib (the ``report`` extra) is imported only here, when a report is written, and
draws with the Agg backend (no display, no global pyplot state). Units: V, A, S, s, C.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.errors import ConfigError, NvmlabError, StorageError
from nvmlab.storage.profile import DEVICE_ARRAYS, SCALARS, ChipProfile, list_profiles, load_profile

if TYPE_CHECKING:
    from nvmlab.storage.database import Database
    from nvmlab.storage.inventory import RegisteredChip

__all__ = [
    "PLOTS",
    "MissingDependencyError",
    "ReportResult",
    "register_report",
    "write_report",
]

#: The file name of the HTML page in the output folder.
HTML_NAME = "report.html"
#: Traces loaded per trace kind and run (the plots show a few devices only).
MAX_TRACES = 400
#: Devices drawn in the I-V and Id-Vg plots.
MAX_DEVICES = 6
IV_KINDS = ("iv-loop", "iv-dc", "iv-pulsed")
INSTALL_HINT = "pip install 'nvmlab[report]'"


class MissingDependencyError(NvmlabError):
    """An optional dependency (matplotlib, for reports) is not installed."""


@dataclass
class ReportResult:
    """What :func:`write_report` wrote: the HTML page, the PNG files by plot name (in
    :data:`PLOTS` order) and the plots skipped, by name, with the reason."""

    html_path: Path
    png_paths: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class _Skip(Exception):
    """A plot cannot be drawn: its data is absent (the message says what and why)."""


# ------------------------------------------------------------------------------ data


@dataclass
class _Data:
    """Everything a report shows."""

    scope: str
    chip: RegisteredChip | None
    profile: ChipProfile | None
    no_profile: str
    runs: list[dict[str, Any]]
    #: sweep kind -> summary dict
    summaries: dict[str, dict[str, Any]]
    #: trace kind -> traces (dicts with x, y, row, col, temperature_c, run_id ...)
    traces: dict[str, list[dict[str, Any]]]


def _sweep_kind(run: Mapping[str, Any]) -> str:
    config = run.get("config") or {}
    kind = config.get("kind") if isinstance(config, dict) else None
    if isinstance(kind, str) and kind:
        return kind
    text = str(run.get("kind") or "")
    return text.removeprefix("characterize-")


def _run_row(db: Database, run_id: int, option: str) -> dict[str, Any]:
    from nvmlab.storage.query import get_run

    try:
        return get_run(db, run_id)
    except StorageError as exc:
        raise ConfigError(str(exc), field=option) from None


def _chain(db: Database, run_id: int) -> list[int]:
    from nvmlab.storage.query import run_chain

    return run_chain(db, run_id)


def _load_traces(db: Database, run_ids: Sequence[int]) -> dict[str, list[dict[str, Any]]]:
    """Up to :data:`MAX_TRACES` traces per kind (I-V and Id-Vg) of ``run_ids``."""
    from sqlalchemy import select

    from nvmlab.storage.models import Trace

    out: dict[str, list[dict[str, Any]]] = {}
    if not run_ids:
        return out
    table = Trace.__table__
    for kind in (*IV_KINDS, "idvg"):
        query = (
            select(table)
            .where(table.c.run_id.in_(list(run_ids)), table.c.kind == kind)
            .order_by(table.c.id)
            .limit(MAX_TRACES)
        )
        with db.errors(f"read {kind} traces"), db.read_connection() as conn:
            rows = conn.execute(query).all()
        items = []
        for r in rows:
            item = dict(r._mapping)
            item["x"] = np.frombuffer(item.pop("x_data"), dtype="<f8")
            item["y"] = np.frombuffer(item.pop("y_data"), dtype="<f8")
            items.append(item)
        if items:
            out[kind] = items
    return out


def _summary_of(run: Mapping[str, Any]) -> dict[str, Any]:
    config = run.get("config") or {}
    summary = config.get("summary") if isinstance(config, dict) else None
    return dict(summary) if isinstance(summary, dict) else {}


def _profile_as_of(db: Database, chip: str, run: Mapping[str, Any]) -> ChipProfile | None:
    """The profile run ``run`` stored (the newest if several), else the newest profile
    stored before the run ended (or, while it runs, before now); None if there is none."""
    profiles = list_profiles(db, chip)
    own = [p["id"] for p in profiles if p["run_id"] == run["id"]]
    if own:
        return load_profile(db, chip, profile_id=max(own))
    until = run.get("ended_at") or None
    earlier = [
        p["id"]
        for p in profiles
        if until is None or p["created_at"] is None or _naive(p["created_at"]) <= _naive(until)
    ]
    if not earlier:
        return None
    return load_profile(db, chip, profile_id=max(earlier))


def _naive(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=None) if value.tzinfo is not None else value


def _gather_run(db: Database, run_value: int | str) -> _Data:
    from nvmlab.storage.models import Chip
    from nvmlab.storage.runs import parse_run_id

    try:
        run_id = parse_run_id(str(run_value)) if not isinstance(run_value, int) else run_value
        if isinstance(run_value, bool) or run_id <= 0:
            raise StorageError(f"run id {run_value!r}; allowed: a run id > 0 ('nvmlab runs')")
    except StorageError as exc:
        raise ConfigError(str(exc), field="--run") from None
    run = _run_row(db, run_id, "--run")
    chip = None
    profile = None
    no_profile = f"run {run_id} names no chip"
    if run.get("chip_id") is not None:
        from sqlalchemy import select

        from nvmlab.storage.inventory import require_chip

        with db.errors(f"look up the chip of run {run_id}"), db.read_connection() as conn:
            name = conn.execute(select(Chip.name).where(Chip.id == run["chip_id"])).scalar()
        if name is not None:
            chip = require_chip(db, name)
            profile = _profile_as_of(db, name, run)
            no_profile = f"chip {name!r} had no stored profile as of run {run_id}"
    kind = _sweep_kind(run)
    summary = _summary_of(run)
    if not summary and profile is not None and profile.meta.get("runs", {}).get(kind) == run_id:
        summary = dict(profile.meta.get("summary", {}).get(kind) or {})
    return _Data(
        scope=f"run {run_id}", chip=chip, profile=profile, no_profile=no_profile, runs=[run],
        summaries={kind: summary} if summary else {},
        traces=_load_traces(db, _chain(db, run_id)),
    )  # fmt: skip


def _gather_chip(db: Database, chip_name: str) -> _Data:
    from nvmlab.storage.inventory import require_chip

    if not isinstance(chip_name, str) or not chip_name.strip():
        raise ConfigError(f"chip name {chip_name!r}; give a registered chip's name", field="--chip")
    try:
        chip = require_chip(db, chip_name)
    except StorageError as exc:
        raise ConfigError(str(exc), field="--chip") from None
    try:
        profile = load_profile(db, chip_name)
    except StorageError as exc:
        raise ConfigError(
            f"{exc} (nvmlab characterize ... --chip {chip_name}); or report one run with --run",
            field="--chip",
        ) from None
    runs: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    run_ids: list[int] = []
    stored = profile.meta.get("summary", {}) if isinstance(profile.meta, dict) else {}
    for kind, run_id in dict(profile.meta.get("runs", {})).items():
        summary = stored.get(kind) if isinstance(stored, dict) else None
        if isinstance(summary, dict) and summary:
            summaries[str(kind)] = dict(summary)
        try:
            run = _run_row(db, int(run_id), "--chip")
        except (ConfigError, TypeError, ValueError):
            continue  # the profile names a run no longer stored: its summary still shows
        runs.append(run)
        if str(kind) not in summaries and _summary_of(run):
            summaries[str(kind)] = _summary_of(run)
        run_ids.extend(_chain(db, int(run_id)))
    runs.sort(key=lambda r: int(r["id"]))
    return _Data(
        scope=f"chip {chip_name}", chip=chip, profile=profile, no_profile="", runs=runs,
        summaries=summaries, traces=_load_traces(db, sorted(set(run_ids))),
    )  # fmt: skip


# ------------------------------------------------------------------------------ helpers


def _matplotlib() -> tuple[Any, Any, Any]:
    """(matplotlib, Figure, FigureCanvasAgg), imported now; a clear error if missing."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"nvmlab report needs matplotlib, which is not installed ({exc}); install the "
            f"report extra: {INSTALL_HINT}"
        ) from None
    return matplotlib, Figure, FigureCanvasAgg


def _finite(array: np.ndarray | None) -> np.ndarray:
    if array is None:
        return np.empty(0)
    values = np.asarray(array, dtype=float).ravel()
    return values[np.isfinite(values)]


def _series(plot: Mapping[str, Any], key: str, where: str) -> np.ndarray:
    """``plot[key]`` as a 1-D float array (None -> NaN); _Skip if absent or malformed."""
    value = plot.get(key)
    if value is None:
        raise _Skip(f"{where} has no {key!r}")
    try:
        array = np.array([np.nan if v is None else v for v in value], dtype=float)
    except (TypeError, ValueError):
        raise _Skip(f"{where}: {key!r} is not a list of numbers") from None
    if array.ndim != 1 or array.size == 0:
        raise _Skip(f"{where}: {key!r} is empty or not a flat list")
    return array


def _matrix(plot: Mapping[str, Any], key: str, shape: tuple[int, int], where: str) -> np.ndarray:
    value = plot.get(key)
    if value is None:
        raise _Skip(f"{where} has no {key!r}")
    try:
        array = np.array([[np.nan if v is None else v for v in row] for row in value], dtype=float)
    except (TypeError, ValueError):
        raise _Skip(f"{where}: {key!r} is not a list of lists of numbers") from None
    if array.shape != shape:
        raise _Skip(f"{where}: {key!r} has shape {array.shape}; expected {shape}")
    return array


def _find_plot(
    data: _Data, keys: Sequence[str], preferred: Sequence[str], what: str, sweep: str
) -> tuple[str, dict[str, Any]]:
    """The ``plot`` dict of a summary holding every one of ``keys`` (kinds in
    ``preferred`` first); _Skip naming the sweep that provides it when none has."""
    found: list[tuple[str, dict[str, Any]]] = []
    for kind, summary in data.summaries.items():
        plot = summary.get("plot")
        if isinstance(plot, dict) and all(plot.get(k) is not None for k in keys):
            found.append((kind, plot))
    if not found:
        raise _Skip(f"no {what} in the {_where(data)} (the {sweep} sweep stores it)")
    found.sort(key=lambda item: (item[0] not in preferred, item[0]))
    return found[0]


def _where(data: _Data) -> str:
    if data.scope.startswith("run"):
        kinds = ", ".join(sorted(data.summaries)) or "no summary"
        return f"summary of {data.scope} ({kinds})"
    return f"sweep summaries of {data.scope}"


def _need_profile(data: _Data) -> ChipProfile:
    if data.profile is None:
        raise _Skip(data.no_profile)
    return data.profile


def _si(value: float | None, unit: str, digits: int = 4) -> str:
    """``value`` with an SI prefix (12.3 uS, -1.2 V); '' for None / NaN."""
    if value is None or not math.isfinite(value):
        return ""
    if unit in ("", "%") or value == 0:
        return f"{value:.{digits}g}{(' ' + unit) if unit else ''}"
    prefixes = [(1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, ""), (1e3, "k")]
    scale, prefix = prefixes[0]
    for s, p in prefixes:
        if abs(value) >= s:
            scale, prefix = s, p
    return f"{value / scale:.{digits}g} {prefix}{unit}"


def _scale(values: np.ndarray, unit: str) -> tuple[float, str]:
    """(divisor, unit with prefix) for an axis showing ``values``."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(np.max(finite)) if finite.size else 1.0
    for s, p in ((1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"))[::-1]:
        if top >= s and top < s * 1000:
            return s, p + unit
    return 1.0, unit


def _devices(traces: list[dict[str, Any]]) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    for t in traces:
        device = (int(t["row"]), int(t["col"]))
        if device not in seen:
            seen.append(device)
        if len(seen) >= MAX_DEVICES:
            break
    return seen


# ------------------------------------------------------------------------------ plots

PlotFunction = Callable[[_Data, Callable[..., Any]], Any]


def _plot_conductance_map(data: _Data, figure: Callable[..., Any]) -> Any:
    from matplotlib.colors import LogNorm

    profile = _need_profile(data)
    g = profile.conductance_s
    if g is None or _finite(g).size == 0:
        raise _Skip("the profile has no conductance map (the map sweep measures it)")
    fig = figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    cmap = _cmap("viridis").with_extremes(bad="#d0d0d0")
    measured = _finite(g)
    positive = measured[measured > 0]
    # A few stuck-on devices would flatten a linear scale: log colours past 1.5 decades.
    logarithmic = positive.size > 0 and positive.max() / positive.min() > 30
    norm = LogNorm(positive.min() * 1e6, positive.max() * 1e6) if logarithmic else None
    shown = np.where(g > 0, g, np.nan) if logarithmic else g
    image = ax.imshow(
        np.ma.masked_invalid(shown * 1e6), cmap=cmap, norm=norm, interpolation="nearest"
    )
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("conductance (µS" + (", log scale)" if logarithmic else ")"))
    if logarithmic:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        bar.ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(
        f"Conductance map, {profile.chip} ({profile.rows} x {profile.cols})\n"
        f"median {_si(float(np.median(measured)), 'S', 3)}, {measured.size} devices measured"
        + ("" if measured.size == g.size else "; grey: not measured")
    )
    _device_axes(ax)
    return fig


def _device_axes(ax: Any) -> None:
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name].copy()


DEFECT_LABELS = {-1: "not measured", 0: "functional", 1: "stuck-off", 2: "stuck-on"}
DEFECT_COLORS = {-1: "#d0d0d0", 0: "#4daf4a", 1: "#377eb8", 2: "#e41a1c"}


def _plot_defect_map(data: _Data, figure: Callable[..., Any]) -> Any:
    from matplotlib.colors import BoundaryNorm, ListedColormap

    profile = _need_profile(data)
    defect = profile.defect_class
    if defect is None or not np.any(defect >= 0):
        raise _Skip("the profile has no defect map (the defects sweep classifies devices)")
    fig = figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    classes = sorted(DEFECT_LABELS)
    cmap = ListedColormap([DEFECT_COLORS[c] for c in classes])
    norm = BoundaryNorm([c - 0.5 for c in classes] + [classes[-1] + 0.5], cmap.N)
    image = ax.imshow(defect, cmap=cmap, norm=norm, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, ticks=classes)
    bar.ax.set_yticklabels([f"{DEFECT_LABELS[c]} ({int((defect == c).sum())})" for c in classes])
    measured = int((defect >= 0).sum())
    bad = int((defect > 0).sum())
    ax.set_title(
        f"Defect map, {profile.chip}\n{bad} of {measured} measured devices stuck "
        f"({100.0 * bad / max(measured, 1):.1f} %)"
    )
    _device_axes(ax)
    return fig


def _plot_threshold_histograms(data: _Data, figure: Callable[..., Any]) -> Any:
    profile = _need_profile(data)
    panels = [
        (name, label)
        for name, label in (
            ("set_threshold_v", "set threshold (V)"),
            ("reset_threshold_v", "reset threshold (V)"),
            ("vth_v", "eFlash threshold voltage Vth at 25 °C (V)"),
        )
        if _finite(getattr(profile, name)).size
    ]
    if not panels:
        raise _Skip(
            "the profile has no set / reset thresholds or eFlash Vth (the thresholds sweep, "
            "or the eFlash Id-Vg sweep, measures them)"
        )
    fig = figure(figsize=(4.2 * len(panels) + 0.6, 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = {"set_threshold_v": "#d95f02", "reset_threshold_v": "#1b9e77", "vth_v": "#7570b3"}
    for ax, (name, label) in zip(axes, panels, strict=True):
        values = _finite(getattr(profile, name))
        bins = int(min(40, max(5, np.sqrt(values.size) * 2)))
        ax.hist(values, bins=bins, color=colors[name], edgecolor="white", linewidth=0.5)
        median = float(np.median(values))
        mean = float(values.mean())
        std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
        ax.axvline(median, color="black", linestyle="--", linewidth=1, label="median")
        ax.set_xlabel(label)
        ax.set_ylabel("devices")
        cv = abs(std / mean) * 100 if mean else float("nan")
        ax.set_title(
            f"median {median:.3g} V, CV (std/mean) {cv:.1f} %\n{values.size} devices",
            fontsize=10,
        )
        ax.legend(fontsize=8)
    fig.suptitle(f"Threshold distributions, {profile.chip}")
    return fig


def _state_label(state_s: float) -> str:
    return f"state {_si(state_s, 'S', 3)}" if math.isfinite(state_s) else "state ?"


def _plot_conductance_vs_temperature(data: _Data, figure: Callable[..., Any]) -> Any:
    kind, plot = _find_plot(
        data, ("temperatures_c", "states_s", "mean_conductance_s"), ("temperature",),
        "conductance-versus-temperature data", "temperature",
    )  # fmt: skip
    where = f"the {kind} summary's plot"
    temps = _series(plot, "temperatures_c", where)
    states = _series(plot, "states_s", where)
    g = _matrix(plot, "mean_conductance_s", (states.size, temps.size), where)
    fig = figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    order = np.argsort(temps)
    for state, row in zip(states, g, strict=True):
        ax.plot(temps[order], row[order] * 1e6, marker="o", label=_state_label(state))
    ax.set_xlabel("temperature (°C)")
    ax.set_ylabel("mean conductance (µS)")
    ax.set_title(f"Conductance versus temperature per state ({kind} sweep)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _plot_noise_vs_conductance(data: _Data, figure: Callable[..., Any]) -> Any:
    kind, plot = _find_plot(
        data, ("conductance_s", "sigma_s"), ("noise",), "noise-versus-conductance data", "noise"
    )
    where = f"the {kind} summary's plot"
    g = _series(plot, "conductance_s", where)
    sigma = _series(plot, "sigma_s", where)
    if sigma.size != g.size:
        raise _Skip(f"{where}: {g.size} conductances but {sigma.size} sigmas")
    nplc = plot.get("nplc")
    nplcs = _series(plot, "nplc", where) if nplc is not None else np.full(g.size, np.nan)
    if nplcs.size != g.size:
        nplcs = np.full(g.size, np.nan)
    fig = figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    groups = sorted({float(v) for v in nplcs if math.isfinite(v)}) or [float("nan")]
    for value in groups:
        mask = (nplcs == value) if math.isfinite(value) else ~np.isfinite(nplcs)
        mask &= np.isfinite(g) & np.isfinite(sigma) & (g > 0) & (sigma > 0)
        label = f"{value:g} PLC" if math.isfinite(value) else "NPLC not given"
        ax.loglog(g[mask] * 1e6, sigma[mask] * 1e9, marker="o", linestyle="-", label=label)
    _plain_log_ticks(ax)
    ax.set_xlabel("conductance (µS)")
    ax.set_ylabel("read-noise standard deviation σ (nS)")
    ax.set_title(f"Read noise versus conductance ({kind} sweep)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="integration time", fontsize=8)
    return fig


def _plain_log_ticks(ax: Any) -> None:
    """Log axes labelled 1, 2, 5, 10, 20 ... (not 2 x 10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())


def _plot_iv_loops(data: _Data, figure: Callable[..., Any]) -> Any:
    kinds = [k for k in IV_KINDS if data.traces.get(k)]
    if not kinds:
        raise _Skip(
            f"no I-V traces ({', '.join(IV_KINDS)}) stored by {_runs_text(data)} (the I-V / "
            "forming sweeps record them)"
        )
    # loops also on a log |I| axis: the off branch is invisible on a linear one
    panels = [(k, log) for k in kinds for log in ((False, True) if k == "iv-loop" else (False,))]
    fig = figure(figsize=(5.0 * len(panels) + 0.4, 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    names = {"iv-loop": "I-V loops", "iv-dc": "DC I-V", "iv-pulsed": "pulsed I-V"}
    for ax, (kind, log) in zip(axes, panels, strict=True):
        traces = data.traces[kind]
        devices = _devices(traces)
        mine = [t for t in traces if (int(t["row"]), int(t["col"])) in devices]
        scale, unit = _scale(np.concatenate([t["y"] for t in mine]), "A")
        for i, device in enumerate(devices):
            first = True
            for t in mine:
                if (int(t["row"]), int(t["col"])) != device:
                    continue
                label = f"device ({device[0]}, {device[1]})" if first else None
                y = np.abs(t["y"]) if log else t["y"] / scale
                x = t["x"][y > 0] if log else t["x"]
                ax.plot(
                    x, y[y > 0] if log else y, color=f"C{i % 10}", linewidth=1.2, marker=".",
                    markersize=3, label=label,
                )  # fmt: skip
                first = False
        if log:
            ax.set_yscale("log")
            ax.set_ylabel("|current| (A)")
        else:
            ax.axhline(0, color="grey", linewidth=0.5)
            ax.set_ylabel(f"current ({unit})")
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_xlabel(f"{_x_name(traces[0], 'voltage')} (V)")
        total = len({(int(t["row"]), int(t["col"])) for t in traces})
        title = f"{names[kind]}{', log |I|' if log else ''}: {len(devices)} of {total} devices"
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"I-V characteristics, {_chip_name(data)}")
    return fig


def _x_name(trace: Mapping[str, Any], default: str) -> str:
    name = str(trace.get("x_name") or default)
    for suffix in ("_v", "_a", "_s"):
        name = name.removesuffix(suffix)
    return name.replace("_", " ")


def _runs_text(data: _Data) -> str:
    if not data.runs:
        return data.scope
    return (
        "run" + ("s " if len(data.runs) > 1 else " ") + ", ".join(str(r["id"]) for r in data.runs)
    )


def _chip_name(data: _Data) -> str:
    return data.chip.name if data.chip is not None else data.scope


def _plot_drift(data: _Data, figure: Callable[..., Any]) -> Any:
    reasons = []
    curve = None
    try:
        kind, plot = _find_plot(
            data, ("time_s", "states_s", "mean_relative_change"), ("retention",),
            "retention (drift) curves", "retention",
        )  # fmt: skip
        where = f"the {kind} summary's plot"
        times = _series(plot, "time_s", where)
        states = _series(plot, "states_s", where)
        change = _matrix(plot, "mean_relative_change", (states.size, times.size), where)
        curve = (kind, times, states, change)
    except _Skip as exc:
        reasons.append(str(exc))
    per_device = _finite(data.profile.drift_per_decade_rel) if data.profile is not None else None
    if per_device is None or per_device.size == 0:
        reasons.append(
            "the profile has no drift_per_decade_rel"
            if data.profile is not None
            else data.no_profile
        )
        per_device = None
    if curve is None and per_device is None:
        raise _Skip("; ".join(reasons))
    panels = (curve is not None) + (per_device is not None)
    fig = figure(figsize=(5.4 * panels + 0.4, 4.6))
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if curve is not None:
        kind, times, states, change = curve
        ax = axes.pop(0)
        positive = times > 0
        for state, row in zip(states, change, strict=True):
            ax.plot(times[positive], row[positive] * 100, marker="o", label=_state_label(state))
        if np.any(positive):
            ax.set_xscale("log")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_xlabel("time since programming (s)")
        ax.set_ylabel("mean conductance change (%)")
        ax.set_title(f"Retention per state ({kind} sweep)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if per_device is not None:
        ax = axes.pop(0)
        values = per_device * 100
        bins = int(min(40, max(5, np.sqrt(values.size) * 2)))
        ax.hist(values, bins=bins, color="#7570b3", edgecolor="white", linewidth=0.5)
        ax.axvline(float(np.median(values)), color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("drift per decade of time (% of conductance)")
        ax.set_ylabel("devices")
        ax.set_title(
            f"Per-device drift: median {np.median(values):.2g} %/decade, {values.size} devices",
            fontsize=10,
        )
    fig.suptitle(f"Conductance drift, {_chip_name(data)}")
    return fig


def _plot_idvg(data: _Data, figure: Callable[..., Any]) -> Any:
    traces = data.traces.get("idvg")
    if not traces:
        raise _Skip(
            f"no idvg traces stored by {_runs_text(data)} (the eFlash Id-Vg sweep records them)"
        )
    from matplotlib.colors import ListedColormap, Normalize

    devices = _devices(traces)[:4]
    temps = np.array(
        [np.nan if t.get("temperature_c") is None else float(t["temperature_c"]) for t in traces]
    )
    finite = temps[np.isfinite(temps)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (25.0, 25.0)
    if high - low < 1.0:
        low, high = low - 1.0, high + 1.0
    norm = Normalize(low, high)
    # plasma without its pale-yellow end: every temperature stays visible on white
    cmap = ListedColormap(_cmap("plasma")(np.linspace(0.0, 0.85, 256)))
    fig = figure(figsize=(4.3 * len(devices) + 1.2, 4.4))
    axes = fig.subplots(1, len(devices), squeeze=False, sharey=True)[0]
    for ax, device in zip(axes, devices, strict=True):
        name = "control gate"
        for t, temp in zip(traces, temps, strict=True):
            if (int(t["row"]), int(t["col"])) != device:
                continue
            current = np.abs(t["y"])
            ok = current > 0
            color = cmap(norm(temp)) if math.isfinite(temp) else "black"
            ax.semilogy(t["x"][ok], current[ok], color=color, linewidth=1.2)
            name = _x_name(t, "control gate")
        ax.set_xlabel(f"{name} voltage (V)")
        ax.set_title(f"device ({device[0]}, {device[1]})", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("drain current |Id| (A)")
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes))
    bar.set_label("temperature (°C)" + ("" if finite.size else ": not recorded (black)"))
    total = len({(int(t["row"]), int(t["col"])) for t in traces})
    fig.suptitle(f"Id-Vg, {_chip_name(data)}: {len(devices)} of {total} devices")
    return fig


def _plot_endurance(data: _Data, figure: Callable[..., Any]) -> Any:
    kind, plot = _find_plot(
        data, ("cycles", "g_on_s", "g_off_s"), ("endurance",), "endurance data", "endurance"
    )
    where = f"the {kind} summary's plot"
    cycles = _series(plot, "cycles", where)
    g_on = _series(plot, "g_on_s", where)
    g_off = _series(plot, "g_off_s", where)
    if not (cycles.size == g_on.size == g_off.size):
        raise _Skip(f"{where}: cycles, g_on_s and g_off_s differ in length")
    fig = figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    ax.plot(cycles, g_on * 1e6, marker="o", color="#e41a1c", label="on state (set)")
    ax.plot(cycles, g_off * 1e6, marker="o", color="#377eb8", label="off state (reset)")
    positive = cycles[cycles > 0]
    if positive.size and positive.max() / max(positive.min(), 1) > 100:
        ax.set_xscale("log")
    ax.set_xlabel("switching cycles")
    ax.set_ylabel("conductance (µS)")
    ax.set_title(f"Endurance: on / off conductance window ({kind} sweep)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _plot_disturb(data: _Data, figure: Callable[..., Any]) -> Any:
    panels: list[tuple[str, str, np.ndarray, list[tuple[str, np.ndarray]]]] = []
    reasons = []
    for keys, xkey, series in (
        (("read_v", "read_drift_rel"), "read_v", (("read_drift_rel", "read disturb"),)),
        (
            ("amplitude_v",),
            "amplitude_v",
            (("disturb_v2_rel", "V/2 half-select"), ("disturb_v3_rel", "V/3 third-select")),
        ),
    ):
        try:
            kind, plot = _find_plot(data, keys, ("disturb",), "disturb data", "disturb")
            where = f"the {kind} summary's plot"
            x = _series(plot, xkey, where)
            lines = [
                (label, _series(plot, key, where))
                for key, label in series
                if plot.get(key) is not None
            ]
            lines = [(label, y) for label, y in lines if y.size == x.size]
            if not lines:
                raise _Skip(
                    f"{where} has no {' or '.join(k for k, _ in series)} of {x.size} values"
                )
            panels.append((kind, xkey, x, lines))
        except _Skip as exc:
            reasons.append(str(exc))
    if not panels:
        raise _Skip("; ".join(dict.fromkeys(reasons)))
    fig = figure(figsize=(5.4 * len(panels) + 0.4, 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, xkey, x, lines) in zip(axes, panels, strict=True):
        order = np.argsort(x)
        for label, y in lines:
            ax.plot(x[order], y[order] * 100, marker="o", label=label)
        ax.axhline(0, color="grey", linewidth=0.5)
        if xkey == "read_v":
            ax.set_xlabel("read voltage (V)")
            ax.set_ylabel("conductance change after repeated reads (%)")
            ax.set_title(f"Read disturb ({kind} sweep)", fontsize=10)
        else:
            ax.set_xlabel("write amplitude on the selected device (V)")
            ax.set_ylabel("conductance change of unselected devices (%)")
            ax.set_title(f"Half-select disturb ({kind} sweep)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Disturb, {_chip_name(data)}")
    return fig


def _plot_program_erase(data: _Data, figure: Callable[..., Any]) -> Any:
    panels = []
    reasons = []
    for xkey, ykey, title, color in (
        ("program_v", "program_dvth_v", "program", "#d95f02"),
        ("erase_v", "erase_dvth_v", "erase", "#1b9e77"),
    ):
        try:
            kind, plot = _find_plot(
                data, (xkey, ykey), ("program-erase",), "eFlash program / erase data",
                "program-erase",
            )  # fmt: skip
            where = f"the {kind} summary's plot"
            x, y = _series(plot, xkey, where), _series(plot, ykey, where)
            if x.size != y.size:
                raise _Skip(f"{where}: {xkey} and {ykey} differ in length")
            panels.append((kind, title, x, y, color))
        except _Skip as exc:
            reasons.append(str(exc))
    if not panels:
        raise _Skip("; ".join(dict.fromkeys(reasons)))
    fig = figure(figsize=(5.0 * len(panels) + 0.4, 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, title, x, y, color) in zip(axes, panels, strict=True):
        order = np.argsort(x)
        ax.plot(x[order], y[order], marker="o", color=color)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_xlabel(f"{title} voltage (V)")
        ax.set_ylabel("threshold-voltage shift ΔVth (V)")
        ax.set_title(f"{title.capitalize()} ({kind} sweep)", fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"eFlash program / erase, {_chip_name(data)}")
    return fig


#: Plot name -> (title, function), in report order.
PLOTS: dict[str, tuple[str, PlotFunction]] = {
    "conductance_map": ("Conductance map", _plot_conductance_map),
    "defect_map": ("Defect map", _plot_defect_map),
    "threshold_histograms": ("Threshold histograms", _plot_threshold_histograms),
    "conductance_vs_temperature": (
        "Conductance versus temperature per state",
        _plot_conductance_vs_temperature,
    ),
    "noise_vs_conductance": ("Read noise versus conductance", _plot_noise_vs_conductance),
    "iv_loops": ("I-V loops", _plot_iv_loops),
    "drift": ("Drift", _plot_drift),
    "idvg": ("Id-Vg (eFlash)", _plot_idvg),
    "endurance": ("Endurance", _plot_endurance),
    "disturb": ("Disturb", _plot_disturb),
    "program_erase": ("eFlash program / erase", _plot_program_erase),
}


# ------------------------------------------------------------------------------ HTML


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "), default=str)
    return str(value)


def _stats_rows(profile: ChipProfile) -> list[list[Any]]:
    rows = []
    for name, array in profile.arrays().items():
        if name in ("defect_class", "telegraph"):
            continue
        unit, meaning = DEVICE_ARRAYS[name]
        values = _finite(array)
        if values.size == 0:
            rows.append([name, unit or "-", meaning, 0, "", "", "", "", "", "", ""])
            continue
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        cv = f"{abs(std / mean) * 100:.3g} %" if mean else ""
        rows.append([
            name, unit or "-", meaning, int(values.size), _si(mean, unit), _si(std, unit), cv,
            _si(float(values.min()), unit), _si(float(np.median(values)), unit),
            _si(float(values.max()), unit),
        ])  # fmt: skip
    return rows


def _flatten(summary: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar entries of a summary as (dotted key, value); lists shown by length only
    when long, the ``plot`` data left out (it is plotted)."""
    out: list[tuple[str, Any]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if key == "plot" and not prefix:
            continue
        if isinstance(value, dict):
            out.extend(_flatten(value, name + "."))
        elif isinstance(value, list):
            if len(value) <= 8 and all(not isinstance(v, (list, dict)) for v in value):
                out.append((name, ", ".join(_text(v) for v in value)))
            else:
                out.append((name, f"[{len(value)} values]"))
        else:
            out.append((name, value))
    return out


CHIP_HEADERS = ("name", "array kind", "rows", "cols", "lot", "wafer", "die", "registered", "notes")
RUN_HEADERS = (
    "run", "kind", "status", "started (UTC)", "ended (UTC)", "seed", "resumes", "parameters",
    "message",
)  # fmt: skip
STATS_HEADERS = (
    "quantity", "unit", "meaning", "devices", "mean", "std", "CV", "min", "median", "max",
)  # fmt: skip
CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-weight: bold; margin-bottom: .3em; }
.small { color: #666; font-size: .85em; }
"""


def _html(data: _Data, images: list[tuple[str, str, bytes]], skipped: dict[str, str]) -> str:
    from nvmlab import __version__

    title = f"nvmlab characterization report: {data.scope}"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="small">written {now} by nvmlab {html.escape(__version__)}</p>',
        "<h2>Chip</h2>",
    ]
    chip = data.chip
    if chip is not None:
        parts.append(
            _table(
                CHIP_HEADERS,
                [
                    [
                        chip.name,
                        chip.kind,
                        chip.rows,
                        chip.cols,
                        chip.lot,
                        chip.wafer,
                        chip.die,
                        chip.created_at,
                        chip.notes,
                    ]
                ],
            )  # fmt: skip
        )
    else:
        parts.append("<p>no chip recorded</p>")
    profile = data.profile
    if profile is not None:
        parts.append(
            f"<p>profile {profile.profile_id} (stored by run {_text(profile.run_id)})"
            f"{'' if data.scope.startswith('chip') else ': as of this run'}</p>"
        )
    else:
        parts.append(f"<p>no profile: {html.escape(data.no_profile)}</p>")
    parts.append("<h2>Runs</h2>")
    if data.runs:
        rows = []
        for run in data.runs:
            config = run.get("config") or {}
            params = config.get("params") if isinstance(config, dict) else None
            rows.append([
                run["id"], run.get("kind"), run.get("status"), run.get("started_at"),
                run.get("ended_at"), run.get("seed"), run.get("resumes_run_id"),
                params or {}, run.get("message"),
            ])  # fmt: skip
        parts.append(_table(RUN_HEADERS, rows))
    else:
        parts.append("<p>no runs recorded in the profile</p>")
    if profile is not None:
        parts.append("<h2>Profile statistics</h2>")
        stats = _stats_rows(profile)
        if stats:
            parts.append(_table(STATS_HEADERS, stats))
        defect = profile.defect_class
        if defect is not None:
            counts = [[DEFECT_LABELS[c], int((defect == c).sum())] for c in sorted(DEFECT_LABELS)]
            parts.append("<h3>Defects</h3>" + _table(["class", "devices"], counts))
        telegraph = profile.telegraph
        if telegraph is not None and _finite(telegraph).size:
            values = _finite(telegraph)
            parts.append(
                "<h3>Random telegraph noise</h3>"
                + _table(
                    ["devices tested", "with telegraph noise"],
                    [[values.size, int((values > 0.5).sum())]],
                )
            )
        scalars = [[n, _si(v, "V"), SCALARS[n]] for n, v in profile.scalars().items() if v]
        if scalars:
            parts.append("<h3>Scalars</h3>" + _table(["name", "value", "meaning"], scalars))
    if data.summaries:
        parts.append("<h2>Sweep summaries</h2>")
        for kind, summary in sorted(data.summaries.items()):
            rows = [[k, v] for k, v in _flatten(summary)]
            parts.append(f"<h3>{html.escape(kind)}</h3>")
            parts.append(_table(["figure", "value"], rows) if rows else "<p>(only plot data)</p>")
    parts.append("<h2>Plots</h2>")
    if not images:
        parts.append("<p>no plot could be drawn (see the skipped plots below)</p>")
    for name, caption, png in images:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="{html.escape(name)}"><figcaption>{html.escape(caption)}</figcaption>'
            f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}"></figure>'
        )
    if skipped:
        parts.append("<h2>Skipped plots</h2>")
        parts.append(_table(["plot", "why"], [[PLOTS[n][0], r] for n, r in skipped.items()]))
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------ entry


def _out_dir(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{str(path)!r} exists and is not a folder; give a folder", field="--out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create folder {str(path)!r}: {exc}", field="--out") from None
    return path


def write_report(
    db: Database,
    *,
    out_dir: str | Path,
    run_id: int | str | None = None,
    chip: str | None = None,
) -> ReportResult:
    """Write the PNG plots and ``report.html`` of run ``run_id`` or chip ``chip`` (exactly
    one) into ``out_dir`` (created if needed; files of the same names are replaced); see
    the module docstring. Errors: :class:`ConfigError` naming ``--run`` / ``--chip`` /
    ``--out``, :class:`MissingDependencyError` without matplotlib."""
    if (run_id is None) == (chip is None):
        raise ConfigError(
            "give exactly one of --run RUN (one run) or --chip NAME (the chip's newest profile)",
            field="--run" if run_id is not None else "--chip",
        )
    _, figure_class, canvas_class = _matplotlib()
    data = _gather_run(db, run_id) if run_id is not None else _gather_chip(db, str(chip))
    folder = _out_dir(out_dir)

    def figure(**kwargs: Any) -> Any:
        fig = figure_class(layout="constrained", **kwargs)
        canvas_class(fig)
        return fig

    result = ReportResult(html_path=folder / HTML_NAME)
    images: list[tuple[str, str, bytes]] = []
    for name, (title, draw) in PLOTS.items():
        try:
            fig = draw(data, figure)
        except _Skip as exc:
            result.skipped[name] = str(exc)
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        png = buffer.getvalue()
        path = folder / f"{name}.png"
        try:
            path.write_bytes(png)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc}", field="--out") from None
        result.png_paths[name] = path
        images.append((name, title, png))
    try:
        result.html_path.write_text(_html(data, images, result.skipped), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {result.html_path}: {exc}", field="--out") from None
    return result


# ------------------------------------------------------------------------------ CLI

REPORT_EPILOG = """\
what it draws (each a PNG in DIR, all embedded in DIR/report.html):
  conductance_map, defect_map, threshold_histograms   from the chip profile
  conductance_vs_temperature, noise_vs_conductance,   from the sweeps' summaries
  drift, endurance, disturb, program_erase
  iv_loops, idvg                                      from the I-V and Id-Vg traces
  A plot whose data was not measured is skipped; the report says why and which sweep
  measures it. report.html is self-contained (images as data: URIs): mail it, archive it.

which data:
  --run RUN    that run: the chip's profile as of the run, the run's summary and traces
  --chip NAME  the chip's newest profile and the summaries and traces of the runs
               that produced it (one per sweep kind)

examples:
  nvmlab report --chip W3-D12 --out reports/W3-D12
  nvmlab report --run 42 --out reports/run-42 --db sqlite:///lab.sqlite

needs matplotlib: pip install 'nvmlab[report]'
"""


def _cmd_report(args: argparse.Namespace) -> int:
    from nvmlab.storage.cli import choose_database_url
    from nvmlab.storage.database import open_database

    _matplotlib()  # the install hint before touching the database
    with open_database(choose_database_url(args), create=False) as db:
        result = write_report(db, out_dir=args.out, run_id=args.run, chip=args.chip)
    print(f"report written: {result.html_path} ({len(result.png_paths)} plots)")
    for name, path in result.png_paths.items():
        print(f"  {name}: {path}")
    for name, reason in result.skipped.items():
        print(f"  skipped {name}: {reason}")
    return 0


def register_report(subparsers: Any) -> None:
    """Add the ``report`` subcommand to ``subparsers`` (``nvmlab report --help``)."""
    from nvmlab.storage.cli import _masked, add_database_options

    parser = subparsers.add_parser(
        "report",
        help="plots and a self-contained HTML page of a chip's characterization",
        description=(
            "Write PNG plots (conductance and defect maps, threshold histograms, "
            "conductance versus temperature, noise, I-V loops, drift, Id-Vg ...) and one "
            "self-contained HTML page with them, the chip, the runs and summary statistics."
        ),
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--run", metavar="RUN", default=None,
        help="report one run (id from 'nvmlab runs'): its chip's profile as of that run, "
        "its summary and traces",
    )  # fmt: skip
    which.add_argument(
        "--chip", metavar="NAME", default=None,
        help="report a registered chip: its newest profile and the runs that produced it",
    )  # fmt: skip
    parser.add_argument(
        "--out", metavar="DIR", required=True,
        help="output folder (created if needed): NAME.png per plot and report.html",
    )  # fmt: skip
    add_database_options(parser)
    parser.set_defaults(handler=_masked(_cmd_report))


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - a convenience
    """``python -m nvmlab.characterization.report ...`` (same as ``nvmlab report``)."""
    parser = argparse.ArgumentParser(prog="nvmlab")
    register_report(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args))
    except NvmlabError as exc:
        print(f"nvmlab: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
