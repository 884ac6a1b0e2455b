"""The interface every instrument connection offers, shared by the transports and recordings.

:class:`Transport` is what a driver talks to: text messages with terminations and raw
bytes, one error family (:mod:`nvmlab.errors`), bounded retries of idempotent queries.
The live implementations (pyvisa, pyserial) live in :mod:`nvmlab.drivers.transport`, the
recording and replaying ones in :mod:`nvmlab.drivers.recording`; both import this module
and neither imports the other's implementation, so the two never form an import cycle.

Resynchronising after a timeout: a reply that missed its timeout may still arrive, and
would then be read as the answer to the next query (a 0.25 V reading returned for a
0.3 V read). So a read that times out leaves the transport *out of step*
(:attr:`Transport.out_of_step`), and before the next command is written the transport
calls :meth:`Transport.resynchronise`, which each implementation fills with the strongest
means its link has: a fresh connection (a late reply belongs to the old one and can never
be read on the new one), a device clear (the instrument empties its output queue), or a
probe whose reply is recognised, every reply before it discarded.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from nvmlab.errors import ConfigError, InstrumentError, InstrumentTimeout

__all__ = ["Transport"]

log = logging.getLogger(__name__)


class Transport(ABC):
    """One instrument connection: text messages with terminations, and raw bytes.

    Attributes:
        name: the instrument's name in error messages (e.g. ``"smu"``).
        resource: the resource string it was opened with.
        timeout_s: how long a read may wait for the instrument (s).
        read_termination / write_termination: message terminators (``"\\n"`` by default).
        query_retries: extra attempts an *idempotent* query gets after a timeout (0..5).
        out_of_step: True after a read timed out, until :meth:`resynchronise` has run.
        unanswered: the commands whose replies timed out since the last resynchronisation.
        resync_hook: a driver may set a callable ``hook(transport)`` that sends a probe and
            reads up to its recognised reply; used where the link offers nothing stronger
            (a local serial line).
    """

    #: True only for a transport that serves a recorded transcript (no instrument behind it).
    is_replay: bool = False

    name: str
    resource: str
    read_termination: str
    write_termination: str
    encoding: str
    query_retries: int

    def __init__(
        self,
        *,
        name: str = "",
        resource: str = "",
        timeout_s: float = 5.0,
        read_termination: str = "\n",
        write_termination: str = "\n",
        encoding: str = "ascii",
        query_retries: int = 1,
    ) -> None:
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0 s, got {timeout_s!r}", field="timeout_s")
        if not 0 <= int(query_retries) <= 5:
            raise ConfigError(
                f"query_retries must be within 0..5, got {query_retries!r}", field="query_retries"
            )
        self.name = name or resource
        self.resource = resource
        self._timeout_s = float(timeout_s)
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.encoding = encoding
        self.query_retries = int(query_retries)
        self.last_command: str = ""
        self.out_of_step = False
        self.unanswered: list[str] = []
        self.resync_hook: Callable[[Transport], None] | None = None
        self.resyncs = 0
        self._resyncing = False
        #: The identity reply seen for ``*IDN?`` (a probe for :meth:`probe_identity`).
        self.identity_reply: str | None = None

    @property
    def timeout_s(self) -> float:
        """How long a read may wait for the instrument (s); settable while open."""
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"{self.name}: timeout_s must be > 0 s, got {seconds!r}")
        self._timeout_s = float(seconds)
        self._timeout_changed()

    def _timeout_changed(self) -> None:  # noqa: B027 - optional hook
        """Apply a new :attr:`timeout_s` to an open connection."""

    @contextmanager
    def timeout_at_least(self, seconds: float) -> Iterator[None]:
        """Raise the timeout to at least ``seconds`` (s) for a long operation, then restore it."""
        old = self._timeout_s
        if seconds > old:
            self.timeout_s = seconds
        try:
            yield
        finally:
            if self._timeout_s != old:
                self.timeout_s = old

    # -- the primitive operations every transport implements ------------------------------
    @abstractmethod
    def write(self, message: str) -> None:
        """Send ``message`` followed by :attr:`write_termination`."""

    @abstractmethod
    def read(self) -> str:
        """Read one message up to :attr:`read_termination`; returned without it, stripped."""

    @abstractmethod
    def write_raw(self, data: bytes) -> None:
        """Send ``data`` exactly as given (no termination added)."""

    @abstractmethod
    def read_raw(self, size: int) -> bytes:
        """Read exactly ``size`` bytes, or raise :class:`~nvmlab.errors.InstrumentTimeout`."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent)."""

    @abstractmethod
    def reconnect(self) -> None:
        """Close and reopen the same resource with the same settings."""

    def clear_input(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Discard any reply bytes already received but not read (before a retry)."""

    # -- resynchronising after a timeout ---------------------------------------------------
    def _timed_out(self) -> None:
        """Record that a read timed out: its reply may still arrive, later."""
        self.out_of_step = True
        if self.last_command:
            self.unanswered.append(self.last_command)

    def _before_command(self) -> None:
        """Called by every ``write`` / ``write_raw``: resynchronise first when out of step."""
        if self.out_of_step and not self._resyncing:
            self.resync_now()

    def resync_now(self) -> None:
        """Run :meth:`resynchronise` now; the transport is in step again when it returns.

        When it fails (the probe's reply timed out too) the transport stays out of step and
        the next command tries again.
        """
        self._resyncing = True
        try:
            log.info(
                "%s: resynchronising after a timeout (unanswered: %s)",
                self.name,
                ", ".join(repr(c) for c in self.unanswered) or "-",
            )
            self.resynchronise()
        finally:
            self._resyncing = False
        self.out_of_step = False
        self.unanswered.clear()
        self.resyncs += 1

    def resynchronise(self) -> None:
        """Make sure no reply still on its way is read as a later query's (see module doc).

        The base version discards what has arrived and runs :attr:`resync_hook` (or the
        identity probe when ``*IDN?`` has been answered before); implementations with a
        stronger means (a fresh connection, a device clear) override it.
        """
        self.clear_input()
        if self.resync_hook is not None:
            self.resync_hook(self)
        elif self.identity_reply is not None:
            self.probe_identity()
        else:
            log.warning(
                "%s: cannot resynchronise this link after a timeout (no probe known); "
                "a late reply could still be read as a later query's",
                self.name,
            )

    def probe_identity(self) -> None:
        """:meth:`probe` with ``*IDN?`` and the identity answered before."""
        assert self.identity_reply is not None
        self.probe("*IDN?", self.identity_reply)

    def probe(self, message: str, expected_reply: str, *, max_stale: int = 64) -> None:
        """Send ``message`` and read up to ``expected_reply``, discarding stale replies.

        As many expected replies are awaited as ``message`` queries are unanswered, plus
        one (ours), so a late reply to the same query is not taken for the probe's.
        """
        wanted = 1 + self.unanswered.count(message)
        self.write(message)
        for _ in range(max_stale + wanted):
            reply = self.read()
            if reply == expected_reply:
                wanted -= 1
                if wanted == 0:
                    return
            else:
                log.warning("%s: discarded a late reply %r", self.name, reply[:80])
        raise self.error(
            InstrumentTimeout,
            f"could not resynchronise: more than {max_stale} stale replies before the "
            f"reply to the probe {message!r}",
        )

    # -- built on the primitives ----------------------------------------------------------
    def query(self, message: str, *, idempotent: bool = False) -> str:
        """Write ``message`` and read one reply.

        With ``idempotent=True`` (the query changes nothing on the instrument) a timeout is
        retried up to :attr:`query_retries` times, stale input discarded first; otherwise
        the first :class:`~nvmlab.errors.InstrumentTimeout` propagates.
        """
        attempts = 1 + (self.query_retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                self.write(message)
                reply = self.read()
                if message == "*IDN?" and not self._resyncing:
                    self.identity_reply = reply
                return reply
            except InstrumentTimeout:
                if attempt + 1 >= attempts:
                    raise
                self.clear_input()
        raise AssertionError("unreachable")  # pragma: no cover

    def error(self, cls: type[InstrumentError], message: str) -> InstrumentError:
        """Build an error of ``cls`` naming this instrument and resource."""
        return cls(message, instrument=self.name, resource=self.resource)

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, resource={self.resource!r})"
