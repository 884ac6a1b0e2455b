"""Resource strings of a station file: is this a VISA resource or a pyserial port / URL?

Only the form is checked here (no port or host is opened); whether the instrument is
there is found out when the station opens. The VISA test is the transport's own
(:func:`nvmlab.drivers.transport.is_visa_resource`), so the station file accepts exactly
the strings the transport will open as VISA resources.
"""

from __future__ import annotations

import importlib.util
import re

from nvmlab.drivers.transport import is_visa_resource

__all__ = ["RESOURCE_HELP", "check_resource", "is_visa_resource"]

_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$")
_HOST_PORT_RE = re.compile(r"^(?P<host>[^:/?]+):(?P<port>\d+)(?:[/?].*)?$")
_PORT_RE = re.compile(r"^(/dev/\S+|COM\d+|\\\\\.\\COM\d+)$", re.IGNORECASE)
#: URL schemes registered at run time (the emulated bench's in-process serial URLs).
_EXTRA_SERIAL_SCHEMES = ("nvmlab",)

RESOURCE_HELP = (
    "a VISA resource (e.g. 'TCPIP::192.168.1.20::5025::SOCKET', 'GPIB0::24::INSTR', "
    "'USB0::0x05E6::0x2636::4480001::INSTR', 'ASRL/dev/ttyUSB0::INSTR') or a pyserial "
    "port/URL (e.g. '/dev/ttyUSB0', 'COM3', 'socket://192.168.1.40:7001', "
    "'rfc2217://host:port', 'nvmlab://<bench>/<role>')"
)


def _serial_scheme_known(scheme: str) -> bool:
    import serial

    if scheme in _EXTRA_SERIAL_SCHEMES:
        return True
    for package in serial.protocol_handler_packages:
        try:
            if importlib.util.find_spec(f"{package}.protocol_{scheme}") is not None:
                return True
        except ImportError:
            continue
    return False


def check_resource(resource: str) -> str | None:
    """Return why ``resource`` is not a usable resource string, or None when it is."""
    if not resource.strip():
        return "is empty"
    if resource != resource.strip():
        return "has leading or trailing spaces"
    if is_visa_resource(resource):
        return None
    url = _URL_RE.match(resource)
    if url is not None:
        scheme = url["scheme"].lower()
        if not _serial_scheme_known(scheme):
            return f"uses the unknown pyserial URL scheme '{scheme}://'"
        if scheme in ("socket", "rfc2217"):
            hp = _HOST_PORT_RE.match(url["rest"])
            if hp is None or not 0 < int(hp["port"]) < 65536:
                return f"needs '{scheme}://HOST:PORT' with a port 1-65535"
        return None
    if _PORT_RE.match(resource):
        return None
    return "is neither a VISA resource nor a pyserial port or URL"
