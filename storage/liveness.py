"""Liveness of a process that owns something in the database (a run; later a station lock).

The owner records who it is, :class:`Owner`: host name, process id, the process's start
time (so a reused pid is told apart) and a heartbeat it refreshes every
:data:`HEARTBEAT_INTERVAL_S` seconds while it works. :func:`judge` says whether the owner
is still there:

* on the same host: dead when no process has its pid, or when the process with that pid
  started at another time (the pid was reused; the start time is read from Linux
  ``/proc``, and where there is none a reused pid looks alive); otherwise alive, whatever
  the heartbeat;
* on another host (its pids cannot be checked from here): dead when its heartbeat is
  older than :data:`STALE_AFTER_S` seconds by the database's clock; otherwise alive.

:class:`Heartbeat` runs a refresh function periodically in a thread of its own, for an
owner that has no thread doing so already (the
:class:`~nvmlab.storage.writer.RecordWriter` refreshes its run's heartbeat from its
flushing thread).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from nvmlab.storage.models import UTCDateTime

#: Seconds between heartbeats of a live owner.
HEARTBEAT_INTERVAL_S = 5.0
#: Seconds without a heartbeat after which an owner on another host is taken as dead.
STALE_AFTER_S = 60.0
#: Two start times of one process may differ by this much (s): the kernel counts a
#: process's start in clock ticks since boot and the boot time in whole seconds.
START_TIME_TOLERANCE_S = 1.0

ALIVE = "alive"
DEAD = "dead"


def this_host() -> str:
    """The host name recorded for, and compared with, an owner."""
    return socket.gethostname()


def database_now(dialect: str) -> ColumnElement[Any]:
    """SQL for the database server's current time (UTC, millisecond resolution or finer):
    heartbeats are stamped and judged by one clock, whatever the hosts' clocks say."""
    if dialect == "sqlite":
        expression: ColumnElement[Any] = func.strftime("%Y-%m-%d %H:%M:%f", "now")
    else:
        expression = func.clock_timestamp()
    return type_coerce(expression, UTCDateTime())


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (s since the Unix epoch), or ``None`` when it does not
    exist or this system does not say (read from Linux ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            line for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )  # fmt: skip
    except (OSError, StopIteration):
        return None
    # Field 22 (starttime, clock ticks after boot); the command name (field 2) may hold
    # spaces and parentheses, so count from the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[19])
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: os.kill said it exists
    return state[state.rindex(")") + 2 :].split()[0] != "Z"


@dataclass(frozen=True)
class Owner:
    """Who holds something: host, process id, process start time (s since the epoch, or
    ``None`` when unknown) and the last heartbeat (UTC, by the database's clock)."""

    host: str | None
    pid: int | None
    process_start_s: float | None = None
    heartbeat_at: dt.datetime | None = None

    @classmethod
    def current(cls) -> Owner:
        """This process (heartbeat not set: the database stamps it)."""
        pid = os.getpid()
        return cls(host=this_host(), pid=pid, process_start_s=process_start_time(pid))


@dataclass(frozen=True)
class Verdict:
    """The judgement of an owner: :data:`ALIVE` or :data:`DEAD`, and why, in words."""

    state: str
    reason: str

    @property
    def alive(self) -> bool:
        return self.state == ALIVE


def judge(
    owner: Owner,
    *,
    now: dt.datetime,
    stale_after_s: float = STALE_AFTER_S,
    host: str | None = None,
) -> Verdict:
    """Judge ``owner`` from ``host`` (default: this one) at time ``now`` (the database's
    clock, UTC, the clock that stamped the heartbeat)."""
    here = this_host() if host is None else host
    if owner.host == here and owner.pid is not None:
        where = f"process {owner.pid} on host {owner.host}"
        if not pid_alive(owner.pid):
            return Verdict(DEAD, f"{where} is gone")
        started = process_start_time(owner.pid)
        if (
            owner.process_start_s is not None
            and started is not None
            and abs(started - owner.process_start_s) > START_TIME_TOLERANCE_S
        ):
            return Verdict(
                DEAD, f"{where} is gone (pid {owner.pid} now belongs to another process)"
            )
        return Verdict(ALIVE, f"{where} is running")
    if owner.pid is None and owner.heartbeat_at is None:
        return Verdict(
            DEAD, "no process or heartbeat recorded (started by an nvmlab without liveness)"
        )
    who = f"host {owner.host or '?'} (pid {owner.pid if owner.pid is not None else '?'})"
    if owner.heartbeat_at is None:
        return Verdict(DEAD, f"no heartbeat ever recorded by {who}")
    age_s = (now - owner.heartbeat_at).total_seconds()
    if age_s > stale_after_s:
        return Verdict(
            DEAD, f"no heartbeat from {who} for {age_s:.0f} s (timeout {stale_after_s:.0f} s)"
        )
    return Verdict(ALIVE, f"{who} sent a heartbeat {max(age_s, 0.0):.0f} s ago")


class Heartbeat:
    """Call ``beat()`` every ``interval_s`` seconds from a daemon thread until stopped.

    Use as a context manager. An exception from ``beat`` is kept in :attr:`error` and the
    thread goes on beating (a database briefly unreachable must not stop the heartbeat).
    """

    def __init__(
        self, beat: Callable[[], None], interval_s: float = HEARTBEAT_INTERVAL_S, name: str = ""
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"heartbeat interval_s = {interval_s}; must be > 0 s")
        self._beat = beat
        self.interval_s = float(interval_s)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.beats = 0
        self._thread = threading.Thread(
            target=self._run, name=name or "nvmlab-heartbeat", daemon=True
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._beat()
                self.beats += 1
            except Exception as exc:  # noqa: BLE001 - kept for the owner to inspect
                self.error = exc

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "ALIVE",
    "database_now",
    "DEAD",
    "HEARTBEAT_INTERVAL_S",
    "STALE_AFTER_S",
    "Heartbeat",
    "Owner",
    "Verdict",
    "judge",
    "pid_alive",
    "process_start_time",
    "this_host",
]
