"""The errors a chamber's own alarms become, shared by the Espec and Watlow F4 drivers."""

from __future__ import annotations

from nvmlab.errors import InstrumentProtocolError

__all__ = ["ChamberAlarm", "ChamberSensorFault"]


class ChamberAlarm(InstrumentProtocolError):
    """The chamber reports an active alarm; the message names it in the chamber's words."""


class ChamberSensorFault(ChamberAlarm):
    """The chamber marks its temperature reading invalid (a sensor fault, named)."""
