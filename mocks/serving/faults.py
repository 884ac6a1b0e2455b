"""Fault injection: what goes wrong on a real bench, on purpose and reproducibly.

A :class:`FaultInjector` wraps one emulated instrument and is itself an
:class:`~nvmlab.mocks.firmware.base.EmulatedInstrument`, so every server (in-process
pyvisa library, pyserial URL handler, loopback TCP) serves it unchanged. Faults:

- ``late``: the reply is held back ``delay_s`` seconds (s, on the client's clock: the
  virtual clock in-process, wall time over TCP). With a delay beyond the client's timeout
  the read times out and the reply arrives on a *later* read, as a real late reply does.
  Later replies never overtake a held one.
- ``drop``: the reply is never sent.
- ``garble``: some reply bytes are corrupted (the line terminator is kept for text
  instruments, so the client reads one unparsable line; a binary Modbus frame fails its CRC).
- ``close``: the instrument closes the connection instead of replying; in-process reads
  and writes raise a connection-lost error until the host reconnects, over TCP the server
  closes the socket.
- ``alarm`` / ``sensor``: the chamber raises an alarm (``inject_alarm(message)``) or
  reports a sensor fault (``inject_sensor_fault(True)``), for ``duration_s`` seconds of
  bench time or until cleared.

When: messages are the instrument's *replies*, numbered from 1 in the order it sends them
(for text instruments one reply line = one message). A fault fires on message ``n`` when
``start <= n <= stop`` and fewer than ``max_count`` faults of that spec fired, and ``n`` is
a multiple of ``every``, or is listed in ``messages``, or a draw from the spec's own random
generator (``seed``) falls below ``probability``. ``alarm`` and ``sensor`` may instead (or
also) fire at bench time ``at_s`` (s).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from nvmlab.clock import Clock
from nvmlab.mocks.firmware.base import EmulatedInstrument, LineInstrument

#: Faults acting on replies.
REPLY_FAULTS: tuple[str, ...] = ("late", "drop", "garble", "close")
#: Faults acting on the chamber itself.
CHAMBER_FAULTS: tuple[str, ...] = ("alarm", "sensor")
FAULT_KINDS: tuple[str, ...] = REPLY_FAULTS + CHAMBER_FAULTS


@dataclass
class FaultSpec:
    """One configured fault (see the module documentation for the firing rule)."""

    kind: str
    every: int | None = None
    messages: tuple[int, ...] = ()
    probability: float = 0.0
    seed: int = 0
    start: int = 1
    stop: int | None = None
    max_count: int | None = None
    #: ``late``: how late the reply is (s, client's clock).
    delay_s: float = 10.0
    #: ``alarm`` / ``sensor``: bench time at which it starts (s), if time-triggered.
    at_s: float | None = None
    #: ``alarm`` / ``sensor``: how long it lasts (s of bench time); None = until cleared.
    duration_s: float | None = None
    #: ``alarm``: the alarm text the chamber reports.
    message: str = "injected alarm"
    _rng: np.random.Generator = field(init=False, repr=False, compare=False)
    fired: int = field(init=False, default=0, compare=False)

    def __post_init__(self) -> None:
        self.messages = tuple(int(m) for m in self.messages)
        problems = []
        if self.kind not in FAULT_KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            problems.append(f"every={self.every!r} must be an integer >= 1")
        if any(m < 1 for m in self.messages):
            problems.append(f"messages={list(self.messages)} must be message numbers >= 1")
        if not 0.0 <= float(self.probability) <= 1.0:
            problems.append(f"probability={self.probability!r} must be within 0..1")
        if self.start < 1:
            problems.append(f"start={self.start!r} must be >= 1")
        if self.stop is not None and self.stop < self.start:
            problems.append(f"stop={self.stop!r} must be >= start ({self.start})")
        if self.max_count is not None and self.max_count < 0:
            problems.append(f"max_count={self.max_count!r} must be >= 0")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            problems.append(f"delay_s={self.delay_s!r} must be a finite number of seconds >= 0")
        if self.duration_s is not None and not self.duration_s > 0:
            problems.append(f"duration_s={self.duration_s!r} must be > 0 s")
        if self.at_s is not None and self.kind in REPLY_FAULTS:
            problems.append(f"at_s applies only to {', '.join(CHAMBER_FAULTS)} faults")
        if self.every is None and not self.messages and not self.probability and self.at_s is None:
            problems.append(
                "say when the fault fires: every=N, messages=[...], probability=p"
                + (" or at_s=T" if self.kind in CHAMBER_FAULTS else "")
            )
        if problems:
            raise ValueError(f"fault {self.kind!r}: " + "; ".join(problems))
        self._rng = np.random.default_rng(self.seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultSpec:
        """Build from a bench-file table; unknown keys raise ``ValueError`` naming them."""
        allowed = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(
                f"unknown fault setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        if "kind" not in data:
            raise ValueError(f"a fault needs kind = one of {', '.join(FAULT_KINDS)}")
        kwargs = dict(data)
        if "messages" in kwargs:
            kwargs["messages"] = tuple(kwargs["messages"])
        return cls(**kwargs)

    def fires_on(self, n: int) -> bool:
        """Whether message number ``n`` triggers this fault (draws the random number)."""
        if n < self.start or (self.stop is not None and n > self.stop):
            return False
        if self.max_count is not None and self.fired >= self.max_count:
            return False
        hit = n in self.messages or (self.every is not None and n % self.every == 0)
        if self.probability:
            draw = float(self._rng.random())
            hit = hit or draw < self.probability
        if hit:
            self.fired += 1
        return hit


class FaultInjector(EmulatedInstrument):
    """An emulated instrument with faults injected into its replies (module doc).

    ``delay_clock`` measures ``late`` delays (the client's clock); it defaults to the
    instrument's clock (right in-process, where the client waits on the virtual clock); the
    TCP server switches it to the wall clock. ``log`` records ``(message, kind)`` for every
    fault fired.
    """

    def __init__(
        self,
        inner: EmulatedInstrument,
        faults: Iterable[FaultSpec] = (),
        *,
        delay_clock: Clock | None = None,
    ) -> None:
        super().__init__(inner.clock, query_latency_s=0.0)
        self.inner = inner
        self.model = inner.model
        self.faults: list[FaultSpec] = list(faults)
        self.delay_clock: Clock = delay_clock if delay_clock is not None else inner.clock
        self.reply_count = 0
        self.log: list[tuple[int, str]] = []
        self.connection_lost = False
        self._held: list[tuple[float, bytes]] = []
        self._active: dict[int, float] = {}  # id(spec) -> bench time it started
        self._terminator: bytes | None = (
            inner.reply_termination if isinstance(inner, LineInstrument) else None
        )

    def __getattr__(self, name: str) -> Any:
        # Everything else (preselect, inject_alarm, model options ...) is the instrument's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def add(self, spec: FaultSpec) -> FaultSpec:
        """Add a fault at run time; returns it."""
        self.faults.append(spec)
        return spec

    # -- the byte stream -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        with self._lock:
            self._tick()
            if self.connection_lost:
                return
            self.inner.write(data)
            produced = self.inner.read()
            for reply in self._split(produced):
                self._on_reply(reply)

    def read(self) -> bytes:
        with self._lock:
            self._tick()
            self._release_due()
            return super().read()

    def pending(self) -> int:
        with self._lock:
            self._release_due()
            return super().pending()

    def next_due_in_s(self) -> float | None:
        """Seconds (delay clock) until the next held reply is released, or None."""
        with self._lock:
            if not self._held:
                return None
            return max(0.0, self._held[0][0] - self.delay_clock.now())

    def reset_io(self) -> None:
        """A new connection: partial I/O, held replies and a closed-connection state cleared."""
        with self._lock:
            super().reset_io()
            self.inner.reset_io()
            self._held.clear()
            self.connection_lost = False

    # -- internals -------------------------------------------------------------------
    def _split(self, produced: bytes) -> list[bytes]:
        if not produced:
            return []
        if not self._terminator:
            return [produced]
        parts, term, start = [], self._terminator, 0
        while True:
            idx = produced.find(term, start)
            if idx < 0:
                break
            parts.append(produced[start : idx + len(term)])
            start = idx + len(term)
        if start < len(produced):
            parts.append(produced[start:])
        return parts

    def _release_due(self) -> None:
        now = self.delay_clock.now()
        while self._held and self._held[0][0] <= now:
            self._emit(self._held.pop(0)[1])

    def _deliver(self, reply: bytes, delay_s: float = 0.0) -> None:
        if delay_s > 0 or self._held:
            due = self.delay_clock.now() + delay_s
            if self._held:
                due = max(due, self._held[-1][0])
            self._held.append((due, reply))
        else:
            self._emit(reply)

    def _on_reply(self, reply: bytes) -> None:
        self.reply_count += 1
        n = self.reply_count
        applied: FaultSpec | None = None
        for spec in self.faults:
            if spec.kind in CHAMBER_FAULTS:
                if spec.fires_on(n):
                    self._start_chamber_fault(spec)
            elif applied is None and spec.fires_on(n):
                applied = spec
        if applied is None:
            self._deliver(reply)
            return
        self.log.append((n, applied.kind))
        if applied.kind == "drop":
            return
        if applied.kind == "garble":
            self._deliver(self._garble(reply, applied._rng))
        elif applied.kind == "late":
            self._deliver(reply, applied.delay_s)
        elif applied.kind == "close":
            self.connection_lost = True
            self._held.clear()
            self._out.clear()

    def _garble(self, reply: bytes, rng: np.random.Generator) -> bytes:
        term = self._terminator or b""
        if term and reply.endswith(term):
            body, tail = bytearray(reply[: -len(term)]), term
        else:
            body, tail = bytearray(reply), b""
        if not body:
            return b"\x15" + tail  # a NAK byte instead of an empty reply
        n = max(1, len(body) // 4)
        for pos in rng.choice(len(body), size=min(n, len(body)), replace=False):
            if tail:
                new = int(rng.integers(33, 127))  # printable, never CR / LF
                if new == body[pos]:
                    new = 33 if new != 33 else 34
            else:
                new = body[pos] ^ int(rng.integers(1, 256))
            body[pos] = new
        return bytes(body) + tail

    def _start_chamber_fault(self, spec: FaultSpec, started_at_s: float | None = None) -> None:
        if id(spec) in self._active:
            return
        self._active[id(spec)] = self.clock.now() if started_at_s is None else started_at_s
        self.log.append((self.reply_count, spec.kind))
        if spec.kind == "alarm":
            self.inner.inject_alarm(spec.message)  # type: ignore[attr-defined]
        else:
            self.inner.inject_sensor_fault(True)  # type: ignore[attr-defined]

    def _stop_chamber_fault(self, spec: FaultSpec) -> None:
        self._active.pop(id(spec), None)
        if spec.kind == "alarm":
            self.inner.clear_alarm()  # type: ignore[attr-defined]
        else:
            self.inner.inject_sensor_fault(False)  # type: ignore[attr-defined]

    def _tick(self) -> None:
        """Start / stop time-triggered chamber faults at the present bench time."""
        if not any(s.kind in CHAMBER_FAULTS for s in self.faults):
            return
        now = self.clock.now()
        for spec in self.faults:
            if spec.kind not in CHAMBER_FAULTS:
                continue
            time_due = spec.at_s is not None and now >= spec.at_s and spec.fired == 0
            if id(spec) not in self._active and time_due:
                spec.fired += 1
                self._start_chamber_fault(spec, spec.at_s)
            started = self._active.get(id(spec))
            if (
                started is not None
                and spec.duration_s is not None
                and now >= started + spec.duration_s
            ):
                self._stop_chamber_fault(spec)


def check_chamber_fault_support(instrument: EmulatedInstrument, specs: Iterable[FaultSpec]) -> None:
    """Raise ``ValueError`` if a chamber fault is configured on an instrument without it."""
    for spec in specs:
        if spec.kind == "alarm" and not hasattr(instrument, "inject_alarm"):
            raise ValueError(
                f"{instrument.model} has no alarm to inject (fault 'alarm' is for chambers)"
            )
        if spec.kind == "sensor" and not hasattr(instrument, "inject_sensor_fault"):
            raise ValueError(
                f"{instrument.model} has no sensor fault to inject (fault 'sensor' is for chambers)"
            )
