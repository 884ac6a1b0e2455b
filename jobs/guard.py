"""Fault handling around every unit of a job (:class:`~nvmlab.steps.UnitGuard`).

Before each attempt at a unit, :meth:`JobGuard.before_unit` checks the chamber (when the
station has one and the job asks for it): an active alarm, a sensor fault, or a
temperature out of the job's band *suspends* the job, polling every ``poll_s`` until the
chamber is back in order, and fails the run (a :class:`PersistentFault`) after
``suspend_timeout_s``.

When an attempt raised, :meth:`JobGuard.recover` decides:

- a *transient* fault (a timeout, a garbled or unparsable reply, a dropped connection)
  is recorded as an event, the instruments are reconnected after a back-off (``backoff_s``,
  doubled each time; on the station's clock) and the unit is redone, at most ``retries``
  times; a reconnection that fails counts as a further fault;
- a chamber alarm inside a unit (a temperature sweep waiting for stability) suspends as
  above and the unit is redone;
- anything else (a safety limit, a configuration error, a database error) is persistent:
  the exception ends the run, which the runner leaves in the safe state, ``failed`` and
  resumable.

Every fault, recovery and suspension is an event of the run (``events``: level ``fault``,
``recovery``, ``warning``), with the unit's key, so a morning's reader sees what the
night was like.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from sqlalchemy import insert

from nvmlab.drivers.chamber_alarms import ChamberAlarm
from nvmlab.errors import (
    InstrumentError,
    InstrumentIOError,
    InstrumentProtocolError,
    InstrumentTimeout,
    NvmlabError,
    ReplayMismatch,
)
from nvmlab.jobs.jobfile import FaultPolicy

__all__ = ["JobGuard", "PersistentFault", "is_transient"]

log = logging.getLogger("nvmlab.jobs")


class PersistentFault(NvmlabError):
    """A fault the job could not ride out (retries spent, a chamber alarm that stayed)."""


def is_transient(exc: BaseException) -> bool:
    """A fault a reconnect and a retry may cure: a timeout, a garbled reply, a dropped
    connection (not a chamber alarm, not a replay divergence)."""
    if isinstance(exc, (ChamberAlarm, ReplayMismatch)):
        return False
    return isinstance(exc, (InstrumentTimeout, InstrumentIOError, InstrumentProtocolError))


class JobGuard:
    """The job's :class:`~nvmlab.steps.UnitGuard` for one open station and run."""

    def __init__(self, station: Any, db: Any, run_id: int, policy: FaultPolicy) -> None:
        self.station = station
        self.db = db
        self.run_id = run_id
        self.policy = policy
        #: events recorded, by level (for the summary)
        self.counts: dict[str, int] = {}
        #: called before each unit's commit (an in-process emulated chip's state save)
        self.persist: Any = None

    def unit_done(self, key: str) -> None:
        """The unit's work is done: persist what must outlive a crash before its commit."""
        if self.persist is not None:
            self.persist()

    # -- events ------------------------------------------------------------------------
    def event(self, level: str, message: str, *, source: str, **details: Any) -> None:
        """Store an event of the run (and log it)."""
        self.counts[level] = self.counts.get(level, 0) + 1
        log_level = logging.INFO if level in ("info", "recovery") else logging.WARNING
        log.log(log_level, "%s: %s", source, message)
        try:
            t_s = float(self.station.clock.now())
        except Exception:  # noqa: BLE001 - an event is never worth a crash
            t_s = math.nan
        from nvmlab.storage.models import Event

        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(Event).values(
                        run_id=self.run_id, t_s=t_s if math.isfinite(t_s) else 0.0,
                        level=level, source=source, message=message,
                        details={k: v for k, v in details.items() if v is not None} or None,
                    )
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            log.error("could not store the event %r: %s", message, exc)

    # -- the chamber ---------------------------------------------------------------------
    def _chamber(self) -> Any:
        if not self.policy.check_chamber or "chamber" not in getattr(self.station, "roles", {}):
            return None
        return self.station.chamber

    def _chamber_problem(self, chamber: Any) -> str | None:
        """What is wrong with the chamber now, in words, or None."""
        driver = chamber.driver
        try:
            pv, sp = driver.read_pv_sp()
            driver.check_alarms()
        except ChamberAlarm as exc:
            return f"alarm: {exc}"
        band = self.policy.chamber_band_c
        if band is not None and abs(pv - sp) > band:
            return f"temperature {pv:.2f} C is out of band ({sp:.2f} +- {band:g} C)"
        return None

    def before_unit(self, key: str) -> None:
        chamber = self._chamber()
        if chamber is None:
            return
        problem = self._chamber_problem(chamber)
        if problem is None:
            return
        self._suspend(chamber, key, problem)

    def _suspend(self, chamber: Any, key: str, problem: str | None) -> None:
        clock = self.station.clock
        start = clock.now()
        self.event("warning", f"suspended before unit {key}: chamber {problem}",
                   source="chamber", unit=key)  # fmt: skip
        while problem is not None:
            waited = clock.now() - start
            if waited >= self.policy.suspend_timeout_s:
                raise PersistentFault(
                    f"chamber {problem}, still after {waited:.0f} s (faults.suspend_timeout_s "
                    f"= {self.policy.suspend_timeout_s:g} s)"
                )
            clock.sleep(min(self.policy.poll_s, self.policy.suspend_timeout_s - waited))
            try:
                problem = self._chamber_problem(chamber)
            except InstrumentError as exc:
                if not is_transient(exc):
                    raise
                self._reconnect("chamber")
        self.event("recovery", f"chamber back in order after {clock.now() - start:.0f} s; "
                   f"resuming at unit {key}", source="chamber", unit=key)  # fmt: skip

    # -- faults inside a unit ------------------------------------------------------------
    def recover(self, exc: BaseException, key: str, attempt: int) -> bool:
        if isinstance(exc, ChamberAlarm):
            self.event("fault", f"unit {key} attempt {attempt}: {exc}", source="chamber",
                       unit=key, error=type(exc).__name__)  # fmt: skip
            if attempt > self.policy.retries:
                return False
            chamber = self._chamber()
            if chamber is not None:
                problem = self._chamber_problem(chamber)
                if problem is not None:
                    self._suspend(chamber, key, problem)
            return True
        if not is_transient(exc):
            return False
        role = _role_of(self.station, exc)
        self.event("fault", f"unit {key} attempt {attempt}: {type(exc).__name__}: {exc}",
                   source=role or "instrument", unit=key, error=type(exc).__name__,
                   attempt=attempt)  # fmt: skip
        if attempt > self.policy.retries:
            self.event("fault", f"unit {key}: {attempt} faults, faults.retries = "
                       f"{self.policy.retries}; giving up", source=role or "instrument",
                       unit=key)  # fmt: skip
            return False
        delay = self.policy.backoff_s * 2 ** (attempt - 1)
        if delay > 0:
            self.station.clock.sleep(delay)
        try:
            self._reconnect_all()
        except Exception as again:  # noqa: BLE001 - counted as the next fault
            self.event("fault", f"reconnecting failed: {again}", source=role or "instrument",
                       unit=key)  # fmt: skip
            return self.recover(again, key, attempt + 1) if is_transient(again) else False
        self.event("recovery", f"reconnected after {delay:g} s; redoing unit {key}",
                   source=role or "instrument", unit=key, attempt=attempt)  # fmt: skip
        return True

    def _reconnect(self, role: str) -> None:
        transport = self.station.transports.get(role)
        if transport is not None:
            transport.reconnect()

    def _reconnect_all(self) -> None:
        """Reconnect every instrument: a stale reply, a closed socket, a half-sent command
        are gone; the step then configures the instruments again from scratch."""
        for transport in self.station.transports.values():
            transport.reconnect()


def _role_of(station: Any, exc: BaseException) -> str | None:
    """The station role whose instrument raised ``exc`` (by its name in the message)."""
    instrument = getattr(exc, "instrument", "") or ""
    for role in getattr(station, "transports", {}):
        if f"[{role}]" in instrument:
            return str(role)
    return None
