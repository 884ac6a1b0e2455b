"""The interface every instrument connection offers, shared by the transports and recordings.

:class:`Transport` is what a driver talks to: text messages with terminations and raw
bytes, one error family (:mod:`nvmlab.errors`), bounded retries of idempotent queries.
The live implementations (pyvisa, pyserial) live in :mod:`nvmlab.drivers.transport`, the
recording and replaying ones in :mod:`nvmlab.drivers.recording`; both import this module
and neither imports the other's implementation, so the two never form an import cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

from nvmlab.errors import ConfigError, InstrumentError, InstrumentTimeout

__all__ = ["Transport"]


class Transport(ABC):
    """One instrument connection: text messages with terminations, and raw bytes.

    Attributes:
        name: the instrument's name in error messages (e.g. ``"smu"``).
        resource: the resource string it was opened with.
        timeout_s: how long a read may wait for the instrument (s).
        read_termination / write_termination: message terminators (``"\\n"`` by default).
        query_retries: extra attempts an *idempotent* query gets after a timeout (0..5).
    """

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
                return self.read()
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
