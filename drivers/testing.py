"""Protocol tests for drivers: a scripted transport that checks every exchange.

Use :func:`expected_protocol` the way PyMeasure's helper of the same name is used::

    with expected_protocol(Keithley2400, [(":SOUR:VOLT 0.2", None), ("*IDN?", "KEITHLEY...")]) as smu:
        smu.source_voltage = 0.2
        assert smu.identity.startswith("KEITHLEY")

Each pair is ``(sent, reply)``:

- ``sent`` is the message the driver must send: a ``str`` is compared with the message
  *without* its write termination (``write()``); ``bytes`` are compared with the exact bytes
  on the wire (``write_raw()`` data, or a ``write()`` message plus its termination).
  ``None`` means "no write: the reply arrives on its own" (a second message to read).
- ``reply`` is what the instrument answers: a ``str`` (the read termination is added),
  ``bytes`` (served exactly, for binary blocks read with ``read_raw``), an
  :class:`~nvmlab.errors.InstrumentError` subclass or instance (raised by the next read,
  e.g. a timeout), or ``None`` for no reply.

On leaving the block without an exception, every pair must have been used, in order, and
every reply byte read; otherwise :class:`AssertionError` names what is left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from nvmlab.drivers.transport import Transport
from nvmlab.errors import InstrumentError, InstrumentIOError

__all__ = ["ScriptedTransport", "expected_protocol", "Exchange"]

Reply = str | bytes | type[InstrumentError] | InstrumentError | None
Exchange = tuple[str | bytes | None, Reply]

D = TypeVar("D")


class ScriptedTransport(Transport):
    """A transport that plays the instrument's side of a fixed list of exchanges.

    Writes are checked against the script (``AssertionError`` at the first difference,
    naming the step); reads are served from the replies queued so far. ``sent`` keeps
    every byte string written, for assertions such as "nothing was sent".
    """

    def __init__(self, exchanges: Sequence[Exchange], **kwargs: Any) -> None:
        kwargs.setdefault("name", "scripted")
        kwargs.setdefault("resource", "scripted://")
        super().__init__(**kwargs)
        self._steps: deque[tuple[int, Exchange]] = deque(enumerate(exchanges, start=1))
        self._input: deque[bytes | InstrumentError] = deque()
        self.sent: list[bytes] = []
        self.closed = False
        self.reconnects = 0

    # -- script handling ------------------------------------------------------------------
    def _queue_reply(self, reply: Reply) -> None:
        if reply is None:
            return
        if isinstance(reply, type) and issubclass(reply, InstrumentError):
            self._input.append(self.error(reply, "scripted failure"))
        elif isinstance(reply, (InstrumentError, bytes)):
            self._input.append(reply)
        elif isinstance(reply, str):
            self._input.append((reply + self.read_termination).encode(self.encoding))
        else:
            raise TypeError(f"unsupported scripted reply {reply!r}")

    def _check_write(self, message: str | None, data: bytes) -> None:
        self._check_open()
        self.sent.append(data)
        if not self._steps:
            raise AssertionError(f"unexpected write {data!r}: the script has no exchanges left")
        # A write that arrives while a read-only step is next means the driver skipped a read.
        index, (expected, reply) = self._steps[0]
        if expected is None:
            raise AssertionError(
                f"step {index}: expected the driver to read a reply, but it wrote {data!r}"
            )
        if isinstance(expected, str):
            ok = (
                message == expected
                if message is not None
                else data
                == expected.encode(self.encoding) + self.write_termination.encode(self.encoding)
            )
            got: object = message if message is not None else data
        else:
            ok = data == expected
            got = data
        if not ok:
            raise AssertionError(f"step {index}: expected {expected!r}, got {got!r}")
        self._steps.popleft()
        self._queue_reply(reply)

    def _next_input(self) -> bytes | InstrumentError:
        if not self._input and self._steps and self._steps[0][1][0] is None:
            _, (_, reply) = self._steps.popleft()
            self._queue_reply(reply)
        if not self._input:
            step = f"step {self._steps[0][0]} ({self._steps[0][1][0]!r})" if self._steps else "end"
            raise AssertionError(f"driver read a reply but none is scripted (next: {step})")
        return self._input[0]

    def _check_open(self) -> None:
        if self.closed:
            raise self.error(InstrumentIOError, "connection is closed; call reconnect()")

    # -- Transport ------------------------------------------------------------------------
    def write(self, message: str) -> None:
        self.last_command = message
        self._check_write(message, (message + self.write_termination).encode(self.encoding))

    def write_raw(self, data: bytes) -> None:
        self._check_write(None, bytes(data))

    def read(self) -> str:
        self._check_open()
        term = self.read_termination.encode(self.encoding)
        collected = bytearray()
        while True:
            item = self._next_input()
            if isinstance(item, InstrumentError):
                self._input.popleft()
                raise item
            idx = item.find(term) if term else -1
            if idx >= 0:
                collected += item[:idx]
                rest = item[idx + len(term) :]
                if rest:
                    self._input[0] = rest
                else:
                    self._input.popleft()
                return collected.decode(self.encoding).strip()
            collected += item
            self._input.popleft()

    def read_raw(self, size: int) -> bytes:
        self._check_open()
        collected = bytearray()
        while len(collected) < size:
            item = self._next_input()
            if isinstance(item, InstrumentError):
                self._input.popleft()
                raise item
            need = size - len(collected)
            collected += item[:need]
            if len(item) > need:
                self._input[0] = item[need:]
            else:
                self._input.popleft()
        return bytes(collected)

    def clear_input(self) -> None:
        # A late reply to a timed-out query is discarded, exactly as on a real link.
        while self._input and not isinstance(self._input[0], InstrumentError):
            self._input.popleft()

    def close(self) -> None:
        self.closed = True

    def reconnect(self) -> None:
        self.closed = False
        self.reconnects += 1
        self._input.clear()

    def assert_done(self) -> None:
        """Every scripted exchange used and every reply byte read."""
        if self._steps:
            left = [sent for _, (sent, _) in self._steps]
            raise AssertionError(f"{len(left)} scripted exchange(s) never used: {left[:5]!r}")
        pending = list(self._input)
        if pending:
            raise AssertionError(f"reply bytes never read by the driver: {pending[:3]!r}")


@contextmanager
def expected_protocol(
    driver_cls: type[D], exchanges: Sequence[Exchange], **kwargs: Any
) -> Iterator[D]:
    """A ``driver_cls`` instance over a :class:`ScriptedTransport` playing ``exchanges``.

    Transport settings (terminations) come from ``driver_cls.transport_defaults`` when the
    class has it; ``transport_options`` in ``kwargs`` override them; other ``kwargs`` go to
    the driver's constructor. The transport is reachable as ``driver.transport``.
    """
    options: dict[str, Any] = {}
    defaults = getattr(driver_cls, "transport_defaults", {}) or {}
    for key in ("read_termination", "write_termination", "encoding", "timeout_s"):
        if key in defaults:
            options[key] = defaults[key]
    options.update(kwargs.pop("transport_options", {}) or {})
    transport = ScriptedTransport(exchanges, **options)
    driver = driver_cls(transport, **kwargs)  # type: ignore[call-arg]
    yield driver
    transport.assert_done()
