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


class ScaledClock:
    """Real time multiplied by ``time_scale`` (the TCP-served emulator's clock).

    With ``time_scale=100`` one wall second is 100 emulated seconds: a chamber that ramps
    at 2 C/min reaches 100 C from 25 C in about 22 wall seconds. ``sleep`` waits the
    corresponding, shorter, wall time.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.time_scale

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.time_scale)
