"""Register the ``nvmlab://<bench_id>/<role>`` pyserial URL scheme (import for the effect).

After ``import nvmlab.mocks.serving.serial_url``, ``serial.serial_for_url`` (and pyvisa-py's
``ASRLnvmlab://<bench_id>/<role>::INSTR``) reach the instruments of any emulated bench
built in this process; see :mod:`nvmlab.mocks.serving.protocol_nvmlab`.
"""

from __future__ import annotations

import serial

#: The package pyserial searches for ``protocol_nvmlab``.
HANDLER_PACKAGE = "nvmlab.mocks.serving"


def register() -> None:
    """Add the handler package to ``serial.protocol_handler_packages`` (idempotent)."""
    if HANDLER_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(HANDLER_PACKAGE)


def url(bench_id: str, role: str) -> str:
    """The pyserial URL of ``role`` on bench ``bench_id``."""
    return f"nvmlab://{bench_id}/{role}"


register()
