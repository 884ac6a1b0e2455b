"""What kind of resource string names an instrument: a VISA resource or a pyserial URL.

One home for the test every layer uses (the transport picks pyvisa or pyserial with it,
the station file's checks accept or refuse a resource with it).

VISA resource strings follow the VISA specification (VPP-4.3, section 4.3.2): an
interface type with an optional board number, ``::``-separated fields and an optional
resource class, case-insensitive (``GPIB0::24::INSTR``, ``TCPIP::host::5025::SOCKET``,
``TCPIP0::host::inst0::INSTR``, ``USB0::0x05E6::0x2636::4480001::INSTR``, ``ASRL3::INSTR``,
``ASRL/dev/ttyUSB0::INSTR``, ``VXI0::1::INSTR``, ``GPIB-VXI0::1::INSTR``, ``PXI0::MEMACC``).
pyvisa's own parser (:func:`pyvisa.rname.parse_resource_name`) decides, with two additions
it lacks: the three PXI ``INSTR`` forms of the specification (``PXI0::1::INSTR``,
``PXI0::2-12.1::INSTR``, ``PXI0::CHASSIS1::SLOT3::INSTR``) and lower-case keywords.

A VISA *alias* (a name such as ``"MySMU"`` that a vendor's VISA configuration maps to a
resource) is not a resource string: pyvisa's parser refuses it too, and only a backend
that keeps an alias table (``"@ivi"``) can resolve it. It is neither a VISA resource nor a
serial URL here.
"""

from __future__ import annotations

import re

__all__ = ["is_visa_resource", "is_serial_url"]

_SERIAL_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|/dev/|COM\d+$)", re.IGNORECASE)

_PXI_INSTR = (
    # PXI[bus]::device[::function][::INSTR]
    re.compile(r"^PXI\d*::\d+(::\d+)?(::INSTR)?$", re.IGNORECASE),
    # PXI[interface]::bus-device[.function][::INSTR]
    re.compile(r"^PXI\d*::\d+-\d+(\.\d+)?(::INSTR)?$", re.IGNORECASE),
    # PXI[interface]::CHASSISn::SLOTn[::FUNCn][::INSTR]
    re.compile(r"^PXI\d*::CHASSIS\d+::SLOT\d+(::FUNC\d+)?(::INSTR)?$", re.IGNORECASE),
)


def _pyvisa_parses(text: str) -> bool:
    from pyvisa import rname

    try:
        rname.parse_resource_name(text)
    except Exception:  # InvalidResourceName, and anything else a malformed name provokes
        return False
    return True


def is_visa_resource(resource: str) -> bool:
    """True when ``resource`` is a VISA resource string (any interface, any case).

    ``ASRLsocket://host:port::INSTR`` and ``ASRLnvmlab://bench/role::INSTR`` are VISA
    resources (pyvisa-py hands the URL to pyserial), not pyserial URLs. Surrounding spaces
    are ignored; an alias, a pyserial URL or a device path is not a VISA resource.
    """
    text = resource.strip()
    if not text:
        return False
    if _pyvisa_parses(text):
        return True
    # VISA keywords are case-insensitive; pyvisa's parser wants them upper case.
    fields = text.split("::")
    fields[0] = re.sub(r"^[A-Za-z-]+", lambda m: m.group(0).upper(), fields[0])
    if len(fields) > 1 and fields[-1].isalpha():
        fields[-1] = fields[-1].upper()
    upper = "::".join(fields)
    if upper != text and _pyvisa_parses(upper):
        return True
    return any(pattern.match(text) for pattern in _PXI_INSTR)


def is_serial_url(resource: str) -> bool:
    """True when ``resource`` is a pyserial URL or device path rather than a VISA string."""
    return not is_visa_resource(resource) and bool(_SERIAL_URL.match(resource.strip()))
