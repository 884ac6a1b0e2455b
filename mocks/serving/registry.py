"""Emulated benches reachable by name, and the in-process byte pipe shared by the servers.

An emulated bench registers itself here under its ``bench_id``; the in-process pyvisa
library (:mod:`nvmlab.mocks.serving.visa`) and the pyserial URL handler
(``nvmlab://<bench_id>/<role>``, :mod:`nvmlab.mocks.serving.protocol_nvmlab`) look it up
by that name, exactly as a real VISA library or serial driver looks up a device.

:class:`Endpoint` is one host connection to one emulated instrument, without sockets: bytes
written go to the instrument's ``write()``, replies are collected from its ``read()``.
Waiting is done on the bench's clock: with a virtual clock a read that finds no reply
returns at once and advances the clock by the timeout (s); a reply held back by a fault
injector (a *late* reply) is delivered when the clock reaches its due time, which may be
on a later read, like a real late reply.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

from nvmlab.clock import Clock
from nvmlab.mocks.firmware.base import EmulatedInstrument

#: Allowed bench ids: they appear in URLs and VISA resource names.
BENCH_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ConnectionLost(Exception):
    """The emulated instrument closed the connection (a *closed connection* fault)."""


@dataclass
class ServedBench:
    """What the servers need from an emulated bench: its instruments by role and its clock."""

    bench_id: str
    instruments: Mapping[str, EmulatedInstrument]
    clock: Clock
    #: Serialises host access to each instrument (one role -> one lock).
    locks: dict[str, threading.RLock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not BENCH_ID_PATTERN.match(self.bench_id):
            raise ValueError(
                f"bench id {self.bench_id!r} is not allowed: use 1-63 lowercase letters, "
                "digits and '-', starting with a letter or digit"
            )
        for role in self.instruments:
            self.locks.setdefault(role, threading.RLock())

    def instrument(self, role: str) -> EmulatedInstrument:
        try:
            return self.instruments[role]
        except KeyError:
            raise KeyError(
                f"bench {self.bench_id!r} has no instrument with role {role!r}; "
                f"roles: {', '.join(sorted(self.instruments))}"
            ) from None


_BENCHES: weakref.WeakValueDictionary[str, ServedBench] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def register_bench(served: ServedBench) -> None:
    """Make ``served`` reachable as ``nvmlab://<bench_id>/...`` (replaces an older one)."""
    with _LOCK:
        _BENCHES[served.bench_id] = served


def unregister_bench(bench_id: str) -> None:
    with _LOCK:
        _BENCHES.pop(bench_id, None)


def get_bench(bench_id: str) -> ServedBench:
    """The registered bench ``bench_id``; ``LookupError`` naming the known ones otherwise."""
    with _LOCK:
        served = _BENCHES.get(bench_id)
        known = sorted(_BENCHES)
    if served is None:
        raise LookupError(
            f"no emulated bench {bench_id!r} in this process; registered benches: "
            f"{', '.join(known) or 'none'} (build one with build_emulated_bench())"
        )
    return served


def registered_benches() -> list[str]:
    with _LOCK:
        return sorted(_BENCHES)


def _due_in_s(instrument: EmulatedInstrument) -> float | None:
    """Seconds until a held reply becomes available (fault injector), or None."""
    due = getattr(instrument, "next_due_in_s", None)
    return None if due is None else due()


def _connection_lost(instrument: EmulatedInstrument) -> bool:
    return bool(getattr(instrument, "connection_lost", False))


class Endpoint:
    """One in-process host connection to one emulated instrument.

    ``read_until(count, terminator, timeout_s)`` is the single waiting primitive: it
    returns ``(data, reason)`` with reason ``"term"`` (terminator read), ``"count"``
    (``count`` bytes read), ``"any"`` (see ``any_data``) or ``"timeout"`` (the timeout elapsed on the bench clock; the
    data is whatever arrived, possibly empty, and is consumed only if ``consume_partial``).
    With an infinite timeout (``None``) and nothing that could ever arrive, the read gives
    up at once with reason ``"timeout"`` instead of hanging the process.
    """

    def __init__(self, served: ServedBench, role: str) -> None:
        self.served = served
        self.role = role
        self.instrument = served.instrument(role)
        self._lock = served.locks[role]
        self._rx = bytearray()
        self.closed = False
        with self._lock:
            self.instrument.reset_io()

    @property
    def clock(self) -> Clock:
        return self.served.clock

    def _check(self) -> None:
        if self.closed:
            raise ConnectionLost(f"{self.role}: connection already closed by the host")
        if _connection_lost(self.instrument):
            raise ConnectionLost(
                f"{self.role} on bench {self.served.bench_id}: connection closed by the instrument"
            )

    def write(self, data: bytes) -> int:
        with self._lock:
            self._check()
            self.instrument.write(bytes(data))
            self._rx += self.instrument.read()
        return len(data)

    def _collect(self) -> None:
        with self._lock:
            self._rx += self.instrument.read()

    def in_waiting(self) -> int:
        self._collect()
        return len(self._rx)

    def discard_input(self) -> None:
        self._collect()
        self._rx.clear()

    def read_until(
        self,
        count: int,
        terminator: bytes | None,
        timeout_s: float | None,
        *,
        consume_partial: bool = True,
        any_data: bool = False,
    ) -> tuple[bytes, str]:
        """Read up to ``count`` bytes, stopping after ``terminator`` (see class doc).

        With ``any_data`` (a raw socket without termination character) the read returns as
        soon as some bytes are available, with reason ``"any"``.
        """
        clock = self.clock
        waited = 0.0
        stalls = 0
        while True:
            self._collect()
            if terminator:
                idx = self._rx.find(terminator)
                if idx >= 0 and idx + len(terminator) <= count:
                    end = idx + len(terminator)
                    out = bytes(self._rx[:end])
                    del self._rx[:end]
                    return out, "term"
            if len(self._rx) >= count:
                out = bytes(self._rx[:count])
                del self._rx[:count]
                return out, "count"
            if any_data and self._rx:
                out = bytes(self._rx)
                self._rx.clear()
                return out, "any"
            if _connection_lost(self.instrument) and not self._rx:
                self._check()
            due = _due_in_s(self.instrument)
            limit = None if timeout_s is None else timeout_s - waited
            if due is not None and (limit is None or due <= limit):
                stalls = stalls + 1 if due <= 0 else 0
                if stalls < 3:
                    clock.sleep(due)
                    waited += due
                    continue
            # Nothing more can arrive before the timeout: the time passes, then give up.
            if limit is not None and limit > 0:
                clock.sleep(limit)
            if consume_partial:
                out = bytes(self._rx[:count])
                del self._rx[: len(out)]
            else:
                out = bytes(self._rx[:count])
            return out, "timeout"

    def close(self) -> None:
        self.closed = True
