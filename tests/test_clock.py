"""The scaled clock waits until a deadline: a short sleep then a spin, on a fake wall clock."""

from __future__ import annotations

import pytest

from nvmlab.clock import SCALED_MIN_WAIT_S, SCALED_SPIN_MARGIN_S, ScaledClock


class FakeWall:
    """A wall clock that moves ``tick_s`` per read and by what is slept (plus an
    ``overshoot_s``, as ``time.sleep`` does); records every sleep."""

    def __init__(self, tick_s: float = 1e-7, overshoot_s: float = 0.0) -> None:
        self.t = 1000.0
        self.tick_s, self.overshoot_s = tick_s, overshoot_s
        self.sleeps: list[float] = []
        self.reads = 0

    def monotonic(self) -> float:
        self.t += self.tick_s
        self.reads += 1
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds + self.overshoot_s


def make_clock(scale: float, wall: FakeWall) -> ScaledClock:
    return ScaledClock(scale, monotonic=wall.monotonic, wall_sleep=wall.sleep)


@pytest.mark.parametrize("overshoot_s", [0.0, 60e-6])
def test_a_long_wait_sleeps_to_the_margin_then_spins_to_the_deadline(overshoot_s: float) -> None:
    wall = FakeWall(overshoot_s=overshoot_s)
    clock = make_clock(1000.0, wall)
    before = clock.now()
    clock.sleep(2.0)  # 2 ms of wall time
    assert wall.sleeps == [pytest.approx(2e-3 - SCALED_SPIN_MARGIN_S)]
    waited_s = clock.now() - before
    assert waited_s >= 2.0
    # ends within a tick of the deadline unless the sleep itself overshot the margin
    late_s = max(overshoot_s - SCALED_SPIN_MARGIN_S, 0.0) + 3 * wall.tick_s
    assert waited_s <= 2.0 + 1000.0 * late_s


def test_a_wait_inside_the_margin_only_spins() -> None:
    wall = FakeWall()
    clock = make_clock(1.0, wall)
    start = wall.t
    clock.sleep(0.5 * SCALED_SPIN_MARGIN_S)
    assert wall.sleeps == []
    assert start + 0.5 * SCALED_SPIN_MARGIN_S <= wall.t <= start + 0.5 * SCALED_SPIN_MARGIN_S + 3e-7


@pytest.mark.parametrize("seconds", [0.0, -1.0, 0.5 * SCALED_MIN_WAIT_S * 1e6])
def test_a_wait_below_the_minimum_returns_at_once(seconds: float) -> None:
    wall = FakeWall()
    clock = make_clock(1e6, wall)
    reads = wall.reads
    clock.sleep(seconds)
    assert wall.sleeps == [] and wall.reads == reads


def test_time_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_scale must be > 0"):
        ScaledClock(0.0)
