"""Read noise and telegraph noise of memristors: the ``noise`` sweep.

What it measures (docs/devices.md, *Read noise and integration time*): the standard
deviation of one read of a device's conductance, telegraph noise excluded, versus the
conductance and the integration time (NPLC), and which devices show random telegraph
noise (two levels a relative step apart).

How, per group of devices (one resumable unit; ``group`` devices, default 8), for each
state of ``states_s`` (default 10, 30, 60, 90 uS), device after device (a device is
measured right after it is set: programming its neighbours later may disturb it):

1. the device is put within +-5 % of the state
   (:func:`~nvmlab.characterization.states.set_conductance`) and left ``settle_s`` (s) so
   the fast start of the log-time relaxation is over;
2. it is read ``reads`` times at each NPLC of ``nplc`` (default 0.1, 1, 10) in one
   buffered list sweep (uniform spacing NPLC / line frequency); each series is stored as
   a trace. Its relaxation drift (``c0 + c1 log10(1 + t / 1 s)``, t since the device's
   last pulse: the log-time law of the devices) is fitted and removed, so drift is not
   counted as noise. sigma is the standard deviation of the residuals. For a device
   flagged as telegraph (step 3) sigma comes instead from a two-level hidden Markov model
   (levels the measured relative step apart, flip probability, drift and sigma fitted by
   EM; :func:`two_level_fit`): the spread within a level, so the telegraph steps do not
   inflate it whether the levels switch between every read or once in the series;
3. at the highest state, the telegraph series: ``telegraph_bursts`` bursts of
   ``telegraph_reads`` fast reads (``telegraph_nplc``, default 0.01 PLC: 0.17 ms apart at
   60 Hz, shorter than the shortest dwell the devices docs give, 1 ms), the bursts spread
   over ``telegraph_span_s`` (default 60 s, six times the longest dwell, 10 s: a 10 s
   dwell stays in one level for the whole span with probability exp(-6) = 0.25 %). Two
   tests on the drift-free series, each against white Gaussian read noise:

   - *slow levels*: the variance of the burst means (drift fitted out in log time) against
     the within-burst variance / reads per burst (chi-square, Wilson-Hilferty z); a
     telegraph dwelling longer than a burst moves the burst means by the step;
   - *fast levels*: the sum of the within-burst autocorrelations at lags 1..10 (z against
     its white-noise spread); a telegraph dwelling shorter than a burst correlates
     successive fast reads (white read noise does not).

   A device is flagged when either z exceeds ``telegraph_z`` (default 4.5: one-sided
   p = 3.4e-6 per test, about 0.03 false flags on a 64 x 64 chip).
4. per device the law ``sigma(G, n) = a G + b / sqrt(n)`` (docs: the device part scales
   with G, the instrument part averages as 1/sqrt(NPLC); the parts add linearly) is
   fitted by least squares over its states and NPLCs (relative residuals).

Which telegraph devices are detectable: at the highest state and the default settings
every step and dwell of the devices docs (0.5-2 %, 1 ms-10 s) is flagged, also at twice
the default read noise (z about 7 at 0.5 % and 1 ms). A device that cannot be brought
near the highest state (a stuck device, at a few uS) is read where it is; there the
instrument noise of the fast reads is several times a 0.5 % step and a small fast
telegraph escapes (exclude stuck devices with a defect map first).

Profile arrays: ``read_noise_sigma_s`` = the fitted law at 1 PLC at the conductance the
device was left in (its last series; S), ``read_noise_rel`` = that / the conductance,
``telegraph`` 1 flagged / 0 not. Per device parameters also hold every (state, NPLC)
sigma and mean conductance, the telegraph z values, and for flagged devices the step
and the dwell time (resolved up to about a burst's length). Summary: the chip's medians of a and b, the flagged
count, and ``plot`` = ``{"conductance_s", "sigma_s", "nplc"}`` with one entry per
device, state and NPLC.

Units: S, s, V; NPLC in power-line cycles.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.states import DEFAULT_STATES_S, set_conductance
from nvmlab.characterization.sweep import (
    MAX_SAMPLE,
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    choose_devices,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ReadSettings
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = [
    "NoiseSweep",
    "fit_noise_law",
    "two_level_fit",
    "series_sigma",
    "telegraph_statistics",
]

#: Lags (readings) of the fast-telegraph autocorrelation test.
FAST_LAGS = 10
#: Reads of each telegraph burst used to fit the levels of a flagged device.
LEVEL_FIT_READS = 200
#: Line frequency assumed for spacing estimates (Hz); the instrument's time stamps are used.
LINE_HZ = 60.0


# ----------------------------------------------------------------------------- analysis
def _log_time(t_since_s: np.ndarray) -> np.ndarray:
    return np.log10(1.0 + np.maximum(t_since_s, 0.0))


def detrend(g_s: np.ndarray, t_since_s: np.ndarray) -> np.ndarray:
    """``g_s`` minus its least-squares fit ``c0 + c1 log10(1 + t)`` (t: s since the device's
    last pulse): the residuals of the log-time relaxation drift."""
    u = _log_time(t_since_s)
    if np.ptp(u) <= 0:
        return g_s - g_s.mean()
    design = np.column_stack([np.ones_like(u), u - u.mean()])
    coef, *_ = np.linalg.lstsq(design, g_s, rcond=None)
    return np.asarray(g_s - design @ coef)


def two_level_fit(
    x: np.ndarray,
    u: np.ndarray,
    *,
    step: np.ndarray | None = None,
    shared: bool = False,
    iterations: int = 40,
) -> dict[str, np.ndarray]:
    """Fit a two-level (telegraph) hidden Markov model with drift to each row of ``x``
    (see :func:`_two_level_em`). With a fixed ``step`` the fit starts three times (the
    series in the lower level, between, in the upper level) and keeps, row by row, the
    start of highest likelihood: a series that stayed in one level is then fitted as
    such, not as half-way between two levels."""
    if step is None:
        return _two_level_em(x, u, step=None, shared=shared, iterations=iterations)
    best: dict[str, np.ndarray] | None = None
    for start in (-0.5, 0.0, 0.5):
        fit = _two_level_em(x, u, step=step, shared=shared, iterations=iterations, start=start)
        if best is None:
            best = fit
            continue
        better = fit["loglik"] > best["loglik"]
        best = {k: np.where(better, fit[k], best[k]) for k in best}
    assert best is not None
    return best


def _two_level_em(
    x: np.ndarray,
    u: np.ndarray,
    *,
    step: np.ndarray | None = None,
    shared: bool = False,
    iterations: int = 40,
    start: float = 0.0,
) -> dict[str, np.ndarray]:
    """EM of a two-level (telegraph) hidden Markov model with drift, each row of ``x``.

    Row b, reading t: level s_t in {0, 1} flipping with probability ``p`` per reading
    (symmetric two-state Markov chain: a random telegraph signal sampled uniformly), and
    ``x = mu + c u + (s - 1/2) d + e``, e white Gaussian (sigma). ``u`` is the drift
    regressor (log10 of the time since the last pulse). ``step``: the level separation d
    of each row, fixed (S); None fits it. ``shared``: one set of parameters for every row
    (rows are bursts of one series) instead of one per row. EM (Baum-Welch with a
    weighted least-squares M step), from the level mean ``mu`` = the series' mean +
    ``start`` d. Returns ``sigma``, ``step``, ``flip`` (p), ``mu``, ``c`` and ``loglik``
    (of the parameters of the last E step), one value per row (repeated when shared).
    A free step needs ``shared`` (it is fitted on a device's bursts together).
    """
    if step is None and not shared:
        raise ValueError("a free step is fitted on shared rows only (give step or shared)")
    x = np.atleast_2d(np.asarray(x, dtype=float))
    u = np.atleast_2d(np.asarray(u, dtype=float))
    rows, n = x.shape
    u = u - u.mean(axis=1, keepdims=True) if not shared else u - u.mean()
    diffs = np.diff(x, axis=1)
    sigma = 1.4826 * np.median(np.abs(diffs - np.median(diffs, axis=1, keepdims=True)), axis=1)
    sigma = np.maximum(sigma / math.sqrt(2.0), 1e-3 * x.std(axis=1) + 1e-30)
    spread = x.std(axis=1)
    if step is None:
        d = 2.0 * np.sqrt(np.maximum(spread**2 - sigma**2, (0.5 * sigma) ** 2))
        if shared:
            d = np.full(rows, float(np.median(d)))
    else:
        d = np.asarray(step, dtype=float) * np.ones(rows)
    mu = x.mean(axis=1) + start * d
    c = np.zeros(rows)
    p = np.full(rows, 0.1)
    loglik = np.zeros(rows)
    if shared:
        sigma = np.full(rows, float(np.median(sigma)))
        mu = np.full(rows, float(x.mean()))
    gamma1 = np.full((rows, n), 0.5)
    for _ in range(iterations):
        base = mu[:, None] + c[:, None] * u
        var = (sigma**2)[:, None]
        l0 = -0.5 * (x - base + 0.5 * d[:, None]) ** 2 / var
        l1 = -0.5 * (x - base - 0.5 * d[:, None]) ** 2 / var
        m = np.maximum(l0, l1)
        e0, e1 = np.exp(l0 - m), np.exp(l1 - m)
        a0 = np.empty((rows, n))
        a1 = np.empty((rows, n))
        f0, f1 = 0.5 * e0[:, 0], 0.5 * e1[:, 0]
        tot = f0 + f1
        a0[:, 0], a1[:, 0] = f0 / tot, f1 / tot
        logtot = np.log(tot)
        q = 1.0 - p
        for t in range(1, n):
            f0 = (q * a0[:, t - 1] + p * a1[:, t - 1]) * e0[:, t]
            f1 = (p * a0[:, t - 1] + q * a1[:, t - 1]) * e1[:, t]
            tot = f0 + f1
            logtot += np.log(tot)
            a0[:, t], a1[:, t] = f0 / tot, f1 / tot
        loglik = logtot + m.sum(axis=1) - n * np.log(sigma * math.sqrt(2 * math.pi))
        if shared:
            loglik = np.full(rows, float(loglik.sum()))
        b0 = np.ones(rows)
        b1 = np.ones(rows)
        flips = np.zeros(rows)
        gamma1[:, n - 1] = a1[:, n - 1]
        for t in range(n - 2, -1, -1):
            w0, w1 = e0[:, t + 1] * b0, e1[:, t + 1] * b1
            stay = a0[:, t] * q * w0 + a1[:, t] * q * w1
            flip = a0[:, t] * p * w1 + a1[:, t] * p * w0
            flips += flip / (stay + flip)
            nb0, nb1 = q * w0 + p * w1, p * w0 + q * w1
            tot = nb0 + nb1
            b0, b1 = nb0 / tot, nb1 / tot
            g0, g1 = a0[:, t] * b0, a1[:, t] * b1
            gamma1[:, t] = g1 / (g0 + g1)
        # M step: weighted least squares of x on [1, u, gamma1 - 1/2] (+ d^2 g0 g1)
        h = gamma1 - 0.5
        hv = gamma1 * (1.0 - gamma1)
        if shared:
            cols = [np.ones(rows * n), u.ravel()]
            if step is None:
                cols.append(h.ravel())
            design = np.column_stack(cols)
            gram = design.T @ design
            target = x.ravel() if step is None else x.ravel() - h.ravel() * d[0]
            if step is None:
                gram[2, 2] += hv.sum()
            beta = np.linalg.solve(gram + 1e-30 * np.eye(len(cols)), design.T @ target)
            mu[:] = beta[0]
            c[:] = beta[1]
            if step is None:
                d[:] = abs(beta[2])
                if beta[2] < 0:  # keep level 1 the upper one
                    gamma1 = 1.0 - gamma1
                    h, hv = -h, hv
            resid = x - mu[:, None] - c[:, None] * u - (gamma1 - 0.5) * d[:, None]
            sigma[:] = math.sqrt(float((resid**2).sum() + d[0] ** 2 * hv.sum()) / (rows * n))
            p[:] = min(max(float(flips.sum()) / (rows * (n - 1)), 1e-6), 0.5)
        else:
            for b in range(rows):
                design = np.column_stack([np.ones(n), u[b]])
                beta = np.linalg.lstsq(design, x[b] - h[b] * d[b], rcond=None)[0]
                mu[b], c[b] = beta[0], beta[1]
            resid = x - mu[:, None] - c[:, None] * u - (gamma1 - 0.5) * d[:, None]
            hv = gamma1 * (1.0 - gamma1)
            sigma = np.sqrt(((resid**2).sum(axis=1) + (d**2) * hv.sum(axis=1)) / n)
            p = np.clip(flips / (n - 1), 1e-6, 0.5)
        sigma = np.maximum(sigma, 1e-30)
    return {"sigma": sigma, "step": d, "flip": p, "mu": mu, "c": c, "loglik": loglik}


def series_sigma(g_s: np.ndarray, t_since_s: np.ndarray) -> float:
    """sigma (S) of one read from a series of reads at one NPLC: the spread of the
    residuals after the log-time relaxation drift is fitted out."""
    resid = detrend(np.asarray(g_s, dtype=float), np.asarray(t_since_s, dtype=float))
    return float(resid.std(ddof=2)) if resid.size > 2 else math.nan


def _chi2_z(stat: float, dof: int) -> float:
    """z of a chi-square statistic with ``dof`` degrees of freedom (Wilson-Hilferty)."""
    if dof <= 0 or not math.isfinite(stat):
        return math.nan
    c = 2.0 / (9.0 * dof)
    return ((max(stat, 0.0) / dof) ** (1.0 / 3.0) - (1.0 - c)) / math.sqrt(c)


def telegraph_statistics(
    bursts_s: list[np.ndarray], times_since_s: np.ndarray
) -> tuple[float, float, float]:
    """The telegraph tests on one device's telegraph series (see the module doc).

    ``bursts_s``: the conductance reads (S) of each burst; ``times_since_s``: each burst's
    mid time (s since the device's last pulse). Returns (z of the slow-level test, z of the
    fast-level test, the relative level step estimated from the burst means' spread)."""
    k = len(bursts_s)
    sizes = np.array([b.size for b in bursts_s])
    means = np.array([b.mean() for b in bursts_s])
    resid = [b - b.mean() for b in bursts_s]
    within = float(sum(float((r**2).sum()) for r in resid) / max(int((sizes - 1).sum()), 1))
    # slow: burst means against the within-burst spread (drift fitted out in log time)
    z_slow = math.nan
    step_rel = math.nan
    if k >= 4 and within > 0:
        m_res = detrend(means, times_since_s)
        m_eff = float(np.mean(sizes))
        stat = float((m_res**2).sum()) * m_eff / within
        z_slow = _chi2_z(stat, k - 2)
        excess = float(m_res.var()) - within / m_eff
        step_rel = 2.0 * math.sqrt(max(excess, 0.0)) / float(means.mean())
    # fast: within-burst autocorrelation at lags 1..FAST_LAGS (bias of the mean removal
    # -1/M added back), summed; white noise gives 0 with spread sqrt(L / N)
    n_total = int(sizes.sum())
    denom = sum(float((r**2).sum()) for r in resid)
    z_fast = math.nan
    if denom > 0 and n_total > 4 * FAST_LAGS:
        total = 0.0
        for lag in range(1, FAST_LAGS + 1):
            num = sum(float((r[lag:] * r[:-lag]).sum()) for r in resid if r.size > lag)
            total += num / denom + 1.0 / float(np.mean(sizes))
        z_fast = total / math.sqrt(FAST_LAGS / n_total)
    return z_slow, z_fast, step_rel


def fit_noise_law(g_s: np.ndarray, nplc: np.ndarray, sigma_s: np.ndarray) -> tuple[float, float]:
    """Least-squares ``sigma = a G + b / sqrt(n)`` (relative residuals); returns (a, b in S).
    NaN when fewer than two finite points."""
    ok = np.isfinite(g_s) & np.isfinite(sigma_s) & np.isfinite(nplc) & (sigma_s > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    g, n, s = g_s[ok], nplc[ok], sigma_s[ok]
    design = np.column_stack([g / s, 1.0 / np.sqrt(n) / s])
    ones = np.ones_like(s)
    coef, *_ = np.linalg.lstsq(design, ones, rcond=None)
    if coef[0] >= 0 and coef[1] >= 0:
        return float(coef[0]), float(coef[1])
    # a negative part is not physical: the better of the one-part fits (both >= 0)
    best: tuple[float, float, float] | None = None
    for j in (0, 1):
        col = design[:, j]
        c = max(float(col @ ones / (col @ col)), 0.0)
        err = float(((ones - c * col) ** 2).sum())
        if best is None or err < best[2]:
            best = (c if j == 0 else 0.0, c if j == 1 else 0.0, err)
    assert best is not None
    return best[0], best[1]


def _name(prefix: str, state_s: float, nplc: float) -> str:
    return f"{prefix}@{state_s * 1e6:g}uS@{nplc:g}plc"


# -------------------------------------------------------------------------------- sweep
@register_sweep
class NoiseSweep(Sweep):
    kind = "noise"
    summary = "read noise versus conductance and NPLC, telegraph noise per device"
    description = __doc__ or ""
    array_kinds = ("memristor",)
    params = (
        Param("sample", int, 64, low=0, high=MAX_SAMPLE,
              help="devices measured, drawn at random (0: every functional device)"),
        Param("states_s", list, list(DEFAULT_STATES_S), unit="S", low=2e-6, high=2e-4,
              help="conductances each device is set to (+-5 %) in turn"),
        Param("nplc", list, [0.1, 1.0, 10.0], low=0.001, high=100.0,
              help="integration times of the sigma series (power-line cycles)"),
        Param("reads", int, 150, low=20, high=2500, help="reads per state and NPLC"),
        Param("group", int, 8, low=1, high=64,
              help="devices per resumable unit"),
        Param("settle_s", float, 2.0, unit="s", low=0.0, high=3600.0,
              help="wait after setting a state before reading"),
        Param("telegraph_nplc", float, 0.01, low=0.001, high=1.0,
              help="integration time of the fast telegraph reads (power-line cycles)"),
        Param("telegraph_reads", int, 400, low=50, high=2500, help="reads per telegraph burst"),
        Param("telegraph_bursts", int, 30, low=6, high=1000, help="telegraph bursts per device"),
        Param("telegraph_span_s", float, 60.0, unit="s", low=0.0, high=86400.0,
              help="time over which the telegraph bursts are spread"),
        Param("telegraph_z", float, 4.5, low=2.0, high=50.0,
              help="flag a device when a telegraph test's z exceeds this"),
        Param("read_v", float, 0.2, unit="V", low=0.01, high=1.0, help="read voltage"),
    )  # fmt: skip

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limit = station.limits.max_read_v
        if abs(params["read_v"]) > limit:
            raise ConfigError(
                f"value {params['read_v']:g} V is not allowed; the station's read limit is "
                f"{limit:g} V (allowed: 0.01 to {limit:g} V)",
                field="read_v",
            )
        states = params["states_s"]
        if len(set(states)) != len(states):
            raise ConfigError(
                f"value {states!r} is not allowed; give each state once", field="states_s"
            )

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, profile=profile)
        size = params["group"]
        return [
            SweepUnit(f"group-{i // size}", tuple(devices[i : i + size]))
            for i in range(0, len(devices), size)
        ]

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        n = params.get("sample", 64) or (chip.rows * chip.cols if chip else 4096)
        per_state = params.get("reads", 150) * sum(params.get("nplc", [0.1, 1, 10])) / LINE_HZ
        states = len(params.get("states_s", DEFAULT_STATES_S))
        # per state: the series, the settling wait and about 5 s of write-verify (assumed)
        per_device = states * (per_state + params.get("settle_s", 2.0) + 5.0)
        span = max(
            float(params.get("telegraph_span_s", 60.0)),
            params.get("telegraph_bursts", 30) * params.get("telegraph_reads", 400)
            * params.get("telegraph_nplc", 0.01) / LINE_HZ,
        )  # fmt: skip
        return float(n * (per_device + span))

    # -- measurement ----------------------------------------------------------------------
    def _series(
        self, ctx: SweepContext, row: int, col: int, nplc: float, count: int, read_v: float,
        t_prog: float, meta: dict[str, Any],
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``count`` reads of (row, col) at ``nplc`` in one list sweep, stored as a trace;
        returns the conductances (S) and each read's time since the last pulse (s)."""
        ctx.ops.prepare_reads(ReadSettings(read_v=read_v, nplc=nplc))
        ctx.station.board.select(row, col, unselected="track")
        start = ctx.clock.now()
        try:
            trace = ctx.station.smu.sweep_trace(np.full(count, read_v))
        finally:
            ctx.station.smu.set_voltage(0.0)
        g = np.asarray(trace.current_a, dtype=float) / read_v
        t = start + np.asarray(trace.time_s, dtype=float)
        ctx.writer.add_trace(
            row, col, "noise-series", t, g, x_name="time_s", y_name="conductance_s",
            meta={**meta, "nplc": nplc, "read_v": read_v}, t_s=start,
        )  # fmt: skip
        return g, t - t_prog

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        states = [float(s) for s in p["states_s"]]
        nplcs = [float(n) for n in p["nplc"]]
        read_v = float(p["read_v"])
        top = max(states)
        devices = list(unit.devices)
        # series[device][(state, nplc)] = (g, t_since)
        series: dict[tuple[int, int], dict[tuple[float, float], tuple[np.ndarray, np.ndarray]]]
        series = {d: {} for d in devices}
        tele: dict[tuple[int, int], tuple[list[np.ndarray], list[float]]] = {
            d: ([], []) for d in devices
        }
        tele_t: dict[tuple[int, int], list[np.ndarray]] = {d: [] for d in devices}
        last_g: dict[tuple[int, int], float] = {}
        reached: dict[tuple[int, int], int] = {d: 0 for d in devices}
        settle = float(p["settle_s"])
        for state in states:
            t_prog: dict[tuple[int, int], float] = {}
            for r, c in devices:
                # set, then measure at once: setting the next device may disturb this one
                ctx.check_stop()
                res = set_conductance(ctx, r, c, state)
                reached[(r, c)] += int(res.reached)
                t_prog[(r, c)] = ctx.clock.now()
                ctx.clock.sleep(settle)
                for nplc in nplcs:
                    g, ts = self._series(
                        ctx, r, c, nplc, int(p["reads"]), read_v, t_prog[(r, c)],
                        {"state_s": state, "part": "sigma"},
                    )  # fmt: skip
                    series[(r, c)][(state, nplc)] = (g, ts)
                    last_g[(r, c)] = float(g.mean())
                if state == top:
                    self._telegraph_series(ctx, (r, c), t_prog[(r, c)], tele, tele_t, read_v)
        # analysis of the unit's devices: telegraph flags first ...
        flags: dict[tuple[int, int], bool] = {}
        for r, c in devices:
            bursts, mids = tele[(r, c)]
            z_slow, z_fast, _ = telegraph_statistics(bursts, np.array(mids))
            flags[(r, c)] = bool(
                max(np.nan_to_num(z_slow), np.nan_to_num(z_fast)) > p["telegraph_z"]
            )
            ctx.parameter(r, c, "telegraph_z_slow", z_slow)
            ctx.parameter(r, c, "telegraph_z_fast", z_fast)
            ctx.parameter(r, c, "telegraph", float(flags[(r, c)]))
            ctx.parameter(r, c, "states_reached", float(reached[(r, c)]))
        # ... then sigma: plain for the others, within a level for the flagged devices
        sigmas: dict[tuple[int, int], dict[tuple[float, float], float]] = {}
        rows_x, rows_u, rows_step, rows_key = [], [], [], []
        for r, c in devices:
            keys = list(series[(r, c)])
            if not flags[(r, c)]:
                sigmas[(r, c)] = {k: series_sigma(*series[(r, c)][k]) for k in keys}
                continue
            step_rel, dwell = self._telegraph_levels(tele_t[(r, c)], tele[(r, c)][0])
            ctx.parameter(r, c, "telegraph_step_rel", step_rel)
            ctx.parameter(r, c, "telegraph_dwell_s", dwell, "s")
            for k in keys:
                g, ts = series[(r, c)][k]
                rows_x.append(g)
                rows_u.append(_log_time(ts))
                rows_step.append(step_rel * float(g.mean()))
                rows_key.append(((r, c), k))
        if rows_x:
            fit = two_level_fit(np.array(rows_x), np.array(rows_u), step=np.array(rows_step))
            for (dev, k), sigma in zip(rows_key, fit["sigma"], strict=True):
                sigmas.setdefault(dev, {})[k] = float(sigma)
        for r, c in devices:
            gs, ns, ss = [], [], []
            for (state, nplc), sigma in sigmas[(r, c)].items():
                mean_g = float(series[(r, c)][(state, nplc)][0].mean())
                ctx.parameter(r, c, _name("noise_conductance_s", state, nplc), mean_g, "S")
                ctx.parameter(r, c, _name("noise_sigma_s", state, nplc), sigma, "S")
                gs.append(mean_g)
                ns.append(nplc)
                ss.append(sigma)
            a, b = fit_noise_law(np.array(gs), np.array(ns), np.array(ss))
            ctx.parameter(r, c, "noise_law_rel", a)
            ctx.parameter(r, c, "noise_law_abs_s", b, "S")
            g_final = last_g.get((r, c), math.nan)
            sigma_1plc = a * g_final + b
            ctx.parameter(r, c, "final_conductance_s", g_final, "S")
            ctx.parameter(r, c, "read_noise_sigma_s", sigma_1plc, "S")
            ctx.parameter(r, c, "read_noise_rel", sigma_1plc / g_final, "")

    @staticmethod
    def _telegraph_levels(times: list[np.ndarray], bursts: list[np.ndarray]) -> tuple[float, float]:
        """Relative step and mean dwell time (s) of a flagged device, from the two-level
        model fitted to its telegraph bursts (all bursts share the parameters; each burst
        starts afresh, so only dwell times up to about a burst's length are resolved:
        a longer one comes out as some value longer than the burst)."""
        size = min(min(b.size for b in bursts), LEVEL_FIT_READS)
        x = np.array([b[:size] for b in bursts])
        t = np.array([tt[:size] for tt in times])
        fit = two_level_fit(x, _log_time(t), shared=True)
        spacing = float(np.mean((t[:, -1] - t[:, 0]) / max(size - 1, 1)))
        flip = float(fit["flip"][0])
        dwell = -2.0 * spacing / math.log(1.0 - 2.0 * flip) if 0 < flip < 0.5 else math.nan
        return float(fit["step"][0]) / float(x.mean()), dwell

    def _telegraph_series(
        self,
        ctx: SweepContext,
        device: tuple[int, int],
        t_prog: float,
        tele: dict[tuple[int, int], tuple[list[np.ndarray], list[float]]],
        tele_t: dict[tuple[int, int], list[np.ndarray]],
        read_v: float,
    ) -> None:
        """The device's fast-read bursts, spread evenly over the span (no other device is
        programmed meanwhile: a neighbour's pulses could disturb it)."""
        p = ctx.params
        bursts = int(p["telegraph_bursts"])
        period = float(p["telegraph_span_s"]) / bursts
        nplc = float(p["telegraph_nplc"])
        r, c = device
        for k in range(bursts):
            ctx.check_stop()
            burst_start = ctx.clock.now()
            g, ts = self._series(
                ctx, r, c, nplc, int(p["telegraph_reads"]), read_v, t_prog,
                {"part": "telegraph", "burst": k},
            )  # fmt: skip
            tele[device][0].append(g)
            tele[device][1].append(float(ts.mean()))
            tele_t[device].append(ts)
            ctx.clock.sleep(period - (ctx.clock.now() - burst_start))

    # -- result ---------------------------------------------------------------------------
    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        p = ctx.params
        states = [float(s) for s in p["states_s"]]
        nplcs = [float(n) for n in p["nplc"]]
        pairs = [(s, n) for s in states for n in nplcs]
        names = ["read_noise_sigma_s", "read_noise_rel", "telegraph", "noise_law_rel",
                 "noise_law_abs_s", "telegraph_z_slow", "telegraph_z_fast"]  # fmt: skip
        names += [_name("noise_conductance_s", s, n) for s, n in pairs]
        names += [_name("noise_sigma_s", s, n) for s, n in pairs]
        got = ctx.chain_parameters(names)
        measured = np.isfinite(got["telegraph"])
        plot_g: list[float] = []
        plot_s: list[float] = []
        plot_n: list[float] = []
        per_nplc: dict[str, dict[str, float]] = {}
        for s, n in pairs:
            g = got[_name("noise_conductance_s", s, n)][measured]
            sg = got[_name("noise_sigma_s", s, n)][measured]
            plot_g += g.tolist()
            plot_s += sg.tolist()
            plot_n += [n] * int(g.size)
            per_nplc.setdefault(f"{n:g}", {})[f"{s:g}"] = (
                float(np.nanmedian(sg)) if sg.size else math.nan
            )
        a = got["noise_law_rel"][measured]
        b = got["noise_law_abs_s"][measured]
        summary: dict[str, Any] = {
            "devices": int(measured.sum()),
            "telegraph_flagged": int(np.nansum(got["telegraph"])),
            "law": {
                "rel_median": float(np.nanmedian(a)) if a.size else math.nan,
                "abs_s_at_1plc_median": float(np.nanmedian(b)) if b.size else math.nan,
                "form": "sigma = rel * G + abs / sqrt(NPLC)",
            },
            "median_sigma_s": per_nplc,
            "plot": {"conductance_s": plot_g, "sigma_s": plot_s, "nplc": plot_n},
        }
        telegraph = np.where(measured, got["telegraph"], np.nan)
        return ProfileUpdate(
            arrays={
                "read_noise_sigma_s": got["read_noise_sigma_s"],
                "read_noise_rel": got["read_noise_rel"],
                "telegraph": telegraph,
            },
            summary=summary,
        )
