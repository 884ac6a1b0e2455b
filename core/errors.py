"""The error family shared by every layer of nvmlab.

Each error names what failed in the lab's terms (the file and field, the instrument and
its resource) so a technician can act on the message without reading a traceback.
"""

from __future__ import annotations


class NvmlabError(Exception):
    """Base of every error nvmlab raises on purpose."""


class ConfigError(NvmlabError):
    """A bench, station or job file (or command-line value) is invalid.

    The message names the file, the field, the value and what is allowed.
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.file = file
        self.field = field
        where = ": ".join(part for part in (file, field) if part)
        super().__init__(f"{where}: {message}" if where else message)


class SafetyLimitError(NvmlabError):
    """A requested value is beyond the station's safety limits; nothing was sent."""


class InstrumentError(NvmlabError):
    """Base of instrument communication errors; names the instrument and resource."""

    def __init__(self, message: str, *, instrument: str = "", resource: str = "") -> None:
        self.instrument = instrument
        self.resource = resource
        who = " ".join(part for part in (instrument, f"({resource})" if resource else "") if part)
        super().__init__(f"{who}: {message}" if who else message)


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer within the timeout."""


class InstrumentIOError(InstrumentError):
    """The connection failed or was closed."""


class InstrumentConnectionClosed(InstrumentIOError):
    """The instrument (or the bridge in front of it) closed the connection; reconnect first."""


class InstrumentProtocolError(InstrumentError):
    """A reply could not be parsed, or the instrument reported an error."""


class ReplayMismatch(InstrumentError):
    """A replayed session sent a command that differs from the transcript."""


class StorageError(NvmlabError):
    """The results database could not be used (unreachable, wrong revision, read-only)."""
