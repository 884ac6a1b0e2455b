"""The per-device tuner's switching model (tuning/writeverify.py) against the emulated
chip's own switching law: what it learns from a pulse and the amplitude it chooses for a
step, below the threshold (where the law's onset matters) as above; and what a pulse that
moved less than expected does to the model.

Procedure of each: one device of a 1 x 1 emulated chip, no cycle-to-cycle spread, pulsed
at full voltage; its change in ln G read from the chip's truth."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from one_device import chip_change_ln

from nvmlab.tuning.writeverify import (
    L0_SET,
    AdaptiveSettings,
    ThresholdPrior,
    _Adaptive,
)

THETA_V = 0.8


def _chip_change(amplitude_v: float, width_s: float = 1e-3) -> float:
    """ln G change of a device of threshold ``THETA_V`` at 30 uS under one pulse."""
    return chip_change_ln(amplitude_v, width_s, THETA_V)


def _tuner(**kw: object) -> _Adaptive:
    settings = AdaptiveSettings(scheme="v/3", **kw)  # type: ignore[arg-type]
    dev = SimpleNamespace(plc_s=1 / 60)
    return _Adaptive(dev, 30e-6, settings, 2.5, ThresholdPrior(), {})  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [0.7, 0.85, 0.95, 1.1])
def test_a_pulse_below_the_threshold_teaches_the_threshold(fraction: float) -> None:
    """Below the threshold the chip's change falls faster than exp((V - theta) / v0)
    (the onset from the switching floor): read as a plain exponential, a pulse at 0.85
    theta would teach a threshold 30 mV too high."""
    tuner = _tuner()
    p = tuner.pol[1]
    v = fraction * THETA_V
    change = _chip_change(v)
    assert change > 0
    tuner.learn(p, v, change, sd=change / 100)
    assert p.theta == pytest.approx(THETA_V, abs=0.003)


@pytest.mark.parametrize("step_ln", [0.002, 0.005, 0.02, 0.2])
def test_the_amplitude_chosen_for_a_step_makes_that_step_on_the_chip(step_ln: float) -> None:
    tuner = _tuner(cycle_to_cycle_cv=0.0, overshoot_z=0.0)
    p = tuner.pol[1]
    p.theta, p.theta_w = THETA_V, 1e12  # known exactly
    v = tuner.amplitude(p, step_ln)
    assert _chip_change(v) == pytest.approx(step_ln, rel=0.03)


def test_a_small_change_within_the_cycle_to_cycle_spread_keeps_the_model() -> None:
    """A model-based pulse aimed at 2 % that moved the device 1.1 % (a low cycle-to-cycle
    draw, about -2 sigma at CV 30 %), read with 0.4 % of noise (so not detected): the
    threshold estimate stays and the next pulse is not stepped up."""
    tuner = _tuner()
    p = tuner.pol[1]
    p.theta, p.theta_w, p.moved = THETA_V, 1 / 0.01**2, True
    v = THETA_V  # expected change: ln 1.02
    p.last_v = v
    tuner.learn(p, v, 0.011, sd=0.004)
    assert math.isfinite(p.theta)
    assert tuner.amplitude(p, 0.02) < v + 0.03


def test_a_null_that_proves_the_model_wrong_restarts_probing_without_a_ramp_jump() -> None:
    """A pulse that should have moved the device by 20 % moved nothing: the model is
    dropped and probing starts again from what the null proved. The device moved before
    in this polarity, so the probing ramp's least step (80 mV here: exp(0.08 / 0.05) = 5
    x the change) does not apply: the next pulse aims at a small step from the new lower
    bound, a few tens of mV above the null pulse at most."""
    tuner = _tuner(set_ramp=AdaptiveSettings.set_ramp)
    p = tuner.pol[1]
    p.theta, p.theta_w, p.moved = THETA_V, 1 / 0.01**2, True
    v = THETA_V + 0.05 * math.log(0.2 / L0_SET)
    p.last_v = v
    tuner.learn(p, v, 0.0, sd=0.004)
    assert not math.isfinite(p.theta)
    assert p.theta_lo > v
    assert tuner.amplitude(p, 0.02) < v + 0.04
