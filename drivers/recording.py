"""Record every exchange with an instrument, and replay a recorded session.

A transcript is a JSON-lines file, one exchange per line, flushed as it is written so a
crash keeps everything up to the last exchange::

    {"direction": "write", "text": ":SOUR:VOLT 0.2\\n", "t": 1234.5678}
    {"direction": "read", "text": "+1.000E-05\\n", "t": 1234.5702}
    {"direction": "read", "base64": "IzAAAIA/", "t": 1234.58}          # binary bytes
    {"direction": "error", "error": "InstrumentTimeout", "message": "...", "t": ...}
    {"direction": "reconnect", "t": ...}
    {"direction": "resync", "t": ...}      # resynchronised after a timeout

``text`` holds the bytes as a JSON string when they are printable ASCII (plus CR, LF, TAB),
``base64`` otherwise; ``t`` is :func:`time.monotonic` (s) at the exchange. Read entries hold
the bytes as they came off the wire, termination included.

:class:`ReplayTransport` serves a transcript back to a driver: each write must equal the
recorded one, byte for byte, or :class:`~nvmlab.errors.ReplayMismatch` names the
transcript line, what was expected and what was sent. Recorded errors are raised again.
After the first mismatch the replay refuses every further exchange with a
:class:`~nvmlab.errors.ReplayMismatch` repeating it (:attr:`ReplayTransport.mismatch`):
what a diverged session sends next (a clean-up, a safe state) has nothing in the
transcript to be checked against, and a replay has no instrument to make safe
(:attr:`~nvmlab.drivers.transport_base.Transport.is_replay`).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import IO, Any

from nvmlab.drivers.transport_base import Transport
from nvmlab.errors import (
    InstrumentConnectionClosed,
    InstrumentError,
    InstrumentIOError,
    InstrumentProtocolError,
    InstrumentTimeout,
    ReplayMismatch,
)

__all__ = ["RecordingTransport", "ReplayTransport", "encode_entry", "read_transcript"]

_ERRORS: dict[str, type[InstrumentError]] = {
    cls.__name__: cls
    for cls in (
        InstrumentError,
        InstrumentTimeout,
        InstrumentIOError,
        InstrumentConnectionClosed,
        InstrumentProtocolError,
    )
}
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def encode_entry(direction: str, data: bytes, t: float) -> dict[str, Any]:
    """One transcript entry for ``data`` (text when printable ASCII, else base64)."""
    entry: dict[str, Any] = {"direction": direction}
    if all(b in _PRINTABLE for b in data):
        entry["text"] = data.decode("ascii")
    else:
        entry["base64"] = base64.b64encode(data).decode("ascii")
    entry["t"] = round(t, 6)
    return entry


def _entry_bytes(entry: dict[str, Any]) -> bytes:
    if "text" in entry:
        return str(entry["text"]).encode("ascii")
    if "base64" in entry:
        return base64.b64decode(entry["base64"])
    return b""


def read_transcript(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The entries of a transcript file with their 1-based line numbers (blank lines skipped)."""
    entries: list[tuple[int, dict[str, Any]]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplayMismatch(
                    f"transcript {path} line {lineno} is not JSON: {exc}", resource=str(path)
                ) from exc
            if not isinstance(entry, dict) or "direction" not in entry:
                raise ReplayMismatch(
                    f"transcript {path} line {lineno} has no 'direction' field", resource=str(path)
                )
            entries.append((lineno, entry))
    return entries


class RecordingTransport(Transport):
    """Wraps any :class:`Transport` and logs every exchange to a JSON-lines transcript.

    ``transcript`` is a path (opened for appending) or an open text file. Lines are flushed
    one by one. Closing the transport closes a file it opened itself.
    """

    def __init__(self, inner: Transport, transcript: str | Path | IO[str]) -> None:
        super().__init__(
            name=inner.name,
            resource=inner.resource,
            timeout_s=inner.timeout_s,
            read_termination=inner.read_termination,
            write_termination=inner.write_termination,
            encoding=inner.encoding,
            query_retries=inner.query_retries,
        )
        self.inner = inner
        if isinstance(transcript, (str, Path)):
            self.path: Path | None = Path(transcript)
            self._fh: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._owns_file = True
        else:
            self.path = None
            self._fh = transcript
            self._owns_file = False

    def _timeout_changed(self) -> None:
        # The timeout lives on the inner transport; keep it in step.
        self.inner.timeout_s = self.timeout_s

    def _log(self, entry: dict[str, Any]) -> None:
        if self._fh.closed:
            return
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()

    def _log_error(self, exc: InstrumentError) -> None:
        self._log(
            {
                "direction": "error",
                "error": type(exc).__name__,
                "message": str(exc),
                "t": round(time.monotonic(), 6),
            }
        )

    def write(self, message: str) -> None:
        self._before_command()
        self.last_command = message
        data = (message + self.write_termination).encode(self.encoding)
        self._log(encode_entry("write", data, time.monotonic()))
        try:
            self.inner.write(message)
        except InstrumentError as exc:
            self._log_error(exc)
            raise

    def write_raw(self, data: bytes) -> None:
        self._before_command()
        self._log(encode_entry("write", bytes(data), time.monotonic()))
        try:
            self.inner.write_raw(data)
        except InstrumentError as exc:
            self._log_error(exc)
            raise

    def read(self) -> str:
        try:
            reply = self.inner.read()
        except InstrumentError as exc:
            self._log_error(exc)
            if isinstance(exc, InstrumentTimeout):
                self._timed_out()
            raise
        data = (reply + self.read_termination).encode(self.encoding)
        self._log(encode_entry("read", data, time.monotonic()))
        return reply

    def read_raw(self, size: int) -> bytes:
        try:
            data = self.inner.read_raw(size)
        except InstrumentError as exc:
            self._log_error(exc)
            if isinstance(exc, InstrumentTimeout):
                self._timed_out()
            raise
        self._log(encode_entry("read", data, time.monotonic()))
        return data

    def clear_input(self) -> None:
        self.inner.clear_input()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._owns_file and not self._fh.closed:
                self._fh.close()

    def reconnect(self) -> None:
        self._log({"direction": "reconnect", "t": round(time.monotonic(), 6)})
        self.inner.reconnect()
        self.out_of_step = self.inner.out_of_step

    def resynchronise(self) -> None:
        """Logged as one ``resync`` entry; the live link resynchronises as it can."""
        self._log({"direction": "resync", "t": round(time.monotonic(), 6)})
        inner = self.inner
        inner.resync_hook = inner.resync_hook or self.resync_hook
        inner.identity_reply = inner.identity_reply or self.identity_reply
        inner.unanswered = [*inner.unanswered, *self.unanswered]
        inner.out_of_step = True
        inner.resync_now()


class ReplayTransport(Transport):
    """Serves a recorded transcript back; stops at the first write that differs.

    Reads return the recorded replies (``read()`` strips the termination as a live
    transport does); recorded errors are raised again with their recorded message. The
    first mismatch is kept in :attr:`mismatch`; every exchange after it is refused.
    """

    is_replay = True

    def __init__(
        self,
        transcript: str | Path,
        *,
        name: str = "replay",
        read_termination: str = "\n",
        write_termination: str = "\n",
        encoding: str = "ascii",
        query_retries: int = 1,
    ) -> None:
        super().__init__(
            name=name,
            resource=str(transcript),
            read_termination=read_termination,
            write_termination=write_termination,
            encoding=encoding,
            query_retries=query_retries,
        )
        self.path = Path(transcript)
        self._entries = read_transcript(self.path)
        self._pos = 0
        self._pending = bytearray()  # part of a recorded read not yet consumed
        self.closed = False
        #: The first mismatch, once the session has diverged from the transcript.
        self.mismatch: ReplayMismatch | None = None

    @property
    def diverged(self) -> bool:
        """True once a mismatch stopped the replay."""
        return self.mismatch is not None

    def _mismatch(self, lineno: int | None, message: str) -> ReplayMismatch:
        # The resource (named by the error) is the transcript's path.
        where = f"transcript line {lineno}" if lineno else "transcript"
        error = ReplayMismatch(f"{where}: {message}", instrument=self.name, resource=self.resource)
        if self.mismatch is None:
            self.mismatch = error
        return error

    def _refuse_after_mismatch(self) -> None:
        if self.mismatch is not None:
            first = str(self.mismatch).removeprefix(f"{self.name} ({self.resource}): ")
            raise ReplayMismatch(
                f"replay stopped at the first mismatch, nothing more is served: {first}",
                instrument=self.name,
                resource=self.resource,
            )

    def _peek(self) -> tuple[int, dict[str, Any]] | None:
        return self._entries[self._pos] if self._pos < len(self._entries) else None

    def _describe(self, entry: dict[str, Any]) -> str:
        if entry["direction"] in ("write", "read"):
            return f"a {entry['direction']} of {_entry_bytes(entry)!r}"
        if entry["direction"] == "error":
            return f"an error {entry.get('error')}"
        return f"a {entry['direction']}"

    def _check_open(self) -> None:
        self._refuse_after_mismatch()
        if self.closed:
            raise self.error(InstrumentIOError, "replay transport is closed; call reconnect()")

    def _expect_write(self, data: bytes) -> None:
        self._check_open()
        self._pending.clear()
        nxt = self._peek()
        if nxt is None:
            raise self._mismatch(None, f"the transcript has ended but the driver sent {data!r}")
        lineno, entry = nxt
        if entry["direction"] != "write":
            raise self._mismatch(
                lineno, f"expected {self._describe(entry)}, but the driver sent {data!r}"
            )
        expected = _entry_bytes(entry)
        if expected != data:
            raise self._mismatch(lineno, f"expected {expected!r}, got {data!r}")
        self._pos += 1

    def _next_read(self) -> bytes:
        """The next recorded read (raising a recorded error if one comes first)."""
        self._check_open()
        nxt = self._peek()
        if nxt is None:
            raise self._mismatch(None, "the transcript has ended but the driver reads a reply")
        lineno, entry = nxt
        if entry["direction"] == "error":
            self._pos += 1
            cls = _ERRORS.get(str(entry.get("error")), InstrumentError)
            if issubclass(cls, InstrumentTimeout):
                self._timed_out()
            raise cls(
                f"(replayed from line {lineno}) {entry.get('message', '')}",
                instrument=self.name,
                resource=self.resource,
            )
        if entry["direction"] != "read":
            raise self._mismatch(
                lineno, f"expected {self._describe(entry)}, but the driver reads a reply"
            )
        self._pos += 1
        return _entry_bytes(entry)

    def write(self, message: str) -> None:
        self._before_command()
        self.last_command = message
        self._expect_write((message + self.write_termination).encode(self.encoding))

    def write_raw(self, data: bytes) -> None:
        self._before_command()
        self._expect_write(bytes(data))

    def read(self) -> str:
        self._refuse_after_mismatch()
        term = self.read_termination.encode(self.encoding)
        while True:
            idx = self._pending.find(term) if term else -1
            if idx >= 0:
                raw = bytes(self._pending[:idx])
                del self._pending[: idx + len(term)]
                return raw.decode(self.encoding).strip()
            if not term and self._pending:
                raw = bytes(self._pending)
                self._pending.clear()
                return raw.decode(self.encoding).strip()
            self._pending += self._next_read()

    def read_raw(self, size: int) -> bytes:
        self._refuse_after_mismatch()
        while len(self._pending) < size:
            self._pending += self._next_read()
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def clear_input(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        self.closed = True

    def reconnect(self) -> None:
        self._refuse_after_mismatch()
        nxt = self._peek()
        if nxt is None or nxt[1]["direction"] != "reconnect":
            lineno = nxt[0] if nxt else None
            what = self._describe(nxt[1]) if nxt else "the end"
            raise self._mismatch(lineno, f"expected {what}, but the driver reconnected")
        self._pos += 1
        self._pending.clear()
        self.closed = False

    def resynchronise(self) -> None:
        """The recorded session resynchronised here: its ``resync`` entry is consumed (a
        transcript recorded before resynchronisation existed has none, and replays too)."""
        self._check_open()
        nxt = self._peek()
        if nxt is not None and nxt[1]["direction"] == "resync":
            self._pos += 1
        self._pending.clear()

    @property
    def finished(self) -> bool:
        """True when every transcript entry has been served (never after a mismatch)."""
        return self.mismatch is None and self._pos >= len(self._entries) and not self._pending

    def assert_finished(self) -> None:
        """Raise :class:`~nvmlab.errors.ReplayMismatch` if transcript entries are left (or
        the replay stopped at a mismatch)."""
        self._refuse_after_mismatch()
        nxt = self._peek()
        if nxt is not None:
            raise self._mismatch(nxt[0], f"session ended before {self._describe(nxt[1])}")
