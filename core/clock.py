"""Time for instruments, the emulated bench and the jobs above them.

Every piece of nvmlab that waits or timestamps goes through a :class:`Clock`, so that the
same code runs on the lab's wall clock, on an accelerated clock (the TCP-served emulator)
and on a virtual clock (in-process emulation, where sleeping advances time at once and a
25-100 C sweep with soaks runs in seconds).

All times are in seconds (s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of time in seconds and a way to wait."""

    def now(self) -> float:
        """Seconds since an arbitrary, fixed origin (monotonic)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (s); non-positive values return at once."""
        ...


class WallClock:
    """The lab's real clock: ``time.monotonic`` and ``time.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """A clock that only moves when told to: ``sleep`` advances it at once.

    Used in-process: instrument integration times, pulse widths, chamber ramps and soaks
    cost virtual time, never wall time. Thread-safe.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._now += float(seconds)

    advance = sleep


#: A wait shorter than this (wall s) returns at once: below a monotonic clock read's cost.
SCALED_MIN_WAIT_S = 1e-6
#: The part of a wait (wall s) spun on the clock rather than slept: ``time.sleep`` of any
#: duration overshoots by tens of microseconds, so it sleeps only up to this much before
#: the deadline and the rest is a bounded spin.
SCALED_SPIN_MARGIN_S = 100e-6


class ScaledClock:
    """Real time multiplied by ``time_scale`` (the TCP-served emulator's clock).

    With ``time_scale=100`` one wall second is 100 emulated seconds: a chamber that ramps
    at 2 C/min reaches 100 C from 25 C in about 22 wall seconds. ``sleep`` waits the
    corresponding, shorter, wall time, until a deadline: it sleeps until
    :data:`SCALED_SPIN_MARGIN_S` before it, then spins, so a short wait costs what it
    asks and not a sleep's overshoot; a wait below :data:`SCALED_MIN_WAIT_S` returns at
    once.

    ``monotonic`` and ``wall_sleep`` are the wall clock and its sleep (s), replaceable in
    tests.
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._monotonic = monotonic
        self._wall_sleep = wall_sleep
        self._origin = monotonic()

    def now(self) -> float:
        return (self._monotonic() - self._origin) * self.time_scale

    def sleep(self, seconds: float) -> None:
        wall_s = seconds / self.time_scale
        if not wall_s >= SCALED_MIN_WAIT_S:
            return
        deadline = self._monotonic() + wall_s
        if wall_s > SCALED_SPIN_MARGIN_S:
            self._wall_sleep(wall_s - SCALED_SPIN_MARGIN_S)
        while self._monotonic() < deadline:
            pass
