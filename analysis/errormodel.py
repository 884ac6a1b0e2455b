"""The device-error model: what a chip's stored measurements say about how its devices
depart from the conductances a network asks for.

Built by :func:`build_error_model` from the database only (never from an emulator's
hidden truth), from what characterization and tuning stored for the chip:

- **tuning error versus target**, per tuning algorithm: the relative error of the final
  verification read of every tuned device, ``final / target - 1``, binned by target
  (log-spaced bins), kept as quantiles of the measured distribution (failures included:
  a device the tuner could not bring in counts with its real error), sampled by inverse
  CDF (:class:`TuningError`);
- **read noise versus state**, a law in amperes: ``sigma_I = rel x G x V + abs_a`` at 1
  PLC, from the noise sweep's per-device laws (``noise_law_rel``, ``noise_law_abs_s`` at
  its read voltage) or, without them, a fit of the profile's read-noise sigma against
  conductance; the absolute part is a current, so a lower read voltage or a lower window
  costs precision;
- **temperature coefficient versus state** with device spread: ``dG/dT = c0 + c1 G``
  (S/K) fitted over the temperature sweep's devices and states, and the spread of the
  devices around it (S/K);
- **defect rates**: stuck-off and stuck-on shares of the mapped devices and their
  conductances;
- **relaxation**: the median drift per decade of time (relative) and its spread;
- **I-V nonlinearity**: ``I = G_lin V (1 + b V^2)`` with the median ``b`` of the I-V
  sweep (profile ``iv_nonlinearity = b (0.2 V)^2``): a row driven below the read voltage
  of the conductance's definition passes less current than ``G V``.

The model is a small JSON file (:meth:`ErrorModel.to_json`), comparable between chips
(:meth:`ErrorModel.compare`). Units: S, A, V, K, C.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nvmlab.errors import ConfigError

__all__ = [
    "ErrorModel",
    "TuningError",
    "build_error_model",
    "QUANTILES",
]

#: Quantile levels kept per target bin of the tuning error.
QUANTILES = np.linspace(0.0, 1.0, 41)
#: Bins of the tuning error: log-spaced targets from 1 uS to 300 uS (the devices' reach).
TUNING_EDGES_S = np.geomspace(1e-6, 300e-6, 9)
FORMAT = {"format": "nvmlab-error-model", "version": 1}


@dataclass
class TuningError:
    """Measured relative tuning error (``final / target - 1``) of one algorithm, binned by
    target conductance (``edges_s``, S): per bin the quantiles at :data:`QUANTILES` and
    the number of devices behind them (a bin without devices borrows its nearest)."""

    algorithm: str
    edges_s: list[float]
    quantiles: list[list[float]]
    counts: list[int]

    def _bin_table(self) -> np.ndarray:
        table = np.array(self.quantiles, dtype=float)
        counts = np.array(self.counts)
        filled = np.flatnonzero(counts > 0)
        if filled.size == 0:
            raise ConfigError(f"no tuning outcome of algorithm {self.algorithm!r}")
        for b in np.flatnonzero(counts == 0):
            table[b] = table[filled[np.argmin(np.abs(filled - b))]]
        return table

    def sample(self, targets_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Relative errors drawn for devices with targets ``targets_s`` (S), any shape."""
        targets = np.asarray(targets_s, dtype=float)
        table = self._bin_table()
        edges = np.asarray(self.edges_s)
        bins = np.clip(np.searchsorted(edges, targets, side="right") - 1, 0, len(edges) - 2)
        u = rng.random(targets.shape) * (len(QUANTILES) - 1)
        lo = np.floor(u).astype(int)
        frac = u - lo
        hi = np.minimum(lo + 1, len(QUANTILES) - 1)
        return table[bins, lo] * (1 - frac) + table[bins, hi] * frac

    def within(self, tolerance: float) -> float:
        """Share of the measured devices within +-``tolerance`` (relative)."""
        total = sum(self.counts)
        if not total:
            return math.nan
        share = 0.0
        for q, n in zip(self.quantiles, self.counts, strict=True):
            if n:
                share += n * float(
                    np.interp(tolerance, q, QUANTILES) - np.interp(-tolerance, q, QUANTILES)
                )
        return share / total


@dataclass
class ErrorModel:
    """A chip's device-error model (see the module documentation)."""

    chip: str
    #: read noise: sigma_I = noise_rel * G * V + noise_abs_a (1 PLC)
    noise_rel: float
    noise_abs_a: float
    #: temperature: dG/dT = tc_intercept_s_per_k + tc_slope_per_k * G, device spread (S/K)
    tc_intercept_s_per_k: float
    tc_slope_per_k: float
    tc_spread_s_per_k: float
    reference_c: float = 25.0
    #: defects: shares of the devices and their conductances (S)
    stuck_off_rate: float = 0.0
    stuck_on_rate: float = 0.0
    stuck_off_s: float = 0.0
    stuck_on_s: float = 500e-6
    #: relaxation: relative drift per decade of time and its device spread
    drift_per_decade_rel: float = 0.0
    drift_spread_rel: float = 0.0
    #: I-V nonlinearity: I = G_lin V (1 + b V^2), the conductance defined at
    #: ``iv_reference_v`` (b in V^-2, median over the measured devices; 0: not measured)
    iv_b_per_v2: float = 0.0
    iv_reference_v: float = 0.2
    tuning: dict[str, TuningError] = field(default_factory=dict)
    #: where each part came from (run ids, profile id, device counts)
    sources: dict[str, Any] = field(default_factory=dict)

    # -- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {**FORMAT, **data}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> ErrorModel:
        if data.get("format") != FORMAT["format"]:
            raise ConfigError(
                f"not an nvmlab error model (format {data.get('format')!r}); allowed: a file "
                "written by 'nvmlab impact --model-out' or ErrorModel.to_json",
                file=source,
                field="format",
            )
        body = {k: v for k, v in data.items() if k not in FORMAT}
        tuning = {k: TuningError(**v) for k, v in body.pop("tuning", {}).items()}
        try:
            return cls(tuning=tuning, **body)
        except TypeError as exc:
            raise ConfigError(str(exc), file=source, field="keys") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ErrorModel:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read an error model: {exc}", file=str(path)) from None
        return cls.from_dict(data, source=str(path))

    def compare(self, other: ErrorModel) -> list[tuple[str, float, float]]:
        """``(quantity, this chip's value, the other's)`` for every scalar of the models
        and the share within 1 % of each tuning algorithm both have."""
        rows = []
        for name in (
            "noise_rel", "noise_abs_a", "tc_intercept_s_per_k", "tc_slope_per_k",
            "tc_spread_s_per_k", "stuck_off_rate", "stuck_on_rate", "drift_per_decade_rel",
            "iv_b_per_v2",
        ):  # fmt: skip
            rows.append((name, float(getattr(self, name)), float(getattr(other, name))))
        for algorithm in sorted(set(self.tuning) & set(other.tuning)):
            rows.append((
                f"tuning_within_1pct[{algorithm}]",
                self.tuning[algorithm].within(0.01),
                other.tuning[algorithm].within(0.01),
            ))  # fmt: skip
        return rows

    # -- the physics it stands for ----------------------------------------------------------
    def temperature_shift_s(self, g_s: np.ndarray, delta_k: float) -> np.ndarray:
        """The mean conductance change (S) of devices at ``g_s`` after ``delta_k`` kelvin."""
        return (self.tc_intercept_s_per_k + self.tc_slope_per_k * np.asarray(g_s)) * delta_k

    def current_factor(self, volts: np.ndarray) -> np.ndarray:
        """I / (G V) of a device at ``volts`` (V), G its conductance as defined (at the
        reference voltage): ``(1 + b V^2) / (1 + b V_ref^2)``."""
        b = self.iv_b_per_v2
        return (1.0 + b * np.asarray(volts) ** 2) / (1.0 + b * self.iv_reference_v**2)

    def predistort(self, volts: np.ndarray) -> np.ndarray:
        """Row voltages (V) that make every device's current proportional to ``volts``
        despite the cubic I-V: ``V' (1 + b V'^2) = V (1 + b V_ref^2)``, solved by Newton."""
        b = self.iv_b_per_v2
        target = np.asarray(volts, dtype=float) * (1.0 + b * self.iv_reference_v**2)
        v = target.copy()
        for _ in range(6):
            v = v - (v * (1.0 + b * v * v) - target) / (1.0 + 3.0 * b * v * v)
        return v

    def read_sigma_a(self, g_s: np.ndarray, volts: np.ndarray) -> np.ndarray:
        """One device's read-current noise (A, 1 sigma) at ``volts`` (V) across it."""
        return self.noise_rel * np.asarray(g_s) * np.abs(volts)


# ------------------------------------------------------------------------------ building


def _completed_parameters(db: Any, chip_id: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The newest stored value of each per-device parameter ``names`` of the chip, from
    completed units only: name -> (rows, cols, values) stacked as an (n, 3) array."""
    from sqlalchemy import select

    from nvmlab.storage.models import DeviceParameter, Unit

    out: dict[str, dict[tuple[int, int], float]] = {n: {} for n in names}
    with db.read_connection() as conn:
        rows = conn.execute(
            select(DeviceParameter.name, DeviceParameter.row, DeviceParameter.col,
                   DeviceParameter.value)
            .join(Unit, Unit.id == DeviceParameter.attempt_id)
            .where(DeviceParameter.chip_id == chip_id, DeviceParameter.name.in_(names),
                   Unit.status == "completed")
            .order_by(DeviceParameter.id)
        ).all()  # fmt: skip
    for name, r, c, value in rows:
        if value is not None and math.isfinite(value):
            out[name][(int(r), int(c))] = float(value)
    return {
        n: np.array([(r, c, v) for (r, c), v in d.items()], dtype=float).reshape(-1, 3)
        for n, d in out.items()
    }


def _tuning(db: Any, chip_id: int) -> dict[str, TuningError]:
    from sqlalchemy import select

    from nvmlab.storage.models import TuningOutcome, Unit

    with db.read_connection() as conn:
        rows = conn.execute(
            select(TuningOutcome.algorithm, TuningOutcome.target_s, TuningOutcome.final_s,
                   TuningOutcome.status)
            .join(Unit, Unit.id == TuningOutcome.attempt_id)
            .where(TuningOutcome.chip_id == chip_id, Unit.status == "completed")
        ).all()  # fmt: skip
    by_algorithm: dict[str, list[tuple[float, float]]] = {}
    for algorithm, target, final, status in rows:
        if status == "skipped" or final is None or not target or not math.isfinite(final):
            continue
        by_algorithm.setdefault(str(algorithm or "unknown"), []).append(
            (float(target), float(final) / float(target) - 1.0)
        )
    out = {}
    edges = TUNING_EDGES_S
    for algorithm, pairs in by_algorithm.items():
        data = np.array(pairs)
        bins = np.clip(np.searchsorted(edges, data[:, 0], side="right") - 1, 0, len(edges) - 2)
        quantiles, counts = [], []
        for b in range(len(edges) - 1):
            errs = data[bins == b, 1]
            counts.append(int(errs.size))
            quantiles.append(
                [float(v) for v in np.quantile(errs, QUANTILES)] if errs.size else
                [0.0] * len(QUANTILES)
            )  # fmt: skip
        out[algorithm] = TuningError(algorithm, [float(e) for e in edges], quantiles, counts)
    return out


def build_error_model(db: Any, chip: str, *, noise_read_v: float = 0.2) -> ErrorModel:
    """The error model of registered chip ``chip`` from its stored measurements (module
    documentation). Raises :class:`ConfigError` naming the sweep to run for a part that
    was never measured (read noise, temperature, defects)."""
    from nvmlab.errors import StorageError
    from nvmlab.storage.inventory import require_chip
    from nvmlab.storage.profile import load_profile

    registered = require_chip(db, chip)
    try:
        profile = load_profile(db, chip)
    except StorageError:
        raise ConfigError(
            f"chip {chip!r} has no characterized profile; run 'nvmlab characterize map', "
            "'noise' and 'temperature' on it first",
            field="--chip",
        ) from None
    sources: dict[str, Any] = {"profile_id": profile.profile_id}
    params = _completed_parameters(
        db, registered.id, ("noise_law_rel", "noise_law_abs_s", "temp_state_s")
    )

    # read noise, in amperes
    rel, absolute = params["noise_law_rel"], params["noise_law_abs_s"]
    if rel.size and absolute.size:
        noise_rel = float(np.median(rel[:, 2]))
        noise_abs_a = float(np.median(absolute[:, 2])) * noise_read_v
        sources["noise"] = {"devices": int(rel.shape[0]), "from": "noise sweep laws"}
    elif profile.read_noise_sigma_s is not None and profile.conductance_s is not None:
        g = profile.conductance_s.ravel()
        s = profile.read_noise_sigma_s.ravel()
        ok = np.isfinite(g) & np.isfinite(s) & (g > 0)
        if ok.sum() < 3:
            raise ConfigError(f"chip {chip!r}: too few read-noise measurements; run "
                              "'nvmlab characterize noise'", field="--chip")  # fmt: skip
        slope, intercept = np.polyfit(g[ok], s[ok], 1)
        noise_rel, noise_abs_a = max(float(slope), 0.0), max(float(intercept), 0.0) * noise_read_v
        sources["noise"] = {"devices": int(ok.sum()), "from": "profile sigma versus G fit"}
    else:
        raise ConfigError(
            f"chip {chip!r} has no read-noise measurement; run 'nvmlab characterize noise'",
            field="--chip",
        )

    # temperature coefficient versus state
    states = params["temp_state_s"]
    tc = profile.temp_coeff_s_per_k
    if tc is None or not np.isfinite(tc).any():
        raise ConfigError(
            f"chip {chip!r} has no temperature coefficients; run 'nvmlab characterize temperature'",
            field="--chip",
        )
    g_of = np.full(tc.shape, np.nan)
    for r, c, v in states:
        g_of[int(r), int(c)] = v
    if np.isnan(g_of).all() and profile.conductance_s is not None:
        g_of = profile.conductance_s
    ok = np.isfinite(tc) & np.isfinite(g_of)
    if ok.sum() >= 3 and np.ptp(g_of[ok]) > 0:
        slope, intercept = np.polyfit(g_of[ok], tc[ok], 1)
        residual = tc[ok] - (intercept + slope * g_of[ok])
    else:
        slope, intercept = 0.0, float(np.nanmedian(tc))
        residual = tc[np.isfinite(tc)] - intercept
    sources["temperature"] = {"devices": int(np.isfinite(tc).sum())}

    # defects
    if profile.defect_class is None:
        raise ConfigError(
            f"chip {chip!r} has no defect map; run 'nvmlab characterize map'", field="--chip"
        )
    classes = profile.defect_class
    measured = classes >= 0
    n = max(int(measured.sum()), 1)
    g_map = (
        profile.conductance_s
        if profile.conductance_s is not None
        else np.full(classes.shape, np.nan)
    )
    on, off = classes == 2, classes == 1
    stuck_on_s = (
        float(np.nanmedian(g_map[on])) if on.any() and np.isfinite(g_map[on]).any() else 500e-6
    )
    stuck_off_s = (
        float(np.nanmedian(g_map[off])) if off.any() and np.isfinite(g_map[off]).any() else 0.0
    )
    sources["defects"] = {"devices": n}

    drift = profile.drift_per_decade_rel
    drift_ok = drift[np.isfinite(drift)] if drift is not None else np.array([])
    iv = profile.iv_nonlinearity
    iv_ok = iv[np.isfinite(iv)] if iv is not None else np.array([])
    sources["iv"] = (
        {"devices": int(iv_ok.size)} if iv_ok.size
        else "not measured: the I-V is taken as linear (run 'nvmlab characterize iv')"
    )  # fmt: skip
    tuning = _tuning(db, registered.id)
    sources["tuning"] = {a: int(sum(t.counts)) for a, t in tuning.items()}
    return ErrorModel(
        chip=chip,
        noise_rel=noise_rel,
        noise_abs_a=noise_abs_a,
        tc_intercept_s_per_k=float(intercept),
        tc_slope_per_k=float(slope),
        tc_spread_s_per_k=float(np.std(residual)) if residual.size else 0.0,
        stuck_off_rate=float(off.sum()) / n,
        stuck_on_rate=float(on.sum()) / n,
        stuck_off_s=max(stuck_off_s, 0.0),
        stuck_on_s=stuck_on_s,
        drift_per_decade_rel=float(np.median(drift_ok)) if drift_ok.size else 0.0,
        drift_spread_rel=float(np.std(drift_ok)) if drift_ok.size else 0.0,
        iv_b_per_v2=float(np.median(iv_ok)) / 0.2**2 if iv_ok.size else 0.0,
        tuning=tuning,
        sources=sources,
    )
