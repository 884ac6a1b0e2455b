"""The array tuner's choice of pulse width and its push budget (tuning/array.py), checked
against the switching law of the emulated chip: for the same step, a shorter pulse at the
higher amplitude that makes it pushes the other devices less; a move whose pulse would
push another device beyond the budget is not made."""

from __future__ import annotations

import math

import numpy as np
import pytest
from one_device import chip_change_ln

from nvmlab.mocks.physics.memristor import MemristorParams
from nvmlab.tuning.array import (
    HEAVY_PREPARK_LN,
    HEAVY_PUSH_BUDGET_LN,
    PREPARK_PUSH_BUDGET_LN,
    PUSH_BUDGET_LN,
    STATUS,
    WIDTHS_S,
    TuneSweep,
    _State,
)
from nvmlab.tuning.targets import TargetSet


def _state(set_v: np.ndarray, reset_v: np.ndarray, max_width_s: float = 0.1) -> _State:
    shape = set_v.shape
    nan = np.full(shape, np.nan)
    zeros = np.zeros(shape)
    targets = np.full(shape, 50e-6)
    return _State(
        targets=targets, set_v=nan.copy(), reset_v=nan.copy(),
        status=np.zeros(shape, int), g=np.full(shape, 48e-6), pulses=zeros.copy(),
        reads=zeros.copy(), trips=zeros.copy(), floor=zeros.copy(), attempts=zeros.copy(),
        initial=nan.copy(), final=nan.copy(), capv=zeros.copy(), side=np.ones(shape, int),
        rank=nan.copy(), telegraph=zeros.copy(), tset=TargetSet(targets_s=targets, source="test"),
        profile_set=set_v,
        profile_reset=reset_v, max_width_s=max_width_s,
    )  # fmt: skip


def _law_push(amplitude_v: float, width_s: float, threshold_v: float) -> float:
    """ln G change of a device of ``threshold_v`` under a third of the pulse, by the
    emulator's own switching law (no cycle-to-cycle spread)."""
    return abs(chip_change_ln(amplitude_v / 3.0, width_s, threshold_v))


def test_each_step_takes_the_shortest_width_that_fits_under_its_cap() -> None:
    sweep = TuneSweep()
    st = _state(np.full((4, 4), 1.2), np.full((4, 4), 1.3))
    # a 3 % step at a 1.0 V threshold under a 2.5 V cap: 1 us needs 1.0 + 0.05 ln(0.03 /
    # (0.0198 x 1e-3)) = 1.37 V, fits
    assert sweep._width(st, 1.0, 2.5, 0.03) == WIDTHS_S[0]
    # under a 1.2 V cap: 100 us needs 1.14 V (+ 0.05 V headroom: 1.19 V), 10 us 1.25 V
    assert sweep._width(st, 1.0, 1.2, 0.03) == 1e-4
    # a threshold above the cap: only a long pulse below threshold, 100 ms needs 0.91 V
    assert sweep._width(st, 1.2, 1.0, 0.03, margin_v=0.0) == 1e-1
    # never beyond the station's longest pulse
    st_short = _state(np.full((4, 4), 1.2), np.full((4, 4), 1.3), max_width_s=0.01)
    assert sweep._width(st_short, 1.2, 1.0, 0.03, margin_v=0.0) is None


def test_the_predicted_push_is_the_switching_law_of_the_chip() -> None:
    sweep = TuneSweep()
    thresholds = np.full((3, 3), 1.5)
    thresholds[2, 2] = 0.55  # one sensitive device, on neither line of (0, 0)
    st = _state(thresholds, thresholds.copy())
    for amplitude, width in ((1.4, 1e-3), (1.4, 1e-1), (1.7, 1e-6)):
        predicted = sweep._push_ln(st, 0, 0, -1, amplitude, width)
        # the law up to the saturation near the window's edges (a few %)
        assert predicted == pytest.approx(_law_push(amplitude, width, 0.55), rel=0.03)
    # the same step of the pulsed device, 1 ms at A or 1 us at A + v0 ln 1000: the short
    # pulse pushes the others about 1000^(2/3) = 100 x less (the onset factor adds some)
    long_push = sweep._push_ln(st, 0, 0, -1, 1.4, 1e-3)
    short_push = sweep._push_ln(st, 0, 0, -1, 1.4 + 0.05 * math.log(1000), 1e-6)
    assert 20 < long_push / short_push < 110


def test_a_move_that_would_push_another_device_too_far_is_not_made() -> None:
    sweep = TuneSweep()
    set_v = np.full((4, 4), 0.9)
    reset_v = np.full((4, 4), 1.5)
    set_v[3, 3] = 0.52  # the weakest device of the array, pushed by reset pulses (V/3)
    st = _state(set_v, reset_v)
    st.side[0, 0] = 1  # (0, 0) approaches with set: its way back is reset, at 1.5 V
    # under a 1.3 V cap a 3 % step back needs 100 ms pulses at 1.29 V, each of which would
    # push (3, 3) by several times the budget
    assert _law_push(1.29, 0.1, 0.52) > 5 * PUSH_BUDGET_LN
    assert sweep._back_width(st, 0, 0, 1.3) is None
    # without the sensitive device the same move is made, with the same long pulse
    st2 = _state(np.full((4, 4), 0.9), reset_v)
    assert sweep._back_width(st2, 0, 0, 1.3) == 1e-1
    # a stuck device is no victim
    st.status[3, 3] = STATUS["stuck"]
    st._push_thresholds = None  # type: ignore[attr-defined]
    assert TuneSweep()._back_width(st, 0, 0, 1.3) == 1e-1
    # the predictions use the chip's switching floor by default
    assert st2.floor_fraction == MemristorParams().switching_floor_fraction


def test_a_pre_parking_move_that_pushes_too_hard_goes_first_or_not_at_all() -> None:
    """A device whose reset threshold (2.35 V) sits near the station's 2.5 V limit is
    pre-parked below its target with reset pulses near the limit: a third of one pushes a
    device of set threshold 0.55 V by far more than the pre-parking budget (the emulator's
    law). Such a move is over the budget: the sweep makes it first, ln 0.3 past the target
    at the limit without headroom, judged only on the other moves over the budget (the
    rest are parked after it), and not at all when it would push one of those beyond
    ``HEAVY_PUSH_BUDGET_LN``."""
    sweep = TuneSweep()
    set_v = np.full((4, 4), 1.0)
    reset_v = np.full((4, 4), 1.1)
    reset_v[0, 0] = 2.35
    set_v[3, 3] = 0.55
    st = _state(set_v, reset_v)
    st.side[0, 0] = 1  # set approach: pre-parked below its target, with reset pulses
    assert sweep._prepark_width(st, 0, 0, 2.5) is None
    heavy = np.zeros((4, 4), bool)
    heavy[0, 0] = True
    width = sweep._prepark_width(
        st, 0, 0, 2.5, budget_ln=HEAVY_PUSH_BUDGET_LN, ln=HEAVY_PREPARK_LN, victims=heavy
    )
    assert width == 1e-3
    assert _law_push(2.5, width, 0.55) > 100 * PREPARK_PUSH_BUDGET_LN
    # the weak device's own move over the budget too: this one is not made
    heavy[3, 3] = True
    assert (
        sweep._prepark_width(
            st, 0, 0, 2.5, budget_ln=HEAVY_PUSH_BUDGET_LN, ln=HEAVY_PREPARK_LN, victims=heavy
        )
        is None
    )
    # without the weak device the move fits the pre-parking budget, with headroom
    st2 = _state(np.full((4, 4), 1.0), reset_v)
    st2.side[0, 0] = 1
    assert sweep._prepark_width(st2, 0, 0, 2.5) == 1e-2
    assert _law_push(2.43, 1e-2, 1.0) < PREPARK_PUSH_BUDGET_LN


def test_a_move_over_the_budget_even_at_its_shortest_width_still_takes_the_shortest() -> None:
    """A device of set threshold 1.8 V parked with set pulses while a device of reset
    threshold 0.5 V is still to come: even at 1 us the step pushes that device beyond the
    budget (a third of about 2.2 V in its reset polarity). Its own approach must be made
    all the same, with the width that pushes least: the shortest that fits under the cap,
    not the 1 ms threshold width (10 x more push for the same step, by the chip's law)."""
    sweep = TuneSweep()
    set_v = np.full((4, 4), 1.8)
    reset_v = np.full((4, 4), 1.9)
    reset_v[3, 3] = 0.5
    st = _state(set_v, reset_v)
    st.side[0, 0] = 1
    assert sweep._width(st, 1.8, 2.5, 0.3, at=(0, 0, 1)) is None  # over the budget
    assert sweep._low_width(st, 0, 0, 2.5, 0.3) == WIDTHS_S[0]
    short = _law_push(1.8 + 0.05 * math.log(0.3 / (0.0198 * 1e-3)), 1e-6, 0.5)
    long = _law_push(1.8 + 0.05 * math.log(0.3 / 0.0198), 1e-3, 0.5)
    assert long > 10 * short > 0
