"""Progress of a job: a live bar with ETA on a terminal (tqdm), plain timestamped lines
otherwise (a log file, a pipe, a queue worker's output).

:class:`JobProgress` is called with each step and returns the step's ``(done, total)``
callback. Live: one tqdm bar per step (units, rate, ETA) on stderr, with the job's log
lines written above it. Plain: a line ``<time> s3-tune: 40/521 units (7.7 %), ETA 3 min
10 s`` through the ``nvmlab.jobs`` logger at most every ``interval_s`` seconds, and when
the step ends.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import Any

from nvmlab.jobs.jobfile import JobStep

__all__ = ["JobProgress"]

log = logging.getLogger("nvmlab.jobs")


def _eta_text(seconds: float) -> str:
    from nvmlab.jobs.runner import format_duration

    return format_duration(seconds)


class _LiveStep:
    def __init__(self, step: JobStep) -> None:
        from tqdm import tqdm

        self.bar: Any = tqdm(
            total=None, desc=step.label, unit="unit", file=sys.stderr,
            mininterval=0.5, smoothing=0.1, leave=True,
            # a terminal that reports no size (a bare pty) gets a usual width
            ncols=shutil.get_terminal_size((100, 24)).columns or 100,
        )  # fmt: skip

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class _PlainStep:
    def __init__(self, step: JobStep, interval_s: float) -> None:
        self.label = step.label
        self.interval_s = interval_s
        self.start = time.monotonic()
        self.first_done: int | None = None
        self.last_line = -1e9
        self.done = 0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.first_done is None:
            # units done in earlier runs of the chain count for nothing in the rate
            self.first_done = done - 1
            self.start = now
        self.done, self.total = done, total
        if now - self.last_line >= self.interval_s or done >= total:
            self.last_line = now
            self._line(now)

    def _line(self, now: float) -> None:
        share = self.done / self.total * 100 if self.total else 100.0
        made = self.done - (self.first_done or 0)
        elapsed = now - self.start
        eta = ""
        if made > 0 and self.done < self.total and elapsed > 0:
            eta = f", ETA {_eta_text(elapsed / made * (self.total - self.done))}"
        log.info("%s: %d/%d units (%.1f %%)%s", self.label, self.done, self.total, share, eta)

    def close(self) -> None:
        return None


class JobProgress:
    """Step progress for a job: ``live`` (a bar per step) or plain lines every
    ``interval_s`` seconds."""

    def __init__(self, *, live: bool, interval_s: float = 30.0) -> None:
        self.live = live
        self.interval_s = interval_s

    def __call__(self, step: JobStep) -> Any:
        if self.live:
            return _LiveStep(step)
        return _PlainStep(step, self.interval_s)
