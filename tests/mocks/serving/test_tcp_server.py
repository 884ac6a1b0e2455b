"""Loopback TCP servers seen by plain pyvisa-py and pyserial clients: byte-exact replies, no
invented Nagle / delayed-ACK stall, fresh connections reset partial I/O, and the faults
(late, dropped, closed) as a client on a real LAN would see them."""

from __future__ import annotations

import socket
import time

import pytest
import serial
from pyvisa import ResourceManager
from pyvisa.errors import VisaIOError

from nvmlab.mocks.firmware.base import LineInstrument
from nvmlab.mocks.serving.faults import FaultInjector, FaultSpec
from nvmlab.mocks.serving.tcp import TcpBench, client_host, is_loopback

pytestmark = pytest.mark.tcp


def test_resources_name_the_ports_in_the_forms_clients_open(
    echo: LineInstrument, fake_chamber: LineInstrument
) -> None:
    with TcpBench({"smu": echo, "chamber": fake_chamber}) as tcp:
        ports = tcp.ports
        assert tcp.resources == {
            "smu": f"TCPIP::127.0.0.1::{ports['smu']}::SOCKET",
            "chamber": f"ASRLsocket://127.0.0.1:{ports['chamber']}::INSTR",
        }
        assert tcp.serial_urls == {"chamber": f"socket://127.0.0.1:{ports['chamber']}"}
        assert all(port > 0 for port in ports.values())


def test_pyvisa_py_and_pyserial_clients_talk_to_the_served_instruments(
    echo: LineInstrument, fake_chamber: LineInstrument
) -> None:
    with TcpBench({"smu": echo, "chamber": fake_chamber}) as tcp:
        rm = ResourceManager("@py")
        smu = rm.open_resource(tcp.resources["smu"], read_termination="\n", write_termination="\n")
        assert smu.query("*IDN?") == "NVMLAB,ECHO,0,1.0"
        chamber = rm.open_resource(
            tcp.resources["chamber"], read_termination="\r\n", write_termination="\r\n"
        )
        assert chamber.query("ECHO 25.0") == "25.0"
        chamber.close()
        port = serial.serial_for_url(tcp.serial_urls["chamber"], timeout=2.0)
        port.write(b"ECHO bytes\r\n")
        assert port.readline() == b"bytes\r\n"
        port.close()
        smu.close()
        rm.close()


def test_a_write_then_query_loop_has_no_delayed_ack_stall(echo: LineInstrument) -> None:
    """A set-then-read loop: ~40 ms per point without TCP_QUICKACK/NODELAY on the server.

    The stall is not a slowness that a loaded machine could imitate: with it, EVERY point
    takes >= 40 ms (the kernel's delayed-ACK timer). So the check is on the fastest of 30
    points (a single fast point proves there is no stall), not on a mean that load inflates;
    the figures themselves belong to ``nvmlab bench``."""
    with TcpBench({"smu": echo}) as tcp:
        rm = ResourceManager("@py")
        smu = rm.open_resource(tcp.resources["smu"], read_termination="\n", write_termination="\n")
        smu.query("*IDN?")
        server = tcp.servers["smu"]
        with server._conns_lock:
            conns = list(server._conns)
        assert len(conns) == 1
        assert conns[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        per_point = []
        for i in range(30):
            t0 = time.perf_counter()
            smu.write(f"SET {i}")
            assert smu.query(f"ECHO {i}") == str(i)
            per_point.append(time.perf_counter() - t0)
        smu.close()
        rm.close()
    fastest = min(per_point)
    assert fastest < 0.02, f"fastest set+query point {fastest * 1e3:.1f} ms: a delayed-ACK stall"


def test_a_new_connection_resets_partial_input(echo: LineInstrument) -> None:
    with TcpBench({"smu": echo}) as tcp:
        with socket.create_connection(("127.0.0.1", tcp.ports["smu"]), timeout=2.0) as sock:
            sock.sendall(b"ECHO half a command")
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", tcp.ports["smu"]), timeout=2.0) as sock:
            sock.sendall(b"ECHO whole\n")
            assert sock.recv(100) == b"whole\n"


def test_late_reply_times_out_then_arrives(echo: LineInstrument) -> None:
    inj = FaultInjector(echo, [FaultSpec("late", messages=(1,), delay_s=0.6)])
    with TcpBench({"smu": inj}) as tcp:
        rm = ResourceManager("@py")
        smu = rm.open_resource(
            tcp.resources["smu"], read_termination="\n", write_termination="\n", timeout=200
        )
        with pytest.raises(VisaIOError, match="VI_ERROR_TMO"):
            smu.query("ECHO slow")
        time.sleep(0.6)
        assert smu.read() == "slow"
        smu.close()
        rm.close()


def test_dropped_reply_and_closed_connection(echo: LineInstrument) -> None:
    inj = FaultInjector(echo, [FaultSpec("drop", messages=(1,)), FaultSpec("close", messages=(2,))])
    with TcpBench({"smu": inj}) as tcp:
        with socket.create_connection(("127.0.0.1", tcp.ports["smu"]), timeout=0.3) as sock:
            sock.sendall(b"ECHO dropped\n")
            with pytest.raises(TimeoutError):
                sock.recv(100)
            sock.sendall(b"ECHO hangup\n")
            sock.settimeout(2.0)
            assert sock.recv(100) == b""  # the server closed the connection
        # A new connection works again.
        with socket.create_connection(("127.0.0.1", tcp.ports["smu"]), timeout=2.0) as sock:
            sock.sendall(b"ECHO back\n")
            assert sock.recv(100) == b"back\n"


def test_ports_from_a_base_and_a_clear_error_when_taken(echo: LineInstrument) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        taken = blocker.getsockname()[1]
        with pytest.raises(OSError, match=f"smu: cannot listen on 127.0.0.1:{taken}"):
            TcpBench({"smu": echo}, port_base=taken)


def test_a_wildcard_bind_names_this_machine_in_the_resources(echo: LineInstrument) -> None:
    """Bound to every interface, the resource strings name this machine (a client on
    another machine cannot use 127.0.0.1, nor 0.0.0.0)."""
    with TcpBench({"smu": echo}, host="0.0.0.0") as tcp:
        port = tcp.ports["smu"]
        assert tcp.resources == {"smu": f"TCPIP::{socket.gethostname()}::{port}::SOCKET"}
        rm = ResourceManager("@py")
        smu = rm.open_resource(tcp.resources["smu"], read_termination="\n", write_termination="\n")
        assert smu.query("ECHO reached") == "reached"
        smu.close()
        rm.close()


@pytest.mark.parametrize(
    ("bind", "client"),
    [("0.0.0.0", socket.gethostname()), ("", socket.gethostname()), ("192.0.2.7", "192.0.2.7"),
     ("127.0.0.1", "127.0.0.1"), ("localhost", "localhost")],
)  # fmt: skip
def test_the_client_address_for_each_bind_address(bind: str, client: str) -> None:
    assert client_host(bind) == client


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("0.0.0.0", False), ("", False), ("192.0.2.7", False)],
)  # fmt: skip
def test_loopback_addresses_are_told_from_reachable_ones(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
