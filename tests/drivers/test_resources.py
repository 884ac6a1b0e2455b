"""One ``is_visa_resource`` for every layer: every VISA resource form, and what is not one."""

from __future__ import annotations

import pytest

from nvmlab.drivers.transport import is_serial_url, is_visa_resource

VISA = [
    # GPIB
    "GPIB0::24::INSTR",
    "GPIB::24::INSTR",
    "GPIB0::24::5::INSTR",  # secondary address
    "GPIB0::24",  # INSTR implied
    "GPIB0::INTFC",
    # TCPIP: VXI-11 and HiSLIP INSTR, raw SOCKET
    "TCPIP::192.168.1.20::INSTR",
    "TCPIP0::192.168.1.20::inst0::INSTR",
    "TCPIP0::k-2636b.lab::hislip0::INSTR",
    "TCPIP::192.168.1.20::5025::SOCKET",
    "TCPIP0::127.0.0.1::5025::SOCKET",
    # USB (USBTMC and raw)
    "USB0::0x05E6::0x2636::4480001::INSTR",
    "USB::0x0957::0x8C18::MY51141234::0::INSTR",
    "USB0::0x1234::0x5678::SN1::RAW",
    # serial
    "ASRL3::INSTR",
    "ASRL3",
    "ASRL/dev/ttyUSB0::INSTR",
    "ASRLCOM4::INSTR",
    "ASRLsocket://127.0.0.1:7001::INSTR",
    "ASRLnvmlab://bench1/chamber::INSTR",
    # VXI and GPIB-VXI
    "VXI0::1::INSTR",
    "VXI::1::BACKPLANE",
    "GPIB-VXI0::1::INSTR",
    # PXI: the three INSTR forms of the VISA specification, MEMACC, BACKPLANE
    "PXI0::1::INSTR",
    "PXI::1::INSTR",
    "PXI0::1::2::INSTR",
    "PXI0::1",
    "PXI0::2-12.1::INSTR",
    "PXI0::2-12::INSTR",
    "PXI0::CHASSIS1::SLOT3::INSTR",
    "PXI0::CHASSIS1::SLOT3::FUNC2::INSTR",
    "PXI0::MEMACC",
    "PXI0::1::BACKPLANE",
    # VISA keywords are case-insensitive
    "tcpip::192.168.1.20::5025::socket",
    "gpib0::24::instr",
    "pxi0::1::instr",
    # surrounding spaces are ignored
    "  GPIB0::24::INSTR ",
]

NOT_VISA = [
    "",
    "   ",
    "MySMU",  # an alias: only a backend with an alias table (@ivi) resolves it
    "smu",
    "socket://192.168.1.40:7001",
    "rfc2217://host:4000",
    "loop://",
    "nvmlab://bench1/smu",
    "/dev/ttyUSB0",
    "COM3",
    "GPIB0",  # no address
    "USB0::0x05E6::INSTR",  # no product id / serial
    "PXI0::1::FOO",  # unknown resource class
    "PXI0::CHASSIS1::INSTR",  # no slot
    "FOO0::1::INSTR",  # unknown interface
    "TCPIP::",
]


@pytest.mark.parametrize("resource", VISA)
def test_every_visa_resource_form_is_a_visa_resource(resource: str) -> None:
    assert is_visa_resource(resource)
    assert not is_serial_url(resource)


@pytest.mark.parametrize("resource", NOT_VISA)
def test_aliases_urls_ports_and_malformed_names_are_not(resource: str) -> None:
    assert not is_visa_resource(resource)


@pytest.mark.parametrize(
    "resource", ["socket://192.168.1.40:7001", "nvmlab://b/smu", "/dev/ttyUSB0", "COM3"]
)
def test_serial_urls_and_ports_are_serial(resource: str) -> None:
    assert is_serial_url(resource)
